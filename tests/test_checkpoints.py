"""Checkpoint reading: kinds, unused tensors, clear errors for bad files, our format."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

import sdic
from conftest import REFERENCE
from sdic import SDICModel
from sdic.checkpoints import (
    UNUSED_PREFIXES,
    CheckpointError,
    load_into,
    read_checkpoint,
    read_native,
    save_model,
)
from sdic.config import tiny
from sdic.testing import authors_checkpoint, read_manifest


def _manifest_keys(name: str) -> list[str]:
    return list(read_manifest(REFERENCE / name)["tensors"])


@pytest.mark.parametrize("manifest", ["sdic_ffhq_manifest.json", "sdic_cars_manifest.json"])
def test_manifest_tensors_are_all_used_or_explicitly_dropped(manifest):
    keys = [k for k in _manifest_keys(manifest) if k != "latent_avg"]
    from sdic.checkpoints import _rename, infer_config

    tensors, dropped, unknown = _rename({k: torch.empty(0) for k in keys})
    assert unknown == []
    # Exactly the never-used layers (docs/architecture.md, "Checkpoint names") are dropped.
    assert all(k.startswith(UNUSED_PREFIXES) for k in dropped)
    assert {p for p in UNUSED_PREFIXES if any(k.startswith(p) for k in dropped)} == set(UNUSED_PREFIXES)
    entries = read_manifest(REFERENCE / manifest)["tensors"]
    state = {k: torch.empty(entries[k]["shape"]) for k in keys}
    config = infer_config(state, {"dataset_type": "cars_encode" if "cars" in manifest else "ffhq_encode"})
    expected = SDICModel(config).state_dict()
    assert set(tensors) | {"latent_avg"} == set(expected)
    for key, value in _rename(state)[0].items():
        assert tuple(value.shape) == tuple(expected[key].shape), key


def test_cars_checkpoint_loads_and_inverts_a_car_frame(tmp_path):
    manifest = read_manifest(REFERENCE / "sdic_cars_manifest.json")
    path = tmp_path / "sdic_cars.pt"
    torch.save(authors_checkpoint(manifest, 0, {"dataset_type": "cars_encode"}), path)
    model = sdic.load(path)
    assert model.config.name == "cars" and model.config.n_latent == 16
    car = torch.rand(1, 3, 192, 256) * 2 - 1  # the 3:4 car frame at the input size
    inv = model.invert(car)
    assert inv.image.shape == (1, 3, 512, 512)
    assert inv.latents.shape == (1, 16, 512)
    assert inv.to_pil()[0].size == (512, 384)  # content rows 64..447
    # The photo fills the canvas rows 32..223, the rest is not photo.
    assert torch.equal(inv.input[:, :, 32:224], car)


def test_missing_file():
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint("/nonexistent/sdic_ffhq.pt")


def test_html_page_instead_of_checkpoint(tmp_path):
    path = tmp_path / "sdic_ffhq.pt"
    path.write_text("<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head></html>")
    with pytest.raises(CheckpointError, match="HTML page.*quota"):
        read_checkpoint(path)


def test_truncated_checkpoint(tmp_path):
    full = tmp_path / "full.pt"
    torch.save({"g_ema": {"style.1.weight": torch.randn(256, 256)}}, full)
    data = full.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(cut)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(path)


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": _Exploit(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refused.*run code"):
        read_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_of_the_wrong_kind(tmp_path):
    from sdic.networks import Generator

    config = tiny()
    generator = Generator(config.generator, config.tap_resolution)
    path = tmp_path / "stylegan2.pt"
    torch.save({"g_ema": generator.state_dict(), "d": {}}, path)
    assert read_checkpoint(path).kind == "stylegan2"
    with pytest.raises(CheckpointError, match="not an SDIC checkpoint but a stylegan2 file"):
        sdic.load(path)


def test_unrecognised_layout(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointError, match="unrecognised checkpoint layout"):
        read_checkpoint(path)


def test_load_into_names_missing_unexpected_and_mismatched_tensors():
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    tensors = dict(module.state_dict())
    tensors["0.weight"] = torch.zeros(5, 3)
    del tensors["1.bias"]
    tensors["2.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_into(module, tensors, "file.pt")
    message = str(info.value)
    assert "0.weight: file [5, 3] vs model [4, 3]" in message
    assert "missing tensors: 1.bias" in message
    assert "unexpected tensors: 2.weight [1]" in message


def test_native_format_round_trip(tmp_path, tiny_checkpoint):
    model = sdic.load(tiny_checkpoint)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    copy_path = save_model(model, tmp_path / "copy.safetensors", model.config)
    again = sdic.load(copy_path)
    assert again.config == model.config
    assert torch.equal(model.invert(x).image, again.invert(x).image)
    metadata = json.loads(read_native(copy_path).config.to_json())
    assert metadata["generator"]["size"] == 32


def test_half_storage_keeps_small_tensors_exact_and_loads_as_float32(tmp_path, tiny_checkpoint):
    from sdic.checkpoints import HALF_MIN_NUMEL

    model = sdic.load(tiny_checkpoint)
    path = save_model(model, tmp_path / "half.safetensors", model.config, half=True)
    stored = load_file(str(path))
    state = model.state_dict()
    for name, tensor in stored.items():
        large = state[name].is_floating_point() and state[name].numel() >= HALF_MIN_NUMEL
        assert tensor.dtype == (torch.float16 if large else state[name].dtype), name
        if not large:
            assert torch.equal(tensor, state[name]), name
    assert any(t.dtype == torch.float16 for t in stored.values())
    again = sdic.load(path)
    assert all(p.dtype == torch.float32 for p in again.parameters())
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    error = (again.invert(x).image - model.invert(x).image).abs().max()
    assert 0 < error < 0.05  # float16 rounding of the weights, not garbage


def test_native_shape_mismatch_names_the_tensor(tmp_path, tiny_checkpoint):
    tensors = load_file(str(tiny_checkpoint))
    from safetensors import safe_open

    with safe_open(str(tiny_checkpoint), framework="pt") as handle:
        metadata = handle.metadata()
    tensors["dicn.att.1.weight"] = torch.zeros(3, 3, 3, 3)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=metadata)
    with pytest.raises(CheckpointError, match=r"dicn\.att\.1\.weight: file \[3, 3, 3, 3\] vs model \[32, 32, 3, 3\]"):
        sdic.load(bad)


def test_safetensors_without_sdic_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError, match="without sdic metadata"):
        sdic.load(path)


def test_unknown_bundled_name():
    with pytest.raises(CheckpointError, match="not a bundled model name"):
        sdic.load("no-such-model")


def test_direction_files_from_cuda_machines_load_on_cpu():
    # The published .pt files were saved from CUDA tensors; our bundled copies are safetensors.
    from sdic.editing import named

    assert named("age", "ffhq").vector.device.type == "cpu"
