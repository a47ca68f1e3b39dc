"""Fuzz the nanobind bindings flashuq._C.token_stats, ensemble_stats, count_inversions, isotonic_pav,
reliability_sums, argsort_f64, uqac_* and num_sem_sets directly, both ways: for any combination of sizes, strides, dtypes and output
buffers, the test first decides from the binding's contract whether the request is consistent; a
consistent one must succeed (and, where a reference is cheap, match it), an inconsistent one must raise
ValueError or TypeError. So a binding that refused everything fails as surely as one that accepted too
much. Nothing may crash or read outside the array (the sanitizer build in scripts/sanitize.sh runs
this file too)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from flashuq import _ext
from flashuq import reference as ref

REFUSED = (ValueError, TypeError)


def _expect(consistent: bool, call) -> bool:
    """Call the binding: it must succeed when the request is consistent, raise ValueError/TypeError
    otherwise. Returns ``consistent``."""
    event("consistent" if consistent else "refused")  # --hypothesis-show-statistics: both kinds are drawn
    if consistent:
        call()
    else:
        with pytest.raises(REFUSED):
            call()
    return consistent


def _rows_inside(numel: int, rows: int, V: int, n1: int, s0: int, s1: int) -> bool:
    """The row-layout contract of the token_stats / ensemble_stats bindings for a contiguous array of
    ``numel`` elements: row r starts at (r // n1) * s0 + (r % n1) * s1 and has V elements."""
    if V < 1 or rows < 0 or n1 < 1 or s0 < 0 or s1 < 0:
        return False
    if rows == 0:
        return True
    n0 = -(-rows // n1)
    return (n0 - 1) * s0 + (min(rows, n1) - 1) * s1 + V <= numel


def _gather_rows(x: torch.Tensor, rows: int, V: int, n1: int, s0: int, s1: int) -> torch.Tensor:
    flat = x.reshape(-1).double()
    return torch.stack([flat[(r // n1) * s0 + (r % n1) * s1:][:V] for r in range(rows)])


def _check_token_stats(x, layout, tokens, k, outs, topk_lp, renyi_term=None):
    """The binding's outputs against the float64 reference on the rows ``layout`` (rows, V, n1, s0, s1)
    describes."""
    rows = layout[0]
    want = ref.token_stats(_gather_rows(x, *layout), tokens, topk=k, renyi=renyi_term is not None)
    lse, max_lp, logprob, entropy, margin, collision, _kurtosis, self_certainty = outs
    pairs = [(lse, want.lse), (max_lp, want.max_logprob), (entropy, want.entropy), (margin, want.margin),
             (collision, want.collision), (self_certainty, want.self_certainty)]
    if tokens is not None:
        pairs.append((logprob, want.logprob))
    if k:
        pairs.append((topk_lp.view(rows, k), want.topk_logprobs))
    if renyi_term is not None:
        pairs.append((renyi_term, want.renyi_term))
    for got, w in pairs:
        torch.testing.assert_close(got.double(), w, rtol=1e-4, atol=1e-4)


@settings(max_examples=300, deadline=None)
@given(
    shape=st.tuples(st.integers(0, 5), st.integers(1, 40)),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32]),
    rows=st.integers(-2, 12),
    V=st.integers(-1, 60),
    n1=st.integers(-1, 6),
    s0=st.integers(-3, 200),
    s1=st.integers(-3, 60),
    k=st.integers(-1, 70),
    out_rows=st.integers(0, 12),
    with_tokens=st.booleans(),
    out_dtype=st.sampled_from([torch.float32, torch.float64]),
    renyi_rows=st.sampled_from([None, None, 0, 3, 12]),
)
def test_binding_never_crashes(shape, dtype, rows, V, n1, s0, s1, k, out_rows, with_tokens, out_dtype, renyi_rows):
    x = torch.randn(shape).to(dtype)
    f = lambda n: torch.empty(n, dtype=out_dtype)  # noqa: E731
    kk = max(k, 0)
    tokens = torch.zeros(out_rows, dtype=torch.int64) if with_tokens else None
    outs = [f(out_rows) for _ in range(8)]  # the float fields of TokenStats, in order (argmax goes third)
    argmax, topk_lp, topk_ids = (torch.empty(out_rows, dtype=torch.int64), f(out_rows * kk),
                                 torch.empty(out_rows * kk, dtype=torch.int64))
    renyi = (None, None) if renyi_rows is None else (f(renyi_rows), f(out_rows))

    def call():
        _ext._C.token_stats(x, rows, V, n1, s0, s1, tokens, 1.0, k, *outs[:2], argmax, *outs[2:], topk_lp, topk_ids, 1,
                            *renyi)

    consistent = (dtype != torch.int32 and _rows_inside(x.numel(), rows, V, n1, s0, s1) and 0 <= k <= min(V, 64)
                  and out_rows == rows and (out_dtype == torch.float64) == (dtype == torch.float64)
                  and (renyi_rows is None or renyi_rows == rows))
    if _expect(consistent, call) and rows:
        _check_token_stats(x, (rows, V, n1, s0, s1), tokens, k, outs, topk_lp, renyi[0])


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(0, 12), n1=st.integers(1, 6), V=st.integers(1, 60), s0=st.integers(0, 200),
       s1=st.integers(0, 80), k=st.integers(0, 64), slack=st.integers(0, 5), with_tokens=st.booleans(),
       renyi=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]),
       seed=st.integers(0, 2**31 - 1))
def test_token_stats_binding_consistent_requests(rows, n1, V, s0, s1, k, slack, with_tokens, renyi, dtype, seed):
    """Consistent requests drawn directly (the fuzz above rarely draws one): accepted, and equal to the
    float64 reference on the rows the layout describes."""
    k = k % (min(V, 64) + 1)
    numel = ((-(-rows // n1) - 1) * s0 + (min(rows, n1) - 1) * s1 + V if rows else 0) + slack
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(numel, generator=g).to(dtype)
    tokens = torch.randint(0, V, (rows,), generator=g) if with_tokens else None
    od = torch.float64 if dtype == torch.float64 else torch.float32
    outs = [torch.empty(rows, dtype=od) for _ in range(8)]
    argmax, topk_lp, topk_ids = (torch.empty(rows, dtype=torch.int64), torch.empty(rows * k, dtype=od),
                                 torch.empty(rows * k, dtype=torch.int64))
    extra = (torch.empty(rows, dtype=od), torch.empty(rows, dtype=od)) if renyi else (None, None)
    _ext._C.token_stats(x, rows, V, n1, s0, s1, tokens, 1.0, k, *outs[:2], argmax, *outs[2:], topk_lp, topk_ids, 1,
                        *extra)
    if rows:
        _check_token_stats(x, (rows, V, n1, s0, s1), tokens, k, outs, topk_lp, extra[0])


@settings(max_examples=200, deadline=None)
@given(P=st.integers(0, 6), M=st.integers(1, 5), V=st.integers(1, 40), n1=st.integers(1, 4), sm=st.integers(0, 50),
       s0=st.integers(0, 300), s1=st.integers(0, 120), per_position=st.booleans(), slack=st.integers(0, 3),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]), seed=st.integers(0, 2**31 - 1))
def test_ensemble_binding_consistent_requests(P, M, V, n1, sm, s0, s1, per_position, slack, dtype, seed):
    span = (M - 1) * sm + V
    numel = ((-(-P // n1) - 1) * s0 + (min(P, n1) - 1) * s1 + span if P else 0) + slack
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(numel, generator=g).to(dtype)
    if per_position:  # "ep": each position's own log weights
        lw = torch.log_softmax(torch.randn(P, M, generator=g, dtype=torch.float64), -1).reshape(-1).contiguous()
    else:
        lw = torch.full((M,), -math.log(M), dtype=torch.float64)
    od = torch.float64 if dtype == torch.float64 else torch.float32
    outs = [torch.empty(P, dtype=od) for _ in range(5)]
    _ext._C.ensemble_stats(x, P, M, V, n1, s0, s1, sm, lw, M if per_position else 0, 1.0, *outs, 1)
    if not P:
        return
    rows = _gather_rows(x, P, span, n1, s0, s1)
    members = torch.stack([rows[:, m * sm:m * sm + V] for m in range(M)])  # [M, P, V]
    ll = lw.view(P, M).T if per_position else None
    want = ref.ensemble_stats(members, dim=0, mode="ep" if per_position else "pe", member_ll=ll)
    for got, w in zip(outs, (want.total, want.aleatoric, want.epistemic, want.epkl, want.rmi)):
        torch.testing.assert_close(got.double(), w, rtol=1e-4, atol=1e-4)


@settings(max_examples=300, deadline=None)
@given(
    numel=st.integers(0, 300),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.int64]),
    P=st.integers(-1, 6),
    M=st.integers(-1, 5),
    V=st.integers(-1, 40),
    n1=st.integers(-1, 4),
    s0=st.integers(-2, 120),
    s1=st.integers(-2, 60),
    sm=st.integers(-1, 2**62),
    lw_size=st.integers(0, 30),
    lw_stride=st.integers(-1, 5),
    out_n=st.integers(0, 6),
)
def test_ensemble_binding_never_crashes(numel, dtype, P, M, V, n1, s0, s1, sm, lw_size, lw_stride, out_n):
    x = torch.randn(numel).to(dtype)
    out_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    outs = [torch.empty(out_n, dtype=out_dtype) for _ in range(5)]
    lw = torch.full((lw_size,), -math.log(max(M, 1)), dtype=torch.float64)  # equal member weights
    sm = sm % 97 if sm < 2**40 else sm

    def call():
        _ext._C.ensemble_stats(x, P, M, V, n1, s0, s1, sm, lw, lw_stride, 1.0, *outs, 1)

    consistent = (dtype != torch.int64 and M >= 1 and V >= 1 and not (sm > 0 and M - 1 > (2**63 - 1 - V) // sm)
                  and _rows_inside(numel, P, (M - 1) * sm + V, n1, s0, s1)
                  and lw_stride in (0, M) and lw_size == (M if lw_stride == 0 else P * M) and out_n == P)
    if _expect(consistent, call) and P:
        span = _gather_rows(x, P, (M - 1) * sm + V, n1, s0, s1)            # [P, (M - 1) * sm + V]
        members = torch.stack([span[:, m * sm:m * sm + V] for m in range(M)])  # [M, P, V]
        want = ref.ensemble_stats(members, dim=0)
        for got, w in zip(outs, (want.total, want.aleatoric, want.epistemic, want.epkl, want.rmi)):
            torch.testing.assert_close(got.double(), w, rtol=1e-4, atol=1e-4)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 300), dtype=st.sampled_from([torch.int64, torch.int32, torch.float64]),
       step=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_count_inversions_binding(n, dtype, step, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 7, (n * step,), generator=g).to(dtype)[::step]
    try:
        got = _ext._C.count_inversions(a)
    except (ValueError, TypeError):
        assert dtype != torch.int64 or (step > 1 and n > 1)
        return
    v = a.tolist()
    assert got == sum(1 for i in range(len(v)) for j in range(i + 1, len(v)) if v[i] > v[j])


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 200), m=st.integers(0, 200), dtype=st.sampled_from([torch.float64, torch.float32]),
       zero_weight=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_isotonic_pav_binding(n, m, dtype, zero_weight, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
    w = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    if zero_weight and n:
        w[n // 2] = 0.0
    out = torch.empty(m, dtype=torch.float64)
    try:
        _ext._C.isotonic_pav(y, w, out)
    except (ValueError, TypeError):
        assert dtype != torch.float64 or m != n or (zero_weight and n > 0)
        return
    assert dtype == torch.float64 and m == n and not (zero_weight and n > 0)
    assert bool((out[1:] >= out[:-1] - 1e-12).all())  # non-decreasing
    # the weighted mean is preserved by pooling
    assert abs(float((out * w).sum() - (y * w).sum())) <= 1e-9 * max(1.0, float((y * w).abs().sum()))


@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, 200), nc=st.integers(0, 200), bins=st.integers(0, 12), out_bins=st.integers(0, 12),
       dtype=st.sampled_from([torch.float64, torch.float32]), step=st.integers(1, 2), scaled=st.booleans(),
       bad_edges=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_reliability_sums_binding(n, nc, bins, out_bins, dtype, step, scaled, bad_edges, seed):
    g = torch.Generator().manual_seed(seed)
    u = (torch.rand(n * step, generator=g, dtype=torch.float64) * -1.4 + 0.2).to(dtype)[::step]  # conf -u in [-0.2, 1.2]
    c = torch.rand(nc, generator=g, dtype=torch.float64)
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
    if bad_edges and bins >= 2:
        edges[1] = edges[2]
    cnt = torch.zeros(out_bins, dtype=torch.int64)
    s1, s2 = torch.zeros(out_bins, dtype=torch.float64), torch.zeros(out_bins, dtype=torch.float64)
    scale, offset = (0.5, 0.25) if scaled else (1.0, 0.0)
    try:
        _ext._C.reliability_sums(u, c, scale, offset, scaled, edges, cnt, s1, s2)
    except (ValueError, TypeError):
        assert (dtype != torch.float64 or (step > 1 and n > 1) or nc != n or bins < 1 or out_bins != bins
                or (bad_edges and bins >= 2))
        return
    assert dtype == torch.float64 and nc == n and bins >= 1 and out_bins == bins and not (bad_edges and bins >= 2)
    conf = -u * scale + offset if scaled else -u
    inside = (conf >= 0) & (conf <= 1)
    idx = (torch.searchsorted(edges, conf[inside], side="left") - 1).clamp(min=0)
    assert torch.equal(cnt, torch.bincount(idx, minlength=bins))
    assert torch.allclose(s2, torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, c[inside]), rtol=1e-12, atol=0)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 5000), m=st.integers(0, 5000), dtype=st.sampled_from([torch.float64, torch.float32]),
       out_dtype=st.sampled_from([torch.int64, torch.int32]), step=st.integers(1, 2), levels=st.integers(1, 10**6),
       seed=st.integers(0, 2**31 - 1))
