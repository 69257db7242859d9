"""Inversions as data: a batch (len, indexing, slicing, cat), a file (save/load), and model checks."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import sdic
from sdic import SDICModel
from sdic.checkpoints.bundled import bundled_path
from sdic.config import tiny
from sdic.errors import InputError
from sdic.inversion import TENSOR_FIELDS, IncompatibleModelError, Inversion, InversionFileError


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return sdic.load(tiny_checkpoint)


@pytest.fixture(scope="module")
def batch(model) -> Inversion:
    generator = torch.Generator().manual_seed(1)
    return model.invert(torch.rand(3, 3, 64, 64, generator=generator) * 2 - 1)


def rows_equal(inv: Inversion, other: Inversion, rows: list[int]) -> bool:
    return all(torch.equal(getattr(inv, name), getattr(other, name)[rows]) for name in TENSOR_FIELDS)


def test_indexing_slicing_and_concatenation(batch):
    assert len(batch) == 3
    assert len(batch[2]) == 1 and rows_equal(batch[2], batch, [2])
    assert rows_equal(batch[-1], batch, [2])
    assert rows_equal(batch[1:3], batch, [1, 2])
    assert rows_equal(batch[[2, 0]], batch, [2, 0])
    assert rows_equal(batch[torch.tensor([1])], batch, [1])
    assert rows_equal(batch[np.int64(1)], batch, [1])
    assert rows_equal(batch[torch.tensor([True, False, True])], batch, [0, 2])
    with pytest.raises(IndexError):
        batch[3]
    joined = Inversion.cat([batch[2], batch[0:2]])
    assert rows_equal(joined, batch, [2, 0, 1])
    assert [len(row) for row in batch] == [1, 1, 1]
    assert joined.model_digest == batch.model_digest


def test_to_pil_only_for_image_fields(batch):
    assert [p.size for p in batch.to_pil("discrepancy")] == [(64, 64)] * 3
    assert batch.to_pil("initial_image")[0].size == (32, 32)
    for field in ("codes", "latents", "tap", "feature"):
        with pytest.raises(InputError, match="only the image fields"):
            batch.to_pil(field)


def test_file_round_trip_edits_exactly_like_the_original(model, batch, tmp_path):
    path = batch[1:3].save(tmp_path / "two.safetensors")
    loaded = Inversion.load(path)
    assert rows_equal(loaded, batch, [1, 2])
    assert loaded.model_digest == model.digest and loaded.model_name == "tiny32"
    assert loaded.model_file == str(model.source)
    direction = torch.randn(1, 32, generator=torch.Generator().manual_seed(2))
    original, again = model.edit(batch[1:3], direction, 2.0), model.edit(loaded, direction, 2.0)
    for name in TENSOR_FIELDS:
        assert torch.equal(getattr(original, name), getattr(again, name)), name
    assert not list(tmp_path.glob(".*.tmp*"))  # written through a temporary file, renamed
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # the user's umask, not safetensors' 0600


def test_file_records_the_input_files(model, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "face.png"
    Image.fromarray(rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)).save(path)
    inv = model.invert([path, torch.zeros(3, 64, 64)])
    assert inv.sources == (str(path), None)
    import hashlib

    assert inv.source_sha256[0] == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = Inversion.load(inv.save(tmp_path / "x.safetensors"))
    assert loaded.sources == (str(path), None) and loaded[1].sources == (None,)


def test_bad_files_are_refused_with_a_reason(model, batch, tmp_path):
    with pytest.raises(InversionFileError, match="no such file"):
        Inversion.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(InversionFileError, match="not a readable inversion file"):
        Inversion.load(tmp_path / "junk.safetensors")
    with pytest.raises(InversionFileError, match="not an sdic inversion"):
        Inversion.load(bundled_path("default"))  # a model file, not an inversion


def test_edit_refuses_an_inversion_of_another_model_naming_both(model, batch):
    torch.manual_seed(1)
    other = SDICModel(tiny()).eval()  # same shapes, other weights
    with pytest.raises(IncompatibleModelError) as error:
        other.edit(batch, torch.zeros(1, 32))
    message = str(error.value)
    assert model.digest[:12] in message and other.digest[:12] in message and "tiny.safetensors" in message


def test_edit_checks_shapes_of_inversions_without_a_digest(batch):
    bigger = SDICModel(tiny(64)).eval()  # 10 latents instead of 8
    anonymous = dataclasses.replace(batch, model_digest=None)
    with pytest.raises(IncompatibleModelError, match=r"latents are \[8, 32\].*needs \[10, 32\]"):
        bigger.edit(anonymous, torch.zeros(1, 32))


def test_digest_follows_the_weights(model):
    fresh = SDICModel(tiny()).eval()
    fresh.load_state_dict(model.state_dict())
    assert fresh.digest == model.digest
    with torch.no_grad():
        next(fresh.dicn.parameters()).add_(1e-3)
    assert fresh.digest != model.digest


def test_numpy_arrays_and_tensors_of_other_sizes(model):
    rng = np.random.default_rng(3)
    array = rng.integers(0, 255, (80, 72, 3), dtype=np.uint8)
    picture = Image.fromarray(array)
    from_pil = model.prepare(picture)
    assert torch.equal(model.prepare(array), from_pil)  # HWC uint8 is read like a PIL image
    chw = from_pil[0].numpy()
    assert torch.equal(model.prepare(chw), from_pil)  # CHW float in [-1, 1] like a tensor
    # A tensor of another size is resized like a photo: bilinear, antialiased (PIL's filter).
    tensor = torch.from_numpy(array).permute(2, 0, 1).float() / 127.5 - 1
    resized = model.prepare(tensor)
    assert resized.shape == (1, 3, 64, 64)
    assert (resized - from_pil).abs().mean() < 0.01 and (resized - from_pil).abs().max() < 0.1
    reference = F.interpolate(tensor[None], size=(64, 64), mode="bilinear", antialias=True)
    assert torch.allclose(resized, reference)
    with pytest.raises(InputError, match="uint8 array must be HWC"):
        model.prepare(np.zeros((3, 64), np.uint8)[None, None])
    with pytest.raises(InputError, match="float array must be CHW"):
        model.prepare(np.zeros((64, 64, 3), np.float32))
