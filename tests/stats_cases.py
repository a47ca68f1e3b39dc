"""Shared inputs and comparisons for the token-statistics tests."""

from __future__ import annotations

import math

import torch

import flashuq as fuq

FLOAT_FIELDS = ("lse", "max_logprob", "logprob", "entropy", "margin", "collision", "kurtosis", "self_certainty")
ROW_KINDS = ("normal", "peaked", "offset_plus30", "offset_minus80", "near_uniform", "huge", "masked", "ties")


def make_logits(kind: str, rows: int, V: int, *, seed: int = 0, dtype=torch.float32, device="cpu"):
    """Rows of one kind; rounded to ``dtype`` (the reference is computed on the rounded values)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, V, generator=g, dtype=torch.float64)
    if kind == "normal":
        x = 3 * x
    elif kind == "peaked":  # one logit 50 above the rest: entropy ~1e-17 and below
        x[torch.arange(rows), torch.randint(0, V, (rows,), generator=g)] += 50
    elif kind == "offset_plus30":
        x = x + 30
    elif kind == "offset_minus80":
        x = x - 80
    elif kind == "near_uniform":
        x = 0.1 * x
    elif kind == "huge":  # |logits| up to 1e4
        x = (torch.rand(rows, V, generator=g, dtype=torch.float64) * 2 - 1) * 1e4
    elif kind == "masked":  # a third of the vocabulary is -inf
        x = 2 * x
        x[torch.rand(rows, V, generator=g) < 0.33] = -math.inf
    elif kind == "ties":  # a few distinct values: exact ties for the max and the top-k
        x = torch.randint(0, 4, (rows, V), generator=g).double()
    else:
        raise ValueError(kind)
    return x.to(dtype).to(device)


# fp32 accumulation against float64: relative 1e-5 (the bar) with a small absolute floor
# for quantities that can be ~0 (margin on a near-tie, self-certainty of a near-uniform row).
# Kurtosis is a ratio of 4th and 2nd centred moments and is held to 1e-4 relative.
RTOL = {"kurtosis": 1e-4}
ATOL = {"margin": 1e-7, "collision": 1e-9, "self_certainty": 1e-6, "kurtosis": 1e-3}


def assert_close_renyi(got, ref, *, rtol=1e-5):
    """renyi_term to ``rtol`` (|r| >= log V, so relative is absolute enough). fisher_rao = (2/π)·acos(bc)
    is ill-conditioned where bc -> 1 (near-uniform rows): compared as bc = cos(π/2·f) to ``rtol``, and
    as f itself to 100·rtol where f > 0.05."""
    for f in ("renyi_term", "fisher_rao"):
        g, r = getattr(got, f), getattr(ref, f)
        assert g is not None and r is not None, f
        assert torch.equal(torch.isnan(g.cpu()), torch.isnan(r.cpu())), f"{f}: NaN pattern differs"
    ok = ~torch.isnan(ref.renyi_term.cpu())
    g, r = got.renyi_term.double().cpu()[ok], ref.renyi_term.double().cpu()[ok]
    assert ((g - r).abs() <= rtol * r.abs() + 1e-6).all(), f"renyi_term: max abs err {float((g - r).abs().max()):.3g}"
    g, r = got.fisher_rao.double().cpu()[ok], ref.fisher_rao.double().cpu()[ok]
    assert ((g >= 0) & (g <= 1)).all(), "fisher_rao outside [0, 1]"
    bg, br = torch.cos(math.pi / 2 * g), torch.cos(math.pi / 2 * r)
    assert ((bg - br).abs() <= rtol * br + 1e-7).all(), f"fisher_rao (as bc): max abs err {float((bg - br).abs().max()):.3g}"
    big = r > 0.05
    assert ((g[big] - r[big]).abs() <= 100 * rtol * r[big]).all(), "fisher_rao"


def assert_close_stats(got, ref, *, rtol=1e-5, skip=(), topk_rtol=1e-5, renyi=False):
    if renyi:
        assert_close_renyi(got, ref, rtol=rtol)
    for f in FLOAT_FIELDS:
        if f in skip:
            continue
        g, r = getattr(got, f).double().cpu(), getattr(ref, f).double().cpu()
        assert g.shape == r.shape, f
        assert torch.equal(torch.isnan(g), torch.isnan(r)), f"{f}: NaN pattern differs"
        inf = torch.isinf(r)
        assert torch.equal(g[inf], r[inf]), f"{f}: infinities differ"
        ok = ~torch.isnan(r) & ~inf
        err = (g[ok] - r[ok]).abs()
        tol = RTOL.get(f, rtol) * r[ok].abs() + ATOL.get(f, 0.0)
        if getattr(got, f).dtype == torch.float32:  # below fp32's normal range nothing is representable
            tol = tol + torch.finfo(torch.float32).tiny
        worst = (err - tol).max() if err.numel() else torch.tensor(-1.0)
        assert worst <= 0, f"{f}: max abs err {float(err.max()):.3g} (values ~{float(r[ok].abs().max()):.3g})"
    assert torch.equal(got.argmax.cpu(), ref.argmax.cpu()), "argmax"
    assert torch.equal(got.topk_ids.cpu(), ref.topk_ids.cpu()), "topk_ids"
    g, r = got.topk_logprobs.double().cpu(), ref.topk_logprobs.double().cpu()
    fin = torch.isfinite(r)
    assert torch.equal(torch.isnan(g), torch.isnan(r)) and torch.equal(g[~fin & ~torch.isnan(r)], r[~fin & ~torch.isnan(r)])
    torch.testing.assert_close(g[fin], r[fin], rtol=topk_rtol, atol=1e-6)


def reference(logits, tokens=None, **kw):
    return fuq.reference.token_stats(logits.cpu(), None if tokens is None else tokens.cpu(), **kw)
