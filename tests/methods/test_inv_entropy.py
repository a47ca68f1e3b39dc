"""Inv-Entropy and its family (docs/methods.md#inv-entropy): golden values (docs/methods.md#golden-values), a numpy/scipy float64
transcription of the repository's per-question computation and bootstrap on random batches, the
bootstrap draws (distinct, in range, reproducible, global RNG untouched), invariances, errors."""

import random

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from flashuq.methods.inv_entropy import (DEFAULT_NUM_BOOTSTRAP, DEFAULT_SEED, InvEntropyMeasures, inv_entropy,
                                         inv_entropy_measures, inv_entropy_similarity, nli_similarity)
from isa_cases import limited_isa

SX = [[1, .9, .8, .3], [.9, 1, .7, .4], [.8, .7, 1, .5], [.3, .4, .5, 1]]
SY = [[1, .95, .2, .1], [.95, 1, .25, .15], [.2, .25, 1, .6], [.1, .15, .6, 1]]


def t64(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64))[None]


# ---- numpy float64 transcription of the repository's per-question block (evaluate.py, process_csv) ----

def ref_one(simx, simy, variant="reference"):
    px = simx / simx.sum(axis=1, keepdims=True)
    py = simy / simy.sum(axis=1, keepdims=True)
    n = px.shape[0]
    pi = np.full((1, n), 1.0 / n)
    p_y = (pi @ py).T                                     # [n, 1]
    a = py @ px                                           # P(x_j | y_i)
    p_x = (pi @ py @ py @ px).T if variant == "reference" else (pi @ py @ px).T
    bm = (a * p_y) / p_x.T                                # P(y_i | x_j)
    wd = wasserstein_distance(p_x.flatten(), p_y.flatten())
    db, da = np.diag(bm.T), np.diag(a.T)
    return dict(inv_entropy=-np.sum(da * np.log(da)), ni_entropy=-np.sum(db * np.log(db)), wd_px_py=wd,
                max_py=max(p_y).item(), max_py_given_x=db.max(), p_x=p_x.ravel(), p_y=p_y.ravel())


def ref_bootstrap(simx0, simy0, keeps, variant="reference"):
    rows = []
    for k in keeps:
        k = list(k)
        rows.append(ref_one(simx0[k, :][:, k], simy0[k, :][:, k], variant))
    return {f: np.mean([r[f] for r in rows], axis=0) for f in rows[0]}


def random_similarity(g, Q, N, D=6, abs_cos=True):
    """|cos| (or (1+cos)/2) of random embeddings: symmetric, non-negative, unit diagonal."""
    e = torch.randn(Q, N, D, generator=g, dtype=torch.float64)
    e = e / e.norm(dim=-1, keepdim=True)
    c = e @ e.transpose(-1, -2)
    return c.abs() if abs_cos else (1 + c) / 2


def full_batch(seed=0, Q=3, N=5, r=3):
    """Full [Q, N·r, N·r] matrices in the repository's layout: the x-string repeated r times."""
    g = torch.Generator().manual_seed(seed)
    sx_n = random_similarity(g, Q, N)
    sx_full = sx_n.repeat_interleave(r, 1).repeat_interleave(r, 2)
    sy_full = random_similarity(g, Q, N * r)
    return sx_n, sx_full, sy_full


def assert_close(a, b, tol=1e-12):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=tol, atol=tol)


# ---- golden values ----

def test_golden_values_reference():
    m = inv_entropy_measures(t64(SX), t64(SY))
    assert isinstance(m, InvEntropyMeasures)
    assert m.inv_entropy.item() == pytest.approx(1.4446101212891396, rel=1e-12)
    assert m.ni_entropy.item() == pytest.approx(1.4405033301778463, rel=1e-12)
    assert m.wd_px_py.item() == pytest.approx(0.014357816976154708, rel=1e-12)
    assert m.max_py.item() == pytest.approx(0.26269660942727885, rel=1e-12)
    assert m.max_py_given_x.item() == pytest.approx(0.3598752230520738, rel=1e-12)
    assert inv_entropy(t64(SX), t64(SY)).item() == pytest.approx(1.4446101212891396, rel=1e-12)
    assert m.inv_entropy.dtype == torch.float64 and m.p_x.shape == m.p_y.shape == (1, 4)
    assert m.p_x.sum().item() == pytest.approx(1.0, rel=1e-12) and m.p_y.sum().item() == pytest.approx(1.0, rel=1e-12)


