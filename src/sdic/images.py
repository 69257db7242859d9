"""Image I/O and framing: files and PIL images to model inputs, tensors back to PIL.

Faces fill the whole square input canvas. Cars occupy the content rows of the
generator frame (rows 64..447 of 512, i.e. 384x512); their photos are resized
to the same 3:4 shape (192x256 at the 256 input size) and letterboxed into the
canvas, so that the photo, the reconstruction and the 64x64 tap are aligned
pixel for pixel. The encoder sees only the content rows, as the authors' car
encoder was trained; outside them DIPN sees the reconstruction itself, so no
discrepancy is predicted where there is no photo.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import SDICError

if TYPE_CHECKING:
    from .config import SDICConfig

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


class ImageReadError(SDICError, ValueError):
    """An input image could not be read."""


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB, with a clear error for missing or unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: not a readable image ({error})") from None


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor [3, H, W] in [-1, 1] (mean 0.5, std 0.5 normalisation)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1) * 2.0 - 1.0


def tensor_to_pil(tensor: torch.Tensor) -> list[Image.Image]:
    """Float tensor [B, 3, H, W] (or [3, H, W]) in [-1, 1] -> clamped 8-bit PIL images."""
    if tensor.ndim == 3:
        tensor = tensor[None]
    array = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in array]


def discrepancy_to_pil(tensor: torch.Tensor) -> list[Image.Image]:
    """Visualise discrepancy maps: each image min-max normalised to the full range."""
    flat = tensor.detach().float().flatten(1)
    lo = flat.min(dim=1).values[:, None, None, None]
    hi = flat.max(dim=1).values[:, None, None, None]
    scaled = (tensor - lo) / (hi - lo).clamp_min(1e-8)
    return tensor_to_pil(scaled * 2 - 1)


def content_rows_at(config: SDICConfig, size: int) -> tuple[int, int]:
    """Content rows at a square resolution ``size`` (the whole frame for faces)."""
    if config.content_rows is None:
        return 0, size
    top, bottom = config.content_rows
    scale = size / config.generator.size
    return int(round(top * scale)), int(round(bottom * scale))


def crop_rows(tensor: torch.Tensor, rows: tuple[int, int] | None) -> torch.Tensor:
    """Cut a generator-resolution tensor to its content rows (no-op when ``rows`` is None)."""
    if rows is None:
        return tensor
    scale = tensor.shape[-2] / _frame_size(rows)
    top, bottom = int(round(rows[0] * scale)), int(round(rows[1] * scale))
    return tensor[..., top:bottom, :]


def _frame_size(rows: tuple[int, int]) -> int:
    # The content rows are centred in a square frame: top margin == bottom margin.
    return rows[1] + rows[0]


def resize_pil(image: Image.Image, config: SDICConfig) -> Image.Image:
    """Resize a photo to the content shape of the input canvas (PIL bilinear, antialiased)."""
    size = config.input_size
    top, bottom = content_rows_at(config, size)
    return image.resize((size, bottom - top), Image.BILINEAR)


def to_canvas(x: Any, config: SDICConfig) -> torch.Tensor:
    """Build the [B, 3, S, S] input canvas from tensors, PIL images, paths or a list of them."""
    if isinstance(x, (list, tuple)):
        if not x:
            raise ValueError("no images given")
        return torch.cat([to_canvas(item, config) for item in x])
    if isinstance(x, (str, Path)):
        x = load_image(x)
    if isinstance(x, Image.Image):
        x = pil_to_tensor(resize_pil(x, config))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"cannot use {type(x).__name__} as an image; give a tensor, PIL image or path")
    return _tensor_canvas(x, config)


def _tensor_canvas(x: torch.Tensor, config: SDICConfig) -> torch.Tensor:
    if x.ndim == 3:
        x = x[None]
    size = config.input_size
    top, bottom = content_rows_at(config, size)
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] != size or x.shape[-2] not in (size, bottom - top):
        shapes = f"[B,3,{size},{size}]" + (f" or [B,3,{bottom - top},{size}]" if top else "")
        raise ValueError(f"expected an image tensor of shape {shapes}, got {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected a float tensor in [-1, 1], got dtype {x.dtype}")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.01 or hi > 1.01:
        raise ValueError(f"image values must lie in [-1, 1] (got {lo:.3g}..{hi:.3g}); "
                         "map [0, 255] images with x / 127.5 - 1")
    if x.shape[-2] == size:
        return x
    canvas = x.new_zeros(x.shape[0], 3, size, size)
    canvas[:, :, top:bottom] = x
    return canvas


def encoder_view(canvas: torch.Tensor, config: SDICConfig) -> torch.Tensor:
    """The part of the canvas the encoder sees (its content rows)."""
    top, bottom = content_rows_at(config, canvas.shape[-2])
    return canvas[:, :, top:bottom]


def fill_outside_content(canvas: torch.Tensor, reconstruction: torch.Tensor, config: SDICConfig) -> torch.Tensor:
    """Photo inside the content rows, reconstruction outside (identity for faces)."""
    top, bottom = content_rows_at(config, canvas.shape[-2])
    if (top, bottom) == (0, canvas.shape[-2]):
        return canvas
    out = reconstruction.clone()
    out[:, :, top:bottom] = canvas[:, :, top:bottom]
    return out


def list_images(inputs: list[str]) -> list[Path]:
    """Expand files, folders (non-recursive, sorted) and glob patterns to image paths."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path().glob(item)) if not path.is_absolute() else sorted(
                Path(path.anchor).glob(str(path.relative_to(path.anchor))))
            found += [p for p in matches if p.is_file()]
        else:
            found.append(path)
    return found
