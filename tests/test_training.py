"""Tests of sdic.training: configuration, data, checkpoints, optimisers, networks and the three stages.

Everything runs on the tiny preset (a few steps, seconds each), including the
multi-process equivalence test (two processes under torchrun, gloo on CPU).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdic.checkpoints import read_checkpoint, save_model
from sdic.config import tiny
from sdic.networks import Encoder4Editing, Generator
from sdic.training import NonFiniteLossError, ResumeError, checkpointing, stage_builder, train
from sdic.training import config as C
from sdic.training.data import (
    BatchStream,
    FlipSampler,
    ImageFolder,
    UnreadableImageWarning,
    frame_transform,
    list_image_files,
    split_files,
)
from sdic.training.discriminator import Discriminator, LatentDiscriminator
from sdic.training.distributed import DistContext, GlobalBatchNorm, sync_batchnorm
from sdic.training.e4e import InversionExport, progressive_stage
from sdic.training.loop import run as run_loop
from sdic.training.optim import Lookahead, build_optimizer
from sdic.training.stylegan2 import GeneratorExport

QUIET = ["data.workers=0", "run.progress=false", "run.tensorboard=false", "run.image_every=0",
         "run.val_every=0", "run.val_batches=1", "run.log_every=1"]


# ------------------------------------------------------------------ fixtures
def make_images(folder: Path, count: int, size: int = 40, seed: int = 0, corrupt: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        base = rng.integers(0, 255, size=3)
        noise = rng.integers(-40, 40, size=(size, size, 3))
        image = np.clip(base + noise, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    if corrupt:
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return folder


def write_decompression_bomb(path: Path, side: int = 20_000) -> Path:
    """A 48 kB 1-bit PNG of side x side pixels (400 M: above PIL's bomb limit), written chunk by chunk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(1 + side // 8)  # filter byte + packed pixels
    pixels = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("imgs") / "images", 10)


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = tiny()
    generator = Generator(config.generator, tap_resolution=config.tap_resolution)
    latent_avg = generator.mean_latent(256).expand(config.n_latent, -1).clone()
    path = tmp_path_factory.mktemp("gen") / "stylegan2.safetensors"
    save_model(GeneratorExport(generator, latent_avg), path, config, kind="stylegan2")
    return path


