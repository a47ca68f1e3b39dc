"""Fuzz the nanobind bindings flashuq._C.token_stats, ensemble_stats, count_inversions, isotonic_pav,
uqac_* and num_sem_sets directly: any combination of sizes, strides,
dtypes and output buffers either works or raises ValueError/TypeError; it never crashes or reads
outside the array (the sanitizer build in scripts/sanitize.sh runs this file too)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flashuq import _ext


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
    try:
        _ext._C.token_stats(x, rows, V, n1, s0, s1, tokens, 1.0, k, f(out_rows), f(out_rows), f(out_rows),
                            f(out_rows), f(out_rows), f(out_rows), f(out_rows), f(out_rows),
                            torch.empty(out_rows, dtype=torch.int64), f(out_rows * kk),
                            torch.empty(out_rows * kk, dtype=torch.int64), 1,
                            *((None, None) if renyi_rows is None else (f(renyi_rows), f(out_rows))))
    except (ValueError, TypeError):
        return
    assert renyi_rows is None or renyi_rows == out_rows
    # accepted: then it must have been a consistent request
    assert 0 <= rows == out_rows and V >= 1 and n1 >= 1 and 0 <= k <= min(V, 64)
    assert dtype != torch.int32 and (out_dtype == torch.float64) == (dtype == torch.float64)


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
    f = lambda: torch.empty(out_n, dtype=out_dtype)  # noqa: E731
    lw = torch.zeros(lw_size, dtype=torch.float64)
    try:
        _ext._C.ensemble_stats(x, P, M, V, n1, s0, s1, sm % 97 if sm < 2**40 else sm, lw, lw_stride, 1.0,
                               f(), f(), f(), f(), f(), 1)
    except (ValueError, TypeError):
        return
    assert P == out_n and M >= 1 and V >= 1 and dtype != torch.int64


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


# ---- UQAC (flashuq._C.uqac_reduce / uqac_backtrack / uqac_similarity) -----------------------------------

@settings(max_examples=200, deadline=None)
@given(shape=st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 3), st.integers(0, 6), st.integers(0, 9)),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32]),
       n_heads=st.integers(-1, 10), out_n=st.integers(0, 120), out_f64=st.booleans(), step=st.integers(1, 2),
       mean=st.booleans())
def test_uqac_reduce_binding(shape, dtype, n_heads, out_n, out_f64, step, mean):
    B, L, H, R, N = shape
    x = torch.rand(B, L, H, R, N * step).to(dtype)[..., ::step]
    out = torch.empty(out_n, dtype=torch.float64 if out_f64 else torch.float32)
    try:
        _ext._C.uqac_reduce(x, n_heads, mean, out, 1)
    except (ValueError, TypeError):
        return
    assert dtype != torch.int32 and N >= R and 1 <= n_heads <= L * H and out_n == B * R * N
    assert out_f64 == (dtype == torch.float64) and (step == 1 or N <= 1)


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
    try:
        _ext._C.uqac_backtrack(attn, torch.randint(0, 2, (B, stop_n), generator=g, dtype=torch.uint8),
                               torch.full((B, Am), ans, dtype=torch.int64), v(R), v(N), v(A), v(5), buffer, 0.5,
                               max_steps, chain, scores, lengths, 1)
    except (ValueError, TypeError):
        return
    assert B == 0 or (0 <= R <= Rm and R <= N <= Nm and 0 <= A <= Am and (A == 0 or -1 <= ans <= R - 2))
    assert buffer >= 0 and max_steps >= 0 and (B == 0 or stop_n == Nm)
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
    try:
        _ext._C.uqac_similarity(h, torch.full((B, C), member, dtype=torch.int64), v(length),
                                torch.full((B, Am), ans, dtype=torch.int64), v(A), v(R), k, 0.0,
                                torch.empty(B, K, dtype=torch.int64), keep_len, 1)
    except (ValueError, TypeError):
        return
    assert dtype != torch.int64 and k >= 0 and K >= min(k, C)
    assert B == 0 or (0 <= R <= Rm and 0 <= A <= Am and 0 <= length <= C and (A == 0 or -1 <= ans <= R - 2))
    assert bool(((keep_len >= 0) & (keep_len <= min(k, C))).all())


# ---- NumSemSets (flashuq._C.num_sem_sets) -----------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(Q=st.integers(0, 4), K=st.integers(0, 7), CQ=st.integers(0, 4), CK=st.integers(0, 7), VK=st.integers(0, 7),
       out_n=st.integers(0, 5), dtype=st.sampled_from([torch.float64, torch.float32, torch.float16]),
       c_dtype=st.sampled_from([torch.float64, torch.float32]), vdtype=st.sampled_from([torch.bool, torch.uint8,
                                                                                         torch.float32]),
       transpose=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_num_sem_sets_binding(Q, K, CQ, CK, VK, out_n, dtype, c_dtype, vdtype, transpose, seed):
    g = torch.Generator().manual_seed(seed)
    E = torch.rand(Q, K, K, generator=g, dtype=torch.float64).to(dtype)
    if transpose:
        E = E.transpose(1, 2)
    C = torch.rand(CQ, CK, CK, generator=g, dtype=torch.float64).to(c_dtype)
    valid = (torch.rand(Q, VK, generator=g) > 0.3).to(vdtype)
    out = torch.full((out_n,), -1.0, dtype=c_dtype)
    try:
        _ext._C.num_sem_sets(E, C, valid, out, 1)
    except (ValueError, TypeError):
        return
    # accepted: a consistent request, and the counts are those of the method's closure path
    assert E.dtype == C.dtype == out.dtype and E.dtype in (torch.float32, torch.float64)
    assert (CQ, CK) == (Q, K) and VK == K and out_n == Q and vdtype != torch.float32
    assert E.is_contiguous() or Q * K * K <= 1
    if Q:
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
