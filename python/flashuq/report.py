"""Plots a person can look at: the prediction-rejection curve and the reliability diagram.

matplotlib is an optional extra (``pip install "flashuq[plot]"``); it is imported on first use and
the Agg backend is used, so plots render on machines without a screen. Each function saves a PNG
or SVG (by the file suffix) when given ``path`` and returns the matplotlib ``Figure``.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from . import metrics


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError('flashuq.report needs matplotlib: pip install "flashuq[plot]"') from e
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    if path is None:
        return fig
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".png", ".svg"):
        raise ValueError(f"path must end in .png or .svg, got {path!r}")
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return fig


def plot_rejection_curve(uncertainty, quality, path=None, *, names: Optional[Sequence[str]] = None,
                         title: str = "Prediction-rejection curve"):
    """Mean quality of the kept items against the fraction rejected (most uncertain first), for one
    method (``uncertainty [N]``) or several (``uncertainty [S, N]`` with ``names``), with the oracle
    (reject by true quality) and the random baseline (the mean quality). The legend gives each
    method's normalised PRR (``metrics.prr``, exact baseline)."""
    plt = _pyplot()
    q = np.asarray(quality, dtype=np.float64)
    u = np.asarray(uncertainty, dtype=np.float64)
    if u.ndim == 1:
        u = u[None]
    if u.ndim != 2 or u.shape[1] != q.shape[-1]:
        raise ValueError(f"uncertainty must be [N] or [S, N] with N = len(quality) = {q.shape[-1]}, "
                         f"got shape {tuple(np.shape(uncertainty))}")
    names = list(names) if names is not None else [f"method {i}" for i in range(u.shape[0])]
    if len(names) != u.shape[0]:
        raise ValueError(f"names must give one name per row of uncertainty ({u.shape[0]}), got {len(names)}")
    fig, ax = plt.subplots(figsize=(6, 4.2))
    curves = [metrics.rejection_curve(row, q) for row in u]
    c0 = curves[0]
    ax.plot(c0.rejection_rate, c0.oracle, color="black", lw=1.5, ls="--", label="oracle")
    for c, row, name in zip(curves, u, names):
        ax.plot(c.rejection_rate, c.quality, lw=1.8, label=f"{name} (PRR {metrics.prr(row, q):.3f})")
    ax.plot(c0.rejection_rate, c0.random, color="grey", lw=1.2, ls=":", label="random")
    ax.set_xlabel("fraction rejected (most uncertain first)")
    ax.set_ylabel("mean quality of the kept items")
    ax.set_xlim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def plot_reliability(uncertainty, correct, path=None, *, n_bins: int = 20, normalize: bool = True,
                     title: str = "Reliability diagram"):
    """Accuracy per confidence bin against the bin's mean confidence (confidence = −uncertainty,
    min-max scaled to [0, 1] when ``normalize``, LM-Polygraph's ECE binning), with the diagonal of
    perfect calibration and a histogram of the bin sizes. The title gives ``metrics.ece``."""
    plt = _pyplot()
    conf, acc, count, edges, _ = metrics.reliability_bins(uncertainty, correct, n_bins=n_bins, normalize=normalize)
    e = metrics.ece(uncertainty, correct, n_bins=n_bins, normalize=normalize)
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(5, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = np.diff(edges)
    live = count > 0
    ax.bar(edges[:-1][live], acc[live], width=width[live], align="edge", color="tab:blue", alpha=0.75,
           edgecolor="white", label="accuracy")
    gap = conf[live] - acc[live]
    ax.bar(edges[:-1][live], np.abs(gap), bottom=np.minimum(conf[live], acc[live]), width=width[live], align="edge",
           fill=False, hatch="///", edgecolor="tab:red", lw=0.8, label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], color="black", ls="--", lw=1, label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title} (ECE {e:.3f})")
    ax.legend(fontsize=8, loc="upper left")
    axh.bar(edges[:-1], count, width=width, align="edge", color="grey", edgecolor="white")
    axh.set_xlabel("confidence" + (" (min-max scaled −uncertainty)" if normalize else " (−uncertainty)"))
    axh.set_ylabel("items")
    axh.set_xlim(0, 1)
    return _save(fig, path)


__all__ = ["plot_rejection_curve", "plot_reliability"]
