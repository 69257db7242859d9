"""Numerical parity with outputs of the authors' code (stand-in weights, seed 0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REFERENCE

LATENT_TOL = 1e-4
IMAGE_TOL = 1e-3


def _pool(image: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(image, 256)[0]


def _outputs(inv) -> dict[str, torch.Tensor]:
    return {
        "codes": inv.codes[0],
        "init_image_256": _pool(inv.initial_image),
        "discrepancy": inv.discrepancy[0],
        "G7_mean_per_channel": inv.tap[0].mean((1, 2)),
        "G7_slice": inv.tap[0, :8],
        "F_mean_per_channel": inv.feature[0].mean((1, 2)),
        "F_slice": inv.feature[0, :8],
        "Wp": inv.latents[0],
        "image_256": _pool(inv.image),
        "image_full_corner": inv.image[0, :, :64, :64],
    }


def _tolerance(key: str) -> float:
    return LATENT_TOL if key in ("codes", "Wp", "edit_latents") else IMAGE_TOL


@pytest.fixture(scope="module")
def inversion(ffhq_model):
    reference = np.load(REFERENCE / "ref_ffhq_seed0_astronaut_inversion.npz")
    return ffhq_model.invert(torch.from_numpy(reference["input"])[None])


def test_inversion_matches_authors_code(inversion):
    reference = np.load(REFERENCE / "ref_ffhq_seed0_astronaut_inversion.npz")
    outputs = _outputs(inversion)
    assert set(outputs) == set(reference.files) - {"input"}
    errors = {k: float((v - torch.from_numpy(reference[k])).abs().max()) for k, v in outputs.items()}
    print("max abs error per tensor:", errors)
    for key, error in errors.items():
        assert error < _tolerance(key), f"{key}: max abs error {error:.3g}"
    assert inversion.image.shape == (1, 3, 1024, 1024)


def test_age_edit_matches_authors_code(ffhq_model, inversion):
    reference = np.load(REFERENCE / "ref_ffhq_seed0_astronaut_age+3.npz")
    edited = ffhq_model.edit(inversion, "age", 3.0)
    outputs = {
        "edit_latents": edited.latents[0],
        "image_256": _pool(edited.image),
        "image_full_corner": edited.image[0, :, :64, :64],
    }
    for key, value in outputs.items():
        error = float((value - torch.from_numpy(reference[key])).abs().max())
        print(key, error)
        assert error < _tolerance(key), f"{key}: max abs error {error:.3g}"
    direction = torch.from_numpy(reference["edit_direction"])
    assert torch.allclose(edited.latents - inversion.latents, 3.0 * direction, atol=1e-5)


def test_ir_se50_embedding_parity(tmp_path):
    from sdic.checkpoints import load_into, read_checkpoint
    from sdic.networks import ArcFaceIRSE50
    from sdic.testing import read_manifest, standin_state

    path = tmp_path / "model_ir_se50.pth"
    torch.save(standin_state(read_manifest(REFERENCE / "ir_se50_manifest.json"), 0), path)
    checkpoint = read_checkpoint(path)
    assert checkpoint.kind == "ir_se50"
    network = ArcFaceIRSE50()
    load_into(network, checkpoint.tensors, str(path))
    network.eval()
    reference = np.load(REFERENCE / "ref_ir_se50_seed0.npz")
    for name in ("astronaut", "coffee"):
        with torch.no_grad():
            embedding = network.embed_ffhq256(torch.from_numpy(reference[f"{name}_input"])[None])[0]
        error = float((embedding - torch.from_numpy(reference[f"{name}_embedding"])).abs().max())
        assert error < 1e-5, f"{name}: {error}"


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two [-1, 1] images mapped to [0, 1]."""
    mse = (((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2) ** 2).mean()
    return float(10 * torch.log10(1 / mse))


def test_bf16_stays_close_to_fp32(ffhq_model, inversion):
    """bf16 autocast: the final image within 35 dB PSNR of fp32, outputs back in fp32."""
    reference = np.load(REFERENCE / "ref_ffhq_seed0_astronaut_inversion.npz")
    fast = ffhq_model.invert(torch.from_numpy(reference["input"])[None], precision="bf16")
    assert fast.image.dtype == torch.float32 and fast.image.is_contiguous()
    assert _psnr(fast.image, inversion.image) >= 35.0
    assert float((fast.latents - inversion.latents).abs().max()) < 0.1
    edited = ffhq_model.edit(fast, "age", 3.0, precision="bf16")
    assert _psnr(edited.image, ffhq_model.edit(inversion, "age", 3.0).image) >= 35.0


def test_batch_matches_the_authors_sample_by_sample(ffhq_model, inversion):
    """A batch (DIPN, DICN and the layers after the tap run one sample at a time
    at inference; encoder and early layers batched) gives each sample's own result."""
    reference = np.load(REFERENCE / "ref_ffhq_seed0_astronaut_inversion.npz")
    photo = torch.from_numpy(reference["input"])
    batch = ffhq_model.invert(torch.stack([photo, photo.flip(-1)]))
    for key, value in _outputs(inversion).items():
        batched = _outputs(batch)[key]
        error = float((batched - torch.from_numpy(reference[key])).abs().max())
        assert error < _tolerance(key), f"{key}: max abs error {error:.3g} in a batch of 2"
        assert torch.allclose(batched, value, atol=_tolerance(key) / 10)
    mirrored = ffhq_model.invert(photo.flip(-1)[None])
    assert torch.allclose(batch.image[1:], mirrored.image, atol=1e-4)
    assert torch.allclose(batch.latents[1:], mirrored.latents, atol=1e-5)
