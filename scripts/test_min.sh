#!/usr/bin/env bash
# The lower bounds: the oldest transformers that pyproject.toml's `hf` extra admits, locked in
# requirements/min.lock, in a venv of its own with the wheel scripts/test.sh built (dist/), then the
# tests that use transformers (tests/hf, tests/cli). Run by .ci/run after scripts/test.sh.
#   FLASHUQ_MIN_VENV   the venv (default: ~/.cache/flashuq/venv-min)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FLASHUQ_MIN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/flashuq/venv-min}
LOCK=requirements/min.lock
WHEEL=$(ls dist/flashuq-*.whl 2>/dev/null) || { echo "test_min: no wheel in dist/: run scripts/test.sh first" >&2; exit 2; }
. scripts/setup.sh
echo "test_min: transformers $("$VENV/bin/pip" show transformers 2>/dev/null | sed -n 's/^Version: //p')"
FLASHUQ_TEST_WHEEL=1 "$VENV/bin/pytest" -q tests/hf tests/cli "$@"
