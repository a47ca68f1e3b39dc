"""Fuzz the nanobind bindings flashuq._C.token_stats and flashuq._C.ensemble_stats directly: any combination of sizes, strides,
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
