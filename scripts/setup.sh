#!/usr/bin/env bash
# Set up a venv exactly as locked and install flashuq's wheel into it. Sourced by scripts/main.sh,
# scripts/test.sh and scripts/test_min.sh, with
#   VENV    the venv (created if missing)
#   LOCK    the lock to install (default requirements/dev.lock)
#   WHEEL   an already built wheel to install (default: build one with scripts/build_wheel.sh)
# Steps: (1) the interpreter must be the one the lock was resolved for (its "# target:" line);
# (2) every package of the lock, hash-checked, without dependency resolution (pip install --no-deps
# --require-hashes), so nothing on PyPI can change what is installed; (3) the wheel (CPU module, the
# CUDA module where nvcc is found, the Triton kernels; repaired by auditwheel), installed; (4)
# scripts/check_lock.py: the venv holds exactly the lock, plus flashuq.
# Nothing here runs Python with the repository root on sys.path: its top-level kernels/ folder would
# shadow Hugging Face's `kernels` package, which transformers imports (docs/environment.md). Console
# scripts (pip, flashuq, pytest) put their bin/ directory there instead; inline Python runs from /.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${VENV:?scripts/setup.sh needs VENV (the venv to set up)}"
VENV=$(realpath -m "$VENV")
LOCK=${LOCK:-requirements/dev.lock}
python=${PYTHON:-python3}

want=$(sed -n 's/^# target: //p' "$LOCK")
have=$(cd / && "$python" -c 'import sys, sysconfig; v = sys.version_info
print(f"cp{v.major}{v.minor}-" + sysconfig.get_platform().replace("-", "_"))')
if [ "$want" != "$have" ]; then
  echo "setup: $LOCK is for $want, but $python is $have;" \
       "run with PYTHON=<a CPython of the lock's version> (or refresh the lock: bash scripts/lock.sh)" >&2
  exit 2
fi
pyver() { (cd / && "$1" -c 'import sys; print(sys.version.split()[0])'); }
if [ -x "$VENV/bin/python" ] && [ "$(pyver "$VENV/bin/python")" != "$(pyver "$python")" ]; then
  echo "setup: $VENV was made by another Python; recreating it" >&2
  rm -rf "$VENV"
fi
[ -x "$VENV/bin/python" ] || (cd / && "$python" -m venv "$VENV")

# The machines' pip.conf lists local extra indexes; each package missing from one prints a warning.
quiet_pip() { "$VENV/bin/pip" "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }
echo "setup: installing $LOCK into $VENV"
# a reused venv: first remove what the lock no longer names (the lock is the whole environment)
stale=$("$VENV/bin/python" scripts/check_lock.py --not-locked "$LOCK")
[ -z "$stale" ] || { echo "setup: removing packages the lock does not name:" $stale; quiet_pip uninstall -q -y $stale; }
quiet_pip install -q --disable-pip-version-check --no-deps --require-hashes -r "$LOCK"

if [ -z "${WHEEL:-}" ]; then
  VENV="$VENV" bash scripts/build_wheel.sh
  WHEEL=$(ls dist/flashuq-*.whl)
fi
quiet_pip install -q --disable-pip-version-check --no-deps --force-reinstall "$WHEEL"
"$VENV/bin/python" scripts/check_lock.py "$LOCK"
(cd / && "$VENV/bin/python" -c "import flashuq, flashuq._ext as e
print('flashuq', flashuq.__version__, 'from', flashuq.__file__, '| CPU kernel:', e._C.isa(), '| CUDA module:',
      'built' if e._cuda else 'not built')")
