"""``sdic evaluate``: score e4e and SDIC reconstructions of a folder under one protocol."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from tqdm import tqdm

from .. import evaluation
from ..model import PRECISIONS
from ..outputs import OutputFolder
from .inputs import batches, find_items, make_aligner, photos_in


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="MSE, PSNR, SSIM, LPIPS, ID and FID of e4e vs SDIC on a set of images")
    parser.add_argument("checkpoint", help="model: authors' .pt, our .safetensors, or a bundled name")
    parser.add_argument("inputs", nargs="+", help="aligned test images: files, folders or globs")
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="folder for results.json, results.md and grid.png")
    parser.add_argument("--reference", type=Path,
                        help="real images (folder or .npz statistics) for FID; default: the inputs")
    parser.add_argument("--metrics", nargs="+", help="subset of: " + ", ".join(evaluation.METRIC_LABELS))
    parser.add_argument("--no-fid", action="store_true", help="skip FID")
    parser.add_argument("--grid", type=int, default=8, help="rows in grid.png (default 8)")
    parser.add_argument("--save-images", action="store_true", help="also write e4e/ and sdic/ outputs")
    parser.add_argument("--align", action="store_true", help="FFHQ-align the largest face of each photo first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="fp32 (default), bf16 or fp16 autocast")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import load

    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if args.reference is not None and not args.reference.exists():
        raise FileNotFoundError(f"{args.reference}: no such folder or file")
    items = find_items(args.inputs)
    model = load(args.checkpoint, device=args.device, precision=args.precision)
    if args.align and model.config.domain != "faces":
        raise ValueError(f"--align is for faces; this is a {model.config.domain} model")
    align = make_aligner(model.config.input_size, all_faces=False) if args.align else None
    metric_fns = evaluation.build_metrics(args.metrics or evaluation.default_metrics(model), model.device)
    report = evaluation.EvaluationReport(model=str(args.checkpoint), protocol={
        "resolution": model.config.input_size, "device": str(model.device), "precision": args.precision,
        "metrics": list(metric_fns), "fid_reference": str(args.reference or "inputs"),
    })
    with OutputFolder(args.output, [item.path for item in items]) as out:
        return _evaluate(args, model, items, align, metric_fns, report, out)


def _evaluate(args, model, items, align, metric_fns, report, out: OutputFolder) -> int:
    outputs: dict[str, list[torch.Tensor]] = {stage: [] for stage in evaluation.STAGES}
    targets: list[torch.Tensor] = []
    grid_rows = []
    seconds = 0.0
    with tqdm(total=len(items), unit="img", desc="sdic evaluate") as bar:
        for batch in batches(items, args.batch_size, report.failures, bar, align):
            inv, elapsed = evaluation.timed_invert(model, [unit.image for unit in batch])
            seconds += elapsed
            views = evaluation.scored_views(inv, model.config)
            for item, row in zip(batch, evaluation.score(views, metric_fns)):
                report.per_image.append({"image": str(item.source), **row})
            for stage in evaluation.STAGES:
                outputs[stage].append(views[stage].clamp(-1, 1).cpu())
            targets.append(views["target"].cpu())
            grid_rows += [evaluation.grid_row(inv, i) for i in range(len(batch))][: args.grid - len(grid_rows)]
            if args.save_images:
                evaluation.save_outputs(inv, [item.name for item in batch], args.output)
            bar.update(photos_in(batch))
    if not report.per_image:
        raise ValueError("no image could be read")
    report.seconds_per_image = seconds / len(report.per_image)
    if not args.no_fid:
        if len(report.per_image) < 2:
            print("FID needs at least 2 images; skipped", file=sys.stderr)
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                report.fid = evaluation.fid_scores(outputs, args.reference or torch.cat(targets), model.device)
            for message in dict.fromkeys(str(w.message) for w in caught):
                print(f"warning: {message}", file=sys.stderr)
    out.save("results.json", lambda path: path.write_text(report.to_json()), "the report")
    out.save("results.md", lambda path: path.write_text(report.to_markdown()), "the report")
    grid = evaluation.stack_rows(grid_rows)
    out.save("grid.png", lambda path: grid.save(path, format="PNG"), "the grid")
    print(report.to_markdown())
    print(f"wrote results.json, results.md and grid.png to {args.output}")
    if report.failures:
        print(f"{len(report.failures)} failed:", *report.failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0
