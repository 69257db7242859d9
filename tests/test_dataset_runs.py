"""Invert once, edit later: inversion files from the CLI, --from-latents, shards, resume, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sdic import SDICModel
from sdic.checkpoints import save_model
from sdic.cli.main import main
from sdic.config import tiny
from sdic.files import temporary_name
from sdic.inversion import Inversion
from test_training import free_port, torchrun


def make_photos(folder: Path, count: int, size: int = 40) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"p{k:03d}.png")
    return folder


def index(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def test_edit_from_saved_latents_equals_the_one_shot_edit(tiny_checkpoint, tmp_path, capsys):
    photos = make_photos(tmp_path / "photos", 3)
    direction = tmp_path / "d.pt"
    torch.save(torch.randn(1, 32, generator=torch.Generator().manual_seed(0)), direction)
    assert main(["invert", str(tiny_checkpoint), str(photos), "-o", str(tmp_path / "inv"),
                 "--save-latents", "safetensors"]) == 0
    inv = Inversion.load(tmp_path / "inv" / "p001.safetensors")
    assert inv.sources == (str(photos / "p001.png"),) and len(inv) == 1
    for flag in (["--from-latents", str(tmp_path / "inv")], [str(photos)]):
        out = tmp_path / ("later" if flag[0] == "--from-latents" else "oneshot")
        assert main(["edit", str(tiny_checkpoint), *flag, "-o", str(out), "--direction", str(direction),
                     "--factor", "3"]) == 0
    for k in range(3):
        later, oneshot = tmp_path / "later" / f"p00{k}_d+3.png", tmp_path / "oneshot" / f"p00{k}_d+3.png"
        assert later.read_bytes() == oneshot.read_bytes()
    assert [r["status"] for r in index(tmp_path / "later" / "index.jsonl")] == ["written"] * 3


def test_from_latents_skips_bad_files_and_refuses_another_model(tiny_checkpoint, tmp_path, capsys):
    make_photos(tmp_path / "photos", 1)
    main(["invert", str(tiny_checkpoint), str(tmp_path / "photos"), "-o", str(tmp_path / "inv"),
          "--save-latents", "safetensors"])
    (tmp_path / "inv" / "broken.safetensors").write_bytes(b"\x00" * 20)
    capsys.readouterr()
    code = main(["edit", str(tiny_checkpoint), "--from-latents", str(tmp_path / "inv"), "-o", str(tmp_path / "e"),
                 "--direction", "age"])
    assert code == 2  # tiny has no bundled directions: a usage error before any work
    direction = tmp_path / "d.pt"
    torch.save(torch.zeros(1, 32), direction)
    code = main(["edit", str(tiny_checkpoint), "--from-latents", str(tmp_path / "inv"), "-o", str(tmp_path / "e"),
                 "--direction", str(direction)])
    captured = capsys.readouterr()
    assert code == 1 and "broken.safetensors: not a readable inversion file" in captured.err
    assert (tmp_path / "e" / "p000_d+1.png").is_file()
    torch.manual_seed(5)
    other = tmp_path / "other.safetensors"
    save_model(SDICModel(tiny()).eval(), other, tiny())
    code = main(["edit", str(other), "--from-latents", str(tmp_path / "inv" / "p000.safetensors"),
                 "-o", str(tmp_path / "e2"), "--direction", str(direction)])
    captured = capsys.readouterr()
    assert code == 1 and "made by model 'tiny32'" in captured.err and "tiny.safetensors" in captured.err
    assert "other.safetensors" in captured.err
    assert not (tmp_path / "e2" / "p000_d+1.png").exists()


def test_rerun_skips_finished_files_and_redoes_the_rest(tiny_checkpoint, tmp_path, capsys):
    photos = make_photos(tmp_path / "photos", 4)
    out = tmp_path / "out"
    args = ["invert", str(tiny_checkpoint), str(photos), "-o", str(out), "--save-latents", "safetensors"]
    assert main(args) == 0
    (out / "p001.safetensors").rename(temporary_name(out / "p001.safetensors"))  # killed before the rename
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(photos / "p002.png")  # the input changed
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    assert main(args + ["--batch-size", "2"]) == 0
    assert "(2 finished earlier, skipped)" in capsys.readouterr().out
    statuses = {Path(r["file"]).name: r["status"] for r in index(out / "index.jsonl")}
    assert statuses == {"p000.png": "existing", "p001.png": "written", "p002.png": "written", "p003.png": "existing"}
    for name in ("p000.png", "p000.safetensors", "p003.png", "p003.safetensors"):
        assert (out / name).stat().st_mtime_ns == stamps[name]
    assert (out / "p002.png").stat().st_mtime_ns != stamps["p002.png"]
    assert not list(out.glob(".*.tmp*"))


def test_shards_are_disjoint_and_cover_the_inputs(tiny_checkpoint, tmp_path):
    photos = make_photos(tmp_path / "photos", 5)
    for k in range(2):
        assert main(["invert", str(tiny_checkpoint), str(photos), "-o", str(tmp_path / "out"),
                     "--save-latents", "safetensors", "--shard", f"{k}/2"]) == 0
    first = [Path(r["file"]).name for r in index(tmp_path / "out" / "index-0-of-2.jsonl")]
    second = [Path(r["file"]).name for r in index(tmp_path / "out" / "index-1-of-2.jsonl")]
    assert first == ["p000.png", "p002.png", "p004.png"] and second == ["p001.png", "p003.png"]
    assert len(list((tmp_path / "out").glob("*.safetensors"))) == 5
    with pytest.raises(SystemExit):
        main(["invert", str(tiny_checkpoint), str(photos), "-o", str(tmp_path / "x"), "--shard", "2/2"])


def outputs(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: load_file(str(p)) for p in sorted(folder.glob("*.safetensors"))}


def test_torchrun_two_processes_give_the_files_of_one(tiny_checkpoint, tmp_path):
    photos = make_photos(tmp_path / "photos", 5)
    args = ["invert", str(tiny_checkpoint), str(photos), "--save-latents", "safetensors", "--batch-size", "2"]
    result = torchrun(2, [*args, "-o", str(tmp_path / "two")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("wrote results for 5 of 5 images") == 1  # the summary comes from rank 0 only
    assert main([*args, "-o", str(tmp_path / "one")]) == 0
    two, one = outputs(tmp_path / "two"), outputs(tmp_path / "one")
    assert sorted(two) == sorted(one) == [f"p00{k}.safetensors" for k in range(5)]
    for name in one:
        for field, tensor in one[name].items():
            assert torch.allclose(two[name][field], tensor, atol=1e-5), (name, field)
        png = name.replace(".safetensors", ".png")
        assert np.abs(pixels(tmp_path / "two" / png) - pixels(tmp_path / "one" / png)).max() <= 1
    records = index(tmp_path / "two" / "index.jsonl")
    assert [r["file"] for r in records] == [str(photos / f"p00{k}.png") for k in range(5)]
    assert {r["status"] for r in records} == {"written"}


def test_torchrun_killed_midway_resumes(tiny_checkpoint, tmp_path):
    photos = make_photos(tmp_path / "photos", 80, size=24)
    out = tmp_path / "out"
    args = ["-m", "sdic.cli.main", "invert", str(tiny_checkpoint), str(photos), "-o", str(out),
            "--save-latents", "safetensors"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while len(list(out.glob("*.safetensors"))) < 6 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGTERM)  # torchrun stops its workers (a pre-empted job)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}
    time.sleep(1)
    assert len(list(out.glob("*.safetensors"))) == len(before), "a worker survived the launcher"
    assert 6 <= len(before) < 80, "the run was not stopped midway"
    for name in before:  # what was written before the kill is complete
        assert len(Inversion.load(out / name)) == 1
    result = torchrun(2, args[2:])
    assert result.returncode == 0, result.stderr[-3000:]
    records = index(out / "index.jsonl")
    assert len(records) == 80
    existing = {Path(r["output"]).name for r in records if r["status"] == "existing"}
    assert existing == set(before)
    assert {r["status"] for r in records} == {"existing", "written"}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors") if p.name in before} == before
    assert len(list(out.glob("*.safetensors"))) == 80
    assert not list(out.glob(".*.tmp*"))  # what the killed run left half-written is gone