def test_golden_values_paper_variant():
    m = inv_entropy_measures(t64(SX), t64(SY), variant="paper")
    assert m.ni_entropy.item() == pytest.approx(1.4409761935063892, rel=1e-12)
    assert m.max_py_given_x.item() == pytest.approx(0.35584816589596047, rel=1e-12)
    # Inv-Entropy and P(Y) do not depend on P(X)
    assert m.inv_entropy.item() == pytest.approx(1.4446101212891396, rel=1e-12)
    assert m.max_py.item() == pytest.approx(0.26269660942727885, rel=1e-12)
    assert inv_entropy(t64(SX), t64(SY), variant="paper").item() == pytest.approx(1.4446101212891396, rel=1e-12)


def test_golden_values_transcription():
    for variant in ("reference", "paper"):
        ref = ref_one(np.array(SX, float), np.array(SY, float), variant)
        m = inv_entropy_measures(t64(SX), t64(SY), variant=variant)
        for f in ref:
            assert_close(getattr(m, f)[0], ref[f])


# ---- the transcription on random batches ----

@pytest.mark.parametrize("variant", ["reference", "paper"])
@pytest.mark.parametrize("N", [2, 3, 8, 10, 16, 20, 33])
def test_matches_reference_transcription(variant, N):
    g = torch.Generator().manual_seed(N)
    Q = 7
    sx = random_similarity(g, Q, N, abs_cos=variant == "reference")
    sy = random_similarity(g, Q, N, abs_cos=variant == "reference")
    sy[3] = torch.rand(N, N, generator=g, dtype=torch.float64) + 0.05  # asymmetric, non-unit diagonal too
    m = inv_entropy_measures(sx, sy, variant=variant)
    u = inv_entropy(sx, sy, variant=variant)
    assert u.shape == (Q,)
    assert_close(u, m.inv_entropy, 1e-14)  # one draw of Inv-Entropy alone takes a fast path
    for q in range(Q):
        ref = ref_one(sx[q].numpy(), sy[q].numpy(), variant)
        for f in ref:
            assert_close(getattr(m, f)[q], ref[f])


def test_numpy_inputs_and_dtypes():
    sx, sy = np.array([SX]), np.array([SY])
    u = inv_entropy(sx, sy)
    assert isinstance(u, torch.Tensor) and u.dtype == torch.float64
    assert u.item() == pytest.approx(1.4446101212891396, rel=1e-12)
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        v = inv_entropy(torch.tensor([SX], dtype=dt), torch.tensor([SY], dtype=dt))
        assert v.dtype == torch.float32
        assert v.item() == pytest.approx(1.4446101212891396, rel=1e-2 if dt != torch.float32 else 1e-6)
    # mixed: promoted (fp64 with fp32 -> fp64)
    assert inv_entropy(t64(SX), t64(SY).float()).dtype == torch.float64
    assert inv_entropy_measures(sx, sy).p_x.dtype == torch.float64


def test_permutation_invariance():
    g = torch.Generator().manual_seed(1)
    Q, N = 4, 7
    sx, sy = random_similarity(g, Q, N), random_similarity(g, Q, N)
    perm = torch.randperm(N, generator=g)
    m0 = inv_entropy_measures(sx, sy)
    m1 = inv_entropy_measures(sx[:, perm][:, :, perm], sy[:, perm][:, :, perm])
    for f in ("inv_entropy", "ni_entropy", "wd_px_py", "max_py", "max_py_given_x"):
        assert_close(getattr(m1, f), getattr(m0, f))
    assert_close(m1.p_x, m0.p_x[:, perm])
    # permuting only the outputs changes the pairing, hence the value
    assert not torch.allclose(inv_entropy(sx, sy[:, perm][:, :, perm]), m0.inv_entropy)


def test_batch_independence():
    g = torch.Generator().manual_seed(2)
    sx, sy = random_similarity(g, 5, 4), random_similarity(g, 5, 4)
    u = inv_entropy(sx, sy)
    for q in range(5):
        assert_close(inv_entropy(sx[q:q + 1], sy[q:q + 1]), u[q:q + 1], 1e-15)


