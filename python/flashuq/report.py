"""Plots a person can look at: the prediction-rejection curve, the reliability diagram, and the
self-contained HTML report of ``flashuq demo`` / ``flashuq eval`` (:func:`write_html`).

matplotlib is an optional extra (``pip install "flashuq[plot]"``); it is imported on first use and
the Agg backend is used, so plots render on machines without a screen. Each function saves a PNG
or SVG (by the file suffix) when given ``path`` and returns the matplotlib ``Figure``.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from . import metrics


#: the scores that come from sampled answers (flashuq.evaluate.sample_scores)
_SAMPLE_METHODS = frozenset({
    "monte_carlo_sequence_entropy", "monte_carlo_normalized_sequence_entropy", "semantic_entropy", "label_prob",
    "num_sem_sets", "degree", "eigv", "eccentricity", "kernel_language_entropy", "sentence_sar", "vr", "vro",
    "uqlm_cosine_sim", "uqlm_exact_match", "cocoa_msp", "cocoa_ppl", "cocoa_mte", "semantic_density", "eigenscore"})

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




# ---- the HTML report of flashuq demo / eval ------------------------------------------------------

def _png_base64(fig) -> str:
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _token_colour(p: float) -> str:
    """Red (p = 0) through yellow to green (p = 1), light enough to read black text on."""
    p = min(max(p, 0.0), 1.0) if p == p else 0.0
    return f"hsl({120.0 * p:.0f}, 75%, 80%)"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.qa { margin: 0.6em 0; padding: 0.4em 0.6em; border-left: 4px solid #ccc; }
.qa.ok { border-color: #2a2; } .qa.bad { border-color: #c22; }
.q { font-weight: 600; } .meta { color: #666; font-size: 0.85em; }
.tok { padding: 0.1em 0; border-radius: 3px; white-space: pre-wrap; cursor: help; }
.legend span { display: inline-block; width: 2.5em; text-align: center; font-size: 0.8em; }
img { max-width: 48%; margin-right: 1%; vertical-align: top; }
"""


def write_html(result, board, path, *, title: str = "flashuq report", max_items: int = 1000) -> str:
    """One self-contained HTML file (no network): the leaderboard, each answer's tokens coloured by the
    probability the model gave them (hover for that token's statistics), the rejection curves of
    the leading methods and the reliability diagram of the best one (when matplotlib is there).

    ``result`` is a ``flashuq.evaluate.EvalResult``, ``board`` its ``leaderboard``. Returns the path.
    """
    import html
    import math

    esc = html.escape
    n = len(result.answers)
    acc = float(np.mean(result.correct)) if n else float("nan")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{esc(title)}</h1>",
             f"<p>{n} questions, accuracy {acc:.3f}. Every score is an uncertainty (higher = less "
             "trustworthy); PRR 1 = ranks errors like an oracle, 0 = random.</p>",
             "<h2>Leaderboard</h2><table><tr><th>method</th><th>PRR</th><th>95% CI</th><th>ROC-AUC</th>"
             "<th>95% CI</th></tr>"]
    for r in board:
        parts.append(f"<tr class='lb'><td>{esc(r['method'])}</td><td class='num'>{r['prr']:.3f}</td>"
                     f"<td class='num'>[{r['prr_ci'][0]:.3f}, {r['prr_ci'][1]:.3f}]</td>"
                     f"<td class='num'>{r['roc_auc']:.3f}</td>"
                     f"<td class='num'>[{r['roc_auc_ci'][0]:.3f}, {r['roc_auc_ci'][1]:.3f}]</td></tr>")
    parts.append("</table>")
    ranked = [r["method"] for r in board if r["prr"] == r["prr"]]
    if ranked:
        try:
            q = result.correct.astype(np.float64)
            top = []  # the five leading methods with distinct scores (msp, gnll and chow_sum coincide
            for m in ranked:  # on greedy answers), plus the best sample-based one when it is further down
                if not any(np.array_equal(result.scores[m], result.scores[t]) for t in top):
                    top.append(m)
                if len(top) == 5:
                    break
            sample_based = [m for m in ranked if m in _SAMPLE_METHODS]
            if sample_based and sample_based[0] not in top:
                top.append(sample_based[0])
            fig = plot_rejection_curve(np.stack([result.scores[m] for m in top]), q, names=top,
                                       title="Rejection curves (quality = correct)")
            img1 = _png_base64(fig)
            fig = plot_reliability(result.scores[ranked[0]], q, n_bins=10,
                                   title=f"Reliability of {ranked[0]}")
            img2 = _png_base64(fig)
            parts.append("<h2>Rejection curves and calibration</h2>"
                         f"<img alt='rejection curves' src='data:image/png;base64,{img1}'>"
                         f"<img alt='reliability diagram' src='data:image/png;base64,{img2}'>")
        except ImportError:
            parts.append("<p class='meta'>(plots need matplotlib: pip install \"flashuq[plot]\")</p>")
    parts.append("<h2>Answers</h2><p class='legend'>token probability: " +
                 "".join(f"<span style='background:{_token_colour(p)}'>{p:.1f}</span>"
                         for p in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)) + "</p>")
    best = ranked[0] if ranked else None
    for i in range(min(n, max_items)):
        it = result.items[i]
        ok = bool(result.correct[i])
        st = result.token_stats[i] if i < len(result.token_stats) else {}
        toks = result.tokens[i] if i < len(result.tokens) else []
        spans = []
        for j, t in enumerate(toks):
            lp = st.get("logprob", [math.nan] * len(toks))[j]
            p = math.exp(lp) if lp == lp else math.nan
            tip = "; ".join(f"{k} {v[j]:.4g}" for k, v in st.items()) + f"; p {p:.4g}"
            spans.append(f"<span class='tok' style='background:{_token_colour(p)}' title='{esc(tip)}'>"
                         f"{esc(t)}</span>")
        score = f"; {esc(best)} {result.scores[best][i]:.3f}" if best else ""
        parts.append(f"<div class='qa {'ok' if ok else 'bad'}'><div class='q'>{esc(it.question)}</div>"
                     f"<div>{''.join(spans) or '<i>(empty)</i>'}</div>"
                     f"<div class='meta'>{'correct' if ok else 'wrong'} (accepted: "
                     f"{esc(', '.join(it.answers))}){score}</div></div>")
    parts.append("</body></html>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return os.fspath(path)


__all__ = ["plot_rejection_curve", "plot_reliability", "write_html"]
