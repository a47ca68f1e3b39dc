"""The compiled modules: ``_C`` (CPU, always built) and ``_cuda`` (built where nvcc was found)."""

from __future__ import annotations

import functools

from . import _C  # noqa: F401  (a missing CPU module is a broken install: fail loudly)

try:  # cudart is linked statically, so this imports on machines without CUDA
    from . import _cuda
except ImportError:  # built without a CUDA compiler
    _cuda = None


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether triton imports (needed only for CUDA tensors)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def kernels():
    """The Triton kernel modules, imported on first use so ``import flashuq`` never needs triton."""
    if not triton_available():
        raise RuntimeError("flashuq: CUDA tensors need triton (pip install 'flashuq[cuda]')")
    from . import kernels as k
    from .kernels import (ensemble_stats, masked_quantile, masked_reduce, token_stats,  # noqa: F401
                          token_stats_linear, uqac_reduce)

    return k
