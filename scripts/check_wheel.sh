#!/usr/bin/env bash
# The wheel as a user meets it: a new, empty venv outside the checkout; `pip install` of dist/'s wheel
# with only its own declared dependencies (resolved within requirements/dev.lock's versions, so a
# release on PyPI changes nothing); then, from /, import flashuq, the CPU module and the CUDA module
# (no CUDA on the machine is fine: cudart is static), compute token entropies on the CPU against
# float64 torch, and check that the Triton kernels are inside.
# Run by .ci/run after scripts/test.sh built the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
wheel=$(ls "$PWD"/dist/flashuq-*.whl 2>/dev/null) || { echo "check_wheel: no wheel in dist/" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed -n 's/^\([A-Za-z0-9][A-Za-z0-9._-]*==[^ ]*\).*/\1/p' requirements/dev.lock > "$tmp/constraints.txt"
(cd / && "${PYTHON:-python3}" -m venv "$tmp/venv")
"$tmp/venv/bin/pip" install -q --disable-pip-version-check -c "$tmp/constraints.txt" "$wheel" \
  2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
echo "check_wheel: $(basename "$wheel") ($(du -h "$wheel" | cut -f1)) installed with" \
     "$("$tmp/venv/bin/pip" list --format=freeze 2>/dev/null | grep -v -c '^flashuq==') other packages"
(cd / && "$tmp/venv/bin/python" - <<'PY'
import importlib.resources as res
import torch
import flashuq, flashuq._C, flashuq._ext as e
assert "site-packages" in flashuq.__file__, flashuq.__file__
x = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0))
p = torch.softmax(x.double(), -1)  # the CPU kernel against float64 torch
torch.testing.assert_close(flashuq.token_stats(x).entropy.double(), -(p * p.log()).sum(-1), rtol=1e-5, atol=1e-6)
kernels = sorted(p.name for p in res.files("flashuq.kernels").iterdir() if p.name.endswith(".py"))
assert "token_stats.py" in kernels and "uqac_reduce.py" in kernels, kernels
print(f"check_wheel: import flashuq works from /; CPU kernel {e._C.isa()}; CUDA module "
      f"{'imports' if e._cuda is not None else 'absent'}; Triton kernels: {', '.join(kernels)}")
PY
)
