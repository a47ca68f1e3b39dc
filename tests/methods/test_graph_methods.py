"""flashuq.methods.graph (docs/methods.md#graph-methods): degree, eigv, eccentricity, kernel_language_entropy and
num_sem_sets against per-question numpy/scipy transcriptions of LM-Polygraph (deg_mat.py,
eig_val_laplacian.py, eccentricity.py, num_sem_sets.py; KLE as the docs/methods.md#kle formula) on random
NLI-like ragged batches, symmetrisation, permutation invariance, graphs with known answers, empty
questions, dtypes and argument errors."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

import flashuq as fuq
from flashuq.methods import degree, eccentricity, eigv, kernel_language_entropy, num_sem_sets, symmetrize

F64 = torch.float64


def t(x):
    return torch.from_numpy(np.array(x, copy=True))


# ---- random NLI-like inputs --------------------------------------------------------------------------

def nli(rng, Q, K, n_clusters=None):
    """E, C [Q, K, K] from a softmax over (entail, neutral, contra) logits per ordered pair; responses
    in the same (random) cluster tend to entail each other, the diagonal entails strongly."""
    labels = rng.integers(0, n_clusters or max(1, K // 2), size=(Q, K))
    same = labels[:, :, None] == labels[:, None, :]
    logits = rng.standard_normal((Q, K, K, 3)) * 1.5
    logits[..., 0] += np.where(same, 2.5, -1.0)
    logits[..., 2] += np.where(same, -1.0, 1.5)
    idx = np.arange(K)
    logits[:, idx, idx, 0] += 6.0
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return p[..., 0], p[..., 2]


def ragged_mask(rng, Q, K, min_valid=1):
    m = np.zeros((Q, K), dtype=bool)
    for q in range(Q):
        m[q, rng.choice(K, size=rng.integers(min_valid, K + 1), replace=False)] = True
    return m


def sub(M, mask_row):
    idx = np.flatnonzero(mask_row)
    return M[np.ix_(idx, idx)]


# ---- per-question transcriptions of the LM-Polygraph estimators ----------------------------------------

def sym(W):
    return (W + np.transpose(W)) / 2


def degmat_ref(E):
    W = sym(E)
    D = np.diag(W.sum(axis=1))
    n = W.shape[0]
    return np.trace(n - D) / (n ** 2)


def laplacian_ref(E):
    W = sym(E)
    D = np.diag(W.sum(axis=1))
    D_inverse_sqrt = np.linalg.inv(np.sqrt(D))
    return np.eye(D.shape[0]) - D_inverse_sqrt @ W @ D_inverse_sqrt


def eigv_ref(E):
    return sum(max(0, 1 - lambda_k) for lambda_k in np.linalg.eig(laplacian_ref(E))[0].real)


def eccentricity_ref(E, thres=0.9):
    eigenvalues, eigenvectors = scipy.linalg.eigh(laplacian_ref(E))
    keep = eigenvalues < thres
    smallest = eigenvectors[:, keep]
    C_Ecc_s_j = -1 * np.asarray([np.linalg.norm(x - x.mean(0), 2) for x in smallest.T])
    per_sample = np.linalg.norm(smallest - smallest.mean(0), axis=1)
    return np.linalg.norm(C_Ecc_s_j, 2), per_sample


def num_sem_sets_ref(E, C):
    W = (E > C).astype(int)
    W = W * np.transpose(W)
    W = np.triu(W, k=1)
    a = [[i] for i in range(W.shape[0])]
    for i, row in enumerate(W):
        a[i].extend(np.where(row != 0)[0].tolist())
    graph = [[] for _ in range(len(a))]
    for lst in a:
        for i in range(len(lst) - 1):
            graph[lst[i]].append(lst[i + 1])
            graph[lst[i + 1]].append(lst[i])
    visited = [False] * len(graph)

    def dfs(node):
        visited[node] = True
        for nb in graph[node]:
            if not visited[nb]:
                dfs(nb)

    n = 0
    for i in range(len(graph)):
        if not visited[i]:
            dfs(i)
            n += 1
    return n


def kle_ref(E, C, t=0.3):
    """docs/methods.md#kle (the paper's kernel; see the estimator's docstring for LM-Polygraph's deviations)."""
    Es, Cs = E + E.T, C + C.T
    W = Es + 0.5 * (2 - Es - Cs)
    L = np.diag(W.sum(axis=1)) - W
    Kh = scipy.linalg.expm(-t * L)
    d = np.sqrt(np.diag(Kh)) + 1e-12
    n = Kh.shape[0]
    Kh = Kh / np.outer(d, d) / n
    vne = 0.0
    for e in np.linalg.eig(Kh)[0].real:
        if np.abs(e) > 1e-8:
            vne -= e * np.log(e)
    return vne / np.log(n)


