"""Shared ragged batches for the masked-reduction tests."""

import numpy as np
import torch

OPS = ("sum", "mean", "max", "min", "logsumexp")


def ragged(B=6, T=40, *, seed=0, empty=(2,), dtype=torch.float32):
    """Right-padded values [B, T] and mask, the packed equivalent, and the lengths (some 0)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    for e in empty:
        lengths[e] = 0
    values = (torch.randn(B, T, generator=g, dtype=torch.float64) * 3).to(dtype)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    packed = torch.cat([values[b, : lengths[b]] for b in range(B)])
    cu = torch.zeros(B + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(lengths, 0)
    return values, mask, packed, cu, lengths


def numpy_reduce(rows, op, weights=None):
    """Direct numpy transcription, one sequence at a time (independent of flashuq.reference)."""
    out = []
    for i, r in enumerate(rows):
        r = np.asarray(r, dtype=np.float64)
        w = np.ones_like(r) if weights is None else np.asarray(weights[i], dtype=np.float64)
        if r.size == 0:
            out.append(0.0 if op == "sum" else np.nan)
        elif op == "sum":
            out.append(np.sum(w * r))
        elif op == "mean":
            out.append(np.average(r, weights=w))
        elif op == "max":
            out.append(np.max(r))
        elif op == "min":
            out.append(np.min(r))
        else:
            m = np.max(r)
            out.append(m + np.log(np.sum(w * np.exp(r - m))))
    return np.array(out)
