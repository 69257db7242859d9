"""``sdic invert`` and ``sdic edit``: run a model over files, folders or globs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..model import Inversion, SDICModel
from .inputs import Item, batches, find_items


def register(subparsers: argparse._SubParsersAction) -> None:
    invert = subparsers.add_parser("invert", help="invert images (reconstruction with SDIC)")
    _common(invert)
    invert.set_defaults(run=run_invert)

    edit = subparsers.add_parser("edit", help="invert and edit images along a latent direction")
    _common(edit)
    edit.add_argument("--direction", required=True,
                      help="bundled name (faces: age, smile, pose, eyes, beard, lip; cars: left, right, "
                           "cube, color, grass) or a file holding a [1,512] / [1,n,512] tensor")
    edit.add_argument("--factor", type=float, nargs="+", default=[1.0],
                      help="edit strength(s); several values give several outputs (default 1)")
    edit.set_defaults(run=run_edit)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="model: authors' .pt, our .safetensors, or a bundled name")
    parser.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--save-latents", choices=("npz", "safetensors"),
                        help="also save codes, latents, discrepancy and the raw float image")
    parser.add_argument("--save-intermediate", action="store_true",
                        help="also write the e4e reconstruction and the discrepancy map")


def _save_arrays(path: Path, fmt: str, arrays: dict[str, torch.Tensor]) -> None:
    arrays = {k: v.detach().float().cpu().contiguous() for k, v in arrays.items()}
    if fmt == "npz":
        np.savez(path.with_suffix(".npz"), **{k: v.numpy() for k, v in arrays.items()})
    else:
        from safetensors.torch import save_file

        save_file(arrays, str(path.with_suffix(".safetensors")))


def _write_inversion(inv: Inversion, items: list[Item], args: argparse.Namespace, suffix: str = "") -> None:
    for i, (item, picture) in enumerate(zip(items, inv.to_pil("image"))):
        picture.save(args.output / f"{item.name}{suffix}.png")
        if args.save_intermediate and not suffix:
            inv.to_pil("initial_image")[i].save(args.output / f"{item.name}_e4e.png")
            inv.to_pil("discrepancy")[i].save(args.output / f"{item.name}_discrepancy.png")
        if args.save_latents:
            _save_arrays(args.output / f"{item.name}{suffix}", args.save_latents, {
                "codes": inv.codes[i], "latents": inv.latents[i],
                "discrepancy": inv.discrepancy[i], "image": inv.image[i],
            })


def _run(
    args: argparse.Namespace, handle: Callable[[SDICModel, Inversion, list[Item]], None],
    check: Callable[[SDICModel], None] = lambda model: None,
) -> int:
    from ..api import load

    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    items = find_items(args.inputs)
    model = load(args.checkpoint, device=args.device)
    check(model)
    args.output.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    with tqdm(total=len(items), unit="img", desc=f"sdic {args.command}") as bar:
        for batch, pictures in batches(items, args.batch_size, failures, bar):
            handle(model, model.invert(pictures), batch)
            bar.update(len(batch))
    done = len(items) - len(failures)
    print(f"wrote {done} of {len(items)} images to {args.output}")
    if failures:
        print(f"{len(failures)} failed:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0


def run_invert(args: argparse.Namespace) -> int:
    return _run(args, lambda model, inv, items: _write_inversion(inv, items, args))


def _direction(spec: str) -> str | torch.Tensor:
    path = Path(spec)
    if not path.suffix or not path.exists():
        return spec
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if len(tensors) != 1:
            raise ValueError(f"{path}: expected one tensor, found {sorted(tensors)}")
        return next(iter(tensors.values()))
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path))
    from ..checkpoints import torch_load

    tensor = torch_load(path)
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{path}: expected a tensor, found a {type(tensor).__name__}")
    return tensor


def run_edit(args: argparse.Namespace) -> int:
    from ..editing import resolve

    spec = _direction(args.direction)
    label = Path(args.direction).stem if isinstance(spec, torch.Tensor) else args.direction
    resolved = {}

    def check(model: SDICModel) -> None:
        resolved["direction"] = resolve(spec, model.config)
        resolved["direction"].apply(model.latent_avg[None], 0.0)  # fails early on a bad shape

    def handle(model: SDICModel, inv: Inversion, items: list[Item]) -> None:
        for factor in args.factor:
            edited = model.edit(inv, resolved["direction"], factor)
            _write_inversion(edited, items, args, suffix=f"_{label}{factor:+g}")

    return _run(args, handle, check)
