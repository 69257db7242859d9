"""``sdic train stylegan2|e4e|sdic CONFIG.yaml [key=value ...] [--resume]``."""

from __future__ import annotations

import argparse
import os
import sys

from ..optional import require
from ..training.config import STAGES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train StyleGAN2, e4e or SDIC (one process, or many under torchrun)",
        description="Train one stage of the stack. Settings come from the stage's defaults, then the "
                    "YAML file, then key=value overrides (e.g. run.steps=1000 optim.lr=1e-4 "
                    "data.path=photos/). Multi-process: torchrun --nproc_per_node N -m sdic.cli.main "
                    "train ... (docs/training.md).")
    parser.add_argument("stage", choices=STAGES, help="what to train")
    parser.add_argument("config", nargs="?", help="YAML configuration file (optional)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="configuration overrides")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in run.out from its last checkpoint (starts fresh if there is none)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration and exit")
    parser.set_defaults(run=run)


def _split(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        overrides.insert(0, config)
        config = None
    return config, overrides


def run(args: argparse.Namespace) -> int:
    require("yaml", "train", "sdic train (YAML configurations)", package="PyYAML")
    from ..training import NonFiniteLossError, train
    from ..training import config as training_config

    path, overrides = _split(args)
    config = training_config.load(args.stage, path, overrides)
    if args.print_config:
        print(training_config.dump_yaml(config, args.stage), end="")
        return 0
    try:
        result = train(args.stage, config, resume=args.resume)
    except NonFiniteLossError as error:
        print(f"sdic train {args.stage}: {error}", file=sys.stderr)
        return 3
    if os.environ.get("RANK", "0") != "0":  # under torchrun, one report for the whole run
        return 0
    state = "stopped" if result.stopped else "finished"
    print(f"{state} at step {result.step}; run folder {result.run_dir}")
    for path in result.exports:
        print(f"  {path}")
    return 0