def test_edge_cases_nan_and_xlogy():
    sx, sy = t64(SX).repeat(3, 1, 1), t64(SY).repeat(3, 1, 1)
    sy[1, 2] = 0.0          # a zero row sum -> NaN for question 1 only
    sx[2, 0, 1] = float("nan")  # a NaN -> NaN for question 2 only
    m = inv_entropy_measures(sx, sy)
    for name, f in zip(m._fields, m):
        assert torch.isnan(f[1]).all() and not torch.isnan(f[0]).any()
        # the NaN spreads to everything computed from sx; P(Y) does not depend on it
        assert torch.isnan(f[2]).all() != (name in ("max_py", "p_y"))
    assert m.inv_entropy[0].item() == pytest.approx(1.4446101212891396, rel=1e-12)
    # d_i = 0 (disconnected chains): 0·ln 0 = 0, finite (the repository gives NaN)
    sx = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    sy = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    m = inv_entropy_measures(sx, sy)
    assert m.inv_entropy.item() == 0.0 and m.ni_entropy.item() == 0.0
    # identical chains on identity matrices: d = 1, no uncertainty
    eye = torch.eye(3, dtype=torch.float64)[None]
    assert inv_entropy(eye, eye).item() == 0.0
    # an empty batch
    assert inv_entropy(torch.zeros(0, 3, 3), torch.zeros(0, 3, 3)).shape == (0,)


# ---- bootstrap ----

def draws(seed, Q, S, N, r):
    g = torch.Generator().manual_seed(seed)
    return torch.arange(N) * r + torch.randint(0, r, (Q, S, N), generator=g)


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_bootstrap_keep_is_mean_of_sliced_single_draws(variant):
    Q, N, r, S = 3, 5, 3, 6
    sx_n, sx_full, sy_full = full_batch(0, Q, N, r)
    keep = draws(7, Q, S, N, r)
    keep[0, 1] = keep[0, 0]  # a repeat in a given keep is used as given
    for sx in (sx_n, sx_full):
        m = inv_entropy_measures(sx, sy_full, keep=keep, variant=variant)
        u = inv_entropy(sx, sy_full, keep=keep, variant=variant)
        assert_close(u, m.inv_entropy, 1e-13)  # one draw of Inv-Entropy alone takes a fast path
        for q in range(Q):
            singles = [inv_entropy_measures(sx_n[q:q + 1], sy_full[q][keep[q, s]][:, keep[q, s]][None],
                                            variant=variant) for s in range(S)]
            ref = ref_bootstrap(sx_full[q].numpy(), sy_full[q].numpy(), keep[q].tolist(), variant)
            for f in InvEntropyMeasures._fields:
                mean_single = torch.stack([getattr(x, f)[0] for x in singles]).mean(0)
                assert_close(getattr(m, f)[q], mean_single)
                assert_close(getattr(m, f)[q], ref[f])


def test_bootstrap_full_sx_sliced_with_keep():
    # a full sx whose block rows differ is sliced per draw exactly as the repository does
    Q, N, r, S = 2, 4, 2, 5
    g = torch.Generator().manual_seed(3)
    sx_full, sy_full = random_similarity(g, Q, N * r), random_similarity(g, Q, N * r)
    keep = draws(4, Q, S, N, r)
    m = inv_entropy_measures(sx_full, sy_full, keep=keep)
    for q in range(Q):
        ref = ref_bootstrap(sx_full[q].numpy(), sy_full[q].numpy(), keep[q].tolist())
        for f in ref:
            assert_close(getattr(m, f)[q], ref[f])


def test_bootstrap_keep_numpy_and_int32():
    Q, N, r, S = 2, 4, 3, 3
    sx_n, sx_full, sy_full = full_batch(1, Q, N, r)
    keep = draws(5, Q, S, N, r)
    u = inv_entropy(sx_n, sy_full, keep=keep)
    assert_close(inv_entropy(sx_n.numpy(), sy_full.numpy(), keep=keep.numpy()), u, 0)
    assert_close(inv_entropy(sx_n, sy_full, keep=keep.to(torch.int32)), u, 0)


def check_draws(keep, Q, S, N, r):
    assert keep.shape == (Q, S, N) and keep.dtype == torch.int64
    lo = torch.arange(N) * r
    assert ((keep >= lo) & (keep < lo + r)).all()
    for q in range(Q):
        assert len({tuple(k) for k in keep[q].tolist()}) == S


@pytest.mark.parametrize("N,r,S", [(10, 5, 20), (10, 5, 30), (4, 2, 10), (4, 2, 16), (3, 3, 27), (2, 5, 13),
                                   (5, 2, 15), (40, 3, 50)])
def test_generator_draws_distinct_in_range_reproducible(N, r, S):
    from flashuq.methods.inv_entropy import _draw_keep
    Q = 4
    k1 = _draw_keep(Q, N, r, S, torch.Generator().manual_seed(11))
    k2 = _draw_keep(Q, N, r, S, torch.Generator().manual_seed(11))
    k3 = _draw_keep(Q, N, r, S, torch.Generator().manual_seed(12))
    check_draws(k1, Q, S, N, r)
    assert torch.equal(k1, k2)
    assert not torch.equal(k1, k3)
    if S == r ** N:  # every tuple once
        assert all({tuple(k) for k in k1[q].tolist()} == {tuple(k) for k in k1[0].tolist()} for q in range(Q))


