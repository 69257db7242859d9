"""Training of the whole stack from scratch: StyleGAN2, then e4e, then SDIC.

``sdic train stylegan2|e4e|sdic CONFIG.yaml [key=value ...] [--resume]`` runs
:func:`train`; docs/training.md describes the recipes, configuration keys,
resuming and multi-process runs (torchrun).
"""

from __future__ import annotations

import importlib

from .config import STAGES, ConfigError, TrainConfig, build, load
from .loop import NonFiniteLossError, ResumeError, RunResult, run

__all__ = ["STAGES", "ConfigError", "NonFiniteLossError", "ResumeError", "RunResult", "TrainConfig",
           "build", "load", "train"]


def stage_builder(stage: str):
    """The ``build(config, env)`` function of a stage module."""
    if stage not in STAGES:
        raise ConfigError(f"unknown training stage {stage!r}; choose one of {', '.join(STAGES)}")
    return importlib.import_module(f"{__name__}.{stage}").build


def train(stage: str, config: TrainConfig, resume: bool = False) -> RunResult:
    """Train ``stage`` with a typed configuration (see :mod:`.config`)."""
    return run(config, stage_builder(stage), resume=resume)
