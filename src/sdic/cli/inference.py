"""``sdic invert`` and ``sdic edit``: run a model over files, folders or globs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..editing import LinearDirection, load_direction, looks_like_file, resolve
from ..errors import InputError
from ..inputs import Unit, batches, find_items, make_aligner, paste_faces, photos_in
from ..inversion import with_sources
from ..model import PRECISIONS, Inversion, NonFiniteOutputError, SDICModel
from ..outputs import OutputFolder
from ..training.distributed import DistContext
from . import dataset
from .factors import FACTOR_HELP, FactorTokens, factor_label, parse_factors


def register(subparsers: argparse._SubParsersAction) -> None:
    invert = subparsers.add_parser("invert", help="invert images (reconstruction with SDIC)")
    _common(invert)
    dataset.add_options(invert, edit=False)
    invert.set_defaults(run=run_invert)

    edit = subparsers.add_parser("edit", help="invert and edit images along a latent direction")
    _common(edit)
    edit.add_argument("--direction", required=True,
                      help="bundled name (faces: age, smile, pose, eyes, beard, lip; cars: left, right, "
                           "cube, color, grass; `sdic directions list MODEL` lists a model's) or a file "
                           "(.pt, .npy, .safetensors) holding a [1,512] / [1,n,512] tensor")
    edit.add_argument("--factor", nargs="+", action=FactorTokens, default=["1"], metavar="FACTOR",
                      help=FACTOR_HELP)
    edit.add_argument("--steps", type=int, help="with two --factor values: this many factors between them")
    dataset.add_options(edit, edit=True)
    edit.set_defaults(run=run_edit, more_inputs=[])


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="model: authors' .pt, our .safetensors, or a bundled name")
    parser.add_argument("inputs", nargs="*", help="image files, folders or glob patterns")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="arithmetic: fp32 (exact), bf16 (autocast, faster on CPUs with AMX and on GPUs) or "
                             "fp16 (autocast, for GPUs without bf16; slow on CPUs)")
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


def _array_writer(fmt: str, arrays: dict[str, torch.Tensor]) -> Callable[[Path], None]:
    """The ``npz`` latents file (the full inversion file is ``Inversion.save``)."""
    arrays = {k: v.detach().float().cpu().contiguous() for k, v in arrays.items()}

    def write(path: Path) -> None:
        with open(path, "wb") as handle:
            np.savez(handle, **{k: v.numpy() for k, v in arrays.items()})

    return write


def _png(picture) -> Callable[[Path], None]:
    return lambda path: picture.save(path, format="PNG")


def _write(
    out: OutputFolder, inv: Inversion, units: list[Unit], args: argparse.Namespace, suffix: str = "", edit: str = "",
) -> None:
    """Write a batch's results; ``edit`` names the edit (direction and factor) behind ``suffix``."""
    for i, (unit, picture) in enumerate(zip(units, inv.to_pil("image"))):
        source = _source(unit.source, unit.name, edit)
        out.save(f"{unit.name}{suffix}.png", _png(picture), source)
        if args.save_intermediate and not suffix:
            out.save(f"{unit.name}_e4e.png", _png(inv.to_pil("initial_image")[i]), source)
            out.save(f"{unit.name}_discrepancy.png", _png(inv.to_pil("discrepancy")[i]), source)
        if args.save_latents == "safetensors":  # last: its presence marks the image finished (resume)
            out.save(f"{unit.name}{suffix}.safetensors", inv[i].save, source)
        elif args.save_latents:
            out.save(f"{unit.name}{suffix}.{args.save_latents}", _array_writer(args.save_latents, {
                "codes": inv.codes[i], "latents": inv.latents[i],
                "discrepancy": inv.discrepancy[i], "image": inv.image[i],
            }), source)
    if args.paste_back:
        photo = paste_faces(units, inv.image.detach().cpu())
        out.save(f"{units[0].stem}{suffix}_pasted.png", _png(photo), _source(units[0].source, units[0].stem, edit))


def _source(path: Path, name: str, edit: str) -> str:
    """What an output file is the result of (the output folder tells different sources apart)."""
    return f"{Path(path).resolve()} as {name}" + (f", edited with {edit}" if edit else "")