def test_draw_repeats_detection():
    from flashuq.methods.inv_entropy import _repeats
    t = torch.tensor([[[0, 1], [1, 0], [0, 1], [1, 1], [1, 0], [0, 1]]])
    assert _repeats(t).tolist() == [[False, False, True, False, True, True]]


@pytest.mark.parametrize("N,S", [(2, 3), (3, 3)])  # K = 4 <= 2·S: permutation; K = 8 > 2·S: redraws
def test_generator_draws_uniform(N, S):
    # S draws out of K = 2**N tuples (r = 2): every slot is uniform, every tuple is in with probability S/K
    from flashuq.methods.inv_entropy import _draw_keep
    Q, K = 4000, 2 ** N
    k = _draw_keep(Q, N, 2, S, torch.Generator().manual_seed(0))
    code = ((k - torch.arange(N) * 2) * 2 ** torch.arange(N - 1, -1, -1)).sum(-1)  # [Q, S] in [0, K)
    for s in range(S):
        freq = torch.bincount(code[:, s], minlength=K).double() / Q
        assert torch.allclose(freq, torch.full((K,), 1 / K, dtype=torch.float64), atol=0.03)
    incl = torch.bincount(code.flatten(), minlength=K).double() / Q
    assert torch.allclose(incl, torch.full((K,), S / K, dtype=torch.float64), atol=0.04)


def test_generator_bootstrap_equals_keep_and_leaves_global_rng():
    Q, N, r = 3, 10, 5
    sx_n, sx_full, sy_full = full_batch(2, Q, N, r)
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    states = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    m1 = inv_entropy_measures(sx_full, sy_full, replicates=r, num_bootstrap=20,
                              generator=torch.Generator().manual_seed(5))
    u_default = inv_entropy(sx_n, sy_full)
    u_paper = inv_entropy(sx_n, sy_full, variant="paper")
    assert torch.equal(torch.get_rng_state(), states[0])
    after = np.random.get_state()
    assert after[0] == states[1][0] and np.array_equal(after[1], states[1][1]) and after[2:] == states[1][2:]
    assert random.getstate() == states[2]
    # same seed, same draws, same result; the draws are those _draw_keep gives
    m2 = inv_entropy_measures(sx_n, sy_full, num_bootstrap=20, generator=torch.Generator().manual_seed(5))
    for f in InvEntropyMeasures._fields:
        assert_close(getattr(m1, f), getattr(m2, f), 0)
    from flashuq.methods.inv_entropy import _draw_keep
    keep = _draw_keep(Q, N, r, 20, torch.Generator().manual_seed(5))
    assert_close(inv_entropy(sx_n, sy_full, keep=keep), m1.inv_entropy, 0)
    # defaults: 20 draws (reference), 30 (paper), from a generator seeded with DEFAULT_SEED
    assert DEFAULT_NUM_BOOTSTRAP == {"reference": 20, "paper": 30}
    k20 = _draw_keep(Q, N, r, 20, torch.Generator().manual_seed(DEFAULT_SEED))
    k30 = _draw_keep(Q, N, r, 30, torch.Generator().manual_seed(DEFAULT_SEED))
    assert_close(u_default, inv_entropy(sx_n, sy_full, keep=k20), 0)
    assert_close(u_paper, inv_entropy(sx_n, sy_full, keep=k30, variant="paper"), 0)
    assert_close(inv_entropy(sx_n, sy_full), u_default, 0)  # deterministic
    # a different seed gives different draws
    assert not torch.equal(inv_entropy(sx_n, sy_full, num_bootstrap=20, generator=torch.Generator().manual_seed(6)),
                           m1.inv_entropy)


def test_bootstrap_r1_and_exhaustive():
    g = torch.Generator().manual_seed(9)
    sx, sy = random_similarity(g, 2, 4), random_similarity(g, 2, 4)
    u = inv_entropy(sx, sy)
    assert_close(inv_entropy(sx, sy, num_bootstrap=1), u, 1e-14)     # r = 1: the single tuple
    assert_close(inv_entropy(sx, sy, keep=torch.arange(4).expand(2, 1, 4)), u, 1e-14)
    with pytest.raises(ValueError, match="num_bootstrap"):
        inv_entropy(sx, sy, num_bootstrap=2)                     # r**N = 1 < 2
    # r = 2, N = 3: 8 tuples; S = 8 draws them all, whatever the generator
    sx_n, sx_full, sy_full = full_batch(3, 2, 3, 2)
    a = inv_entropy(sx_n, sy_full, num_bootstrap=8, generator=torch.Generator().manual_seed(0))
    b = inv_entropy(sx_n, sy_full, num_bootstrap=8, generator=torch.Generator().manual_seed(1))
    assert_close(a, b)
    with pytest.raises(ValueError, match="num_bootstrap"):
        inv_entropy(sx_n, sy_full, num_bootstrap=9)


