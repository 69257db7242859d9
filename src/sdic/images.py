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

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError, InputTypeError, MissingFileError, SDICError

if TYPE_CHECKING:
    from .config import SDICConfig

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
GLOB_CHARACTERS = "*?["


class ImageReadError(SDICError, ValueError):
    """An input image could not be read."""


class AnimatedImageWarning(UserWarning):
    """An animated image (GIF, APNG, WebP) was read: only its first frame is used."""


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as 8-bit RGB, upright (EXIF orientation applied), with clear errors.

    16-bit and float images are scaled to 8 bits (see :func:`to_rgb`); an animated image
    gives its first frame and an :class:`AnimatedImageWarning`.
    """
    path = Path(path)
    _check_image_path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if getattr(image, "n_frames", 1) > 1:
                warnings.warn(f"{path}: animated ({image.n_frames} frames); using the first frame",
                              AnimatedImageWarning, stacklevel=2)
            return to_rgb(ImageOps.exif_transpose(image), str(path))
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"{path}: not read, too many pixels for a safe decode "
                             f"(a decompression bomb?): {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        if isinstance(error, ImageReadError):
            raise
        raise ImageReadError(f"{path}: not a readable image ({error})") from None


def _check_image_path(path: Path) -> None:
    if path.is_file():
        return
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image file; expand folders and globs "
                             "with sdic.images.list_images([...]) and pass the list")
    if any(ch in str(path) for ch in GLOB_CHARACTERS):
        raise ImageReadError(f"{path}: no such file (a glob pattern? expand it with "
                             "sdic.images.list_images([...]) and pass the list)")
    raise ImageReadError(f"{path}: no such file")


def to_rgb(image: Image.Image, label: str = "the image") -> Image.Image:
    """8-bit RGB from any PIL mode; 16-bit and float images are scaled, not clipped.

    Pillow's own conversion clips 16-bit values to 255 (a white picture) and truncates
    float values in [0, 1] to 0 (a black one). 16-bit (and 32-bit integer) greyscale is
    read as 0..65535; float greyscale as [0, 1] when its values lie there, else [0, 255].
    """
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        grey = _scaled_grey(np.asarray(image), image.mode, label)
        return Image.fromarray(grey).convert("RGB")  # uint8 [H, W]: mode L
    return image.convert("RGB")


def _scaled_grey(array: np.ndarray, mode: str, label: str) -> np.ndarray:
    array = array.astype(np.float64)
    if mode == "F":
        if not np.isfinite(array).all():
            raise ImageReadError(f"{label}: the float image holds NaN or infinite values")
        lo, hi = float(array.min()), float(array.max())
        if lo < 0 or hi > 255:
            raise ImageReadError(f"{label}: float image values lie in {lo:.4g}..{hi:.4g}; "
                                 "expected [0, 1] or [0, 255]")
        scale = 255.0 if hi <= 1.0 else 1.0
    else:
        array = array.clip(0, 65535)
        scale = 255.0 / 65535.0
    return (array * scale).round().clip(0, 255).astype(np.uint8)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> float RGB tensor [3, H, W] in [-1, 1] (mean 0.5, std 0.5 normalisation)."""
    array = np.asarray(to_rgb(image), dtype=np.float32) / 255.0
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
    """Build the [B, 3, S, S] input canvas from tensors, arrays, PIL images, paths or a list of them."""
    if isinstance(x, (list, tuple)):
        if not x:
            raise InputError("no images given (an empty list)")
        return torch.cat([to_canvas(item, config) for item in x])
    if isinstance(x, (str, Path)):
        x = load_image(x)
    if isinstance(x, np.ndarray):
        x = _from_numpy(x)
        if isinstance(x, list):
            return to_canvas(x, config)
    if isinstance(x, Image.Image):
        x = pil_to_tensor(resize_pil(to_rgb(x), config))
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(f"cannot use {type(x).__name__} as an image; give a tensor, PIL image or path")
    return _tensor_canvas(x, config)


