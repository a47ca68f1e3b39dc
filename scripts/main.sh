#!/usr/bin/env bash
# The README's main job: set up (scripts/setup.sh), then `flashuq demo`: the offline SmolLM2-135M-Instruct
# answers ~200 bundled questions with the uncertainty recorder; every method is ranked by PRR and
# ROC-AUC (printed) and report.html is written. Arguments go to `flashuq demo` (e.g. --limit 50).
# The benchmark suites: `flashuq bench` (or python bench/<suite>.py).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
python -m flashuq demo "$@"
