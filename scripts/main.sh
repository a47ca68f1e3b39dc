#!/usr/bin/env bash
# The README's main job: set up .venv as locked with flashuq's wheel (scripts/setup.sh), then
# `flashuq demo`: the offline SmolLM2-135M-Instruct answers ~200 bundled questions with the
# uncertainty recorder; every method is ranked by PRR and ROC-AUC (printed) and report.html is written.
# Arguments go to `flashuq demo` (e.g. --limit 50). The benchmark suites: `flashuq bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FLASHUQ_VENV:-$PWD/.venv}
. scripts/setup.sh
"$VENV/bin/flashuq" demo "$@"   # the console script: the repository root stays off sys.path
