"""Evaluation protocols that are not per-item scores: TSU (docs/methods.md#tsu) and the
misleading rate (docs/methods.md#misleading-rate)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._common import as_float_1d, check_binary, check_same_length, to_numpy


def tsu(uncertainty_by_temperature, *, columns=None) -> float:
    """Temperature Sensitivity of Uncertainty, in percent (Inv-Entropy paper; docs/methods.md#tsu)::

        TSU(T1 < … < Tm) = 100 · mean_x 1[ U(x,T1) < U(x,T2) < … < U(x,Tm) ]

    the share of questions whose uncertainty rises strictly with the temperature (ties fail).

    Args:
        uncertainty_by_temperature: ``[Q, m]``, rows = questions, columns = temperatures in
            ascending order, m ≥ 2; must not contain NaN.
        columns: optional sequence of column indices (ascending temperatures) to use, e.g.
            ``(0, 2)`` for the pair TSU(T1, T3). Default: all columns (the full chain).

    Returns:
        A Python float in [0, 100].
    """
    u = to_numpy(uncertainty_by_temperature, "uncertainty_by_temperature")
    if u.dtype.kind not in "biuf":
        raise TypeError(f"uncertainty_by_temperature must hold real numbers, got dtype {u.dtype}")
    if u.ndim != 2:
        raise ValueError(f"uncertainty_by_temperature must be [Q, m], got shape {tuple(u.shape)}")
    u = u.astype(np.float64)
    if columns is not None:
        cols = np.asarray(columns)
        if cols.ndim != 1 or cols.dtype.kind not in "iu":
            raise TypeError("columns must be a 1-d sequence of ints")
        if ((cols < -u.shape[1]) | (cols >= u.shape[1])).any():
            raise ValueError(f"columns {cols.tolist()} out of range for m = {u.shape[1]}")
        u = u[:, cols]
    if u.shape[0] < 1:
        raise ValueError("uncertainty_by_temperature has no rows (Q = 0)")
    if u.shape[1] < 2:
        raise ValueError(f"TSU needs at least two temperatures, got m = {u.shape[1]}")
    if np.isnan(u).any():
        raise ValueError("uncertainty_by_temperature contains NaN")
    return float(100.0 * np.mean(np.all(np.diff(u, axis=1) > 0, axis=1)))


class MisleadingRate(NamedTuple):
    """``t_to_f`` = MR_T→F, ``f_to_t`` = MR_F→T (fractions in [0, 1], NaN for an empty subset)."""

    t_to_f: float
    f_to_t: float


def misleading_rate(correct_before, correct_after) -> MisleadingRate:
    """Misleading rates of Dang et al. (EMNLP 2025, arXiv 2411.02708; docs/methods.md#misleading-rate)::

        MR_T→F = #(correct before ∧ incorrect after) / #(correct before)
        MR_F→T = #(incorrect before ∧ correct after) / #(incorrect before)

    Args:
        correct_before: ``[B]`` binary correctness without the misleading cue.
        correct_after: ``[B]`` binary correctness after it.

    Returns:
        :class:`MisleadingRate` ``(t_to_f, f_to_t)`` of Python floats; an empty denominator gives NaN.
    """
    b = as_float_1d(correct_before, "correct_before")
    a = as_float_1d(correct_after, "correct_after")
    check_same_length(b, a, "correct_before", "correct_after")
    if np.isnan(b).any() or np.isnan(a).any():
        raise ValueError("correct_before and correct_after must not contain NaN")
    b = check_binary(b, "correct_before")
    a = check_binary(a, "correct_after")
    n_t = int(b.sum())
    n_f = int((~b).sum())
    t_to_f = int((b & ~a).sum()) / n_t if n_t else float("nan")
    f_to_t = int((~b & a).sum()) / n_f if n_f else float("nan")
    return MisleadingRate(float(t_to_f), float(f_to_t))
