"""``sdic convert``: an authors' checkpoint to our safetensors format."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..checkpoints import (
    CheckpointError,
    load_into,
    read_authors_checkpoint,
    save_model,
)
from ..model import SDICModel


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert an authors' SDIC / e4e / StyleGAN2 checkpoint to .safetensors")
    parser.add_argument("checkpoint", type=Path, help="authors' .pt file")
    parser.add_argument("output", type=Path, help="output .safetensors file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.output.suffix != ".safetensors":
        raise ValueError(f"{args.output}: the output file must end in .safetensors")
    checkpoint = read_authors_checkpoint(args.checkpoint)
    if checkpoint.config is None:
        raise CheckpointError(f"{args.checkpoint}: a {checkpoint.kind} file cannot be converted")
    model = SDICModel(checkpoint.config)
    partial = {"sdic": (), "e4e": ("dipn.", "dicn."), "stylegan2": ("dipn.", "dicn.", "encoder.", "latent_avg")}
    load_into(model, checkpoint.tensors, str(args.checkpoint), allow_missing=partial[checkpoint.kind])
    keep = ("generator.",) + (() if checkpoint.kind == "stylegan2" else ("encoder.", "latent_avg"))
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
