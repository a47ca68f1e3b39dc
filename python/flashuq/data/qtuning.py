"""The Error–Uncertainty plane of an SFT set and Q-Tuning's selection (Wang et al. 2025, "Winning the
Pruning Gamble", arXiv 2509.23873). See docs/eu_plane.md for the definitions and how they were read.

    plane = eu_plane(ppl, ent, keep_samples=0.25)          # thresholds, quadrant, kept
    mask  = token_keep_mask(token_logprob, keep=0.7)       # per-token loss mask of one Q2 sample
    run   = select("scored.parquet", "kept.jsonl", keep_samples=0.25, keep_tokens=0.7)

Each sample (a scored (prompt, response) row) has an **error**, the perplexity of its response
``PPL = exp(-1/T Σ_t log p(y_t | x, y_<t))``, and an **uncertainty**, the mean predictive entropy
``Ent = 1/T Σ_t H(p(· | x, y_<t))`` of its T response tokens. The plane's quadrants:

    Q1 harmful noise          high PPL, high Ent    dropped
    Q2 valuable misconception high PPL, low Ent     kept, its highest-scoring tokens masked out
    Q3 redundant knowledge    low PPL,  low Ent     dropped
    Q4 calibration data       low PPL,  high Ent    kept whole

Thresholds come from one quantile level ``a`` in [0, 1/2] on both axes: PPL_lo = Q_PPL(a),
PPL_hi = Q_PPL(1 - a), Ent_lo = Q_Ent(a), Ent_hi = Q_Ent(1 - a) (``numpy.quantile``, linear). A sample is
kept as Q2 when PPL >= PPL_hi and Ent <= Ent_lo, as Q4 when PPL <= PPL_lo and Ent >= Ent_hi. The kept
count grows with ``a``; bisection finds the largest ``a`` whose kept set holds at most
``floor(keep_samples * N)`` samples. Every other sample is labelled by the midlines
(PPL_lo + PPL_hi) / 2 and (Ent_lo + Ent_hi) / 2.

Inside a kept Q2 sample, token i has the context-aware score
``s_i = (1 - λ) PPL_i + λ (PPL_{i-1} + PPL_{i+1})`` with ``PPL_i = exp(-log p(y_i | ...))`` (a missing
neighbour at either end counts as the token itself); the ``ceil(keep_tokens * T)`` tokens with the
lowest scores keep their loss (ties: the earlier token), the rest are masked out.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .._checks import check_real

#: quadrant codes in the output: 1..4 as in the paper, 0 for a sample without coordinates (NaN)
QUADRANT_NAMES = {0: "none", 1: "Q1 harmful noise", 2: "Q2 valuable misconception", 3: "Q3 redundant knowledge",
                  4: "Q4 calibration data"}
_BISECTION_STEPS = 60  # 2^-60 of [0, 1/2]: below float64's resolution of a level


@dataclasses.dataclass
class EUPlane:
    """The plane of N samples under one keep ratio (see the module docstring)."""

    level: float           #: the quantile level a
    ppl_low: float         #: Q_PPL(a)
    ppl_high: float        #: Q_PPL(1 - a)
    ent_low: float         #: Q_Ent(a)
    ent_high: float        #: Q_Ent(1 - a)
    quadrant: np.ndarray   #: [N] int8, 1..4 (0: NaN coordinates)
    kept: np.ndarray       #: [N] bool: kept as Q2 or Q4
    budget: int            #: floor(keep_samples * N), the most samples kept

    @property
    def ppl_mid(self) -> float:
        return 0.5 * (self.ppl_low + self.ppl_high)

    @property
    def ent_mid(self) -> float:
        return 0.5 * (self.ent_low + self.ent_high)


def _ratio(name: str, value, *, allow_one: bool = True) -> float:
    return check_real(value, name, 0.0, 1.0, lo_open=True, hi_open=not allow_one)


def _coords(name: str, x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one value per sample (1-D), got shape {a.shape}")
    return a


def _regions(ppl, ent, level):
    pl, ph = np.quantile(ppl, [level, 1.0 - level])
    el, eh = np.quantile(ent, [level, 1.0 - level])
    q2 = (ppl >= ph) & (ent <= el)
    q4 = (ppl <= pl) & (ent >= eh) & ~q2
    return (float(pl), float(ph), float(el), float(eh)), q2, q4


def eu_plane(ppl, ent, keep_samples: float) -> EUPlane:
    """Thresholds, quadrants and the kept set of N samples with error ``ppl`` and uncertainty ``ent``.

    Samples with a NaN coordinate take no part (quadrant 0, never kept). Raises ValueError when the
    lengths differ or ``keep_samples`` is not in (0, 1].
    """
    keep_samples = _ratio("keep_samples", keep_samples)
    ppl, ent = _coords("ppl", ppl), _coords("ent", ent)
    if ppl.shape != ent.shape:
        raise ValueError(f"ppl and ent must have one value per sample each, got {ppl.shape[0]} and {ent.shape[0]}")
    N = ppl.shape[0]
    quadrant = np.zeros(N, dtype=np.int8)
    kept = np.zeros(N, dtype=bool)
    budget = int(math.floor(keep_samples * N + 1e-9))
    ok = ~(np.isnan(ppl) | np.isnan(ent))
    if not ok.any():
        return EUPlane(0.0, math.nan, math.nan, math.nan, math.nan, quadrant, kept, budget)
    p, e = ppl[ok], ent[ok]
    lo, hi = 0.0, 0.5
    _, q2, q4 = _regions(p, e, hi)
    if int((q2 | q4).sum()) <= budget:
        lo = hi  # even the medians keep no more than the budget
    else:
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            _, q2, q4 = _regions(p, e, mid)
            if int((q2 | q4).sum()) <= budget:
                lo = mid
            else:
                hi = mid
    (pl, ph, el, eh), q2, q4 = _regions(p, e, lo)
    pm, em = 0.5 * (pl + ph), 0.5 * (el + eh)
    hp, he = p >= pm, e >= em
    lab = np.where(hp, np.where(he, 1, 2), np.where(he, 4, 3)).astype(np.int8)
    lab[q2], lab[q4] = 2, 4
    quadrant[ok] = lab
    kept[ok] = q2 | q4
    return EUPlane(lo, pl, ph, el, eh, quadrant, kept, budget)


def context_token_scores(token_logprob, lam: float = 0.5) -> np.ndarray:
    """``s_i = (1 - λ) PPL_i + λ (PPL_{i-1} + PPL_{i+1})``, ``PPL_i = exp(-log p_i)``; a missing
    neighbour (first or last token) counts as the token itself."""
    lam = _lambda(lam)
    lp = np.asarray(token_logprob, dtype=np.float64)
    if lp.ndim != 1:
        raise ValueError(f"token_logprob must be one value per token (1-D), got shape {lp.shape}")
    tp = np.exp(-lp)
    if tp.size == 0:
        return tp
    prev = np.concatenate([tp[:1], tp[:-1]])
    nxt = np.concatenate([tp[1:], tp[-1:]])
    return (1.0 - lam) * tp + lam * (prev + nxt)


def _lambda(lam) -> float:
    return check_real(lam, "lam", 0.0, 1.0)


def token_keep_mask(token_logprob, keep: float, lam: float = 0.5) -> np.ndarray:
    """The loss mask (1 = trained on) of one Q2 sample's response tokens: the ``ceil(keep * T)``
    tokens with the lowest :func:`context_token_scores` (ties: the earlier token). A NaN score
    sorts last (pruned first)."""
    keep = _ratio("keep_tokens", keep)
    s = context_token_scores(token_logprob, lam)
    n = int(math.ceil(keep * s.size - 1e-9))
    mask = np.zeros(s.size, dtype=np.int8)
    order = np.argsort(np.where(np.isnan(s), np.inf, s), kind="stable")
    mask[order[:n]] = 1
    return mask


# ------------------------------------------------------------------------------------------------
# flashuq select: a scored output in, the kept subset (JSONL) and the plane (PNG) out
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SelectRun:
    """What :func:`select` did."""

    out: pathlib.Path
    plot: Optional[pathlib.Path]
    plane: EUPlane
    samples: int           #: rows in the scored output
    kept: int              #: rows written
    tokens: int            #: response tokens of the kept rows
    tokens_kept: int       #: of which keep their loss
    counts: Dict[str, int]  #: samples per quadrant


def _sample_coords(table) -> Tuple[np.ndarray, np.ndarray]:
    cols = set(table.column_names)
    if {"token_logprob", "token_entropy"} <= cols:
        lp = table.column("token_logprob").to_pylist()
        te = table.column("token_entropy").to_pylist()
        ppl = np.array([math.exp(-float(np.mean(v))) if v else math.nan for v in lp], dtype=np.float64)
        ent = np.array([float(np.mean(v)) if v else math.nan for v in te], dtype=np.float64)
        return ppl, ent
    if {"perplexity", "mean_token_entropy"} <= cols:  # the mean NLL and mean entropy of flashuq score
        ppl = np.exp(np.asarray(table.column("perplexity").to_pylist(), dtype=np.float64))
        return ppl, np.asarray(table.column("mean_token_entropy").to_pylist(), dtype=np.float64)
    raise ValueError("scored: needs the columns token_logprob and token_entropy (flashuq score --tokens) or "
                     "perplexity and mean_token_entropy")


def select(scored, out, *, keep_samples: float, keep_tokens: float = 1.0, lam: float = 0.5,
           plot: Optional[str] = "") -> SelectRun:
    """Q-Tuning's selection of a :func:`flashuq.data.score` output.

    Writes ``out`` (JSONL, input order): one line per kept row with its ``row``, the input's columns,
    ``quadrant`` (2 or 4), ``ppl``, ``entropy``, ``loss_mask`` (one 0/1 per response token; all 1 in
    Q4) and, when the scored output has them, ``response_ids``. ``plot``: the PNG of the plane
    (default ``out`` with ``.png``; None for none). Token pruning needs the per-token log-probs
    (``flashuq score --tokens``).
    """
    from .rows import _score_names
    from .store import OWN_COLUMNS, read_scores

    keep_samples = _ratio("keep_samples", keep_samples)
    keep_tokens = _ratio("keep_tokens", keep_tokens)
    lam = _lambda(lam)
    if not pathlib.Path(scored).is_dir():
        raise FileNotFoundError(f"scored: {str(scored)!r} is not a flashuq score output directory")
    table = read_scores(scored)
    cols = set(table.column_names)
    if keep_tokens < 1.0 and "token_logprob" not in cols:
        raise ValueError("scored: keep_tokens < 1 needs the per-token log-probs; score with --tokens")
    ppl, ent = _sample_coords(table)
    plane = eu_plane(ppl, ent, keep_samples)
    out = pathlib.Path(out)
    rows = table.to_pylist()
    skip = set(OWN_COLUMNS) | set(_score_names()) | {"response_ids"}
    n_tok = n_kept_tok = 0
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w") as f:
        for i, r in enumerate(rows):
            if not plane.kept[i]:
                continue
            T = int(r["response_tokens"])
            if plane.quadrant[i] == 2 and keep_tokens < 1.0:
                mask = token_keep_mask(r["token_logprob"], keep_tokens, lam).tolist()
            else:
                mask = [1] * T
            n_tok += T
            n_kept_tok += int(sum(mask))
            line: Dict[str, Any] = {"row": r["row"]}
            line.update({k: v for k, v in r.items() if k not in skip})
            line.update(quadrant=int(plane.quadrant[i]), ppl=float(ppl[i]), entropy=float(ent[i]), loss_mask=mask)
            if r.get("response_ids") is not None:
                line["response_ids"] = r["response_ids"]
            f.write(json.dumps(line, allow_nan=False) + "\n")
    os.replace(tmp, out)
    counts = {QUADRANT_NAMES[q]: int((plane.quadrant == q).sum()) for q in (1, 2, 3, 4, 0)}
    png = None
    if plot is not None:
        png = pathlib.Path(plot) if plot else out.with_suffix(".png")
        plot_plane(ppl, ent, plane, png)
    return SelectRun(out, png, plane, len(rows), int(plane.kept.sum()), n_tok, n_kept_tok, counts)


_COLORS = {1: "#d62728", 2: "#2ca02c", 3: "#7f7f7f", 4: "#ff7f0e"}


def plot_plane(ppl, ent, plane: EUPlane, path) -> pathlib.Path:
    """A PNG of the plane: samples coloured by quadrant (kept ones filled), thresholds and midlines."""
    try:
        import matplotlib
    except ImportError as ex:
        raise ImportError("the EU-plane plot needs matplotlib: pip install 'flashuq[plot]' "
                          "(or pass plot=None / --plot '')") from ex
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5.5), dpi=120)
    ppl, ent = np.asarray(ppl), np.asarray(ent)
    for q in (1, 2, 3, 4):
        sel = plane.quadrant == q
        k, d = sel & plane.kept, sel & ~plane.kept
        name = QUADRANT_NAMES[q]
        if k.any():
            ax.scatter(ppl[k], ent[k], s=14, c=_COLORS[q], label=f"{name} (kept, {int(k.sum())})")
        if d.any():
            ax.scatter(ppl[d], ent[d], s=14, facecolors="none", edgecolors=_COLORS[q], linewidths=0.8,
                       label=f"{name} (dropped, {int(d.sum())})")
    for x in (plane.ppl_low, plane.ppl_high):
        ax.axvline(x, color="k", lw=0.6, ls=":")
    for y in (plane.ent_low, plane.ent_high):
        ax.axhline(y, color="k", lw=0.6, ls=":")
    ax.axvline(plane.ppl_mid, color="k", lw=0.8, ls="--")
    ax.axhline(plane.ent_mid, color="k", lw=0.8, ls="--")
    if np.nanmin(ppl) > 0 and np.nanmax(ppl) / np.nanmin(ppl) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("error: perplexity of the response (PPL)")
    ax.set_ylabel("uncertainty: mean predictive entropy (nats)")
    ax.set_title(f"Error–Uncertainty plane: {int(plane.kept.sum())} of {len(ppl)} kept (level a = {plane.level:.3f})")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["EUPlane", "QUADRANT_NAMES", "SelectRun", "context_token_scores", "eu_plane", "plot_plane", "select",
           "token_keep_mask"]