@pytest.fixture(scope="module")
def e4e_file(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    config = tiny()
    generator = Generator(config.generator, tap_resolution=config.tap_resolution)
    encoder = Encoder4Editing(config.encoder, config.n_latent, config.generator.style_dim)
    latent_avg = generator.mean_latent(256).expand(config.n_latent, -1).clone()
    path = tmp_path_factory.mktemp("e4e") / "e4e.safetensors"
    save_model(InversionExport(encoder, generator, latent_avg), path, config, kind="e4e")
    return path


def stage_overrides(out: Path, data: Path, steps: int, *extra: str, batch: int = 2) -> list[str]:
    return ["model=tiny", f"data.path={data}", f"run.out={out}", f"run.steps={steps}", f"run.batch_size={batch}",
            *QUIET, *extra]


def stage_config(stage: str, out: Path, data: Path, steps: int, *extra: str, batch: int = 2):
    return C.load(stage, None, stage_overrides(out, data, steps, *extra, batch=batch))


STAGE_ARGS = {
    "stylegan2": ("r1_every=2", "path_every=2", "stddev_group=2"),
    "e4e": ("losses.identity=0", "progressive_start=1", "progressive_every=1", "w_pool=3", "r1_every=2"),
    "sdic": ("losses.identity=0", "discrepancy=0.1"),
}


def stage_args(stage: str, generator_file: Path, e4e_file: Path) -> tuple[str, ...]:
    source = {"stylegan2": (), "e4e": (f"generator={generator_file}",), "sdic": (f"e4e={e4e_file}",)}[stage]
    return source + STAGE_ARGS[stage]


def metrics(run_dir: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# -------------------------------------------------------------------- config
def test_config_layers_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stage: sdic\ne4e: x.safetensors\nrun: {steps: 10}\noptim: {lr: 2.0e-3}\n")
    config = C.load("sdic", path, ["run.steps=1e3", "optim.lr=1e-4", "optim.betas=[0.5, 0.9]",
                                   "losses.identity_net=none", "val_metrics=[mse]"])
    assert config.run.steps == 1000 and isinstance(config.run.steps, int)
    assert config.optim.lr == 1e-4 and config.optim.betas == (0.5, 0.9)
    assert config.optim.name == "ranger" and config.run.batch_size == 2  # stage defaults kept
    assert config.losses.identity_net == "none" and config.val_metrics == ("mse",)
    assert C.build("sdic", C.to_plain(config)) == config  # what checkpoints store rebuilds the run


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(C.ConfigError, match="did you mean 'run.steps'"):
        C.load("stylegan2", None, ["run.stepz=3"])
    with pytest.raises(C.ConfigError, match="run.batch_size"):
        C.load("stylegan2", None, ["run.batch_size=abc"])
    with pytest.raises(C.ConfigError, match="not 'e4e'"):
        (tmp_path / "s.yaml").write_text("stage: sdic\n")
        C.load("e4e", tmp_path / "s.yaml")
    with pytest.raises(C.ConfigError, match="generator"):
        C.load("e4e", None, [])


@pytest.mark.parametrize("text, where", [("run:\n  steps: 3\n   batch_size: 2\n", "line 3, column 14"),
                                         ("run: {steps: 3\n", "line 2, column 1"),
                                         ("run:\n\tsteps: 3\n", "line 2, column 1")])
def test_malformed_yaml_is_one_line_naming_file_line_and_column(tmp_path, capsys, text, where):
    from sdic.cli.main import main

    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(C.ConfigError, match=rf"broken.yaml, {where}: not valid YAML \(.+\)$"):
        C.load("stylegan2", path)
    assert main(["train", "stylegan2", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and where in err and "Traceback" not in err


def test_model_spec_presets_and_overrides():
    config = C.load("stylegan2", None, ["model=tiny", "model.generator.size=64", "model.name=t64"])
    model = C.resolve_model(config.model)
    assert model.generator.size == 64 and model.n_latent == 10 and model.encoder == tiny().encoder
    assert C.resolve_model(C.model_spec(model)) == model
    base = tiny()
    assert C.resolve_model({"dicn": {"stem_channels": 4}}, base).dicn.stem_channels == 4


# ---------------------------------------------------------------------- data
def test_split_is_deterministic_and_disjoint(tmp_path):
    files = list_image_files(make_images(tmp_path / "a", 20))
    train_a, val_a = split_files(files, 0.2, 100, seed=3)
    train_b, val_b = split_files(list(reversed(files)), 0.2, 100, seed=3)
    assert len(val_a) == 4 and not set(train_a) & set(val_a)
    assert split_files(sorted(files), 0.2, 100, 3) == (train_a, val_a)
    assert set(val_b) != set() and len(train_b) == 16


def test_corrupt_image_is_skipped_with_a_warning(tmp_path):
    files = list_image_files(make_images(tmp_path / "c", 3, corrupt=True))
    dataset = ImageFolder(files, frame_transform(16))
    bad = next(i for i, f in enumerate(files) if f.name == "broken.png")
    with pytest.warns(UnreadableImageWarning, match="broken.png"):
        image = dataset[bad]
    assert image.shape == (3, 16, 16)
    assert torch.equal(image, dataset[(bad + 1) % len(files)])  # the next readable image


def test_a_decompression_bomb_is_skipped_with_a_warning(tmp_path):
    folder = make_images(tmp_path / "b", 2)
    write_decompression_bomb(folder / "bomb.png")
    files = list_image_files(folder)
    dataset = ImageFolder(files, frame_transform(16))
    bomb = [f.name for f in files].index("bomb.png")
    with pytest.warns(UnreadableImageWarning, match=r"bomb.png: not read, too many pixels for a safe decode \(a decompression bomb\?\)"):
        image = dataset[bomb]
    assert torch.equal(image, dataset[(bomb + 1) % len(files)])  # the next readable image took its place


def test_a_dataset_without_a_readable_image_is_refused_before_training(tmp_path, capsys):
    from sdic.cli.main import main
    from sdic.training.data import NoReadableImageError, build_datasets

    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_text("not an image")
    write_decompression_bomb(folder / "3.png")
    with pytest.warns(UnreadableImageWarning), \
            pytest.raises(NoReadableImageError, match=r"none of the 4 images of the training set .* can be read"):
        build_datasets(C.DataConfig(path=str(folder), val_fraction=0), frame_transform(16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", "stylegan2", *stage_overrides(tmp_path / "run", folder, 2, "data.val_fraction=0",
                                                            "stddev_group=2")]) == 2
    assert "can be read" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_unreadable_validation_set_leaves_training_without_validation(tmp_path):
    from sdic.training.data import build_datasets

    val = tmp_path / "val"
    val.mkdir()
    (val / "0.png").write_text("not an image")
    config = C.DataConfig(path=str(make_images(tmp_path / "train", 2)), val_path=str(val))
    with pytest.warns(UnreadableImageWarning) as caught:
        train_set, val_set = build_datasets(config, frame_transform(16))
    assert len(train_set) == 2 and val_set is None
    assert "training without validation" in str(caught[-1].message)


def test_training_runs_over_a_corrupt_image(tmp_path, generator_file, e4e_file):
    data = make_images(tmp_path / "imgs", 4, corrupt=True)
    with pytest.warns(UnreadableImageWarning):
        result = train("stylegan2", stage_config("stylegan2", tmp_path / "run", data, 3, "data.val_fraction=0",
                                                  "stddev_group=2"))
    assert result.step == 3


def test_batch_stream_resumes_mid_epoch_and_shards_like_one_process(images):
    dataset = ImageFolder(list_image_files(images), frame_transform(8))
    one = BatchStream(dataset, DistContext(), 4, seed=5, hflip=True, workers=0)
    batches = [one.next() for _ in range(5)]  # crosses an epoch boundary (2 batches per epoch)
    resumed = BatchStream(dataset, DistContext(), 4, seed=5, hflip=True, workers=0)
    resumed.load_state_dict({"epoch": 1, "position": 1})
    assert torch.equal(resumed.next(), batches[3])
    halves = [BatchStream(dataset, DistContext(rank=r, world_size=2), 2, 5, True, 0).next() for r in (0, 1)]
    merged = torch.stack([halves[0][0], halves[1][0], halves[0][1], halves[1][1]])
    assert torch.equal(merged, batches[0])  # rank r holds rows r, r+2, ... of the global batch


def test_flips_depend_only_on_epoch_and_image(images):
    dataset = ImageFolder(list_image_files(images), frame_transform(8))
    sampler = FlipSampler(dataset, DistContext(), seed=1, hflip=True)
    sampler.set_epoch(2)
    flips = dict(iter(sampler))
    other = FlipSampler(dataset, DistContext(rank=1, world_size=2), seed=1, hflip=True)
    other.set_epoch(2)
    assert all(flips[i] == flip for i, flip in other)
    assert 0 < sum(flips.values()) < len(flips)


# --------------------------------------------------------------- checkpoints
def test_atomic_save_survives_a_crash_during_the_write(tmp_path, monkeypatch):
    checkpointing.save_training_state({"step": 1, "value": torch.ones(3)}, tmp_path, keep=False)
    real_save = torch.save

    def crashing_save(obj, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        checkpointing.save_training_state({"step": 2, "value": torch.zeros(3)}, tmp_path, keep=False)
    monkeypatch.setattr(torch, "save", real_save)
    state = checkpointing.load_training_state(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 1 and torch.equal(state["value"], torch.ones(3))
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last.pt"]  # no temporary left


def test_periodic_checkpoints_are_kept(tmp_path):
    for step in (1, 2, 3, 4):
        checkpointing.save_training_state({"step": step}, tmp_path, keep=step % 2 == 0)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.pt", "step_00000002.pt", "step_00000004.pt"]
    assert checkpointing.load_training_state(tmp_path / "checkpoints" / "step_00000002.pt")["step"] == 2


def test_kept_snapshots_are_independent_copies_of_last(tmp_path):
    checkpointing.save_training_state({"step": 2, "value": torch.ones(3)}, tmp_path, keep=True)
    folder = tmp_path / "checkpoints"
    kept, last = folder / "step_00000002.pt", folder / "last.pt"
    assert kept.stat().st_nlink == 1 and kept.stat().st_ino != last.stat().st_ino
    with open(last, "r+b") as handle:  # a write into last.pt itself (not a replace)
        handle.write(b"\0" * 64)
    state = checkpointing.load_training_state(kept)
    assert state["step"] == 2 and torch.equal(state["value"], torch.ones(3))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_of_a_killed_run_are_removed_on_the_next_start(tmp_path, images):
    config = stage_config("stylegan2", tmp_path / "run", images, 1, "stddev_group=2")
    train("stylegan2", config)
    folder = tmp_path / "run" / "checkpoints"
    dead, live = _dead_pid(), os.getppid()
    left = [folder / f".last.pt.tmp{dead}", folder / f".step_00000001.pt.tmp{dead}",
            tmp_path / "run" / f".stylegan2.pt.tmp{dead}", tmp_path / "run" / "stylegan2.safetensors.tmp"]
    for path in left:
        path.write_bytes(b"half a checkpoint")
    busy = folder / f".last.pt.tmp{live}"  # a process that is still running owns it
    busy.write_bytes(b"being written")
    assert train("stylegan2", stage_config("stylegan2", tmp_path / "run", images, 2, "stddev_group=2"),
                 resume=True).step == 2
    assert not any(p.exists() for p in left) and busy.exists()
    assert "removed 4 temporary file(s)" in (tmp_path / "run" / "run.log").read_text()


def test_rng_states_round_trip():
    import random

    state = checkpointing.capture_rng()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    checkpointing.restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


# ---------------------------------------------------------------- optimisers
def test_lookahead_interpolates_every_k_steps():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3))
    start = p.detach().clone()
    inner = torch.optim.SGD([p], lr=0.1)
    opt = Lookahead(inner, k=2, alpha=0.5)
    fast = start.clone()
    for _ in range(2):
        p.grad = torch.ones_like(p)
        opt.step()
        fast -= 0.1
    assert torch.allclose(p.detach(), start + 0.5 * (fast - start))
    state = opt.state_dict()
    clone = Lookahead(torch.optim.SGD([torch.nn.Parameter(p.detach().clone())], lr=0.1), k=2, alpha=0.5)
    clone.load_state_dict(state)
    assert clone.counter == 2 and torch.equal(clone.slow[0], opt.slow[0])


def test_a_restored_lookahead_keeps_sharing_its_groups_with_the_inner_optimizer():
    from sdic.training.optim import build_scheduler

    p = torch.nn.Parameter(torch.ones(2, 2))
    config = C.OptimConfig(name="ranger", lr=1e-3, warmup_steps=4)
    opt = build_optimizer(config, [p])
    scheduler = build_scheduler(config, opt, 10)
    p.grad = torch.ones(2, 2)
    opt.step()
    scheduler.step()
    restored = build_optimizer(config, [p])
    restored.load_state_dict(opt.state_dict())
    schedule = build_scheduler(config, restored, 10)
    schedule.load_state_dict(scheduler.state_dict())
    schedule.step()  # the warm-up must reach the RAdam that steps
    assert restored.inner.param_groups[0]["lr"] == pytest.approx(1e-3 * 3 / 4)


def test_ranger_is_radam_with_centralized_gradients_and_lookahead():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(3, 5))
    opt = build_optimizer(C.ranger(1e-3), [p])
    assert isinstance(opt, Lookahead) and isinstance(opt.inner, torch.optim.RAdam)
    p.grad = torch.randn(3, 5)
    expected_grad = p.grad - p.grad.mean(dim=1, keepdim=True)
    before = p.detach().clone()
    opt.step()
    # first RAdam step (no rectification yet): p -= lr * g
    assert torch.allclose(p.detach(), before - 1e-3 * expected_grad, atol=1e-7)


# ------------------------------------------------------------------ networks
def test_discriminator_shapes_and_stddev_groups_split_like_processes():
    torch.manual_seed(0)
    d = Discriminator(tiny().generator, stddev_group=2)
    x = torch.randn(4, 3, 32, 32)
    full = d(x)
    assert full.shape == (4, 1)
    for rank in (0, 1):  # groups are rows {i, i + B/G}: each process's rows form whole groups
        assert torch.allclose(d(x[rank::2]), full[rank::2], atol=1e-5)
    assert LatentDiscriminator(32, 4)(torch.randn(5, 32)).shape == (5, 1)


def test_global_batchnorm_is_batchnorm_in_one_process():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 1), torch.nn.BatchNorm3d(3))
    x = torch.randn(4, 2, 3, 5, 5)
    expected = net(x)
    keys = list(net.state_dict())
    sync_batchnorm(net)
    assert isinstance(net[1], GlobalBatchNorm) and list(net.state_dict()) == keys
    assert torch.equal(net(x), expected)