def _check_flags(args: argparse.Namespace, model: SDICModel) -> None:
    if args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if (args.all_faces or args.paste_back) and not args.align:
        raise InputError("--all-faces and --paste-back need --align")
    if args.align and model.config.domain != "faces":
        raise InputError(f"--align is for faces; this is a {model.config.domain} model")


def _run(
    args: argparse.Namespace, handle: Callable[[OutputFolder, SDICModel, Inversion, list[Unit]], None],
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
    from ..api import load, photo_note

    from_latents = getattr(args, "from_latents", None)
    dataset.check_flags(args)
    items = dataset.latent_items(from_latents) if from_latents else find_items(args.inputs)
    model = load(args.checkpoint, device=dataset.device_for(ctx, args), precision=args.precision)
    _check_flags(args, model)
    check(model)
    align = make_aligner(model.config.input_size, args.all_faces) if args.align else None
    note = lambda line: tqdm.write(f"note: {line}", file=sys.stderr)  # noqa: E731
    if align and ctx.is_main and (domain := photo_note(model)):
        note(domain)  # once per run: the bundled model is not a model of real photos
    # Under torchrun or --shard several processes share the folder by design (disjoint names).
    exclusive = not ctx.distributed and args.shard.count == 1
    with OutputFolder(args.output, [item.path for item in items], note, exclusive=exclusive) as out:
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
                for inv, batch in dataset.latent_batches(todo, args.batch_size, model, failures, bar):
                    done |= _process(out, model, batch, handle, failures, _rows_of(inv, batch))
                    bar.update(photos_in(batch))
            else:
                def invert(units: list[Unit]) -> Inversion:
                    return with_sources(model.invert([unit.image for unit in units]), [unit.source for unit in units])

                for batch in batches(todo, args.batch_size, failures, bar, align):
                    done |= _process(out, model, batch, handle, failures, invert)
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


def _process(
    out: OutputFolder, model: SDICModel, batch: list[Unit],
    handle: Callable[[OutputFolder, SDICModel, Inversion, list[Unit]], None], failures: list[str],
    invert: Callable[[list[Unit]], Inversion],
) -> set[Path]:
    """Handle a batch; on NaN/inf output, retry its units one by one and report the bad ones.

    Returns the sources whose results were written.
    """
    try:
        handle(out, model, invert(batch), batch)
        return {unit.source for unit in batch}
    except NonFiniteOutputError as error:
        if len(batch) > 1 and not batch[0].face:  # separate photos: keep the good ones
            return set().union(*(_process(out, model, [unit], handle, failures, invert) for unit in batch))
        names = ", ".join(str(unit.source) for unit in batch)
        failures.append(f"{names}: {error}")
        tqdm.write(f"failed: {names}: {error}", file=sys.stderr)
        return set()


def _rows_of(inv: Inversion, batch: list[Unit]) -> Callable[[list[Unit]], Inversion]:
    """For saved inversions: the rows of ``inv`` that belong to some of the batch's units."""
    return lambda units: inv[[batch.index(unit) for unit in units]]


def run_invert(args: argparse.Namespace) -> int:
    return _run(args, lambda out, model, inv, units: _write(out, inv, units, args))


def _direction(spec: str) -> str | LinearDirection:
    """A bundled direction name, or the direction of a file."""
    path = Path(spec)
    if looks_like_file(spec) or (path.suffix and path.is_file()):
        return load_direction(path)
    return spec


def run_edit(args: argparse.Namespace) -> int:
    args.inputs = [*args.inputs, *args.more_inputs]
    factors = parse_factors(args.factor, args.steps)
    spec = _direction(args.direction)
    from_file = not isinstance(spec, str)
    label = Path(args.direction).stem if from_file else args.direction
    identity = str(Path(args.direction).resolve()) if from_file else args.direction
    resolved = {}

    def check(model: SDICModel) -> None:
        resolved["direction"] = resolve(spec, model.config)
        try:
            resolved["direction"].apply(model.latent_avg[None], 0.0)  # fails early on a bad shape
        except InputError as error:
            raise InputError(f"{args.direction}: {error}") from None

    def handle(out: OutputFolder, model: SDICModel, inv: Inversion, units: list[Unit]) -> None:
        for factor in factors:
            edited = model.edit(inv, resolved["direction"], factor)
            _write(out, edited, units, args, f"_{label}{factor_label(factor)}", f"{identity} {factor_label(factor)}")

    return _run(args, handle, check)
