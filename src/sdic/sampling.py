"""Images of a generator from seeds, in NVIDIA's conventions (``gen_images.py``).

Seed ``s`` gives ``z = np.random.RandomState(s).randn(1, z_dim)``, mapped with truncation
toward the generator's W average and synthesised with the chosen noise mode; pixels are
``clamp(x * 127.5 + 128, 0, 255)``. So the images of a converted NVIDIA pickle can be put
beside the ones NVIDIA's tools make from the same pickle.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .errors import InputError
from .networks import Generator

MAX_SEED = 2**32 - 1  # numpy's RandomState seeds
MAX_SEEDS = 1_000_000  # images per call: FID sets are 50k; 10^8 PNGs is a typo, not a request
TRUNCATION_RANGE = (-1.0, 2.0)  # beyond it images leave the generator's distribution entirely
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_seeds(text: str) -> list[int]:
    """``"0-15"``, ``"1,5,9"`` or ``"0-3,10"`` -> the seeds in order (an :class:`InputError` otherwise)."""
    seeds: list[int] = []
    for part in str(text).split(","):
        match = _RANGE.match(part.strip())
        if not match:
            raise InputError(f"--seeds {text!r}: {part.strip()!r} is not a seed or a range A-B "
                             "(examples: 0-15, 1,5,9, 0-3,10)")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise InputError(f"--seeds {text!r}: the range {part.strip()} ends before it starts")
        if last > MAX_SEED:
            raise InputError(f"--seeds {text!r}: seeds go up to {MAX_SEED}")
        if len(seeds) + last - first + 1 > MAX_SEEDS:
            raise InputError(f"--seeds {text!r}: more than {MAX_SEEDS:,} images; split the work into several calls")
        seeds.extend(range(first, last + 1))
    if len(set(seeds)) != len(seeds):
        repeated = sorted({s for s in seeds if seeds.count(s) > 1}) if len(seeds) < 10_000 else []
        raise InputError(f"--seeds {text!r}: a seed is listed twice{f' ({repeated[0]})' if repeated else ''}; "
                         "each seed gives one image")
    return seeds


def parse_truncation(text: str) -> float:
    """A ``truncation_psi`` in ``TRUNCATION_RANGE`` (1: none; 0: every image is the average; 0.5-0.8: the usual)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InputError(f"--trunc {text!r}: not a number (1 = no truncation, 0.7 = the usual)") from None
    if not math.isfinite(value):
        raise InputError(f"--trunc {text!r}: must be a finite number")
    low, high = TRUNCATION_RANGE
    if not low <= value <= high:
        raise InputError(f"--trunc {text!r}: outside {low:g}..{high:g} (1 = no truncation, 0.7 = the usual; "
                         "beyond that range the images no longer look like the generator's)")
    return value


def seed_z(seeds: list[int], z_dim: int) -> torch.Tensor:
    """z [N, z_dim] of each seed, as NVIDIA's tools draw it."""
    return torch.from_numpy(np.concatenate([np.random.RandomState(s).randn(1, z_dim) for s in seeds])).float()


@dataclass
class Samples:
    seeds: list[int]
    z: torch.Tensor  # [B, z_dim]
    ws: torch.Tensor  # [B, num_ws, w_dim]
    images: torch.Tensor  # [B, 3, R, R], float (about [-1, 1])


@torch.no_grad()
def generate(
    generator: Generator, seeds: list[int], truncation_psi: float = 1.0, noise_mode: str = "const",
    batch_size: int = 4,
) -> Iterator[Samples]:
    """The images of ``seeds``, ``batch_size`` at a time."""
    device = generator.input.input.device
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start:start + batch_size]
        z = seed_z(chunk, generator.z_dim)
        ws = generator.mapping(z.to(device), truncation_psi=truncation_psi)
        yield Samples(chunk, z, ws.cpu(), generator.synthesis(ws, noise_mode=noise_mode).float().cpu())


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] float -> [B, H, W, 3] uint8 (NVIDIA's rounding)."""
    return (images.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()


def grid(pictures: list[np.ndarray], columns: int | None = None) -> Image.Image:
    """Tile [H, W, 3] uint8 pictures (same size) row by row; ``columns`` defaults to a square."""
    columns = columns or max(1, math.ceil(math.sqrt(len(pictures))))
    rows = math.ceil(len(pictures) / columns)
    height, width = pictures[0].shape[:2]
    canvas = np.zeros((rows * height, columns * width, 3), np.uint8)
    for i, picture in enumerate(pictures):
        r, c = divmod(i, columns)
        canvas[r * height:(r + 1) * height, c * width:(c + 1) * width] = picture
    return Image.fromarray(canvas)
