"""``sdic generate``: images of a generator from seeds (a converted generator can be checked by eye)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .. import sampling
from ..errors import InputError
from ..networks.generator import NOISE_MODES
from ..outputs import OutputFolder

GRID_MAX = 64  # the grid shows the first images only (a grid of 1000 1024px images is 3 GB)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate", help="images of a StyleGAN2 generator from seeds (NVIDIA .pkl, .pt, .safetensors)")
    parser.add_argument("generator", help="NVIDIA network pickle, rosinality/authors' .pt, our .safetensors, "
                                          "or any SDIC / e4e file (its generator)")
    parser.add_argument("--seeds", default="0-15", help="seeds: 0-15, 1,5,9 or 0-3,10 (default 0-15)")
    parser.add_argument("--trunc", default="1", help="truncation psi toward the W average (default 1: none; 0.7 usual)")
    parser.add_argument("--noise-mode", choices=NOISE_MODES, default="const",
                        help="const: the generator's fixed noise (default); none; random")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    parser.add_argument("--save-latents", action="store_true", help="also write seedNNNN.npz (z, ws) per seed")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.set_defaults(run=run)


def _png(picture: Image.Image) -> Callable[[Path], None]:
    return lambda path: picture.save(path, format="PNG")


def _npz(arrays: dict[str, np.ndarray]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)

    return write


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import load_generator
    from ..checkpoints.bundled import bundled_path

    seeds = sampling.parse_seeds(args.seeds)
    psi = sampling.parse_truncation(args.trunc)
    if args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    generator = load_generator(args.generator, args.device)
    named = bundled_path(str(args.generator)) is not None
    origin = f"{args.generator if named else Path(args.generator).resolve()} trunc {psi} noise {args.noise_mode}"
    shown = []
    with OutputFolder(args.output) as out, tqdm(total=len(seeds), unit="img", desc="sdic generate",
                                                disable=len(seeds) <= args.batch_size) as bar:
        for batch in sampling.generate(generator, seeds, psi, args.noise_mode, args.batch_size):
            bar.update(len(batch.seeds))
            for i, (seed, picture) in enumerate(zip(batch.seeds, sampling.to_uint8(batch.images))):
                source = f"{origin} seed {seed}"
                out.save(f"seed{seed:04d}.png", _png(Image.fromarray(picture)), source)
                if args.save_latents:
                    out.save(f"seed{seed:04d}.npz", _npz({"seed": np.array(seed), "z": batch.z[i].numpy(),
                                                          "ws": batch.ws[i].numpy()}), source)
                if len(shown) < GRID_MAX:
                    shown.append(picture)
        out.save("grid.png", _png(sampling.grid(shown)), f"{origin} seeds {args.seeds}")
    more = f" (the grid shows the first {GRID_MAX})" if len(seeds) > GRID_MAX else ""
    print(f"{len(seeds)} images of {generator.img_resolution}px (truncation {psi}, noise {args.noise_mode}) "
          f"-> {args.output}{more}")
    return 0
