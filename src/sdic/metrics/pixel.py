"""Pixel metrics: MSE, PSNR and SSIM, per image, on [-1, 1] image tensors.

Conventions (the SDIC / pSp / e4e evaluation literature):

* Inputs are float tensors ``[B, 3, H, W]`` (or ``[3, H, W]``) in [-1, 1], the
  generator's output range. With ``clamp=True`` (default) values are first clamped
  to [-1, 1], as happens when the images are saved as 8-bit files.
* **MSE** is computed on the [-1, 1] values (mean over C, H, W), as pSp's
  ``calc_losses_on_images.py`` does on images normalised with mean 0.5, std 0.5.
  It is therefore 4x the MSE on [0, 1] values.
* **PSNR** and **SSIM** map the inputs to [0, 1] (``(x + 1) / 2``) and use a data
  range of 1: ``PSNR = 10 log10(1 / MSE_[0,1])`` (``inf`` for identical images).
* **SSIM** follows Wang et al. (2004): 11x11 Gaussian window with sigma 1.5,
  ``K1 = 0.01``, ``K2 = 0.03``, population (not sample) covariances, computed on
  each channel over the "valid" window positions (no padding) and averaged over
  pixels and channels. This equals scikit-image's ``structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
  channel_axis=...)``.

All functions return one value per image (shape ``[B]``) and are differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError

__all__ = ["gaussian_window", "mse", "psnr", "ssim"]


def _prepare(x: torch.Tensor, y: torch.Tensor, clamp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape != y.shape:
        raise InputError(f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.ndim == 3:
        x, y = x[None], y[None]
    if x.ndim != 4:
        raise InputError(f"expected [B, C, H, W] or [C, H, W] tensors, got {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    y = y.to(x.dtype)
    if clamp:
        x, y = x.clamp(-1, 1), y.clamp(-1, 1)
    return x, y


def mse(x: torch.Tensor, y: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Per-image mean squared error on [-1, 1] values, shape ``[B]``."""
    x, y = _prepare(x, y, clamp)
    return ((x - y) ** 2).mean(dim=(1, 2, 3))


def psnr(x: torch.Tensor, y: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """Per-image PSNR in dB, inputs in [-1, 1] mapped to [0, 1], data range 1; shape ``[B]``."""
    x, y = _prepare(x, y, clamp)
    mse01 = (((x - y) / 2) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / mse01)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian window of ``size`` taps."""
    coords = torch.arange(size, dtype=dtype) - (size - 1) / 2
    window = torch.exp(-(coords**2) / (2 * sigma**2))
    return window / window.sum()


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    clamp: bool = True,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) on [-1, 1] inputs mapped to [0, 1]; shape ``[B]``."""
    x, y = _prepare(x, y, clamp)
    x = (x + 1) / 2
    y = (y + 1) / 2
    channels = x.shape[1]
    if min(x.shape[-2:]) < window_size:
        raise InputError(f"images must be at least {window_size}x{window_size} for SSIM")
    g = gaussian_window(window_size, sigma).to(device=x.device, dtype=x.dtype)
    gh = g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    gv = g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable, depthwise, "valid" positions
        t = F.conv2d(t, gh, groups=channels)
        return F.conv2d(t, gv, groups=channels)

    c1 = (k1 * 1.0) ** 2
    c2 = (k2 * 1.0) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x * mu_x
    syy = blur(y * y) - mu_y * mu_y
    sxy = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2)
    return (num / den).mean(dim=(1, 2, 3))