# ---- against the transcriptions --------------------------------------------------------------------------

@pytest.mark.parametrize("K", [2, 3, 5, 8, 13, 20])
def test_vs_reference_ragged(K):
    rng = np.random.default_rng(K)
    Q = 12
    E, C = nli(rng, Q, K)
    mask = ragged_mask(rng, Q, K)
    Eg, Cg = E.copy(), C.copy()  # masked rows / columns hold garbage
    Eg[~mask] = np.nan
    Cg.transpose(0, 2, 1)[~mask] = np.inf
    Et, Ct, mt = t(Eg), t(Cg), t(mask)
    deg = degree(Et, sample_mask=mt)
    ev = eigv(Et, sample_mask=mt)
    ecc, per = eccentricity(Et, sample_mask=mt, return_per_sample=True)
    ecc_only = eccentricity(Et, sample_mask=mt)
    nss = num_sem_sets(Et, Ct, sample_mask=mt)
    kle = kernel_language_entropy(Et, Ct, sample_mask=mt)
    for x in (deg, ev, ecc, nss, kle):
        assert x.dtype == F64 and x.shape == (Q,)
    assert torch.equal(ecc, ecc_only)
    assert per.shape == (Q, K) and per.dtype == F64
    for q in range(Q):
        n = int(mask[q].sum())
        e, c = sub(E[q], mask[q]), sub(C[q], mask[q])
        assert deg[q].item() == pytest.approx(degmat_ref(e), rel=1e-13, abs=1e-14)
        assert ev[q].item() == pytest.approx(eigv_ref(e), rel=1e-12, abs=1e-12)
        u, p = eccentricity_ref(e)
        assert ecc[q].item() == pytest.approx(u, rel=1e-10, abs=1e-12)
        np.testing.assert_allclose(per[q].numpy()[mask[q]], p, rtol=1e-9, atol=1e-11)
        assert per[q][~t(mask[q])].isnan().all()
        assert nss[q].item() == num_sem_sets_ref(e, c)
        if n >= 2:
            assert kle[q].item() == pytest.approx(kle_ref(e, c), rel=1e-9, abs=1e-11)


def test_vs_reference_unmasked_many_sizes():
    rng = np.random.default_rng(77)
    for K in range(2, 21):
        E, C = nli(rng, 3, K)
        Et, Ct = t(E), t(C)
        res = [degree(Et), eigv(Et), eccentricity(Et), num_sem_sets(Et, Ct), kernel_language_entropy(Et, Ct)]
        for q in range(3):
            ref = [degmat_ref(E[q]), eigv_ref(E[q]), eccentricity_ref(E[q])[0], num_sem_sets_ref(E[q], C[q]),
                   kle_ref(E[q], C[q])]
            for r, x in zip(ref, res):
                assert x[q].item() == pytest.approx(r, rel=1e-9, abs=1e-11), (K, q)


def test_kle_t_and_threshold_arguments():
    rng = np.random.default_rng(5)
    E, C = nli(rng, 6, 7)
    for tt in (0.05, 1.0, 3.0):
        kle = kernel_language_entropy(t(E), t(C), t=tt)
        for q in range(6):
            assert kle[q].item() == pytest.approx(kle_ref(E[q], C[q], tt), rel=1e-9, abs=1e-11)
    for thr in (0.5, 1.1):
        ecc = eccentricity(t(E), threshold=thr)
        for q in range(6):
            assert ecc[q].item() == pytest.approx(eccentricity_ref(E[q], thr)[0], rel=1e-10, abs=1e-12)


