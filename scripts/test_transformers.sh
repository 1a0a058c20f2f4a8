#!/usr/bin/env bash
# The model-facing tests under another transformers version: `bash scripts/test_transformers.sh 4.57.6 [pytest
# args]`. CI runs them under 4.57.6, the oldest version heatwidget supports, besides the whole suite under the
# newest 5.x that scripts/setup.sh installs. A venv with --system-site-packages shares torch, numpy, pytest and
# the editable heatwidget with the main environment and adds only that transformers and the huggingface_hub /
# tokenizers versions it requires. Idempotent: a venv that already holds the version is reused.
# Run scripts/setup.sh (or scripts/test.sh) first.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${1:?usage: scripts/test_transformers.sh TRANSFORMERS_VERSION [pytest args]}"
shift
VENV=".venv-transformers-$VERSION"

if ! "$VENV/bin/python" -c "import transformers as t, sys; sys.exit(t.__version__ != '$VERSION')" 2>/dev/null; then
  echo "== venv $VENV (transformers $VERSION)"
  python -m venv --system-site-packages "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "transformers==$VERSION"
fi

# The test files that build, load or run models; test_families*.py is picked up when it exists.
shopt -s nullglob
files=(tests/test_load.py tests/test_clean_output.py tests/test_divergence.py tests/test_patching.py
       tests/test_analysis_contract.py tests/test_hooks*.py tests/test_probe*.py tests/test_weights.py
       tests/test_demo.py tests/test_families*.py)
echo "== pytest (transformers $VERSION)"
"$VENV/bin/python" -m pytest -q --durations=10 -p no:cacheprovider "${files[@]}" "$@"