def test_argsort_f64_binding(n, m, dtype, out_dtype, step, levels, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randint(0, levels, (n * step,), generator=g).to(torch.float64) - levels / 2).to(dtype)[::step]
    out = torch.empty(m, dtype=out_dtype)
    try:
        _ext._C.argsort_f64(x, out)
    except (ValueError, TypeError):
        assert dtype != torch.float64 or out_dtype != torch.int64 or m != n or (step > 1 and n > 1)
        return
    assert dtype == torch.float64 and out_dtype == torch.int64 and m == n
    assert torch.equal(out, torch.from_numpy(np.argsort(x.numpy(), kind="stable")))


# ---- UQAC (flashuq._C.uqac_reduce / uqac_backtrack / uqac_similarity) -----------------------------------

@settings(max_examples=200, deadline=None)
@given(shape=st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 3), st.integers(0, 6), st.integers(0, 9)),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32]),
       n_heads=st.integers(-1, 10), out_n=st.integers(0, 120), out_f64=st.booleans(), step=st.integers(1, 2),
       mean=st.booleans(), fit=st.booleans(), n_cal=st.sampled_from([10, 10, 9]), sel_k=st.integers(0, 10))
def test_uqac_reduce_binding(shape, dtype, n_heads, out_n, out_f64, step, mean, fit, n_cal, sel_k):
    B, L, H, R, N = shape
    if fit:  # half the draws: the sizes and the output buffers agree, so that many requests are consistent
        N, out_n, out_f64, n_cal, sel_k = max(N, R), B * R * max(N, R), dtype == torch.float64, 10, n_heads
    x = torch.rand(B, L, H, R, N * step).to(dtype)[..., ::step]
    out = torch.empty(out_n, dtype=torch.float64 if out_f64 else torch.float32)
    cal = torch.tensor(ref.UQAC_CALIBRATION[:n_cal], dtype=torch.float64)
    selected = torch.empty(B, R, max(sel_k, 0), dtype=torch.int64)
    consistent = (dtype != torch.int32 and N >= R and 1 <= n_heads <= L * H and out_n == B * R * N
                  and out_f64 == (dtype == torch.float64) and (step == 1 or N <= 1) and n_cal == 10
                  and sel_k == n_heads)
    if _expect(consistent, lambda: _ext._C.uqac_reduce(x, n_heads, mean, cal, out, selected, 1)) and B * R * N \
            and dtype in (torch.float32, torch.float64) and n_heads <= 16:
        for b in range(B):  # the float64 reference, one sequence at a time
            want = ref.uqac_reduce_attention_ref(x[b].double().numpy(), n_heads, "mean" if mean else "max")
            got = out.view(B, R, N)[b].double().numpy()
            assert got.shape == want.shape and abs(got - want).max() <= 1e-4 * max(1.0, abs(want).max())
            assert bool(((selected >= 0) & (selected < L * H)).all())


