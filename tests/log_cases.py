"""Checks shared by the tests of the CPU kernels' branch-free logs (flashuq/cpu_math.h log_f32 in
tests/ops/test_uqac.py, log_f64 in tests/methods/test_inv_entropy.py), called through their test
bindings ``_C._log_f32`` / ``_C._log_f64``."""

import numpy as np
import pytest


def check_log_specials(log, dtype, wrong_dtype):
    """``log(x, out)`` gives -inf at ±0, +inf at +inf, NaN at negatives, -inf and NaN (as np.log),
    and refuses an input of ``wrong_dtype`` with a TypeError."""
    specials = np.array([0.0, -0.0, -1.0, -np.inf, np.inf, np.nan], dtype=dtype)
    got = np.empty_like(specials)
    log(specials, got)
    assert got[0] == -np.inf and got[1] == -np.inf and got[4] == np.inf
    assert np.isnan(got[2]) and np.isnan(got[3]) and np.isnan(got[5])
    with pytest.raises(TypeError):
        log(np.ones(10, wrong_dtype), np.empty(10, dtype))
