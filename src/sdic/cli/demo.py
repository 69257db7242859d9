"""``sdic demo``: the bundled model on bundled sample faces, as pictures."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import demo, editing
from ..errors import InputError
from ..outputs import OutputFolder


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the bundled model on sample faces: inversion grid, edit grids and GIFs")
    parser.add_argument("-o", "--output", type=Path, default=Path("sdic-demo"),
                        help="output folder (default ./sdic-demo)")
    parser.add_argument("--model", default="default", help="model name or file (default: the bundled one)")
    parser.add_argument("--images", nargs="+", type=Path, help="aligned faces (default: bundled samples)")
    parser.add_argument("--directions", nargs="+", help="directions to sweep (default: all bundled ones)")
    parser.add_argument("--steps", type=int, default=7, help="factors per sweep (default 7)")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import load

    if args.steps < 2:
        raise InputError("--steps must be at least 2")
    model = load(args.model, device=args.device)
    images = args.images or demo.sample_faces()
    directions = args.directions or editing.available(model.config.directions)
    for name in directions:
        editing.named(name, model.config.directions)  # unknown names fail before any work
    with OutputFolder(args.output):
        outputs = demo.run_demo(model, images, args.output, {name: name for name in directions}, steps=args.steps)
    print(f"SDIC demo: {len(images)} faces, directions: {', '.join(directions) or 'none'}")
    for path in outputs.files:
        print(f"  {path}")
    return 0