@settings(max_examples=300, deadline=None)
@given(B=st.integers(0, 3), Rm=st.integers(0, 6), Nm=st.integers(0, 9), Am=st.integers(0, 3),
       R=st.integers(-1, 7), N=st.integers(-1, 10), A=st.integers(-1, 4), ans=st.integers(-3, 8),
       C=st.integers(0, 20), buffer=st.integers(-1, 4), max_steps=st.integers(-1, 3), f64=st.booleans(),
       stop_n=st.integers(0, 10), seed=st.integers(0, 2**31 - 1))
def test_uqac_backtrack_binding(B, Rm, Nm, Am, R, N, A, ans, C, buffer, max_steps, f64, stop_n, seed):
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64 if f64 else torch.float32
    attn = torch.rand(B, Rm, Nm, generator=g, dtype=dt)
    v = lambda x: torch.full((B,), x, dtype=torch.int64)  # noqa: E731
    chain = torch.empty(B, C, dtype=torch.int64)
    scores = torch.empty(B, C, dtype=dt)
    lengths = v(0)
    stop = torch.randint(0, 2, (B, stop_n), generator=g, dtype=torch.uint8)

    def call():
        _ext._C.uqac_backtrack(attn, stop, torch.full((B, Am), ans, dtype=torch.int64), v(R), v(N), v(A), v(5),
                               buffer, 0.5, max_steps, chain, scores, lengths, 1)

    # the capacity a chain may need: the answer sources plus at most one pick per key, buffer per round
    picks = 0 if buffer <= 0 else (N if max_steps > -(-N // buffer) else min(N, max(max_steps, 0) * buffer))
    consistent = (stop_n == Nm and buffer >= 0 and max_steps >= 0
                  and (B == 0 or (0 <= R <= Rm and R <= N <= Nm and 0 <= A <= Am and (A == 0 or -1 <= ans <= R - 2)
                                  and C >= A + picks)))
    if _expect(consistent, call):
        assert bool(((lengths >= 0) & (lengths <= C)).all())


@settings(max_examples=300, deadline=None)
@given(B=st.integers(0, 3), Rm=st.integers(0, 6), D=st.integers(0, 5), C=st.integers(0, 6), Am=st.integers(0, 3),
       length=st.integers(-1, 7), A=st.integers(-1, 4), ans=st.integers(-3, 7), member=st.integers(-5, 8),
       R=st.integers(-1, 7), k=st.integers(-1, 8), K=st.integers(0, 8),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.int64]))
