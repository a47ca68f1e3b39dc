#!/usr/bin/env bash
# Everything a GPU check needs, in one command (for the device machine, which has torch, triton,
# nanobind and scikit-build-core but no network): build with the CUDA module, memcheck the CUDA C++
# kernels (where compute-sanitizer exists), run tests/gpu and the Triton tests on the device, then
# the GPU benchmarks (bench/gpu.py: token_stats, token_stats_linear vs cuBLAS, graph spectra, UQAC);
# logs and JSON go to $OUT.
#   bash scripts/gpu.sh            (OUT defaults to bench/results)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu-info.txt"
root=$PWD
# Python runs from / here: the repository root on sys.path would let its kernels/ folder shadow
# Hugging Face's `kernels` package (docs/environment.md)
(cd / && python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)") \
  | tee -a "$OUT/gpu-info.txt"
(cd / && FLASHUQ_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=16 python3 -m pip install -q --no-build-isolation --no-deps \
  -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90 -C build-dir="$root/build/gpu" "$root") 2>&1 | tail -5
if command -v compute-sanitizer >/dev/null 2>&1; then
  timeout 180 compute-sanitizer --tool memcheck --error-exitcode 3 python3 scripts/memcheck.py \
    > "$OUT/memcheck.log" 2>&1 && echo "memcheck: clean" || echo "memcheck: FAILED or timed out (see memcheck.log)"
  tail -3 "$OUT/memcheck.log"
else
  echo "memcheck: compute-sanitizer not found, skipped" | tee "$OUT/memcheck.log"
fi
python3 bench/gpu.py --out "$OUT" 2>&1 | tee "$OUT/gpu-log.txt"
