"""Differentiable augmentation (DiffAugment; Zhao et al., "Differentiable Augmentation for
Data-Efficient GAN Training", NeurIPS 2020).

The same random, differentiable transformations are applied to real and generated images
every time the discriminator sees them (its step, R1 and the generator's step), so the
discriminator cannot memorise a small training set and the generator still receives gradients
through the augmentation. Policies (any comma-separated subset, applied in this order):

* ``color``: brightness ``x + (u - 0.5) s``, saturation ``(x - mean_c) (1 + (2u - 1) s) + mean_c``,
  contrast ``(x - mean) (1 + (u - 0.5) s) + mean``;
* ``translation``: an integer shift of up to ``s/8`` of the size in each direction, zeros
  shifted in;
* ``cutout``: a zeroed square of side ``s/2`` of the size at a random centre.

``u`` are per-image uniform draws and ``s`` the strength: 1 gives the published ranges, 0 the
identity. The random numbers come from a caller-supplied ``rand(*shape)`` (uniform in [0, 1)),
so training draws them from its shared, checkpointed generator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InputError

__all__ = ["POLICIES", "parse_policy", "diff_augment"]

POLICIES = ("color", "translation", "cutout")
Rand = Callable[..., torch.Tensor]


def parse_policy(text: str) -> tuple[str, ...]:
    """``"color,translation"`` -> ``("color", "translation")``; unknown names are a ValueError."""
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise InputError(f"unknown DiffAugment policy {', '.join(unknown)}; choose from {', '.join(POLICIES)}")
    return names


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], strength: float, rand: Rand) -> torch.Tensor:
    """Augment a batch ``[B, C, H, W]``; differentiable with respect to ``x``."""
    if strength == 0 or not policy:
        return x
    for name in POLICIES:
        if name in policy:
            x = _OPS[name](x, strength, rand)
    return x


def _color(x: torch.Tensor, s: float, rand: Rand) -> torch.Tensor:
    b = x.shape[0]
    x = x + (_u(rand, x, b) - 0.5) * s
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (1 + (2 * _u(rand, x, b) - 1) * s) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (1 + (_u(rand, x, b) - 0.5) * s) + mean


def _u(rand: Rand, x: torch.Tensor, b: int) -> torch.Tensor:
    return rand(b, 1, 1, 1).to(x.dtype)


def _offsets(rand: Rand, b: int, count: int) -> torch.Tensor:
    """Per-image integers uniform in [0, count), from uniform draws ([B, 2]: rows, columns)."""
    return (rand(b, 2) * count).long().clamp_(max=count - 1)


def _translation(x: torch.Tensor, s: float, rand: Rand) -> torch.Tensor:
    b, _, h, w = x.shape
    shift = int(min(h, w) * 0.125 * s + 0.5)
    if shift == 0:
        return x
    offset = _offsets(rand, b, 2 * shift + 1) - shift  # [-shift, shift]
    padded = torch.nn.functional.pad(x, (shift, shift, shift, shift))
    rows = torch.arange(h, device=x.device)[None, :] + shift - offset[:, :1]  # [B, H]
    cols = torch.arange(w, device=x.device)[None, :] + shift - offset[:, 1:]  # [B, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous(memory_format=_format(x))


def _cutout(x: torch.Tensor, s: float, rand: Rand) -> torch.Tensor:
    b, _, h, w = x.shape
    size_h, size_w = int(h * 0.5 * s + 0.5), int(w * 0.5 * s + 0.5)
    if size_h == 0 or size_w == 0:
        return x
    centre = torch.cat([_offsets(rand, b, h + 1 - size_h % 2)[:, :1],
                        _offsets(rand, b, w + 1 - size_w % 2)[:, 1:]], dim=1)
    rows = torch.arange(h, device=x.device)[None, :] - (centre[:, :1] - size_h // 2)  # [B, H]
    cols = torch.arange(w, device=x.device)[None, :] - (centre[:, 1:] - size_w // 2)
    inside = ((rows >= 0) & (rows < size_h))[:, :, None] & ((cols >= 0) & (cols < size_w))[:, None, :]
    return x * (~inside)[:, None].to(x.dtype)


def _format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


_OPS = {"color": _color, "translation": _translation, "cutout": _cutout}
