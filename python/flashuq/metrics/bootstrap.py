"""Percentile bootstrap confidence intervals for any metric."""

from __future__ import annotations

from typing import NamedTuple, Union

import numpy as np

from ._common import check_int, check_real, to_numpy


class BootstrapResult(NamedTuple):
    """``estimate`` = the metric on the full data; ``low``/``high`` = the percentile interval;
    ``samples`` = the ``[n_resamples, ...]`` resampled values (NaN where the metric was undefined)."""

    estimate: Union[float, np.ndarray]
    low: Union[float, np.ndarray]
    high: Union[float, np.ndarray]
    samples: np.ndarray


def bootstrap(metric_fn, *arrays, n_resamples=1000, confidence=0.95, seed=0, **kwargs) -> BootstrapResult:
    """Percentile bootstrap interval of ``metric_fn(*arrays, **kwargs)``.

    Each resample draws N item indices with replacement (``numpy.random.default_rng(seed)``, one
    ``integers(0, N, N)`` draw per resample, so the result is deterministic given ``seed`` and does
    not touch numpy's global random state) and applies the *same* indices to every array along its
    first axis (paired resampling: ``uncertainty``/``quality`` stay aligned; for :func:`tsu` the
    rows are resampled). The interval is ``[q_{(1−c)/2}, q_{(1+c)/2}]`` of the resampled values
    (``numpy.quantile``, linear), NaN resamples ignored (e.g. ROC-AUC on a one-class resample).

    Args:
        metric_fn: e.g. ``fuq.metrics.prr``; returns a scalar or a fixed-shape array/tuple
            (e.g. :func:`misleading_rate`).
        *arrays: its array arguments, all with the same first dimension N ≥ 1.
        n_resamples: ≥ 1.
        confidence: in (0, 1).
        seed: seed of the resampling generator.
        **kwargs: passed to ``metric_fn`` unchanged.

    Returns:
        :class:`BootstrapResult`; Python floats for a scalar metric, numpy arrays otherwise.
    """
    if not callable(metric_fn):
        raise TypeError(f"metric_fn must be callable, got {type(metric_fn).__name__}")
    if not arrays:
        raise ValueError("bootstrap needs at least one array")
    n_resamples = check_int(n_resamples, "n_resamples", 1)
    confidence = check_real(confidence, "confidence")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    arrs = [to_numpy(a, f"arrays[{i}]") for i, a in enumerate(arrays)]
    for i, a in enumerate(arrs):
        if a.ndim == 0:
            raise ValueError(f"arrays[{i}] must have at least one dimension")
    n = arrs[0].shape[0]
    for i, a in enumerate(arrs[1:], 1):
        if a.shape[0] != n:
            raise ValueError(f"all arrays must have the same first dimension, got {n} and {a.shape[0]} (arrays[{i}])")
    if n == 0:
        raise ValueError("bootstrap needs at least one item (N = 0)")

    estimate = np.asarray(metric_fn(*arrs, **kwargs), dtype=np.float64)
    rng = np.random.default_rng(seed)
    samples = np.empty((n_resamples,) + estimate.shape, dtype=np.float64)
    for r in range(n_resamples):  # a loop over resamples; each metric call is vectorised over items
        idx = rng.integers(0, n, size=n)
        try:
            samples[r] = metric_fn(*(a[idx] for a in arrs), **kwargs)
        except ValueError:  # e.g. a degenerate resample the metric rejects
            samples[r] = np.nan
    alpha = (1.0 - confidence) / 2.0
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanquantile(samples, [alpha, 1.0 - alpha], axis=0)
    if estimate.ndim == 0:
        return BootstrapResult(float(estimate), float(lo), float(hi), samples)
    return BootstrapResult(estimate, lo, hi, samples)