# ---- similarity helpers ----

def test_inv_entropy_similarity():
    g = torch.Generator().manual_seed(4)
    emb = torch.randn(3, 5, 8, generator=g, dtype=torch.float64)
    emb[1, 2] = 0.0  # a zero embedding: cosine 0
    s_ref = inv_entropy_similarity(emb)
    s_pap = inv_entropy_similarity(emb, variant="paper")
    e = emb.numpy()
    for q in range(3):
        n = np.linalg.norm(e[q], axis=1, keepdims=True)
        c = (e[q] / np.maximum(n, 1e-12)) @ (e[q] / np.maximum(n, 1e-12)).T
        assert_close(s_ref[q], np.abs(c))
        assert_close(s_pap[q], (1 + c) / 2)
    assert torch.equal(s_ref, s_ref.transpose(-1, -2)) and torch.equal(s_pap, s_pap.transpose(-1, -2))
    assert (s_ref >= 0).all() and (s_pap >= 0).all()
    assert inv_entropy_similarity(emb.float()).dtype == torch.float32
    assert inv_entropy_similarity(emb.half()).dtype == torch.float32
    # the pipeline: similarity -> Inv-Entropy
    assert inv_entropy(s_ref, inv_entropy_similarity(emb.flip(1))).shape == (3,)


def test_nli_similarity():
    p = torch.tensor([[[0.3, 0.9, 0.2], [0.5, 0.1, 0.4], [0.0, 0.8, 0.7]]], dtype=torch.float64)
    s = nli_similarity(p)
    expect = [[1.0, 0.7, 0.1], [0.7, 1.0, 0.6], [0.1, 0.6, 1.0]]
    assert_close(s[0], expect, 1e-15)
    assert s.dtype == torch.float64 and nli_similarity(p.numpy().astype(np.float32)).dtype == torch.float32
    with pytest.raises(ValueError, match="p_entail"):
        nli_similarity(p * 2)
    with pytest.raises(ValueError, match="p_entail"):
        nli_similarity(p[0])
    with pytest.raises(TypeError, match="p_entail"):
        nli_similarity([[0.5]])


# ---- errors ----

