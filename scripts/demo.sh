#!/usr/bin/env bash
# Run heatwidget's demo on the shipped demo model: JupyterLab on the tour notebook, or (--html FILE) a headless
# run that executes the tour and writes a self-contained HTML report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec heatwidget demo "$@"
