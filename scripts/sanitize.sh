#!/usr/bin/env bash
# Build the CPU module once with -fsanitize=address,undefined and run the CPU op tests (tests/ops:
# token statistics, reductions, graph spectra, UQAC reduction / backtracking / similarity), the binding
# fuzzers and the tests of the C++ graph / Inv-Entropy / UQAC kernels through the methods against it.
# Usage: PYTHON=.venv/bin/python bash scripts/sanitize.sh   (a Python with requirements/dev.lock installed;
# default: the python on PATH). -P keeps the repository root off sys.path (docs/environment.md).
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
py=${PYTHON:-python}
export PATH="$(dirname "$("$py" -P -c 'import sys; print(sys.executable)')"):$PATH"   # cmake, ninja of the venv
FLASHUQ_CUDA=OFF "$py" -P -m pip install -q --no-build-isolation --no-deps --target "$target" \
  -C cmake.define.FLASHUQ_SANITIZE=ON -C build-dir=build/sanitize .
extra=()  # the attention methods run the UQAC kernels end to end
for f in tests/methods/test_attention_methods.py; do [[ -f $f ]] && extra+=("$f"); done
asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
# Python itself leaks by design at exit; UBSan findings abort the run. An editable install's import
# hook would shadow PYTHONPATH (the sanitized build would not be the one tested): drop it first.
run_pytest='import sys; sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
import flashuq, pytest; assert flashuq.__file__.startswith(sys.argv[1]), flashuq.__file__
sys.exit(pytest.main(sys.argv[2:]))'
LD_PRELOAD="$asan:$ubsan" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 PYTHONPATH="$target" \
  "$py" -P -c "$run_pytest" "$target" -q -p no:cacheprovider tests/ops tests/methods/test_graph_methods.py \
  tests/methods/test_inv_entropy.py "${extra[@]}" -k "not compile and not opcheck" "$@"