def test_progressive_schedule():
    assert [progressive_stage(s, 10, 5, 8) for s in (0, 9, 10, 14, 15, 100)] == [0, 0, 1, 1, 2, 7]
    assert progressive_stage(0, -1, 5, 8) == 7


# -------------------------------------------------------------------- stages
def first_and_last(run_dir: Path, name: str) -> tuple[float, float]:
    values = [m[f"train/{name}"] for m in metrics(run_dir) if f"train/{name}" in m]
    return values[0], sum(values[-5:]) / 5


@pytest.mark.parametrize("stage, term", [("e4e", "l2"), ("sdic", "l2"), ("stylegan2", "d_loss")])
def test_a_fixed_batch_is_fitted(stage, term, tmp_path, generator_file, e4e_file):
    data = make_images(tmp_path / "fixed", 2)  # one batch, seen every step
    extra = stage_args(stage, generator_file, e4e_file) + ("data.hflip=false", "data.val_fraction=0")
    if stage == "sdic":  # the real LPIPS (AlexNet) is part of this run
        extra += ("optim.lr=3e-3",)
    if stage == "e4e":
        extra += ("latent_disc=0", "optim.name=adam", "optim.lr=1e-3")
    result = train(stage, stage_config(stage, tmp_path / "run", data, 30, *extra))
    first, last = first_and_last(result.run_dir, term)
    assert last < 0.8 * first, (first, last)


