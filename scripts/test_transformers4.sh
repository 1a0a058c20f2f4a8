#!/usr/bin/env bash
# The model-facing tests again under transformers 4.57.6, the oldest version heatwidget supports (CI runs the
# newest 5.x in the main environment). A venv with --system-site-packages shares torch, numpy, pytest and the
# editable heatwidget with the main environment and only adds transformers 4.57.6 and the huggingface_hub /
# tokenizers it requires. Idempotent: a venv that already holds that version is reused.
# Run scripts/setup.sh (or scripts/test.sh) first. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
TRANSFORMERS_VERSION=4.57.6
VENV="${HEATWIDGET_TF4_VENV:-.venv-transformers4}"

if ! "$VENV/bin/python" -c "import transformers as t, sys; sys.exit(t.__version__ != '$TRANSFORMERS_VERSION')" \
    2>/dev/null; then
  python -m venv --system-site-packages "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "transformers==$TRANSFORMERS_VERSION"
fi

# The test files that build, load or run models; test_families*.py is picked up when it exists.
shopt -s nullglob
files=(tests/test_load.py tests/test_divergence.py tests/test_hooks*.py tests/test_probe*.py tests/test_weights.py
       tests/test_demo.py tests/test_families*.py)
echo "== pytest (transformers $TRANSFORMERS_VERSION)"
"$VENV/bin/python" -m pytest -q --durations=10 -p no:cacheprovider "${files[@]}" "$@"
