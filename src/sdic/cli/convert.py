"""``sdic convert``: an authors' checkpoint (or a ``.pt`` export of ``sdic train``) to our safetensors format."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..checkpoints import (
    CheckpointError,
    load_into,
    read_checkpoint,
    save_model,
)
from ..errors import InputError, OutputError
from ..model import SDICModel


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
    if checkpoint.native:
        # A copy would change nothing but the name, and doubles a 1.2 GB file for nothing.
        raise InputError(
            f"{args.checkpoint}: already in sdic's format (a .safetensors {checkpoint.kind} model with its "
            "configuration); nothing to convert: every command and sdic.load read it as it is")
    if checkpoint.config is None:
        raise CheckpointError(f"{args.checkpoint}: a {checkpoint.kind} file cannot be converted")
    model = SDICModel(checkpoint.config)
    partial = {"sdic": (), "e4e": ("dipn.", "dicn."), "stylegan2": ("dipn.", "dicn.", "encoder.", "latent_avg")}
    load_into(model, checkpoint.tensors, str(args.checkpoint), allow_missing=partial[checkpoint.kind])
    keep = ("generator.",) + (() if checkpoint.kind == "stylegan2" else ("encoder.", "latent_avg"))
    if checkpoint.kind == "stylegan2" and "latent_avg" in checkpoint.tensors:
        keep += ("latent_avg",)  # our trainers' exports carry the generator's mean latent
    if checkpoint.kind != "sdic":
        model = _Subset(model, keep)
    save_model(model, args.output, checkpoint.config, kind=checkpoint.kind)
    print(f"{checkpoint.kind} checkpoint ({checkpoint.config.name}, {checkpoint.config.generator.size}px, "
          f"{checkpoint.config.n_latent} latents) -> {args.output}; "
          f"dropped {len(checkpoint.dropped)} never-used tensors")
    return 0


class _Subset:
    """Expose only some tensors of a model to ``save_model``."""

    def __init__(self, model: SDICModel, prefixes: tuple[str, ...]) -> None:
        self.model, self.prefixes = model, prefixes

    def state_dict(self) -> dict:
        return {k: v for k, v in self.model.state_dict().items() if k.startswith(self.prefixes)}
