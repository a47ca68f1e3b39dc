#!/usr/bin/env bash
# The README's main job: set up (scripts/setup.sh), then benchmark on this machine:
#   bench/token_stats.py  flashuq.token_stats against eager torch and torch.compile
#   bench/sequence.py     every sequence score from logits: flashuq, eager torch, LM-Polygraph style
# (tables on stdout, JSON under bench/results/). Arguments go to bench/token_stats.py.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
python bench/token_stats.py "$@"
python bench/sequence.py
