"""``sdic evaluate``: score e4e and SDIC reconstructions of a folder under one protocol."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from .. import evaluation
from ..errors import InputError
from ..inputs import image_paths
from ..model import PRECISIONS
from ..outputs import OutputFolder

DEFAULTS = evaluation.EvaluationSettings()


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
    parser.add_argument("--grid", type=int, default=DEFAULTS.grid_rows,
                        help=f"rows in grid.png (default {DEFAULTS.grid_rows}; 0: no grid)")
    parser.add_argument("--save-images", action="store_true", help="also write e4e/ and sdic/ outputs")
    parser.add_argument("--align", action="store_true", help="FFHQ-align the largest face of each photo first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    parser.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0],
                        help="fp32 (default), bf16 or fp16 autocast")
    parser.set_defaults(run=run)


def settings_of(args: argparse.Namespace) -> evaluation.EvaluationSettings:
    return evaluation.EvaluationSettings(
        metrics=tuple(args.metrics) if args.metrics else None, fid=not args.no_fid, reference=args.reference,
        batch_size=args.batch_size, grid_rows=args.grid, align=args.align,
        images_folder=args.output if args.save_images else None)


def run(args: argparse.Namespace) -> int:
    from ..api import load

    if args.batch_size < 1:  # before loading the model
        raise InputError("--batch-size must be at least 1")
    paths = image_paths(args.inputs)
    model = load(args.checkpoint, device=args.device, precision=args.precision)
    with OutputFolder(args.output, paths) as out:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = evaluation.evaluate(model, paths, settings_of(args))
        for message in dict.fromkeys(str(w.message) for w in caught):
            print(f"warning: {message}", file=sys.stderr)
        out.save("results.json", lambda path: path.write_text(report.to_json()), "the report")
        out.save("results.md", lambda path: path.write_text(report.to_markdown()), "the report")
        if report.grid is not None:
            out.save("grid.png", lambda path: report.grid.save(path, format="PNG"), "the grid")
    print(report.to_markdown())
    print(f"wrote results.json, results.md{' and grid.png' if report.grid else ''} to {args.output}")
    if report.failures:
        print(f"{len(report.failures)} failed:", *report.failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0
