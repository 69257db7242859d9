"""Paste an edited FFHQ-aligned face back into its original photo.

The edited square is inverse-warped with the alignment's :class:`~.ffhq.FFHQTransform` and blended
through a feathered mask defined in aligned coordinates. Photo pixels where the mask is zero
(everything outside the inset aligned square) are returned bit-for-bit unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .ffhq import AlignedFace, FFHQTransform
from .landmarks import ImageLike, read_rgb

EditedImage = Image.Image | np.ndarray | torch.Tensor


def _smoothstep(t: torch.Tensor) -> torch.Tensor:
    t = t.clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def face_mask(size: int, inset: float = 0.06, feather: float = 0.1, ellipse: bool = False) -> torch.Tensor:
    """Soft blend mask (size x size, values in [0, 1]) in aligned-image coordinates.

    Square kind: 0 within ``inset`` of the aligned square's border, rising smoothly to 1 over
    ``feather`` (both as fractions of the side). Ellipse kind: an ellipse around the face of the
    FFHQ framing (centre (0.5, 0.55), semi-axes 0.32 x 0.40, shrunk by ``inset``), feathered inward.
    """
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    ty, tx = torch.meshgrid(t, t, indexing="ij")
    if ellipse:
        r = torch.sqrt(((tx - 0.5) / (0.32 - inset)) ** 2 + ((ty - 0.55) / (0.40 - inset)) ** 2)
        return _smoothstep((1.0 - r) * (0.32 - inset) / feather)
    d = torch.minimum(torch.minimum(tx, 1 - tx), torch.minimum(ty, 1 - ty))
    return _smoothstep((d - inset) / feather)


def _as_chw255(edited: EditedImage) -> torch.Tensor:
    """Edited face as a float 3xSxS tensor in [0, 255] (tensors are taken as RGB in [-1, 1])."""
    if isinstance(edited, torch.Tensor):
        x = edited.detach().float().cpu()
        x = x[0] if x.ndim == 4 else x
        return ((x.clamp(-1, 1) + 1) * 127.5)[:3]
    rgb, _ = read_rgb(edited)
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float()


def _region(transform: FFHQTransform) -> tuple[int, int, int, int]:
    """Photo pixel box (x0, y0, x1, y1), exclusive end, covering the aligned square."""
    w, h = transform.photo_size
    lo = np.floor(transform.quad.min(0)).astype(int) - 1
    hi = np.ceil(transform.quad.max(0)).astype(int) + 2
    return max(lo[0], 0), max(lo[1], 0), min(hi[0], w), min(hi[1], h)


def _sample_grid(transform: FFHQTransform, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """grid_sample grid (1, H, W, 2) giving each photo pixel of ``box`` its aligned position."""
    x0, y0, x1, y1 = box
    ys, xs = np.mgrid[y0:y1, x0:x1]
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    uv = transform.to_aligned(pts, size)
    grid = (uv + 0.5) / size * 2.0 - 1.0
    return torch.from_numpy(grid.astype(np.float32)).view(1, y1 - y0, x1 - x0, 2)


def _prepare(
    edited: EditedImage, mask: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Face (1, 3, n, n) in [0, 255] and mask (1, 1, n, n), antialiased down to about ``scale`` px."""
    face = _as_chw255(edited)[None]
    size = face.shape[-1]
    alpha = face_mask(size) if mask is None else mask.detach().float().cpu()
    alpha = alpha.reshape(1, 1, size, size)
    target = max(round(scale), 8)
    if target < size:
        face = F.interpolate(face, size=(target, target), mode="bicubic", antialias=True)
        alpha = F.interpolate(alpha, size=(target, target), mode="bilinear", antialias=True)
    return face, alpha


def paste_back(
    photo: ImageLike,
    aligned: AlignedFace | FFHQTransform,
    edited: EditedImage,
    mask: torch.Tensor | None = None,
) -> Image.Image:
    """Blend an edited aligned face (any resolution) back into the full photo.

    ``edited`` may be a PIL image / uint8 array (RGB) or a float tensor in [-1, 1] (3xSxS or
    1x3xSxS). ``mask`` (SxS in [0, 1], aligned coordinates) defaults to :func:`face_mask`.
    Colours are resampled bicubically, after an antialiased downsize to the face's photo size.
    """
    transform = aligned.transform if isinstance(aligned, AlignedFace) else aligned
    rgb, _ = read_rgb(photo)
    face, alpha = _prepare(edited, mask, transform.scale)
    x0, y0, x1, y1 = box = _region(transform)
    if x1 <= x0 or y1 <= y0:
        return Image.fromarray(rgb)
    grid = _sample_grid(transform, box, face.shape[-1])
    colour = F.grid_sample(face, grid, mode="bicubic", padding_mode="border", align_corners=False)
    a = F.grid_sample(alpha, grid, mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)
    a = a.numpy()[..., None]
    region = rgb[y0:y1, x0:x1].astype(np.float32)
    blended = region + a * (colour[0].permute(1, 2, 0).numpy() - region)
    out = rgb.copy()
    out[y0:y1, x0:x1] = np.where(a > 0, np.clip(np.rint(blended), 0, 255), region)
    return Image.fromarray(out)