def test_num_sem_sets_many_clusters():
    # sparse graphs with many components, chains that need the transitive closure
    rng = np.random.default_rng(6)
    for K in (2, 5, 9, 16, 20):
        for n_clusters in (1, 3, K):
            E, C = nli(rng, 8, K, n_clusters)
            mask = ragged_mask(rng, 8, K)
            got = num_sem_sets(t(E), t(C), sample_mask=t(mask))
            for q in range(8):
                assert got[q].item() == num_sem_sets_ref(sub(E[q], mask[q]), sub(C[q], mask[q]))
    # a path 0-1-2-...-19 in reverse index order still has one component
    K = 20
    perm = rng.permutation(K)
    E = np.full((1, K, K), 0.1)
    C = np.full((1, K, K), 0.5)
    for a, b in zip(perm[:-1], perm[1:]):
        E[0, a, b] = E[0, b, a] = 0.9
    assert num_sem_sets(t(E), t(C)).item() == 1 == num_sem_sets_ref(E[0], C[0])
    E[0, perm[9], perm[10]] = 0.2  # one direction broken: E > C must hold both ways
    assert num_sem_sets(t(E), t(C)).item() == 2 == num_sem_sets_ref(E[0], C[0])


def _num_sem_sets_closure(E, C, mask=None, monkeypatch=None):
    """The device-agnostic path (boolean transitive closure), which CUDA and torch.compile take."""
    import flashuq.methods.graph as G

    monkeypatch.setattr(G, "is_tracing", lambda: True)
    try:
        return G.num_sem_sets(E, C, sample_mask=mask)
    finally:
        monkeypatch.undo()


def test_num_sem_sets_cpu_kernel_matches_closure_path(monkeypatch):
    """On the CPU NumSemSets runs union-find in C++; elsewhere the batched closure. Both count the
    same components: ties (E == C links nothing), NaN, half precision, masks, K = 1 and empty batches."""
    rng = np.random.default_rng(9)
    for K in (1, 2, 3, 7, 20, 33):
        for n_clusters in (1, 3, K):
            E, C = nli(rng, 12, K, n_clusters)
            E[0] = C[0]  # every comparison a tie: K singletons
            E[1, 0, :] = np.nan  # NaN links nothing
            mask = ragged_mask(rng, 12, K)
            mask[2] = False  # no valid response: NaN
            for dt in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
                Et, Ct, mt = t(E).to(dt), t(C).to(dt), t(mask)
                got = num_sem_sets(Et, Ct, sample_mask=mt)
                want = _num_sem_sets_closure(Et, Ct, mt, monkeypatch)
                assert got.dtype == want.dtype
                assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(-1), want.nan_to_num(-1))
            assert num_sem_sets(t(E[:1]), t(E[:1])).item() == K
    empty = num_sem_sets(torch.zeros(0, 4, 4), torch.zeros(0, 4, 4))
    assert empty.shape == (0,)


def test_num_sem_sets_binding_misuse():
    from flashuq import _ext

    f = _ext._C.num_sem_sets
    E = np.zeros((2, 3, 3))
    v = np.ones((2, 3), dtype=bool)
    out = np.empty(2)
    f(E, E, v, out, 1)
    assert (out == 3).all()
    with pytest.raises(TypeError):
        f(E.astype(np.float32), E, v, np.empty(2, np.float32), 1)  # C's dtype differs
    with pytest.raises(TypeError):
        f(E.astype(np.int64), E.astype(np.int64), v, out, 1)
    with pytest.raises(ValueError):
        f(E[:, :2], E[:, :2], v, out, 1)  # not square
    with pytest.raises(ValueError):
        f(E, E[:1], v, out, 1)
    with pytest.raises(ValueError):
        f(E, E, v[:, :2], out, 1)
    with pytest.raises(TypeError):
        f(E, E, v.astype(np.float64), out, 1)  # a wrong dtype is a TypeError, as everywhere
    with pytest.raises(ValueError):
        f(E, E, v, np.empty(3), 1)
    with pytest.raises(ValueError):
        f(E.transpose(0, 2, 1), E, v, out, 1)  # not contiguous