def test_errors():
    sx, sy = t64(SX), t64(SY)
    with pytest.raises(ValueError, match="variant"):
        inv_entropy(sx, sy, variant="papers")
    with pytest.raises(ValueError, match="variant"):
        inv_entropy_measures(sx, sy, variant=None)
    with pytest.raises(ValueError, match="variant"):
        inv_entropy_similarity(torch.randn(1, 3, 4), variant="abs")
    with pytest.raises(TypeError, match="sx"):
        inv_entropy([[1.0]], sy)
    with pytest.raises(TypeError, match="sy"):
        inv_entropy(sx, sy.long())
    with pytest.raises(ValueError, match="sx"):
        inv_entropy(sx[0], sy)                       # not batched
    with pytest.raises(ValueError, match="sy"):
        inv_entropy(sx, sy[:, :, :3])                # not square
    with pytest.raises(ValueError, match="N >= 2"):
        inv_entropy(sx[:, :1, :1], sy[:, :1, :1])
    with pytest.raises(ValueError, match="sy"):
        inv_entropy(sx, -sy)                         # negative similarity
    with pytest.raises(ValueError, match="number of questions"):
        inv_entropy(sx, sy.repeat(2, 1, 1))
    with pytest.raises(ValueError, match="sy"):
        inv_entropy(sx, torch.ones(1, 6, 6, dtype=torch.float64))  # 6 is not N·r for N = 4
    with pytest.raises(ValueError, match="sx"):
        inv_entropy(torch.ones(1, 3, 3), torch.ones(1, 12, 12), keep=torch.zeros(1, 1, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="emb"):
        inv_entropy_similarity(torch.ones(1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="emb"):
        inv_entropy_similarity(torch.ones(3, 4))


def test_bootstrap_errors():
    Q, N, r = 2, 4, 3
    sx_n, sx_full, sy_full = full_batch(5, Q, N, r)
    keep = draws(0, Q, 3, N, r)
    with pytest.raises(ValueError, match="keep"):
        inv_entropy(sx_n, sy_full, keep=keep + r)                # out of its block
    with pytest.raises(ValueError, match="keep"):
        inv_entropy(sx_n, sy_full, keep=keep - 1)
    with pytest.raises(ValueError, match="keep"):
        inv_entropy(sx_n, sy_full, keep=keep[:1])                # wrong Q
    with pytest.raises(ValueError, match="keep"):
        inv_entropy(sx_n, sy_full, keep=keep[0])                 # not [Q, S, N]
    with pytest.raises(ValueError, match="keep"):
        inv_entropy(sx_n, sy_full, keep=keep[:, :0])             # S = 0
    with pytest.raises(TypeError, match="keep"):
        inv_entropy(sx_n, sy_full, keep=keep.double())
    with pytest.raises(TypeError, match="keep"):
        inv_entropy(sx_n, sy_full, keep=[[[0, 3, 6, 9]]])
    with pytest.raises(ValueError, match="num_bootstrap"):
        inv_entropy(sx_n, sy_full, keep=keep, num_bootstrap=3)   # both
    with pytest.raises(ValueError, match="num_bootstrap"):
        inv_entropy(sx_n, sy_full, num_bootstrap=0)
    with pytest.raises(TypeError, match="num_bootstrap"):
        inv_entropy(sx_n, sy_full, num_bootstrap=2.0)
    with pytest.raises(ValueError, match="replicates"):
        inv_entropy(sx_n, sy_full, replicates=2)                 # sy is N·3
    with pytest.raises(ValueError, match="replicates"):
        inv_entropy(sx_full, sy_full, replicates=5)              # 12 is not a multiple of 5
    with pytest.raises(TypeError, match="replicates"):
        inv_entropy(sx_full, sy_full, replicates="3")
    with pytest.raises(TypeError, match="generator"):
        inv_entropy(sx_n, sy_full, num_bootstrap=2, generator=0)
    # without keep or replicates, equal full shapes read as a single draw of N·r inputs
    assert inv_entropy(sx_full, sy_full).shape == (Q,)
    assert_close(inv_entropy(sx_full, sy_full, replicates=r), inv_entropy(sx_n, sy_full))


@pytest.mark.parametrize("variant", ["reference", "paper"])
@pytest.mark.parametrize("full_sx", [False, True])
def test_cpu_kernel_matches_the_torch_path(variant, full_sx):
    # the C++ kernel (CPU default) and the batched torch path (CUDA) on the same draws
    from flashuq.methods.inv_entropy import _compute, _prepare
    g = torch.Generator().manual_seed(5)
    Q, N, r = 40, 7, 3
    sy = torch.rand(Q, N * r, N * r, generator=g, dtype=torch.float64)
    sx = torch.rand(Q, N * r if full_sx else N, N * r if full_sx else N, generator=g, dtype=torch.float64)
    sy[3, 4] = 0.0                 # a zero row in some draws
    sx[5, 0, 1] = float("nan")     # NaN spreads only where it is used
    for keep, kw in ((None, dict(num_bootstrap=6, generator=torch.Generator().manual_seed(1))),
                     (torch.stack([torch.arange(N) * r + (q % r) for q in range(Q)])[:, None].expand(Q, 2, N), {})):
        if full_sx and keep is None:
            kw["replicates"] = r
        a = _prepare(sx, sy, keep, variant, kw.get("replicates"), kw.get("num_bootstrap"), kw.get("generator"))
        cpu = _compute(*a, variant, backend="cpu")
        ref = _compute(*a, variant, backend="torch")
        for f, x, y in zip(cpu._fields, cpu, ref):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14, equal_nan=True, msg=f)
    one = _compute(sx[:, :N, :N].contiguous(), sy[:, :N, :N].contiguous(), None, N, variant, backend="cpu")
    ref = _compute(sx[:, :N, :N].contiguous(), sy[:, :N, :N].contiguous(), None, N, variant, backend="torch")
    for f, x, y in zip(one._fields, one, ref):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14, equal_nan=True, msg=f)


