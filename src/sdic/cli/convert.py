"""``sdic convert``: an authors' checkpoint (or a ``.pt`` export of ``sdic train``) to our safetensors format."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..checkpoints import convert, read_checkpoint
from ..errors import InputError, OutputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert an authors' SDIC / e4e / StyleGAN2 checkpoint to .safetensors")
    parser.add_argument("checkpoint", type=Path, help="authors' .pt file, or a .pt export of `sdic train`")
    parser.add_argument("output", type=Path, help="output .safetensors file (its folder must exist)")
    parser.set_defaults(run=run)


def check_output(output: Path) -> None:
    """Refuse an output that cannot be written before reading a checkpoint of a gigabyte."""
    if output.suffix != ".safetensors":
        raise InputError(f"{output}: the output file must end in .safetensors")
    folder = output.parent
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist (create it first)"
        raise OutputError(f"{output}: the output folder {folder} {what}")
    if output.is_dir():
        raise OutputError(f"{output}: is a folder; give a file name ending in .safetensors")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{output}: the folder {folder} is not writable")


def run(args: argparse.Namespace) -> int:
    check_output(args.output)
    checkpoint = read_checkpoint(args.checkpoint)
    convert(checkpoint, args.output)
    config = checkpoint.config
    print(f"{checkpoint.kind} checkpoint ({config.name}, {config.generator.size}px, {config.n_latent} latents) "
          f"-> {args.output}; dropped {len(checkpoint.dropped)} never-used tensors")
    return 0