def test_uqac_similarity_binding(B, Rm, D, C, Am, length, A, ans, member, R, k, K, dtype):
    h = torch.randn(B, Rm, D).to(dtype)
    v = lambda x: torch.full((B,), x, dtype=torch.int64)  # noqa: E731
    keep_len = v(0)
    def call():
        _ext._C.uqac_similarity(h, torch.full((B, C), member, dtype=torch.int64), v(length),
                                torch.full((B, Am), ans, dtype=torch.int64), v(A), v(R), k, 0.0,
                                torch.empty(B, K, dtype=torch.int64), keep_len, 1)

    consistent = (dtype != torch.int64 and k >= 0 and K >= min(k, C)
                  and (B == 0 or (0 <= R <= Rm and 0 <= A <= Am and 0 <= length <= C
                                  and (A == 0 or -1 <= ans <= R - 2))))
    if _expect(consistent, call):
        assert bool(((keep_len >= 0) & (keep_len <= min(k, C))).all())


# ---- NumSemSets (flashuq._C.num_sem_sets) -----------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(Q=st.integers(0, 4), K=st.integers(0, 7), CQ=st.integers(0, 4), CK=st.integers(0, 7), VK=st.integers(0, 7),
       out_n=st.integers(0, 5), dtype=st.sampled_from([torch.float64, torch.float32, torch.float16]),
       c_dtype=st.sampled_from([torch.float64, torch.float32]), vdtype=st.sampled_from([torch.bool, torch.uint8,
                                                                                         torch.float32]),
       transpose=st.booleans(), seed=st.integers(0, 2**31 - 1), fit=st.booleans())
