"""Binary-correctness metrics: ROC-AUC, PR-AUC (average precision) and ECE (docs/methods.md#roc-auc-pr-auc).

``uncertainty`` higher = less trustworthy; ``correct`` is 1/True for a correct (or true) item and
0/False otherwise. The two AUCs have scikit-learn's exact tie semantics (``roc_auc_score``,
``average_precision_score``) without depending on it: both come from the sorted scores of each class
and binary searches, O(N log N); ROC-AUC's counts are exact int64 arithmetic.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _ext
from .._checks import check_bool
from ._common import apply_nan_policy, argsort_stable, as_float_1d, check_binary, check_int, check_same_length, tie_groups


def _binary_inputs(uncertainty, correct, nan_policy):
    u = as_float_1d(uncertainty, "uncertainty")
    c = as_float_1d(correct, "correct")
    check_same_length(u, c, "uncertainty", "correct")
    u, c = apply_nan_policy(u, c, nan_policy, "uncertainty", "correct")
    return u, check_binary(c, "correct")


def _split_sorted(score: np.ndarray, pos: np.ndarray):
    """The scores of the positive and of the negative items, each sorted ascending (two value
    sorts are much faster than one argsort; tie groups are then found by binary search)."""
    return np.sort(score[pos]), np.sort(score[~pos])


def roc_auc(uncertainty, correct, *, nan_policy="raise") -> float:
    """ROC-AUC of uncertainty as a detector of incorrect items (docs/methods.md#roc-auc-pr-auc).

    ``P(u_incorrect > u_correct) + ½ P(u_incorrect = u_correct)`` over all (incorrect, correct)
    pairs: the Mann-Whitney statistic, equal to ``sklearn.metrics.roc_auc_score(1 − correct, u)``
    (equivalently ``roc_auc_score(correct, −u)``), trapezoidal rule on ties. 1 = every incorrect item
    is more uncertain than every correct one, 0.5 = chance; a constant uncertainty gives 0.5.

    Args:
        uncertainty: ``[N]``, higher = less trustworthy; ±inf allowed (they rank at the ends).
        correct: ``[N]`` binary (0/1 or bool).
        nan_policy: ``"raise"`` (default), ``"omit"`` or ``"polygraph"`` (NaN uncertainty → −1e7, NaN
            labels dropped, as LM-Polygraph's ``ROCAUC`` after ``_delete_nans``).

    Returns:
        A Python float; NaN when only one class is present (scikit-learn raises there).
    """
    u, ok = _binary_inputs(uncertainty, correct, nan_policy)
    wrong = ~ok
    p = int(wrong.sum())
    q = int(ok.sum())
    if p == 0 or q == 0:
        return float("nan")
    sp, sn = _split_sorted(u, wrong)
    below = np.searchsorted(sn, sp, side="left")          # correct items strictly less uncertain
    tied = np.searchsorted(sn, sp, side="right") - below  # correct items tied with it
    twice = 2 * int(below.sum()) + int(tied.sum())        # exact integers
    return float(twice / (2 * p * q))


def pr_auc(uncertainty, correct, *, positive="incorrect", nan_policy="raise") -> float:
    """PR-AUC as average precision (docs/methods.md#roc-auc-pr-auc; LM-Polygraph ``PRAUC``).

    ``AP = Σ_n (R_n − R_{n−1}) · P_n`` over the distinct score thresholds in decreasing order, all
    items of a tie group entering at once (scikit-learn's ``average_precision_score``; no
    interpolation). With ``positive="incorrect"`` (default, the orientation of :func:`roc_auc` and
    of LM-Polygraph, whose target 1 is a false claim) it equals
    ``average_precision_score(1 − correct, uncertainty)``; with ``positive="correct"`` it equals
    ``average_precision_score(correct, −uncertainty)``, which is the Inv-Entropy repository's "PRR"
    (docs/methods.md#inv-entropy-evaluation). Chance level is the positive rate.

    Returns:
        A Python float; NaN when there is no positive item.
    """
    if positive not in ("incorrect", "correct"):
        raise ValueError(f"positive must be 'incorrect' or 'correct', got {positive!r}")
    u, ok = _binary_inputs(uncertainty, correct, nan_policy)
    if positive == "incorrect":
        y, score = ~ok, u
    else:
        y, score = ok, -u
    n_total_pos = int(y.sum())
    if n_total_pos == 0:
        return float("nan")
    sp, sn = _split_sorted(score, y)
    # for every positive with score s, the precision at threshold s: all items with score >= s enter
    tp = sp.shape[0] - np.searchsorted(sp, sp, side="left")
    fp = sn.shape[0] - np.searchsorted(sn, sp, side="left")
    return float(np.sum(tp / (tp + fp)) / n_total_pos)


def _minmax_coefficients(lo, hi):
    """``(s, o)`` of sklearn.preprocessing.MinMaxScaler().fit_transform on one column with minimum lo
    and maximum hi, which computes ``x·s + o``: ``s = 1/(max − min)`` (1 when the range is below
    10·eps) and ``o = 0 − min·s``."""
    rng = hi - lo
    scale = 1.0 / (rng if rng >= 10 * np.finfo(np.float64).eps else 1.0)
    return scale, 0.0 - lo * scale


class ReliabilityBins(NamedTuple):
    """Per-bin statistics behind :func:`ece` (``[n_bins]`` arrays; empty bins hold NaN means)."""

    confidence: np.ndarray  #: mean confidence of the items in the bin
    accuracy: np.ndarray    #: mean ``correct`` of the items in the bin
    count: np.ndarray       #: items in the bin (int64)
    edges: np.ndarray       #: ``[n_bins + 1]`` bin edges on [0, 1]
    n: int                  #: all items, binned or not (LM-Polygraph's N)


def reliability_bins(uncertainty, correct, *, n_bins=20, normalize=True, nan_policy="raise") -> ReliabilityBins:
    """The confidence bins of :func:`ece` (same arguments): for a reliability diagram
    (``flashuq.report.plot_reliability``) or a calibration table."""
    n_bins = check_int(n_bins, "n_bins", 1)
    normalize = check_bool(normalize, "normalize")
    u = as_float_1d(uncertainty, "uncertainty")
    c = as_float_1d(correct, "correct")
    check_same_length(u, c, "uncertainty", "correct")
    u, c = apply_nan_policy(u, c, nan_policy, "uncertainty", "correct")
    if not np.isfinite(u).all():
        raise ValueError("uncertainty must be finite for ECE (nan_policy='polygraph' maps ±inf to ±1e7)")
    if ((c < 0) | (c > 1)).any():
        raise ValueError("correct must lie in [0, 1]")
    # conf = -u, min-max scaled as MinMaxScaler does when normalize; bin i holds (edges[i], edges[i+1]],
    # bin 0 also 0 itself; items outside [0, 1] in no bin. One C++ pass with numpy's arithmetic and
    # bincount's order of summation (the bits of searchsorted + bincount, without their temporaries).
    scale, offset = 1.0, 0.0
    if normalize:
        lo, hi = -u.max(), -u.min()  # min and max of -u
        scale, offset = _minmax_coefficients(lo, hi)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.zeros(n_bins, np.int64)
    sum_conf, sum_correct = np.zeros(n_bins), np.zeros(n_bins)
    _ext._C.reliability_sums(np.ascontiguousarray(u), np.ascontiguousarray(c), float(scale), float(offset), normalize,
                             edges, counts, sum_conf, sum_correct)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = sum_conf / counts
        acc = sum_correct / counts
    return ReliabilityBins(mean_conf, acc, counts, edges, int(u.shape[0]))


def ece(uncertainty, correct, *, n_bins=20, normalize=True, nan_policy="raise") -> float:
    """Expected calibration error of the confidence ``−uncertainty`` (LM-Polygraph ``ECE``; docs/methods.md#ece).

    ``conf = −uncertainty``, min-max scaled to [0, 1] when ``normalize`` (LM-Polygraph's
    ``ECE(normalize=True)`` used by polygraph_eval; a constant confidence becomes 0). ``n_bins`` equal
    bins on [0, 1]: the first ``[0, 1/B]``, the others ``(lo, hi]``::

        ECE = Σ_b (n_b / N) · |mean(correct_b) − mean(conf_b)|

    With ``normalize=False`` the caller passes ``uncertainty = −confidence`` with the confidence
    already in [0, 1]; as in LM-Polygraph, items whose confidence falls outside [0, 1] land in no
    bin but still count in N. Meaningful for binary ``correct``; any values in [0, 1] are accepted.
    Lower is better. The bins themselves: :func:`reliability_bins`.

    Args:
        uncertainty: ``[N]``; must be finite after ``nan_policy`` (``"polygraph"`` maps ±inf to ±1e7).
        correct: ``[N]`` in [0, 1].
        n_bins: number of bins (≥ 1).
        normalize: min-max scale the confidence first.
        nan_policy: ``"raise"`` (default), ``"omit"`` or ``"polygraph"``.

    Returns:
        A Python float.
    """
    b = reliability_bins(uncertainty, correct, n_bins=n_bins, normalize=normalize, nan_policy=nan_policy)
    used = b.count > 0
    gaps = np.abs(b.accuracy[used] - b.confidence[used])
    return float(np.sum(b.count[used] / b.n * gaps))


def ap_ratio_prr(uncertainty, correct, *, nan_policy="raise") -> float:
    """The Inv-Entropy repository's "PRR" (docs/methods.md#inv-entropy-evaluation), an average-precision ratio:
    ``AP(correct, 1 − u) / AP(correct, correct)`` with scikit-learn's average precision. For a
    binary ``correct`` with at least one correct item the denominator is 1, so this is the AP of
    finding the correct items by low uncertainty: quote it as "AP", it is **not** the
    rejection-curve :func:`prr`. Higher is better; NaN when no item is correct.
    """
    u, ok = _binary_inputs(uncertainty, correct, nan_policy)
    y = ok.astype(np.float64)
    num = pr_auc(u - 1.0, y, positive="correct")  # score −(u − 1) = 1 − u, bit for bit
    den = pr_auc(-y, y, positive="correct")       # score = correct itself
    return float(num / den)


def isotonic_brier(confidence, correct, *, nan_policy="raise") -> float:
    """Brier score after an in-sample isotonic fit of ``correct`` on ``confidence`` (the Inv-Entropy
    evaluation, docs/methods.md#inv-entropy-evaluation): ``mean_i (f(conf_i) − correct_i)²`` with ``f`` the non-decreasing
    least-squares fit (scikit-learn ``IsotonicRegression().fit_transform``: tied confidences pooled
    first, then pool adjacent violators, in C++). Note the input is a **confidence** (higher = more
    trustworthy), as in the reference. Lower is better.

    Returns:
        A Python float.
    """
    c = as_float_1d(confidence, "confidence")
    y = as_float_1d(correct, "correct")
    check_same_length(c, y, "confidence", "correct")
    c, y = apply_nan_policy(-c, y, nan_policy, "confidence", "correct")
    c = -c
    if not np.isfinite(c).all():
        raise ValueError("confidence must be finite")
    if ((y < 0) | (y > 1)).any():
        raise ValueError("correct must lie in [0, 1]")
    order = argsort_stable(c)
    starts, sizes = tie_groups(c[order])
    w = sizes.astype(np.float64)
    ymean = np.add.reduceat(y[order], starts) / w
    fit = np.empty_like(ymean)
    _ext._C.isotonic_pav(np.ascontiguousarray(ymean), np.ascontiguousarray(w), fit)
    f = np.empty_like(y)
    f[order] = np.repeat(fit, sizes)
    return float(np.mean((f - y) ** 2))
