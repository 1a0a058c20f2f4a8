#!/usr/bin/env bash
# Installs everything heatwidget's demo and tests need on a fresh Debian machine. Idempotent: re-running is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

# Browser tests drive Debian's Chromium (never `playwright install`: browser downloads are not possible here).
if ! command -v chromium >/dev/null 2>&1 && [ "${HEATWIDGET_NO_APT:-0}" != "1" ]; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium missing and not root; browser tests will be skipped (sudo apt-get install chromium)" >&2
  fi
fi

# torch first, pinned to the CPU build on this machine's disk: a bare `torch` would pull a multi-GB CUDA build.
# pyproject.toml keeps a range, so users bring their own (CUDA) torch.
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0"

# transformers: CI runs the whole suite under the newest 5.x that installs from the package index (5.25.0 needs
# kernels>=0.19.1, which is not there yet) and the model tests again under 4.57.6 (scripts/test_transformers.sh).
# Like torch, an installed transformers is kept: pyproject.toml keeps the range (>=4.57).
python -c "import transformers" 2>/dev/null || pip install -q "transformers==5.24.0"

# The package (its build hook runs `npm install && npm run build` in js/) plus the dev tools.
pip install -q -e ".[dev]"

# The front end's own tooling (tsc, vitest) and a fresh bundle.
(cd js && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
