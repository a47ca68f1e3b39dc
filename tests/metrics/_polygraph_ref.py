"""Test-only transcriptions of LM-Polygraph's metric code paths (docs/methods.md#prr-polygraph, docs/methods.md#ece), written
from the spec, run as the reference runs them (global numpy RNG, default argsort, loops)."""

import numpy as np


def normalize(t):
    t = np.asarray(t, dtype=float)
    lo, hi = np.min(t), np.max(t)
    if np.isclose(lo, hi):
        lo -= 1
        hi += 1
    return (t - lo) / (hi - lo)


def prr_raw(ue, target, max_rejection=1.0):
    target = normalize(target)
    ue = np.array(ue)
    n = len(ue)
    k = int(max_rejection * n)
    order = np.argsort(ue)
    cs = np.cumsum(np.array(target)[order])[-k:]
    scores = (cs / np.arange((n - k) + 1, n + 1))[::-1]
    return np.sum(scores) / k


def random_scores(fn, metric, num_iter=1000, seed=42):
    np.random.seed(seed)
    r = np.arange(len(metric))
    vals = []
    for _ in range(num_iter):
        np.random.shuffle(r)
        vals.append(fn(r, metric))
    return np.mean(vals)


def prr_normalized(ue, metric, max_rejection=1.0):
    """The manager's eval_ue for one estimator: clip NaN/inf ue, drop NaN targets, normalise."""
    metric = np.asarray(metric, dtype=float)
    ue = np.nan_to_num(np.asarray(ue, dtype=float), nan=-1e7, neginf=-1e7, posinf=1e7)
    keep = ~np.isnan(metric)
    ue, metric = ue[keep], metric[keep]
    fn = lambda e, t: prr_raw(e, t, max_rejection)  # noqa: E731
    val = fn(ue, metric)
    oracle = fn(-metric, metric)
    state = np.random.get_state()
    try:
        rand = random_scores(fn, metric)
    finally:
        np.random.set_state(state)
    if not (oracle == rand):
        val = (val - rand) / (oracle - rand)
    return val


def ece(estimator, target, n_bins=20, normalize=True):
    from sklearn.preprocessing import MinMaxScaler
    estimator = np.asarray(estimator, dtype=float)
    target = np.asarray(target, dtype=float)
    conf = -estimator
    if normalize:
        conf = MinMaxScaler().fit_transform(conf.reshape(-1, 1)).flatten()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    out, n = 0.0, len(conf)
    for i in range(n_bins):
        lo, hi = edges[i], edges[i + 1]
        in_bin = (conf > lo) & (conf <= hi) if i > 0 else (conf >= lo) & (conf <= hi)
        if not np.any(in_bin):
            continue
        out += (np.sum(in_bin) / n) * abs(np.mean(target[in_bin]) - np.mean(conf[in_bin]))
    return out
