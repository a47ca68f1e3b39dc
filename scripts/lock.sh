#!/usr/bin/env bash
# Refresh the locks: resolve requirements/{dev,min}.in with requirements/no-deps.in afresh (today's
# releases within their ranges) and rewrite requirements/{dev,min}.lock. The one way to change what
# the environments hold; commit the locks together with the change that needs them.
#   bash scripts/lock.sh [--keep] [dev|min]   (PYTHON=python3.11 to pick the interpreter the locks target)
# --keep: the packages already locked stay at their versions; only new requirements are resolved.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${PYTHON:-python3}" -m venv "$tmp/venv"
"$tmp/venv/bin/python" scripts/lock.py "$@"
