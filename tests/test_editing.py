"""Editing directions: bundled data, InterFaceGAN and GANSpace arithmetic, chained edits."""

from __future__ import annotations

import pytest
import torch

from sdic import SDICModel, editing
from sdic.config import ffhq, tiny


def test_bundled_directions_load_with_published_shapes():
    assert editing.named("age", "ffhq").vector.shape == (512,)
    assert editing.named("pose", "ffhq").vector.shape == (18, 512)
    assert torch.isclose(editing.named("smile", "ffhq").vector.norm(), torch.tensor(1.0), atol=1e-4)
    cube = editing.named("cube", "cars")
    assert cube.components.shape == (80, 1, 512) and cube.stds.shape == (80,)
    assert set(editing.available("ffhq")) == {"age", "smile", "pose", "eyes", "beard", "lip"}


def test_unknown_direction_names_the_choices():
    with pytest.raises(ValueError, match="available: age, pose, smile"):
        editing.resolve("moustache", ffhq())


def test_linear_direction_shapes_are_checked():
    with pytest.raises(ValueError, match="does not fit"):
        editing.LinearDirection(torch.ones(7, 512)).apply(torch.zeros(2, 18, 512), 1.0)


def test_ganspace_sets_the_component_to_the_strength():
    torch.manual_seed(0)
    direction = editing.named("eyes", "ffhq")  # component 54, rows 7..8, strength 20
    latents = torch.randn(3, 18, 512)
    edited = direction.apply(latents, 1.0)
    comp = direction.components[54][0]
    std = direction.stds[54]
    # Hand computation of the published rule on each sample's first row.
    for b in range(3):
        coordinate = ((latents[b, 0] - direction.mean[0]) @ comp) / std
        expected = latents[b].clone()
        expected[7:8] += (20.0 - coordinate) * comp * std
        assert torch.allclose(edited[b], expected, atol=1e-4)
    untouched = [r for r in range(18) if r != 7]
    assert torch.equal(edited[:, untouched], latents[:, untouched])


def test_ganspace_factor_scales_the_strength():
    direction = editing.named("beard", "ffhq")
    latents = torch.randn(1, 18, 512)
    half = direction.apply(latents, 0.5)
    manual = editing.GANSpaceDirection(direction.mean, direction.components, direction.stds, 58, 7, 9, -10.0)
    assert torch.allclose(half, manual.apply(latents, 1.0))


def test_tensor_directions_of_every_published_shape():
    config = ffhq()
    latents = torch.zeros(1, 18, 512)
    for shape in [(512,), (1, 512), (18, 512), (1, 18, 512)]:
        out = editing.resolve(torch.ones(shape), config).apply(latents, 2.0)
        assert torch.allclose(out, torch.full_like(latents, 2.0))


def test_chained_edits_equal_one_combined_edit():
    torch.manual_seed(0)
    model = SDICModel(tiny()).eval()
    inv = model.invert(torch.rand(1, 3, 64, 64) * 2 - 1)
    direction = torch.randn(model.config.generator.style_dim)
    twice = model.edit(model.edit(inv, direction, 1.0), direction, 2.0)
    once = model.edit(inv, direction, 3.0)
    assert torch.allclose(twice.latents, once.latents, atol=1e-5)
    assert torch.allclose(twice.image, once.image, atol=1e-4)
    assert not torch.allclose(once.image, inv.image, atol=1e-3)


def test_load_direction_gives_the_vector_and_the_files_metadata(tmp_path):
    from sdic.editing.learn.interfacegan import save_direction

    vector = torch.randn(32)
    path = save_direction(tmp_path / "smile.safetensors", vector, {"target": "smile", "factor_range": [-2, 3]})
    direction = editing.load_direction(path)
    assert torch.equal(direction.vector, vector) and direction.metadata["factor_range"] == [-2, 3]
    assert direction.metadata["target"] == "smile" and direction.metadata["format"] == "sdic-direction"
    torch.save(vector[None], tmp_path / "plain.pt")  # [1, D]: squeezed like a tensor given to edit
    plain = editing.load_direction(tmp_path / "plain.pt")
    assert torch.equal(plain.vector, vector) and plain.metadata == {}
    latents = torch.zeros(2, 8, 32)
    assert torch.equal(plain.apply(latents, 2.0), editing.resolve(vector[None], tiny()).apply(latents, 2.0))
    assert editing.resolve(direction, tiny()) is direction
