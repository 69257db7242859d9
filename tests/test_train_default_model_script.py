"""tools/train_default_model.sh: every training command it runs is a valid configuration.

The script takes hours per stage, so a typo in one of its overrides would only show after the
stages before it; here each `sdic train` line is read from the script and built as the CLI would.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sdic.errors import ConfigError
from sdic.training import config as train_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "train_default_model.sh"


def logical_lines(text: str) -> list[str]:
    """The script's lines with backslash continuations joined."""
    return text.replace("\\\n", " ").splitlines()


def expand(line: str) -> str:
    """Shell expansions replaced by stand-ins: ``${V:-d}`` by d, ``$V`` by 1, ``$(...)`` dropped."""
    line = re.sub(r"\$\([^)]*\)", "", line)
    line = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", line)
    return re.sub(r"\$\{?\w+\}?", "1", line)


def train_commands() -> list[tuple[str, str, list[str]]]:
    commands = []
    for line in logical_lines(SCRIPT.read_text(encoding="utf-8")):
        words = shlex.split(expand(line), comments=True)
        if words[:4] == ["python", "-m", "sdic.cli.main", "train"] and len(words) > 5:
            commands.append((words[4], words[5], words[6:]))
    return commands


def test_the_script_trains_every_stage():
    stages = [stage for stage, _, _ in train_commands()]
    assert stages.count("stylegan2") == 2  # the bundled generator's run and the projected fine-tune
    assert {"e4e", "sdic"} <= set(stages)


@pytest.mark.parametrize("stage,path,overrides", train_commands(), ids=lambda value: str(value)[:40])
def test_every_training_command_builds_its_configuration(stage, path, overrides):
    assert (ROOT / path).is_file(), path
    config = train_config.load(stage, ROOT / path, overrides)
    assert config.run.out.startswith("1/"), "every run writes under $RUNS"


def test_a_misspelt_override_would_be_caught():
    stage, path, overrides = train_commands()[0]
    with pytest.raises(ConfigError):
        train_config.load(stage, ROOT / path, [*overrides, "run.stepz=10"])
