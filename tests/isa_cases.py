"""The CPU kernels' instruction-set builds (baseline, AVX2, AVX-512) that this processor runs, for the
tests that run an op on each build (``flashuq._ext._C.limit_isa``, docs/cpu_kernels.md)."""

import contextlib


def isa_levels():
    """The levels 0..2 that select different builds on this processor (a narrower machine repeats one)."""
    from flashuq import _ext
    names = {}
    for level in (0, 1, 2):
        names.setdefault(_ext._C.limit_isa(level), level)
    _ext._C.limit_isa(2)
    return sorted(names.values())


@contextlib.contextmanager
def limited_isa(level):
    """Run the block on the build of ``level``, then back on the widest."""
    from flashuq import _ext
    try:
        _ext._C.limit_isa(level)
        yield
    finally:
        _ext._C.limit_isa(2)