def test_num_sem_sets_binding(Q, K, CQ, CK, VK, out_n, dtype, c_dtype, vdtype, transpose, seed, fit):
    if fit:  # half the draws: shapes and dtypes that agree, so that many requests are consistent
        CQ, CK, VK, out_n, c_dtype = Q, K, K, Q, dtype if dtype != torch.float16 else c_dtype
    g = torch.Generator().manual_seed(seed)
    E = torch.rand(Q, K, K, generator=g, dtype=torch.float64).to(dtype)
    if transpose:
        E = E.transpose(1, 2)
    C = torch.rand(CQ, CK, CK, generator=g, dtype=torch.float64).to(c_dtype)
    valid = (torch.rand(Q, VK, generator=g) > 0.3).to(vdtype)
    out = torch.full((out_n,), -1.0, dtype=c_dtype)
    consistent = (E.dtype == C.dtype == out.dtype and E.dtype in (torch.float32, torch.float64)
                  and (CQ, CK) == (Q, K) and VK == K and out_n == Q and vdtype == torch.bool
                  and (E.is_contiguous() or Q * K * K <= 1))
    # accepted: the counts are those of the method's closure path
    if _expect(consistent, lambda: _ext._C.num_sem_sets(E, C, valid, out, 1)) and Q:
        A = (E > C) & (E > C).transpose(1, 2)
        v = valid != 0
        for q in range(Q):  # components by a DFS over the valid responses
            seen, n = set(), 0
            for s in range(K):
                if not v[q, s] or s in seen:
                    continue
                n += 1
                stack = [s]
                while stack:
                    i = stack.pop()
                    if i in seen:
                        continue
                    seen.add(i)
                    stack += [j for j in range(K) if v[q, j] and j != i and A[q, i, j]]
            assert (out[q].isnan().item() and not bool(v[q].any())) or out[q].item() == n
