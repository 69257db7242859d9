"""``sdic export``: a model's inversion and edit graphs for ONNX runtimes, TorchScript or ``torch.export``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..export import FORMATS, ONNX_OPSET, check_format, export
from ..outputs import OutputFolder


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export the inversion and edit graphs (ONNX, TorchScript or torch.export)")
    parser.add_argument("checkpoint", help="model: authors' .pt, our .safetensors, or a bundled name")
    parser.add_argument("--format", default="onnx", metavar="FORMAT",
                        help=f"{' | '.join(FORMATS)} (default onnx)")
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="output folder: the two graphs, manifest.json and directions.safetensors")
    parser.add_argument("--opset", type=int, default=ONNX_OPSET, help=f"ONNX opset (default {ONNX_OPSET})")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import load

    check_format(args.format)
    OutputFolder(args.output).prepare()  # an unusable folder fails before the model is read
    model = load(args.checkpoint)
    result = export(model, args.output, args.format, opset=args.opset)
    print(f"{model.config.name} -> {args.format} in {result.directory}")
    for graph, path in result.graphs.items():
        print(f"  {graph}: {path.name} ({result.seconds[graph]:.1f} s)")
    print(f"  manifest: {result.manifest.name}")
    return 0
