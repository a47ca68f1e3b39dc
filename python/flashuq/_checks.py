"""The argument checks every public function shares, so that the same mistake gets the same error
everywhere: a value of the wrong type (a string, a bool, a float where an int is needed) raises
``TypeError``; a value of the right type that is out of range, NaN or infinite raises ``ValueError``.
Both name the argument."""

from __future__ import annotations

import math
import numbers
from typing import Optional

import numpy as np


def check_bool(value, name: str) -> bool:
    """``value`` as a bool: a Python or numpy bool, nothing else (not 0/1, not a string)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def check_int(value, name: str, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
    """``value`` as an int in ``[lo, hi]`` (a bound of None is open). bool is not an int here."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if hi is None:
            raise ValueError(f"{name} must be >= {lo}, got {value}")
        if lo is None:
            raise ValueError(f"{name} must be <= {hi}, got {value}")
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def check_real(value, name: str, lo: Optional[float] = None, hi: Optional[float] = None, *,
               lo_open: bool = False, hi_open: bool = False, finite: bool = True) -> float:
    """``value`` as a float in the interval from ``lo`` to ``hi`` (closed unless ``lo_open`` /
    ``hi_open``; a bound of None is open). NaN is refused; infinities unless ``finite=False``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    if finite and math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value}")
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if below or above:
        if hi is None:
            raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value}")
        if lo is None:
            raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {value}")
        raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, "
                         f"got {value}")
    return value


__all__ = ["check_int", "check_real"]