def _from_numpy(array: np.ndarray) -> Image.Image | list[Image.Image] | torch.Tensor:
    """HWC (or BHWC) uint8 arrays become PIL images; CHW (or BCHW) float arrays become tensors."""
    if array.dtype == np.uint8:
        if array.ndim == 3 and array.shape[-1] in (3, 4) or array.ndim == 2:
            return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")
        if array.ndim == 4 and array.shape[-1] in (3, 4):
            return [Image.fromarray(np.ascontiguousarray(a)).convert("RGB") for a in array]
        raise InputError(f"a uint8 array must be HWC (height, width, 3), got shape {list(array.shape)}")
    if np.issubdtype(array.dtype, np.floating):
        if array.ndim in (3, 4) and array.shape[-3] == 3:
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        raise InputError(f"a float array must be CHW (3, height, width) in [-1, 1], got shape {list(array.shape)}")
    raise InputError(f"arrays must be uint8 HWC or float CHW, got dtype {array.dtype}")


def input_paths(x: Any) -> list[Path | None] | None:
    """The file of every row of an input (None for rows from tensors, arrays or PIL images)."""
    items = x if isinstance(x, (list, tuple)) else [x]
    if not any(isinstance(item, (str, Path, list, tuple)) for item in items):
        return None
    paths: list[Path | None] = []
    for item in items:
        if isinstance(item, (str, Path)):
            paths.append(Path(item))
        elif isinstance(item, (list, tuple)):
            paths += input_paths(item) or [None] * len(item)
        else:
            paths += [None] * (item.shape[0] if getattr(item, "ndim", 0) == 4 else 1)
    return paths


def _tensor_canvas(x: torch.Tensor, config: SDICConfig) -> torch.Tensor:
    """Check a tensor image and frame it; other sizes are resized to the content shape first."""
    if x.ndim == 3:
        x = x[None]
    size = config.input_size
    top, bottom = content_rows_at(config, size)
    if x.ndim != 4 or x.shape[1] != 3 or min(x.shape[-2:]) == 0:
        raise InputError(f"expected an image tensor of shape [B,3,H,W] or [3,H,W], got {list(x.shape)}")
    if x.shape[0] == 0:
        raise InputError(f"no images given (an empty batch of shape {list(x.shape)})")
    if not x.is_floating_point():
        raise InputError(f"expected a float tensor in [-1, 1], got dtype {x.dtype}")
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise InputError(f"the image tensor holds {bad} NaN or infinite values; inputs must be finite, in [-1, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.01 or hi > 1.01:
        raise InputError(f"image values must lie in [-1, 1] (got {lo:.3g}..{hi:.3g}); "
                         "map [0, 255] images with x / 127.5 - 1")
    if tuple(x.shape[-2:]) not in ((size, size), (bottom - top, size)):
        # Like resize_pil: bilinear with antialiasing, to the content shape.
        x = torch.nn.functional.interpolate(x, size=(bottom - top, size), mode="bilinear",
                                            align_corners=False, antialias=True)
    if x.shape[-2] == size:
        return x
    return letterbox(x, size, (top, bottom))


def letterbox(content: torch.Tensor, size: int, rows: tuple[int, int]) -> torch.Tensor:
    """Content rows ``[..., C, bottom - top, size]`` placed in a black ``size`` x ``size`` canvas.

    The one letterboxing of the package (photos for the model, training images); the
    content itself when it fills the canvas (faces).
    """
    top, bottom = rows
    if (top, bottom) == (0, size):
        return content
    canvas = content.new_zeros(*content.shape[:-2], size, size)
    canvas[..., top:bottom, :] = content
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


def folder_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Image files (by suffix, case-insensitive) inside ``folder`` (and below it if ``recursive``).

    Sorted by their path relative to ``folder``; a missing folder is a :class:`MissingFileError`.
    The one image listing of the package: commands, FID folders, training sets, bundled samples.
    """
    root = Path(folder)
    if not root.is_dir():
        raise MissingFileError(f"{root}: no such image folder")
    entries = root.rglob("*") if recursive else root.iterdir()
    files = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files, folders (non-recursive, sorted) and glob patterns to image paths."""
    found: list[Path] = []
    for entry in inputs:
        item = str(entry)
        path = Path(item)
        if path.is_dir():
            found += folder_images(path)
        elif any(ch in item for ch in GLOB_CHARACTERS) and not path.is_file():
            matches = sorted(Path().glob(item)) if not path.is_absolute() else sorted(
                Path(path.anchor).glob(str(path.relative_to(path.anchor))))
            found += [p for p in matches if p.is_file()]
        else:
            found.append(path)
    return found
