#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: set-up, lint, TypeScript checks and unit tests, pytest (incl. browser).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"; ruff check heatwidget tests benchmarks scripts
echo "== ruff format"; ruff format --check heatwidget tests benchmarks scripts
echo "== mypy"; mypy heatwidget
echo "== tsc";  (cd js && npm run --silent typecheck)
echo "== vitest"; (cd js && npm test --silent)
echo "== pytest"; python -m pytest -q --durations=15 "$@"
# The model-facing tests again under the oldest transformers we support (a venv over this one).
bash scripts/test_transformers.sh 4.57.6
