"""``sdic invert`` and ``sdic edit``: run a model over files, folders or globs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..inversion import with_sources
from ..model import PRECISIONS, Inversion, SDICModel
from ..training.distributed import DistContext
from . import dataset
from .dataset import save_picture
from .inputs import Unit, batches, find_items, make_aligner, paste_faces, photos_in


def register(subparsers: argparse._SubParsersAction) -> None:
    invert = subparsers.add_parser("invert", help="invert images (reconstruction with SDIC)")
    _common(invert)
    dataset.add_options(invert, edit=False)
    invert.set_defaults(run=run_invert)

    edit = subparsers.add_parser("edit", help="invert and edit images along a latent direction")
    _common(edit)
    edit.add_argument("--direction", required=True,
                      help="bundled name (faces: age, smile, pose, eyes, beard, lip; cars: left, right, "
                           "cube, color, grass) or a file holding a [1,512] / [1,n,512] tensor")
    edit.add_argument("--factor", type=float, nargs="+", default=[1.0],
                      help="edit strength(s); several values give several outputs (default 1)")
    dataset.add_options(edit, edit=True)
    edit.set_defaults(run=run_edit)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="model: authors' .pt, our .safetensors, or a bundled name")
    parser.add_argument("inputs", nargs="*", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="arithmetic: fp32 (exact) or bf16 (autocast, faster on CPUs with AMX and on GPUs)")
    parser.add_argument("--save-latents", choices=("npz", "safetensors"),
                        help="also save the inversion: safetensors is the full file that "
                             "`sdic edit --from-latents` and Inversion.load read; npz holds codes, "
                             "latents, discrepancy and the raw float image")
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
        from safetensors.torch import save_file

        save_file(arrays, str(path.with_suffix(".safetensors")))


def _write(inv: Inversion, units: list[Unit], args: argparse.Namespace, suffix: str = "") -> None:
    for i, (unit, picture) in enumerate(zip(units, inv.to_pil("image"))):
        save_picture(picture, args.output / f"{unit.name}{suffix}.png")
        if args.save_intermediate and not suffix:
            save_picture(inv.to_pil("initial_image")[i], args.output / f"{unit.name}_e4e.png")
            save_picture(inv.to_pil("discrepancy")[i], args.output / f"{unit.name}_discrepancy.png")
        if args.save_latents == "safetensors":
            inv[i].save(args.output / f"{unit.name}{suffix}.safetensors")
        elif args.save_latents:
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
    ctx = dataset.start(args)
    try:
        return _run_share(ctx, args, handle, check)
    finally:
        dataset.stop(ctx)


def _run_share(
    ctx: DistContext, args: argparse.Namespace, handle: Callable[[SDICModel, Inversion, list[Unit]], None],
    check: Callable[[SDICModel], None],
) -> int:
    """This process's share of the inputs (all of them on one process), then the index and summary."""
    from ..api import load

    from_latents = getattr(args, "from_latents", None)
    dataset.check_flags(args)
    items = dataset.latent_items(from_latents) if from_latents else find_items(args.inputs)
    model = load(args.checkpoint, device=dataset.device_for(ctx, args), precision=args.precision)
    _check_flags(args, model)
    check(model)
    align = make_aligner(model.config.input_size, args.all_faces) if args.align else None
    args.output.mkdir(parents=True, exist_ok=True)
    run = dataset.Run(ctx, args.shard, args.output)
    todo = []
    digest = model.digest
    for item in run.share(items):
        if dataset.can_resume(args) and dataset.finished(item, args, digest):
            run.mark(item, "existing", f"{item.name}.safetensors")
            continue
        if dataset.can_resume(args):
            dataset.remove_leftovers(item, args)
        todo.append(item)
    failures: list[str] = []
    done: set[Path] = set()
    with tqdm(total=len(todo), unit="img", desc=f"sdic {args.command}", disable=not ctx.is_main) as bar:
        if from_latents:
            work = dataset.latent_batches(todo, args.batch_size, model, failures, bar)
        else:
            work = ((with_sources(model.invert([unit.image for unit in batch]), [unit.source for unit in batch]),
                     batch) for batch in batches(todo, args.batch_size, failures, bar, align))
        for inv, batch in work:
            handle(model, inv, batch)
            done |= {unit.source for unit in batch}
            bar.update(photos_in(batch))
    run.settle(todo, done, failures, lambda item: _main_output(item.name, args))
    return _summary(run.finish(items), args, ctx)


def _main_output(name: str, args: argparse.Namespace) -> str:
    if args.command == "invert" and args.save_latents:
        return f"{name}.{args.save_latents}"
    return f"{name}.png" if args.command == "invert" else f"{name}_*.png"


def _summary(records: list[dict], args: argparse.Namespace, ctx: DistContext) -> int:
    """Print (rank 0) what the whole run did; exit code 1 when any file failed, on every process."""
    failed = [r for r in records if r["status"] == "failed"]
    existing = sum(r["status"] == "existing" for r in records)
    if ctx.is_main:
        kind = "inversion files" if getattr(args, "from_latents", None) else "images"
        note = f" ({existing} finished earlier, skipped)" if existing else ""
        print(f"wrote results for {len(records) - len(failed)} of {len(records)} {kind} to {args.output}{note}")
        if failed:
            print(f"{len(failed)} failed:", *(r["error"] for r in failed), sep="\n  ", file=sys.stderr)
    return 1 if failed else 0


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
