#!/usr/bin/env bash
# The oldest torch that pyproject.toml accepts (torch>=X), tested: a virtual environment that sees
# the packages install.sh installed but has torch==X (PyPI's build) runs the tests that exercise
# the version-dependent torch APIs: bf16 autocast in the networks (parity), checkpoint loading
# (weights_only, mmap), and training (GradScaler, RAdam, LambdaLR, resume bit for bit).
set -euo pipefail
cd "$(dirname "$0")/.."
floor=$(sed -n 's/^ *"torch>=\([0-9.]*\)".*/\1/p' pyproject.toml)
[ -n "$floor" ] || { echo "torch_floor.sh: no torch>=X in pyproject.toml" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python -m venv --system-site-packages "$work/venv"
"$work/venv/bin/python" -m pip install -q "torch==$floor"
"$work/venv/bin/python" -c "import sys, torch; print('torch floor:', torch.__version__); \
sys.exit(not torch.__version__.startswith('$floor.'))"
"$work/venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_parity.py tests/test_checkpoints.py \
    tests/test_editing.py tests/test_training.py::test_resume_continues_bit_for_bit \
    tests/test_training.py::test_ranger_is_radam_with_centralized_gradients_and_lookahead