@pytest.mark.parametrize("N", [8, 9, 15, 16, 20, 33, 64])
def test_cpu_single_draw_every_isa_and_bad_rows(N):
    """The C++ kernel's one-draw path (N >= 8: rows in blocks of eight; unless 8 divides N, each
    row's last block overlaps the one before and the last eight rows overlap the group before)
    against batched torch and the kernel's general per-draw path, bitwise across the baseline,
    AVX2 and AVX-512 builds (docs/cpu_kernels.md), fp64 and fp32. A zero row, a NaN and an inf
    give NaN for their question only; a row of sy that sums to zero through a negative entry gives
    NaN (not -inf); a negative entry is counted once wherever it sits, every one of them in a
    question that has several."""
    from flashuq import _ext
    from flashuq.methods.inv_entropy import _compute
    g = torch.Generator().manual_seed(N)
    Q = 12
    sx = torch.rand(Q, N, N, generator=g, dtype=torch.float64) + 0.01
    sy = torch.rand(Q, N, N, generator=g, dtype=torch.float64) + 0.01
    twice = N - 8                         # a row in the last group and the group before (8 ∤ N)
    sy[1, twice] = 0.0                    # a zero row of sy
    sx[2, N // 2] = 0.0                   # a zero row sum of sx
    sx[3, N - 2, N - 1] = float("nan")    # in a row's last block
    sy[4, 0, 3] = float("inf")
    got = inv_entropy(sx, sy)  # the one-draw path
    assert torch.isnan(got[1:5]).all() and not torch.isnan(got[0]).any() and not torch.isnan(got[5:]).any()
    for backend in ("torch", "cpu"):  # batched torch ops; the C++ kernel's general per-draw path
        want = _compute(sx, sy, None, N, "reference", backend=backend).inv_entropy
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14, equal_nan=True)
    got32 = inv_entropy(sx.float(), sy.float())
    want32 = _compute(sx.float(), sy.float(), None, N, "reference", backend="torch").inv_entropy
    torch.testing.assert_close(got32, want32, rtol=1e-5, atol=1e-6, equal_nan=True)
    out, px, py = (torch.empty(5, Q, dtype=torch.float64), torch.empty(Q, N, dtype=torch.float64),
                   torch.empty(Q, N, dtype=torch.float64))
    cases = [(sx, (6, twice, 0)), (sx, (6, 0, twice)), (sx, (9, N - 1, N - 1)),  # row twice; a last block
             (sy, (7, twice, 1)), (sy, (7, 1, twice)), (sy, (8, N - 1, N - 1)), (sy, (8, 0, N // 2))]
    for level in (0, 1, 2):  # on a machine without AVX2 (AVX-512) these repeat a narrower build
        with limited_isa(level):
            assert torch.equal(inv_entropy(sx, sy).nan_to_num(7.0), got.nan_to_num(7.0)), _ext._C.isa()
            assert torch.equal(inv_entropy(sx.float(), sy.float()).nan_to_num(7.0), got32.nan_to_num(7.0))
            for m, (q, i, j) in cases:
                keep = m[q, i, j].item()
                m[q, i, j] = -0.5
                n = _ext._C.inv_entropy(sx, sy, None, N, False, False, out, px, py, 2)
                assert n == 1, (level, q, i, j, n)
                m[q, i, j] = keep
            saved = sx.clone(), sy.clone()
            sx[6, 1, 2], sy[6, 3, 4], sy[11, twice, twice] = -0.5, -0.25, -1e-300  # three in two questions
            assert _ext._C.inv_entropy(sx, sy, None, N, False, False, out, px, py, 2) == 3
            sx.copy_(saved[0]), sy.copy_(saved[1])
            # sy row 10 sums to zero exactly: d / 0 would be ±inf and the score -inf without the check
            row = sy[10, twice].clone()
            sy[10, twice] = 0.0
            sy[10, twice, 0], sy[10, twice, N - 1] = 1.0, -1.0
            assert _ext._C.inv_entropy(sx, sy, None, N, False, False, out, px, py, 2) == 1
            assert torch.isnan(out[0, 10]) and not torch.isnan(out[0, 11])
            sy[10, twice] = row


@pytest.mark.parametrize("N", [5, 8, 13])
def test_cpu_kernel_rows_with_subnormal_sums(N):
    """A row whose similarities sum to a subnormal number (~1e-310) is still a valid row: its walk
    is the row divided by its sum. 1 / sum overflows there, and the C++ kernel gave -inf (Inv-Entropy)
    and inf (p_y) before dividing such rows; the batched torch path divides and is the reference."""
    from flashuq.methods.inv_entropy import _compute
    g = torch.Generator().manual_seed(N)
    Q = 4
    sx = torch.rand(Q, N, N, generator=g, dtype=torch.float64) * 0.9 + 0.1
    sy = torch.rand(Q, N, N, generator=g, dtype=torch.float64) * 0.9 + 0.1
    sx[1, 3] *= 1e-310
    sy[2, N - 1] *= 1e-310
    sx[3, 0] *= 1e-310
    sy[3, 2] *= 1e-310
    ref = _compute(sx, sy, None, N, "reference", backend="torch")
    assert torch.isfinite(ref.inv_entropy).all()
    # and the numpy transcription of the repository's code, which divides each row by its sum
    want = [ref_one(sx[q].numpy(), sy[q].numpy())["inv_entropy"] for q in range(Q)]
    np.testing.assert_allclose(ref.inv_entropy.numpy(), want, rtol=1e-12, atol=1e-14)
    for level in (0, 1, 2):
        with limited_isa(level):
            got = inv_entropy(sx, sy)  # one draw (the fast path from N = 8)
            torch.testing.assert_close(got, ref.inv_entropy, rtol=1e-12, atol=1e-14)
            m = _compute(sx, sy, None, N, "reference", backend="cpu")  # the general per-draw path, every measure
            for f, x, y in zip(m._fields, m, ref):
                torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14, msg=f)


def test_cpu_binding_rejects_misuse():
    from flashuq import _ext
    sy = torch.rand(2, 6, 6, dtype=torch.float64)
    sx = torch.rand(2, 3, 3, dtype=torch.float64)
    out, px, py = torch.empty(5, 2, dtype=torch.float64), torch.empty(2, 3, dtype=torch.float64), torch.empty(2, 3, dtype=torch.float64)
    keep = torch.zeros(2, 4, 3, dtype=torch.int64)
    _ext._C.inv_entropy(sx, sy, keep, 3, False, True, out, px, py, 1)  # fine
    bad_keep = keep.clone()
    bad_keep[1, 2, 0] = 6
    cases = [((sx, sy, bad_keep, 3, False, True, out, px, py, 1), ValueError),        # index out of range
             ((sx, sy, None, 3, False, True, out, px, py, 1), ValueError),            # sy larger than N x N needs keep
             ((sx.float(), sy, keep, 3, False, True, out, px, py, 1), TypeError),    # dtype mix
             ((sx, sy, keep, 4, False, True, out, px, py, 1), ValueError),            # N does not divide M
             ((sx, sy, keep[:, :, :2], 3, False, True, out, px, py, 1), ValueError),  # keep shape
             ((sx, sy, keep, 3, False, True, out[:, :1], px, py, 1), ValueError),     # output size
             ((sx, sy, keep, 3, False, True, torch.empty(2, 5, dtype=torch.float64).t(), px, py, 1), ValueError)]
    for args, err in cases:
        with pytest.raises(err):
            _ext._C.inv_entropy(*args)


# ---- the CPU kernel's fp64 log (flashuq/cpu_math.h log_f64, used for d ln d) --------------------------

def test_cpu_log_f64_within_one_ulp():
    """The C++ kernel takes d ln d with a branch-free log that vectorises; it must stay within 1 ulp
    of the correctly rounded log over every binade, subnormals included, and agree on the specials."""
    from flashuq import _ext
    from log_cases import check_log_specials

    rng = np.random.default_rng(8)
    x = np.concatenate([
        rng.uniform(0.0, 1.0, 200_000),                                      # probabilities, as d
        np.exp(rng.uniform(-745.0, 709.0, 200_000)),                         # every exponent
        1.0 + rng.uniform(-1e-6, 1e-6, 50_000),                              # near 1 (cancellation)
        np.sqrt(2.0) * (1.0 + rng.uniform(-1e-9, 1e-9, 50_000)),             # the reduction's split
        rng.uniform(0.0, 1.0, 50_000) * np.finfo(np.float64).tiny,           # subnormals
        np.array([np.finfo(np.float64).tiny, np.finfo(np.float64).max, 5e-324, 0.5, 1.0, 2.0, np.e]),
    ])
    out = np.empty_like(x)
    _ext._C._log_f64(x, out)
    want = np.log(x)  # glibc's log: correctly rounded but in rare cases (< 0.52 ulp)
    ulps = np.abs(out.view(np.int64) - want.view(np.int64))
    assert ulps.max() <= 1, x[np.argmax(ulps)]
    assert (ulps > 0).mean() < 0.05
    check_log_specials(_ext._C._log_f64, np.float64, np.float32)  # fp64 only
    with pytest.raises(ValueError):
        _ext._C._log_f64(x, np.empty(x.size - 1))  # out of the wrong size
    with pytest.raises(ValueError):
        _ext._C._log_f64(x[::2], np.empty(x[::2].size))  # not contiguous
