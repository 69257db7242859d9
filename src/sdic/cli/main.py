"""The ``sdic`` command line: a thin layer over the Python API.

Each sub-command lives in its own module with ``register(subparsers)``; it parses its
arguments, calls the library and prints. Errors the user can fix (:class:`sdic.errors.SDICError`)
become one-line messages and exit code 2; any other exception is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..devices import resolve_device
from ..errors import SDICError
from ..runtime import keep_freed_memory
from .factors import shield_negative_ranges

COMMAND_MODULES = ("inference", "convert", "generate", "evaluate", "demo", "train", "directions", "ui", "export")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="sdic",
        description="SDIC GAN inversion: invert photos into StyleGAN2, edit them, keep the details.",
    )
    parser.add_argument("--version", action="version", version=f"sdic {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(shield_negative_ranges(sys.argv[1:] if argv is None else argv))
    if extra:
        # key=value overrides may follow options (sdic train ... --resume run.steps=10), and
        # images may (sdic edit MODEL -o out/ --direction smile face.png)
        sink = getattr(args, "overrides", getattr(args, "more_inputs", None))
        if not isinstance(sink, list) or any(a.startswith("-") for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        sink.extend(extra)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    keep_freed_memory()  # the command owns the process: reuse memory instead of page-faulting it in
    try:
        if getattr(args, "device", None) is not None:
            resolve_device(args.device)  # every --device: one line naming the devices that exist
        return int(args.run(args) or 0)
    except SDICError as error:  # the user can fix it; anything else is a bug and keeps its traceback
        print(f"sdic {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