@pytest.mark.parametrize("stage", ["stylegan2", "e4e", "sdic"])
def test_resume_continues_bit_for_bit(stage, tmp_path, images, generator_file, e4e_file):
    extra = stage_args(stage, generator_file, e4e_file)
    full = train(stage, stage_config(stage, tmp_path / "full", images, 6, *extra))
    train(stage, stage_config(stage, tmp_path / "split", images, 3, *extra))
    resumed = train(stage, stage_config(stage, tmp_path / "split", images, 6, *extra), resume=True)
    assert full.step == resumed.step == 6
    a = checkpointing.load_training_state(full.run_dir / "checkpoints" / "last.pt")
    b = checkpointing.load_training_state(resumed.run_dir / "checkpoints" / "last.pt")
    for name, module in a["modules"].items():
        for key, tensor in module.items():
            assert torch.equal(tensor, b["modules"][name][key]), f"{name}.{key}"
    assert a["data"] == b["data"]
    assert torch.equal(a["random"]["state"], b["random"]["state"])


def test_exports_load_with_the_inference_tools(tmp_path, images, generator_file, e4e_file):
    import sdic

    sg = train("stylegan2", stage_config("stylegan2", tmp_path / "sg", images, 1, "stddev_group=2"))
    assert read_checkpoint(sg.run_dir / "stylegan2.pt").kind == "stylegan2"
    assert read_checkpoint(sg.run_dir / "stylegan2.safetensors").config == tiny()
    e4e = train("e4e", stage_config("e4e", tmp_path / "e4e", images, 1,
                                    f"generator={sg.run_dir / 'stylegan2.pt'}", "losses.identity=0"))
    assert read_checkpoint(e4e.run_dir / "e4e.pt").kind == "e4e"
    assert read_checkpoint(e4e.run_dir / "e4e.safetensors").kind == "e4e"
    result = train("sdic", stage_config("sdic", tmp_path / "sdic", images, 1, f"e4e={e4e.run_dir / 'e4e.pt'}",
                                        "losses.identity=0", "run.val_batches=1", "val_metrics=[mse, psnr]"))
    assert set(result.validation) == {"e4e/mse", "e4e/psnr", "sdic/mse", "sdic/psnr"}
    model = sdic.load(result.run_dir / "sdic.safetensors")
    assert model.invert(torch.zeros(1, 3, 64, 64)).image.shape == (1, 3, 32, 32)


