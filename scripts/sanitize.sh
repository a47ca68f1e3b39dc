#!/usr/bin/env bash
# Build the CPU module once with -fsanitize=address,undefined and run the CPU op tests, the binding
# fuzzers and the tests of the C++ graph / Inv-Entropy kernels against it. Usage: bash scripts/sanitize.sh   (needs the dev requirements installed)
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
FLASHUQ_CUDA=OFF python -m pip install -q --no-build-isolation --no-deps --target "$target" \
  -C cmake.define.FLASHUQ_SANITIZE=ON -C build-dir=build/sanitize .
asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
# Python itself leaks by design at exit; UBSan findings abort the run.
LD_PRELOAD="$asan:$ubsan" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 PYTHONPATH="$target" \
  python -m pytest -q -p no:cacheprovider tests/ops tests/methods/test_graph_methods.py \
  tests/methods/test_inv_entropy.py -k "not compile and not opcheck" "$@"
