"""Writing the authors' layouts is the exact inverse of reading them; kinds are named and checked."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REFERENCE
from sdic import SDICModel
from sdic.checkpoints import (
    KINDS,
    MODEL_PARTS,
    UNUSED_PREFIXES,
    CheckpointError,
    Kind,
    from_layout,
    read_checkpoint,
    require_kind,
    save_layout,
    save_tensors,
    to_layout,
)
from sdic.config import tiny
from sdic.testing import authors_checkpoint, read_manifest


@pytest.fixture(scope="module")
def model_tensors() -> dict[str, torch.Tensor]:
    """Every tensor of a tiny SDIC model, random (seeded) so that a mixed-up name shows."""
    torch.manual_seed(0)
    state = SDICModel(tiny()).state_dict()
    generator = torch.Generator().manual_seed(1)
    return {k: torch.randn(v.shape, generator=generator).to(v.dtype) if v.is_floating_point() else v.clone()
            for k, v in state.items()}


def _of_kind(tensors: dict[str, torch.Tensor], kind: Kind) -> dict[str, torch.Tensor]:
    return {k: v for k, v in tensors.items() if k.startswith(KINDS[kind].parts)}


def _assert_same(read: dict[str, torch.Tensor], written: dict[str, torch.Tensor]) -> None:
    assert sorted(read) == sorted(written)
    for key, value in written.items():
        assert read[key].dtype == value.dtype and torch.equal(read[key], value), key


@pytest.mark.parametrize("kind", [Kind.SDIC, Kind.E4E, Kind.STYLEGAN2])
def test_authors_layout_round_trip(tmp_path, model_tensors, kind):
    tensors = _of_kind(model_tensors, kind)
    if kind == Kind.STYLEGAN2:  # our trainers add the generator's mean W to rosinality's layout
        tensors["latent_avg"] = model_tensors["latent_avg"][:1].expand(tiny().n_latent, -1).clone()
    path = save_layout(tmp_path / f"{kind}.pt", kind, tensors, tiny())
    checkpoint = read_checkpoint(path)
    assert checkpoint.kind is kind and not checkpoint.native and checkpoint.dropped == []
    assert checkpoint.config == tiny()
    _assert_same(checkpoint.tensors, tensors)


def test_stylegan2_layout_is_rosinalitys(model_tensors):
    tensors = _of_kind(model_tensors, Kind.STYLEGAN2)
    w = model_tensors["latent_avg"][0]
    obj = to_layout(Kind.STYLEGAN2, {**tensors, "latent_avg": w.expand(tiny().n_latent, -1)}, tiny(),
                    extra={"d": {"x": torch.zeros(1)}})
    assert sorted(obj) == ["d", "g_ema", "latent_avg", "sdic_config"]
    assert sorted(obj["g_ema"]) == sorted(k.removeprefix("generator.") for k in tensors)
    assert torch.equal(obj["latent_avg"], w)  # one W, as the trainer has always stored it
    distinct = model_tensors["latent_avg"]  # rows that differ are kept as they are
    assert torch.equal(to_layout(Kind.STYLEGAN2, {**tensors, "latent_avg": distinct}, tiny())["latent_avg"], distinct)
    with pytest.raises(CheckpointError, match="only generator tensors"):
        to_layout(Kind.STYLEGAN2, model_tensors, tiny())


def test_e4e_layout_carries_the_authors_opts(model_tensors):
    obj = to_layout(Kind.E4E, _of_kind(model_tensors, Kind.E4E), tiny())
    assert {k.split(".")[0] for k in obj["state_dict"]} == {"encoder", "decoder"}
    assert obj["opts"]["stylegan_size"] == tiny().generator.size
    assert obj["opts"]["dataset_type"] == "ffhq_encode" and obj["opts"]["start_from_latent_avg"] is True
    assert obj["latent_avg"].shape == (tiny().n_latent, tiny().generator.style_dim)


def test_writing_back_an_authors_sdic_file_restores_it_but_the_unused_layers():
    """The authors' own layout is the reference: read, write, compare with the original (in memory)."""
    manifest = read_manifest(REFERENCE / "sdic_cars_manifest.json")
    original = authors_checkpoint(manifest, 0, {"dataset_type": "cars_encode"})
    checkpoint = from_layout(original, "sdic_cars.pt")
    written = to_layout(checkpoint.kind, checkpoint.tensors, checkpoint.config)
    kept = {k: v for k, v in original["state_dict"].items() if not k.startswith(UNUSED_PREFIXES)}
    assert len(kept) < len(original["state_dict"])
    assert list(written["state_dict"]) == list(kept)
    assert all(torch.equal(written["state_dict"][k], v) for k, v in kept.items())
    assert torch.equal(written["latent_avg"], original["latent_avg"])
    assert written["opts"]["dataset_type"] == "cars_encode"
    again = from_layout(written, "again.pt")  # the embedded config is the inferred preset
    assert again.config == checkpoint.config and again.config.name == "cars"


def test_native_round_trip_of_each_kind(tmp_path, model_tensors):
    for kind in (Kind.SDIC, Kind.E4E, Kind.STYLEGAN2):
        tensors = _of_kind(model_tensors, kind)
        checkpoint = read_checkpoint(save_tensors(tensors, tmp_path / f"{kind}.safetensors", tiny(), kind))
        assert checkpoint.kind is kind and checkpoint.native and checkpoint.config == tiny()
        assert sorted(checkpoint.tensors) == sorted(tensors)
        assert all(torch.equal(checkpoint.tensors[k], v) for k, v in tensors.items())


def test_unknown_kind_in_our_metadata_is_named(tmp_path, tiny_checkpoint):
    from safetensors import safe_open

    with safe_open(str(tiny_checkpoint), framework="pt") as handle:
        metadata = handle.metadata()
    path = tmp_path / "odd.safetensors"
    save_file(load_file(str(tiny_checkpoint)), str(path), metadata={**metadata, "kind": "vae"})
    with pytest.raises(CheckpointError, match=r"unknown model kind 'vae' \(known: sdic, e4e, stylegan2, ir_se50\)"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="unknown model kind 'vae'"):
        save_tensors({}, tmp_path / "x.safetensors", tiny(), kind="vae")


def test_kinds_are_strings_and_say_what_they_hold(tiny_checkpoint):
    assert Kind.E4E == "e4e" and f"{Kind.STYLEGAN2}" == "stylegan2" and str(Kind.IR_SE50) == "ir_se50"
    assert set(KINDS) == set(Kind)
    assert all(set(info.parts) <= set(MODEL_PARTS) for info in KINDS.values())
    checkpoint = read_checkpoint(tiny_checkpoint)
    assert require_kind(checkpoint, (Kind.SDIC,), "an SDIC checkpoint") is checkpoint
    with pytest.raises(CheckpointError, match=r"tiny.safetensors: not a generator file but a sdic file; it holds a whole"):
        require_kind(checkpoint, (Kind.STYLEGAN2,), "a generator file")
