#!/usr/bin/env bash
# The README's main job: set up (scripts/setup.sh), then benchmark flashuq.token_stats against
# eager torch and torch.compile on this machine (table on stdout, JSON under bench/results/).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
python bench/token_stats.py "$@"