# ---- symmetrisation, permutations -----------------------------------------------------------------------

def test_raw_entailment_equals_symmetrised():
    rng = np.random.default_rng(8)
    E, _ = nli(rng, 10, 9)
    mask = t(ragged_mask(rng, 10, 9))
    Et = t(E)
    S = symmetrize(Et)
    torch.testing.assert_close(degree(Et, sample_mask=mask), degree(S, sample_mask=mask), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(eigv(Et, sample_mask=mask), eigv(S, sample_mask=mask), rtol=1e-14, atol=1e-14)
    a, pa = eccentricity(Et, sample_mask=mask, return_per_sample=True)
    b, pb = eccentricity(S, sample_mask=mask, return_per_sample=True)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(pa, pb, rtol=1e-11, atol=1e-12, equal_nan=True)


def test_permutation_invariance():
    rng = np.random.default_rng(9)
    Q, K = 10, 11
    E, C = nli(rng, Q, K)
    mask = ragged_mask(rng, Q, K)
    mask[0] = True
    Et, Ct, mt = t(E), t(C), t(mask)
    base = dict(deg=degree(Et, sample_mask=mt), eigv=eigv(Et, sample_mask=mt),
                nss=num_sem_sets(Et, Ct, sample_mask=mt), kle=kernel_language_entropy(Et, Ct, sample_mask=mt))
    ecc, per = eccentricity(Et, sample_mask=mt, return_per_sample=True)
    for _ in range(3):
        p = torch.from_numpy(rng.permutation(K))
        Ep, Cp, mp = Et[:, p][:, :, p], Ct[:, p][:, :, p], mt[:, p]
        got = dict(deg=degree(Ep, sample_mask=mp), eigv=eigv(Ep, sample_mask=mp),
                   nss=num_sem_sets(Ep, Cp, sample_mask=mp), kle=kernel_language_entropy(Ep, Cp, sample_mask=mp))
        for k in base:
            torch.testing.assert_close(got[k], base[k], rtol=1e-11, atol=1e-12, equal_nan=True, msg=k)
        e2, p2 = eccentricity(Ep, sample_mask=mp, return_per_sample=True)
        torch.testing.assert_close(e2, ecc, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(p2, per[:, p], rtol=1e-9, atol=1e-11, equal_nan=True)


# ---- known answers -------------------------------------------------------------------------------------

def block_nli(sizes, hi=0.95, lo=0.02):
    """E, C of c groups of identical responses: entail within a group, contradict across."""
    K = sum(sizes)
    same = scipy.linalg.block_diag(*[np.ones((b, b)) for b in sizes]).astype(bool)
    E = np.where(same, hi, lo)
    C = np.where(same, lo, hi)
    return E[None], C[None], same[None].astype(np.float64), K


@pytest.mark.parametrize("sizes", [[3, 3, 3], [1, 4, 2, 5], [2] * 10, [1] * 7, [8]])
def test_block_diagonal_graphs(sizes):
    c = len(sizes)
    E, C, W, K = block_nli(sizes)
    assert eigv(t(W)).item() == pytest.approx(c, abs=1e-12)
    assert eccentricity(t(W)).item() == pytest.approx(math.sqrt(c - 1), abs=1e-7)
    assert num_sem_sets(t(E), t(C)).item() == c
    assert degree(t(W)).item() == pytest.approx(1 - sum(b * b for b in sizes) / K ** 2, abs=1e-15)
    # shuffled responses: the same answers
    p = np.random.default_rng(c).permutation(K)
    assert eigv(t(W[:, p][:, :, p])).item() == pytest.approx(c, abs=1e-12)
    assert num_sem_sets(t(E[:, p][:, :, p]), t(C[:, p][:, :, p])).item() == c


def test_fully_connected_and_fully_contradicting():
    for K in (2, 5, 20):
        ones = torch.ones(1, K, K, dtype=F64)
        assert eigv(ones).item() == pytest.approx(1.0, abs=1e-12)
        assert eccentricity(ones).item() == pytest.approx(0.0, abs=1e-7)
        assert degree(ones).item() == 0.0
        assert num_sem_sets(ones, torch.zeros_like(ones)).item() == 1
        # every response contradicts every other: KLE is the maximal 1 (Kh = I), K semantic sets
        eye = torch.eye(K, dtype=F64)[None]
        contra = 1 - eye
        assert kernel_language_entropy(eye, contra).item() == pytest.approx(1.0, abs=1e-10)
        assert num_sem_sets(eye, contra).item() == K
        assert eigv(eye).item() == pytest.approx(K, abs=1e-12)
        # all identical: below the maximum, as the transcription
        kle = kernel_language_entropy(ones, torch.zeros_like(ones)).item()
        assert kle == pytest.approx(kle_ref(np.ones((K, K)), np.zeros((K, K))), rel=1e-10) and kle < 0.8


# ---- empty and tiny questions ----------------------------------------------------------------------------

def test_empty_questions_are_nan():
    rng = np.random.default_rng(10)
    E, C = nli(rng, 4, 6)
    mask = np.ones((4, 6), dtype=bool)
    mask[2] = False
    Et, Ct, mt = t(E), t(C), t(mask)
    outs = [degree(Et, sample_mask=mt), eigv(Et, sample_mask=mt), eccentricity(Et, sample_mask=mt),
            num_sem_sets(Et, Ct, sample_mask=mt), kernel_language_entropy(Et, Ct, sample_mask=mt)]
    for o in outs:
        assert o[2].isnan() and not o[[0, 1, 3]].isnan().any()
    _, per = eccentricity(Et, sample_mask=mt, return_per_sample=True)
    assert per[2].isnan().all()
    # K = 0
    z = torch.zeros(3, 0, 0, dtype=F64)
    for o in (degree(z), eigv(z), eccentricity(z), kernel_language_entropy(z, z)):
        assert o.shape == (3,) and o.isnan().all()
    # Q = 0
    z = torch.zeros(0, 4, 4)
    for o in (degree(z), eigv(z), eccentricity(z), num_sem_sets(z, z), kernel_language_entropy(z, z)):
        assert o.shape == (0,)


def test_num_sem_sets_no_samples_is_nan():
    # K = 0 (every question empty): NaN like the other estimators, not an IndexError from argmax
    z = torch.zeros(3, 0, 0, dtype=F64)
    o = num_sem_sets(z, z)
    assert o.shape == (3,) and o.isnan().all()


def test_single_valid_sample():
    E = torch.tensor([[[0.9, 0.3, 0.2], [0.1, 0.8, 0.4], [0.3, 0.2, 0.95]]], dtype=F64)
    C = torch.full_like(E, 0.05)
    m = torch.tensor([[False, True, False]])
    assert eigv(E, sample_mask=m).item() == pytest.approx(1.0, abs=1e-15)
    assert eccentricity(E, sample_mask=m).item() == 0.0
    assert degree(E, sample_mask=m).item() == pytest.approx(1 - 0.8, abs=1e-15)
    assert num_sem_sets(E, C, sample_mask=m).item() == 1


def test_kle_single_valid_sample_is_nan():
    # "NaN for fewer than two valid responses (ln 1 = 0)" (kernel_language_entropy's docstring)
    E = torch.tensor([[[0.9, 0.3], [0.1, 0.8]]], dtype=F64)
    C = torch.full_like(E, 0.05)
    assert kernel_language_entropy(E, C, sample_mask=torch.tensor([[True, False]])).isnan().all()
    assert kernel_language_entropy(E[:, :1, :1].clone(), C[:, :1, :1].clone()).isnan().all()


def test_zero_degree_is_nan_for_spectral_methods():
    W = torch.rand(3, 5, 5, dtype=F64) + 0.1
    W[1, 3, :] = 0
    W[1, :, 3] = 0
    for o in (eigv(W), eccentricity(W)):
        assert o[1].isnan() and not o[[0, 2]].isnan().any()
    assert not degree(W).isnan().any()


# ---- dtypes and inputs ---------------------------------------------------------------------------------

def test_dtypes():
    rng = np.random.default_rng(11)
    E, C = nli(rng, 5, 6)
    ref = [degree(t(E)), eigv(t(E)), eccentricity(t(E)), num_sem_sets(t(E), t(C)), kernel_language_entropy(t(E), t(C))]
    for dt, tol in ((torch.float32, 1e-5), (torch.float16, 3e-2), (torch.bfloat16, 1e-1)):
        Ed, Cd = t(E).to(dt), t(C).to(dt)
        got = [degree(Ed), eigv(Ed), eccentricity(Ed), num_sem_sets(Ed, Cd), kernel_language_entropy(Ed, Cd)]
        for name, g, r in zip(["degree", "eigv", "eccentricity", "num_sem_sets", "kle"], got, ref):
            assert g.dtype == torch.float32, name
            if name != "num_sem_sets":  # the comparison E > C may flip under rounding
                torch.testing.assert_close(g.double(), r, rtol=tol, atol=tol, msg=name)
    # numpy in, torch out
    out = eigv(E)
    assert isinstance(out, torch.Tensor) and torch.equal(out, ref[1])
    # mixed fp32 / fp64 inputs compute in fp64
    assert kernel_language_entropy(t(E).float(), t(C)).dtype == F64


def test_registry_and_batched_consistency():
    from flashuq.methods import REGISTRY
    for name in ("degree", "eigv", "eccentricity", "num_sem_sets", "kernel_language_entropy"):
        assert name in REGISTRY
    rng = np.random.default_rng(12)
    E, C = nli(rng, 30, 8)
    mask = t(ragged_mask(rng, 30, 8))
    full = [eigv(t(E), sample_mask=mask), kernel_language_entropy(t(E), t(C), sample_mask=mask)]
    for q in (0, 17, 29):
        one = [eigv(t(E[q:q + 1]), sample_mask=mask[q:q + 1]),
               kernel_language_entropy(t(E[q:q + 1]), t(C[q:q + 1]), sample_mask=mask[q:q + 1])]
        for a, b in zip(full, one):
            assert torch.equal(a[q:q + 1].nan_to_num(7.0), b.nan_to_num(7.0))


# ---- errors ------------------------------------------------------------------------------------------

def test_errors():
    W = torch.rand(2, 4, 4)
    for fn in (degree, eigv, eccentricity):
        with pytest.raises(ValueError, match="W"):
            fn(torch.rand(4, 4))
        with pytest.raises(ValueError, match="W"):
            fn(torch.rand(2, 3, 4))
        with pytest.raises(TypeError, match="W"):
            fn(torch.ones(2, 4, 4, dtype=torch.int64))
        with pytest.raises(TypeError, match="W"):
            fn([[[1.0]]])
        with pytest.raises(ValueError, match="sample_mask"):
            fn(W, sample_mask=torch.ones(2, 5, dtype=torch.bool))
        with pytest.raises(TypeError, match="sample_mask"):
            fn(W, sample_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="threshold"):
        eccentricity(W, threshold=float("nan"))
    for fn in (num_sem_sets, kernel_language_entropy):
        with pytest.raises(ValueError, match="contra"):
            fn(W, torch.rand(2, 5, 5))
        with pytest.raises(ValueError, match="entail"):
            fn(torch.rand(2, 4), W)
        with pytest.raises(TypeError, match="entail"):
            fn(W.long(), W)
        with pytest.raises(TypeError, match="contra"):
            fn(W, W.long())
        with pytest.raises(ValueError, match="sample_mask"):
            fn(W, W, sample_mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"^t must"):
        kernel_language_entropy(W, W, t=float("inf"))
