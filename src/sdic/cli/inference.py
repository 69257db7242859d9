"""``sdic invert`` and ``sdic edit``: run a model over files, folders or globs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..files import save_safetensors
from ..model import PRECISIONS, Inversion, NonFiniteOutputError, SDICModel
from .inputs import Unit, batches, find_items, make_aligner, paste_faces, photos_in


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
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="arithmetic: fp32 (exact), bf16 (autocast, faster on CPUs with AMX and on GPUs) or "
                             "fp16 (autocast, for GPUs without bf16; slow on CPUs)")
    parser.add_argument("--save-latents", choices=("npz", "safetensors"),
                        help="also save codes, latents, discrepancy and the raw float image")
    parser.add_argument("--save-intermediate", action="store_true",
                        help="also write the e4e reconstruction and the discrepancy map")
    faces = parser.add_argument_group("in-the-wild face photos")
    faces.add_argument("--align", action="store_true",
                       help="detect and FFHQ-align faces first (dlib landmarks); the largest face by default")
    faces.add_argument("--all-faces", action="store_true", help="with --align: every face of a photo")
    faces.add_argument("--paste-back", action="store_true",
                       help="with --align: also write the full photo with the result pasted back")


def _save_arrays(path: Path, fmt: str, arrays: dict[str, torch.Tensor]) -> None:
    arrays = {k: v.detach().float().cpu().contiguous() for k, v in arrays.items()}
    if fmt == "npz":
        np.savez(path.with_suffix(".npz"), **{k: v.numpy() for k, v in arrays.items()})
    else:
        save_safetensors(arrays, path.with_suffix(".safetensors"), durable=False)


def _write(inv: Inversion, units: list[Unit], args: argparse.Namespace, suffix: str = "") -> None:
    for i, (unit, picture) in enumerate(zip(units, inv.to_pil("image"))):
        picture.save(args.output / f"{unit.name}{suffix}.png")
        if args.save_intermediate and not suffix:
            inv.to_pil("initial_image")[i].save(args.output / f"{unit.name}_e4e.png")
            inv.to_pil("discrepancy")[i].save(args.output / f"{unit.name}_discrepancy.png")
        if args.save_latents:
            _save_arrays(args.output / f"{unit.name}{suffix}", args.save_latents, {
                "codes": inv.codes[i], "latents": inv.latents[i],
                "discrepancy": inv.discrepancy[i], "image": inv.image[i],
            })
    if args.paste_back:
        stem = units[0].source.stem if len(units) > 1 else units[0].name
        paste_faces(units, inv.image.detach().cpu()).save(args.output / f"{stem}{suffix}_pasted.png")


def _check_flags(args: argparse.Namespace, model: SDICModel) -> None:
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if (args.all_faces or args.paste_back) and not args.align:
        raise ValueError("--all-faces and --paste-back need --align")
    if args.align and model.config.domain != "faces":
        raise ValueError(f"--align is for faces; this is a {model.config.domain} model")


def _run(
    args: argparse.Namespace, handle: Callable[[SDICModel, Inversion, list[Unit]], None],
    check: Callable[[SDICModel], None] = lambda model: None,
) -> int:
    from ..api import load

    items = find_items(args.inputs)
    model = load(args.checkpoint, device=args.device, precision=args.precision)
    _check_flags(args, model)
    check(model)
    align = make_aligner(model.config.input_size, args.all_faces) if args.align else None
    args.output.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    with tqdm(total=len(items), unit="img", desc=f"sdic {args.command}") as bar:
        for batch in batches(items, args.batch_size, failures, bar, align):
            _process(model, batch, handle, failures)
            bar.update(photos_in(batch))
    done = len(items) - len(failures)
    print(f"wrote results for {done} of {len(items)} images to {args.output}")
    if failures:
        print(f"{len(failures)} failed:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0


def _process(model: SDICModel, batch: list[Unit], handle: Callable[[SDICModel, Inversion, list[Unit]], None],
             failures: list[str]) -> None:
    """Invert and handle a batch; on NaN/inf output, retry its units one by one and report the bad ones."""
    try:
        handle(model, model.invert([unit.image for unit in batch]), batch)
    except NonFiniteOutputError as error:
        if len(batch) > 1 and not batch[0].face:  # separate photos: keep the good ones
            for unit in batch:
                _process(model, [unit], handle, failures)
            return
        names = ", ".join(str(unit.source) for unit in batch)
        failures.append(f"{names}: {error}")
        tqdm.write(f"failed: {names}: {error}", file=sys.stderr)


def run_invert(args: argparse.Namespace) -> int:
    return _run(args, lambda model, inv, units: _write(inv, units, args))


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

    def handle(model: SDICModel, inv: Inversion, units: list[Unit]) -> None:
        for factor in args.factor:
            edited = model.edit(inv, resolved["direction"], factor)
            _write(edited, units, args, suffix=f"_{label}{factor:+g}")

    return _run(args, handle, check)
