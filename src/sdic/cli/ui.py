"""``sdic ui``: serve the web UI for one model (a bundled name or a checkpoint file)."""

from __future__ import annotations

import argparse

from ..errors import InputError
from ..model import PRECISIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ui", help="serve a web page to invert, edit and paste back photos (sdic[ui])")
    parser.add_argument("model", nargs="?", default="default",
                        help="bundled model name or checkpoint file (default: the bundled 'default')")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 serves the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="arithmetic (default fp32)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload accepted (default 20)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import load
    from ..ui.app import import_gradio, serve
    from ..ui.core import Studio

    if not 0 < args.port < 65536:
        raise InputError(f"--port must be 1..65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise InputError("--max-upload-mb must be positive")
    import_gradio()  # a missing extra is reported before the model is loaded
    model = load(args.model, device=args.device, precision=args.precision)
    studio = Studio(model, label=str(args.model), max_upload_mb=args.max_upload_mb)
    print(f"sdic ui: starting {args.model} at http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
    serve(studio, args.host, args.port)
    return 0