def test_a_new_run_refuses_an_existing_run_folder(tmp_path, images):
    config = stage_config("stylegan2", tmp_path / "run", images, 1, "stddev_group=2")
    train("stylegan2", config)
    with pytest.raises(ResumeError, match="--resume"):
        train("stylegan2", config)
    changed = stage_config("stylegan2", tmp_path / "run", images, 2, "stddev_group=2", "r1=3")
    with pytest.raises(ResumeError, match="r1"):
        train("stylegan2", changed, resume=True)


class _StageFrom:
    """Wraps a stage, changing what it does from step ``at`` (subclasses override ``train_step``)."""

    def __init__(self, stage, at: int) -> None:
        self._stage, self._at = stage, at

    def __getattr__(self, name):
        return getattr(self._stage, name)


class _Poisoned(_StageFrom):
    """Wraps a stage: its loss term ``l2`` becomes NaN from step ``at``."""

    def train_step(self, batch, step):
        terms = self._stage.train_step(batch, step)
        if step + 1 >= self._at:
            terms["l2"] = terms["l2"] * math.nan
        return terms


def test_nan_stops_the_run_naming_the_term_and_keeps_the_checkpoint(tmp_path, images, e4e_file):
    config = stage_config("sdic", tmp_path / "run", images, 10, f"e4e={e4e_file}", "losses.identity=0",
                          "losses.lpips=0", "run.checkpoint_every=2")
    build = stage_builder("sdic")
    with pytest.raises(NonFiniteLossError, match=r"l2 = nan at step 5; .* checkpoint \(step 4, .*--resume optim.lr="):
        run_loop(config, lambda c, env: _Poisoned(build(c, env), at=5))
    state = checkpointing.load_training_state(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(t).all() for m in state["modules"].values() for t in m.values()
               if t.is_floating_point())
    assert "l2 = nan at step 5" in (tmp_path / "run" / "run.log").read_text()


def test_a_nan_before_the_first_checkpoint_claims_no_checkpoint(tmp_path, images):
    config = stage_config("stylegan2", tmp_path / "run", images, 10, "stddev_group=2", "run.checkpoint_every=5")
    build = stage_builder("stylegan2")
    with pytest.raises(NonFiniteLossError) as caught:
        run_loop(config, lambda c, env: _PoisonedTerm(build(c, env), at=2, term="d_loss"))
    message = str(caught.value)
    assert "no checkpoint was written yet (the first is at step 5)" in message and "is kept" not in message
    assert "g_optim.lr=0.002, d_optim.lr=0.002" in message
    assert checkpointing.last_checkpoint(tmp_path / "run") is None


class _PoisonedTerm(_StageFrom):
    """Wraps a stage: the loss term ``term`` becomes NaN from step ``at``."""

    def __init__(self, stage, at: int, term: str) -> None:
        super().__init__(stage, at)
        self._term = term

    def train_step(self, batch, step):
        terms = self._stage.train_step(batch, step)
        if step + 1 >= self._at:
            terms[self._term] = terms[self._term] * math.nan
        return terms


def _group_rates(state: dict, optimizer: str) -> list[float]:
    saved = state["optimizers"][optimizer]
    return [g["lr"] for g in saved.get("inner", saved)["param_groups"]]


