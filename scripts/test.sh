#!/usr/bin/env bash
# The README's test command (what CI runs, through .ci/run): set up a venv outside the checkout as
# locked (scripts/setup.sh), build flashuq's wheel and install it there, then run the whole test suite
# against the installed wheel, never the source tree (FLASHUQ_TEST_WHEEL=1 makes tests/conftest.py
# check that). Arguments go to pytest.
#   FLASHUQ_TEST_VENV   the venv (default: ~/.cache/flashuq/venv-test; reused when it matches the lock)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FLASHUQ_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/flashuq/venv-test}
. scripts/setup.sh
# pytest's console script, from the repository root: its bin/ directory goes on sys.path, not the root
FLASHUQ_TEST_WHEEL=1 "$VENV/bin/pytest" -q "$@"