def test_resume_takes_a_lowered_learning_rate_and_records_it(tmp_path, images):
    args = ("stddev_group=2", "r1_every=2", "g_optim.warmup_steps=10", "d_optim.warmup_steps=10")
    train("stylegan2", stage_config("stylegan2", tmp_path / "run", images, 2, *args))
    result = train("stylegan2", stage_config("stylegan2", tmp_path / "run", images, 4, *args, "d_optim.lr=5e-4",
                                             "run.precision=bf16"), resume=True)
    assert result.step == 4
    state = checkpointing.load_training_state(tmp_path / "run" / "checkpoints" / "last.pt")
    ratio = 2 / 3  # lazy R1 every 2 steps: StyleGAN2 scales the discriminator's rate by r/(r+1)
    warmup = (4 + 1) / 10  # the schedule's factor after 4 steps is kept
    assert _group_rates(state, "d") == [pytest.approx(5e-4 * ratio * warmup)]
    assert state["schedulers"]["d"]["base_lrs"] == [pytest.approx(5e-4 * ratio)]
    assert _group_rates(state, "g") == [pytest.approx(0.002 * (4 / 5) * warmup)]  # unchanged
    assert state["config"]["d_optim"]["lr"] == 5e-4 and state["config"]["run"]["precision"] == "bf16"
    log = (tmp_path / "run" / "run.log").read_text()
    assert "d_optim.lr: 0.002 -> 0.0005" in log and "run.precision: 'fp32' -> 'bf16'" in log
    assert "lr: 0.0005" in (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(ResumeError, match="d_optim.betas"):  # other optimiser settings stay fixed
        train("stylegan2", stage_config("stylegan2", tmp_path / "run", images, 5, *args, "d_optim.lr=5e-4",
                                        "d_optim.betas=[0.5, 0.9]"), resume=True)


def test_a_moved_run_folder_resumes_and_records_the_move(tmp_path, images):
    train("stylegan2", stage_config("stylegan2", tmp_path / "old", images, 2, "stddev_group=2"))
    shutil.move(tmp_path / "old", tmp_path / "new")
    result = train("stylegan2", stage_config("stylegan2", tmp_path / "new", images, 3, "stddev_group=2"), resume=True)
    assert result.step == 3
    state = checkpointing.load_training_state(tmp_path / "new" / "checkpoints" / "last.pt")
    assert state["config"]["run"]["out"] == str(tmp_path / "new")
    assert f"run.out: '{tmp_path / 'old'}' -> '{tmp_path / 'new'}'" in (tmp_path / "new" / "run.log").read_text()


class _Interrupted(_StageFrom):
    """Wraps a stage: sends itself SIGINT during step ``at`` (as Ctrl-C would)."""

    def train_step(self, batch, step):
        if step + 1 == self._at:
            os.kill(os.getpid(), signal.SIGINT)
        return self._stage.train_step(batch, step)


def test_ctrl_c_saves_after_the_current_step_and_resume_finishes(tmp_path, images):
    config = stage_config("stylegan2", tmp_path / "run", images, 6, "stddev_group=2", "run.checkpoint_every=100")
    build = stage_builder("stylegan2")
    result = run_loop(config, lambda c, env: _Interrupted(build(c, env), at=2))
    assert result.stopped and result.step == 2
    assert checkpointing.load_training_state(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2
    assert train("stylegan2", config, resume=True).step == 6


class _GroupTerminated(_StageFrom):
    """Wraps a stage: during step ``at``, SIGTERM to itself and its DataLoader workers, as a
    scheduler pre-empting the job (or ``kill -- -PGID``) sends it to the whole process group."""

    def train_step(self, batch, step):
        if step + 1 == self._at:
            workers = multiprocessing.active_children()
            assert workers, "the run was meant to have DataLoader workers"
            # from another process, as the scheduler's (a worker quits quietly when its parent asks)
            subprocess.run(["kill", "-TERM", *(str(p.pid) for p in workers)], check=True)
            time.sleep(0.5)  # let an unprotected worker die before the trainer's own signal
            os.kill(os.getpid(), signal.SIGTERM)
        return self._stage.train_step(batch, step)


def test_sigterm_to_the_process_group_saves_despite_dataloader_workers(tmp_path, images):
    config = stage_config("stylegan2", tmp_path / "run", images, 6, "stddev_group=2", "run.checkpoint_every=100",
                          "data.workers=1")
    build = stage_builder("stylegan2")
    result = run_loop(config, lambda c, env: _GroupTerminated(build(c, env), at=2))
    assert result.stopped and result.step == 2
    assert checkpointing.load_training_state(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2
    assert train("stylegan2", config, resume=True).step == 6


# ------------------------------------------------------------------------ CLI
def test_cli_trains_from_a_config_file(tmp_path, images, capsys):
    from sdic.cli.main import main

    root = Path(__file__).resolve().parents[1]
    args = ["train", "stylegan2", str(root / "configs" / "stylegan2_tiny.yaml"), f"data.path={images}",
            f"run.out={tmp_path / 'run'}", "run.steps=2", "run.progress=false", "run.tensorboard=false"]
    assert main(args + ["--print-config"]) == 0
    assert "steps: 2" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "finished at step 2" in out and "stylegan2.safetensors" in out
    assert main(args) == 2  # exists: needs --resume
    assert "--resume" in capsys.readouterr().err
    assert main(args[:-3] + ["run.steps=3", "--resume", "run.progress=false", "run.tensorboard=false"]) == 0


def test_all_shipped_configs_parse():
    root = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(root.glob("*.yaml")):
        stage = path.name.split("_")[0]
        config = C.load(stage, path)
        if stage == "stylegan2":
            C.resolve_model(config.model)


# ------------------------------------------------------ multi-process (torchrun)
# On top of STAGE_ARGS: StyleGAN2 with an EMA half-life of one image and e4e with 100x its
# learning rates, so that one step moves g_ema and the encoder by far more than a float32 ulp
# of their weights; e4e starts with one W+ delta (the delta regulariser is on) and a code pool
# smaller than the global batch (its random replacements happen in the first step).
DDP_ARGS = ("run.device=cpu", "run.threads=1", "run.val_batches=0")
DDP_STAGE_ARGS = {"stylegan2": ("ema_kimg=0.001",),
                  "e4e": ("progressive_start=0", "w_pool=2", "optim.lr=1e-2", "latent_disc_lr=2e-3"),
                  "sdic": ()}
# Allowed ||2 processes - 1 process|| / ||change made by the step||, per module, optimiser and
# stage state (plus 1 float32 ulp per stored value). In float64 the three stages agree to ~1e-12
# (checked with the generator's float32 casts patched out), so what is left is float32 round-off,
# of the size the 1-process run shows when only its thread count changes. Measured over seeds 0-3:
# StyleGAN2 <= 1.5e-4, e4e <= 6.5e-4, SDIC <= 6e-2 (7e-3 at seed 0; the backward through DIPN's
# 2-D/3-D BatchNorm stack at initialisation is ill-conditioned). Injected faults give 0.3-2.4 in
# their worst group: gradients summed instead of averaged, per-process BatchNorm statistics
# (sync_batchnorm=false), per-process e4e code pools, contiguous instead of interleaved shards
# of the random draws.
DDP_TOLERANCE = {"stylegan2": 3e-3, "e4e": 5e-3, "sdic": 1e-1}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node N -m sdic.cli.main ARGS`` on this machine, rendezvous on 127.0.0.1."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's connections on the loopback too
    for _ in range(3):  # the free port may be taken between the check and the launch
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
                   "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "sdic.cli.main", *args]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the launcher and its workers
            process.communicate()
            raise
        result = subprocess.CompletedProcess(command, process.returncode, out, err)
        if result.returncode == 0 or "address already in use" not in err.lower():
            return result
    return result


def tensors(obj, prefix: str = ""):
    """(path, tensor) of every tensor in nested dicts/lists/tuples."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from tensors(value, f"{prefix}.{i}")


BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def grouped_states(checkpoint: dict) -> dict[str, dict[str, torch.Tensor]]:
    """The tensors of a training checkpoint by module, optimiser and stage state.

    A module's BatchNorm running statistics form a group of their own: their change in a
    step (momentum x batch statistics) is much larger than that of the weights.
    """
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for part in ("modules", "optimizers", "stage_state"):
        for name, state in checkpoint[part].items():
            for key, tensor in tensors(state):
                group = f"{part}.{name}"
                if part == "modules" and key.endswith(BN_STATISTICS):
                    group += " (BatchNorm statistics)"
                groups.setdefault(group, {})[key] = tensor
    return groups


def step_difference(start: dict[str, torch.Tensor], one: dict[str, torch.Tensor],
                    two: dict[str, torch.Tensor]) -> tuple[float, float, float]:
    """(||two - one||, ||one - start||, ||one||) over a group's floating tensors, in float64.

    State that did not exist before the step (optimiser moments, code pools) starts at 0.
    """
    keys = [key for key, tensor in one.items() if tensor.is_floating_point()]

    def flat(group: dict[str, torch.Tensor]) -> torch.Tensor:
        zero = torch.zeros((), dtype=torch.float64)
        return torch.cat([(group[k].double() if k in group else zero).expand_as(one[k]).flatten() for k in keys])

    a, b, before = flat(one), flat(two), flat(start)
    return float((b - a).norm()), float((a - before).norm()), float(a.norm())


@pytest.mark.filterwarnings("ignore:run.steps=.* ends at progressive stage")
@pytest.mark.parametrize("stage", ["stylegan2", "e4e", "sdic"])
def test_two_processes_step_like_one_process_with_twice_the_batch(stage, tmp_path, images, generator_file,
                                                                   e4e_file):
    """One step under torchrun (2 gloo processes x batch 2) = one step of one process x batch 4."""
    extra = stage_args(stage, generator_file, e4e_file) + DDP_ARGS + DDP_STAGE_ARGS[stage]
    launched = torchrun(2, ["train", stage, *stage_overrides(tmp_path / "two", images, 1, *extra, batch=2)])
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "finished at step 1" in launched.stdout
    threads = torch.get_num_threads()
    try:
        train(stage, stage_config(stage, tmp_path / "start", images, 0, *extra, batch=4))
        train(stage, stage_config(stage, tmp_path / "one", images, 1, *extra, batch=4))
    finally:
        torch.set_num_threads(threads)
    start, one, two = (checkpointing.load_training_state(tmp_path / run / "checkpoints" / "last.pt")
                       for run in ("start", "one", "two"))
    assert (one["step"], two["step"], one["world_size"], two["world_size"]) == (1, 1, 1, 2)
    assert one["data"] == two["data"]  # the same images, in the same order
    assert torch.equal(one["random"]["state"], two["random"]["state"])  # the same random draws
    start, one, two = grouped_states(start), grouped_states(one), grouped_states(two)
    assert one.keys() == two.keys()
    eps = torch.finfo(torch.float32).eps
    for group in one:
        assert one[group].keys() == two[group].keys(), group
        for key, tensor in one[group].items():
            if not tensor.is_floating_point():
                assert torch.equal(tensor, two[group][key]), f"{group}.{key}"
        difference, change, size = step_difference(start.get(group, {}), one[group], two[group])
        assert change > 0, f"{group}: the step changed nothing"
        # round-off in the step, plus the rounding of the stored float32 values (<= 1 ulp per element)
        allowed = DDP_TOLERANCE[stage] * change + eps * size
        assert difference <= allowed, (f"{group}: 2 processes differ from 1 by {difference / change:.2e} of the "
                                       f"step's change (allowed {allowed / change:.2e})")


def test_align_prepares_faces_once_and_skips_photos_without_one(tmp_path):
    from sdic.training.data import align_folder, aligned_config

    photos = tmp_path / "photos"
    photos.mkdir()
    faces = Path(__file__).parent / "data" / "faces"
    shutil.copy(faces / "astronaut.jpg", photos / "astronaut.jpg")
    shutil.copy(faces / "no_face.png", photos / "no_face.png")
    with pytest.warns(UserWarning, match="no_face.png: skipped"):
        out = align_folder(photos, tmp_path / "aligned", 64)
    assert [p.name for p in sorted(out.iterdir())] == ["astronaut.png"]
    assert Image.open(out / "astronaut.png").size == (64, 64)
    stamp = (out / "astronaut.png").stat().st_mtime_ns
    with pytest.warns(UserWarning):
        align_folder(photos, out, 64)  # a second call keeps the finished file
    assert (out / "astronaut.png").stat().st_mtime_ns == stamp
    with pytest.warns(UserWarning):
        config = aligned_config(C.DataConfig(path=str(photos), align=True), tmp_path / "run", 64, DistContext())
    assert config.path == str(tmp_path / "run" / "aligned" / "train") and config.val_path == ""
    assert (tmp_path / "run" / "aligned" / "train" / "astronaut.png").is_file()
    assert aligned_config(C.DataConfig(path=str(photos)), tmp_path / "run", 64, DistContext()).path == str(photos)


def test_resume_accepts_options_added_later_at_their_defaults():
    from sdic.training.loop import config_differences

    defaults = C.to_plain(C.StyleGAN2Config())
    current = C.to_plain(C.StyleGAN2Config())
    saved = C.to_plain(C.StyleGAN2Config())
    del saved["data"]["align"]  # a checkpoint written before data.align existed
    assert config_differences(saved, current, defaults) == []
    current["data"]["align"] = True
    assert config_differences(saved, current, defaults) == ["data.align: None -> True"]
    current["data"]["align"] = False
    current["r1"] = 1.0
    assert config_differences(saved, current, defaults) == [f"r1: {saved['r1']!r} -> 1.0"]


def test_ema_rampup_limits_the_half_life_early_and_not_late():
    from sdic.training.stylegan2 import ema_beta

    # 16 images per step, 10 kimg half-life, ramp-up 0.05: after 100 steps the half-life is
    # 0.05 * 1.6 kimg = 80 images, so beta = 0.5 ** (16 / 80)
    assert ema_beta(16, 10.0, 99, 0.05) == pytest.approx(0.5 ** (16 / 80))
    assert ema_beta(16, 10.0, 10**6, 0.05) == ema_beta(16, 10.0) == pytest.approx(0.5 ** (16 / 10000))
    assert ema_beta(16, 10.0, 99, None) == ema_beta(16, 10.0)


def test_stylegan2_init_starts_the_generator_from_a_trained_one(tmp_path, images, generator_file):
    """With lr 0 nothing moves, so the exported g_ema is the init file's generator, tensor for tensor."""
    result = train("stylegan2", stage_config("stylegan2", tmp_path / "run", images, 1, "stddev_group=2",
                                             f"init={generator_file}", "g_optim.lr=0", "path_reg=0"))
    ours = read_checkpoint(result.run_dir / "stylegan2.safetensors").part("generator.")
    source = read_checkpoint(generator_file).part("generator.")
    assert ours.keys() == source.keys()
    for name, tensor in source.items():
        assert torch.equal(ours[name], tensor), name


def test_stylegan2_init_of_another_architecture_is_refused_by_name(tmp_path, images):
    from sdic.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="model:"):  # the bundled faces64 generator is no tiny one
        train("stylegan2", stage_config("stylegan2", tmp_path / "run", images, 1, "stddev_group=2", "init=default"))


def test_e4e_init_starts_the_encoder_from_a_trained_one(tmp_path, images, generator_file, e4e_file):
    result = train("e4e", stage_config("e4e", tmp_path / "run", images, 1, f"generator={generator_file}",
                                       f"init={e4e_file}", "optim.lr=0", "losses.identity=0", "run.batch_size=2"))
    ours = read_checkpoint(result.run_dir / "e4e.safetensors").part("encoder.")
    source = read_checkpoint(e4e_file).part("encoder.")
    for name, tensor in source.items():
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):  # BN statistics do move
            assert torch.equal(ours[name], tensor), name
