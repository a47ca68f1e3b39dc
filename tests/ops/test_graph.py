"""flashuq.ops.graph (docs/methods.md#graph-methods): the batched symmetric eigensolver ``fuq.sym_eig`` against
scipy.linalg.eigh, the normalised-Laplacian spectrum (EigV / Eccentricity) and the heat-kernel entropy
against per-question numpy/scipy transcriptions of LM-Polygraph, sample masks, non-finite input,
dtypes, determinism, torch.compile, argument errors and misuse of the ``flashuq._C.graph`` binding."""

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

import flashuq as fuq
from flashuq import _ext
from dispatch_cases import SeenOps
from isa_cases import isa_levels, limited_isa

F64 = torch.float64


# ---- helpers -----------------------------------------------------------------------------------------

def rand_sym(rng, Q, K, scale=1.0):
    A = rng.standard_normal((Q, K, K)) * scale
    return (A + A.transpose(0, 2, 1)) / 2


def rand_graph(rng, Q, K, lo=0.05):
    """Symmetric non-negative similarity matrices with a unit-ish diagonal (positive degrees)."""
    W = rng.uniform(lo, 1.0, size=(Q, K, K))
    W = (W + W.transpose(0, 2, 1)) / 2
    idx = np.arange(K)
    W[:, idx, idx] = rng.uniform(0.8, 1.0, size=(Q, K))
    return W


def rand_mask(rng, Q, K, min_valid=1):
    m = np.zeros((Q, K), dtype=bool)
    for q in range(Q):
        n = rng.integers(min_valid, K + 1)
        m[q, rng.choice(K, size=n, replace=False)] = True
    return m


def t(x):
    return torch.from_numpy(np.array(x, copy=True))  # a fresh array: numpy's A[None] has batch stride 0


def nan_eq(a, b):
    """Bitwise equality, NaN == NaN."""
    return torch.equal(torch.nan_to_num(a, nan=1234.5), torch.nan_to_num(b, nan=1234.5)) and \
        torch.equal(torch.isnan(a), torch.isnan(b))


# ---- per-question transcriptions of LM-Polygraph (eig_val_laplacian.py, eccentricity.py, KLE) ---------

def normalized_laplacian_ref(W):
    W = (W + W.T) / 2
    D = np.diag(W.sum(axis=1))
    D_inverse_sqrt = np.linalg.inv(np.sqrt(D))
    return np.eye(D.shape[0]) - D_inverse_sqrt @ W @ D_inverse_sqrt


def eigv_ref(W):
    L = normalized_laplacian_ref(W)
    return sum(max(0.0, 1.0 - lam) for lam in np.linalg.eig(L)[0].real)


def eccentricity_ref(W, thres=0.9):
    L = normalized_laplacian_ref(W)
    eigenvalues, eigenvectors = scipy.linalg.eigh(L)
    U = eigenvectors[:, eigenvalues < thres]
    C_ecc_s_j = [np.linalg.norm(x - x.mean(0), 2) for x in U.T]   # per eigenvector, as the reference
    per_sample = np.linalg.norm(U - U.mean(0), axis=1)             # per response (the paper's norms)
    return np.linalg.norm(C_ecc_s_j, 2), per_sample


def heat_entropy_ref(W, t):
    W = (W + W.T) / 2
    L = np.diag(W.sum(axis=1)) - W
    Kh = scipy.linalg.expm(-t * L)
    d = np.sqrt(np.diag(Kh)) + 1e-12
    Kn = Kh / np.outer(d, d) / Kh.shape[0]
    h = 0.0
    for e in np.linalg.eig(Kn)[0].real:
        if abs(e) > 1e-8:
            h -= e * np.log(e)
    return h


# ---- sym_eig vs scipy.linalg.eigh ----------------------------------------------------------------------

def check_eig(A, vals, vecs, tol=1e-12):
    """A [K, K] fp64 numpy, vals [K], vecs [K, K] numpy: eigenvalues vs eigh, A V = V Λ, VᵀV = I."""
    K = A.shape[0]
    nrm = max(np.linalg.norm(A, 2), np.finfo(float).tiny)
    ref = scipy.linalg.eigh(A, eigvals_only=True)
    assert np.all(np.diff(vals) >= 0), "eigenvalues must be ascending"
    assert np.abs(vals - ref).max() <= tol * nrm
    if vecs is not None:
        assert np.abs(A @ vecs - vecs * vals[None, :]).max() <= tol * nrm
        assert np.abs(vecs.T @ vecs - np.eye(K)).max() <= tol


@pytest.mark.parametrize("K", [1, 2, 3, 5, 8, 17, 20, 33, 64])
def test_sym_eig_random_fp64(K):
    rng = np.random.default_rng(K)
    Q = 12
    A = rand_sym(rng, Q, K)
    vals, vecs = fuq.sym_eig(t(A), eigenvectors=True)
    assert vals.dtype == F64 and vecs.dtype == F64
    assert vals.shape == (Q, K) and vecs.shape == (Q, K, K)
    for q in range(Q):
        check_eig(A[q], vals[q].numpy(), vecs[q].numpy())
    vals_only, none = fuq.sym_eig(t(A))
    assert none is None
    r = fuq.sym_eig(t(A), eigenvectors=True)  # a NamedTuple with torch.linalg.eigh's field names
    assert isinstance(r, fuq.SymEig) and torch.equal(r.eigenvalues, vals) and torch.equal(r.eigenvectors, vecs)
    # without vectors the root-free QL runs: the same eigenvalues to rounding
    scale = max(1.0, float(np.abs(A).max()))
    assert torch.allclose(vals_only, vals, rtol=0, atol=1e-13 * K * scale)


def test_sym_eig_repeated_eigenvalues():
    rng = np.random.default_rng(1)
    for d in ([1, 1, 1, 2, 2, 3, 3, 3, 3, 5], [0, 0, 0, 0, 0, 0, 7], [-2, -2, 4, 4, 4, 4, 4, 4]):
        d = np.asarray(d, dtype=np.float64)
        K = len(d)
        Q = 10
        A = np.empty((Q, K, K))
        for q in range(Q):
            O = np.linalg.qr(rng.standard_normal((K, K)))[0]
            A[q] = O @ np.diag(d) @ O.T
            A[q] = (A[q] + A[q].T) / 2
        vals, vecs = fuq.sym_eig(t(A), eigenvectors=True)
        for q in range(Q):
            assert np.abs(vals[q].numpy() - np.sort(d)).max() <= 1e-13 * np.abs(d).max()
            check_eig(A[q], vals[q].numpy(), vecs[q].numpy())


def test_sym_eig_diagonal_and_zero():
    rng = np.random.default_rng(2)
    d = rng.standard_normal((10, 9))
    A = np.zeros((10, 9, 9))
    A[:, np.arange(9), np.arange(9)] = d
    vals, vecs = fuq.sym_eig(t(A), eigenvectors=True)
    torch.testing.assert_close(vals, t(np.sort(d, axis=1)), rtol=1e-15, atol=1e-15)
    for q in range(10):  # the eigenvectors are the (signed) unit vectors: a permutation matrix
        P = np.abs(vecs[q].numpy())
        np.testing.assert_allclose(P[np.argsort(d[q]), np.arange(9)], 1.0, atol=1e-15)
        check_eig(A[q], vals[q].numpy(), vecs[q].numpy())
    vals, vecs = fuq.sym_eig(torch.zeros(3, 6, 6, dtype=F64), eigenvectors=True)
    assert torch.equal(vals, torch.zeros(3, 6, dtype=F64))
    assert not vecs.isnan().any()
    for q in range(3):
        torch.testing.assert_close(vecs[q].T @ vecs[q], torch.eye(6, dtype=F64), rtol=0, atol=1e-15)


@pytest.mark.parametrize("scale", [1e8, 1e-8, 1e150, 1e-150])
def test_sym_eig_scale(scale):
    rng = np.random.default_rng(3)
    A = rand_sym(rng, 10, 11, scale)
    vals, vecs = fuq.sym_eig(t(A), eigenvectors=True)
    assert torch.isfinite(vals).all() and torch.isfinite(vecs).all()
    for q in range(10):
        check_eig(A[q], vals[q].numpy(), vecs[q].numpy())
    # scaling the input scales the eigenvalues and keeps the eigenvectors
    v1, _ = fuq.sym_eig(t(A / scale))
    torch.testing.assert_close(vals / scale, v1, rtol=1e-12, atol=1e-12)


def _permuted_blocks_of_ones(rng, sizes):
    """A permuted block-diagonal matrix of ones: exact clusters of identical answers (rank = the
    number of blocks). Its Householder reduction leaves a trailing block that shrinks by ~eps at
    every step, down to columns whose 2 / (vᵀv) overflowed (all NaN before the rescaled reflector)
    and a tridiagonal whose squared rows underflow (NaN in the root-free QL before the floor of
    its negligibility test), docs/numerics.md#small-eigenproblems."""
    A = scipy.linalg.block_diag(*[np.ones((b, b)) for b in sizes])
    p = rng.permutation(len(A))
    return A[p][:, p]


@pytest.mark.parametrize("sizes", [(52, 7, 3, 1, 1, 1), (12, 5, 1, 1), (30, 20, 10, 4), (100, 20, 8)])
def test_sym_eig_of_clusters_of_identical_answers(sizes):
    rng = np.random.default_rng(len(sizes))
    A = np.stack([_permuted_blocks_of_ones(rng, sizes) for _ in range(12)])
    vals, vecs = fuq.sym_eig(t(A), eigenvectors=True)
    vals_only, _ = fuq.sym_eig(t(A))
    want = np.sort(np.concatenate([[float(b)] + [0.0] * (b - 1) for b in sizes]))
    for q in range(len(A)):
        check_eig(A[q], vals[q].numpy(), vecs[q].numpy())
        assert np.abs(vals_only[q].numpy() - want).max() <= 1e-12 * max(sizes)
    # EigV of the same graphs (the Laplacian path): one per cluster, as LM-Polygraph's numpy code gives
    eigv = fuq.laplacian_spectrum(t(A), eccentricity=False).eigv
    np.testing.assert_allclose(eigv.numpy(), [eigv_ref(a) for a in A], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(eigv.numpy(), float(len(sizes)), rtol=1e-9)


def test_sym_eig_cluster_near_zero_beside_a_large_eigenvalue():
    """ones(64) plus symmetric noise of 1e-13: 63 eigenvalues within ~1e-13 of 0 beside 64. With
    eigenvectors, QL's relative test (e below eps |d|) asked for more than rounding allows and
    gave up after 64 sweeps (all NaN); it now falls back to eps ‖T‖ there."""
    rng = np.random.default_rng(3)
    A = np.empty((6, 64, 64))
    for q in range(6):
        N = rng.uniform(0, 1e-13, (64, 64))
        A[q] = np.ones((64, 64)) + (N + N.T) / 2
    vals, vecs = fuq.sym_eig(t(A), eigenvectors=True)
    vals_only, _ = fuq.sym_eig(t(A))
    for q in range(6):
        check_eig(A[q], vals[q].numpy(), vecs[q].numpy())
        check_eig(A[q], vals_only[q].numpy(), None)


def test_sym_eig_entries_near_the_largest_double():
    """Finite entries up to DBL_MAX: (a + b)/2 and the row sums overflowed (NaN); the kernel now
    retries on W·2^-128 (exact) and scales the eigenvalues back."""
    W = np.array([[1.0, 0.5], [0.5, 1.0]])
    for sc in (1e300, 1e307, 1e308, 1.7e308):
        for K in (2, 5, 20):  # the scalar path and the lanes (which hand such a question to it)
            A = np.tile(scipy.linalg.block_diag(W, np.eye(K - 2) * 0.25) * sc, (6, 1, 1))
            vals, vecs = fuq.sym_eig(t(A), eigenvectors=True)
            vals_only, _ = fuq.sym_eig(t(A))
            want = np.sort(np.concatenate([[0.5 * sc, 1.5 * sc], np.full(K - 2, 0.25 * sc)]))
            np.testing.assert_allclose(vals.numpy(), np.tile(want, (6, 1)), rtol=1e-14)
            np.testing.assert_allclose(vals_only.numpy(), np.tile(want, (6, 1)), rtol=1e-14)
            for q in range(6):
                np.testing.assert_allclose(np.abs(vecs[q].numpy().T @ vecs[q].numpy()), np.eye(K), atol=1e-14)


def test_laplacian_of_subnormal_degrees():
    """The normalised Laplacian does not depend on W's scale; degrees below ~1e-154 overflowed
    p_i p_j = 1/√(d_i d_j) (NaN), they now take (W_ij p_i) p_j."""
    rng = np.random.default_rng(9)
    for K in (3, 20, 70):
        W = rand_graph(rng, 6, K)
        ref = fuq.laplacian_spectrum(t(W), eccentricity=True)
        for sc in (1e-300, 1e-310, 1e-318):
            got = fuq.laplacian_spectrum(t(W * sc), eccentricity=True)
            # subnormal weights keep fewer digits: the input itself differs from W by up to 2^-1074 / (W sc)
            tol = 1e-12 if sc > 1e-308 else 1e-6 if sc > 1e-316 else 1e-3
            for x, y in zip(got, ref):
                np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=tol, atol=tol)


def test_sym_eig_nonsymmetric_input_is_symmetrised():
    rng = np.random.default_rng(4)
    A = rng.standard_normal((12, 7, 7))
    S = (A + A.transpose(0, 2, 1)) / 2
    va, Va = fuq.sym_eig(t(A), eigenvectors=True)
    vs, Vs = fuq.sym_eig(t(S), eigenvectors=True)
    torch.testing.assert_close(va, vs, rtol=0, atol=1e-14)
    torch.testing.assert_close(Va, Vs, rtol=0, atol=1e-13)
    for q in range(12):
        check_eig(S[q], va[q].numpy(), Va[q].numpy())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_sym_eig_non_finite_question_only(bad):
    rng = np.random.default_rng(5)
    A = rand_sym(rng, 6, 5)
    Ab = A.copy()
    Ab[2, 1, 3] = bad
    vals, vecs = fuq.sym_eig(t(Ab), eigenvectors=True)
    assert vals[2].isnan().all() and vecs[2].isnan().all()
    keep = [0, 1, 3, 4, 5]
    v0, V0 = fuq.sym_eig(t(A[keep]), eigenvectors=True)
    assert torch.equal(vals[keep], v0) and torch.equal(vecs[keep], V0)
    # the Laplacian and heat-kernel ops follow the same policy
    W = rand_graph(rng, 6, 5)
    Wb = W.copy()
    Wb[2, 0, 4] = bad
    spec = fuq.laplacian_spectrum(t(Wb))
    assert spec.eigv[2].isnan() and spec.eccentricity[2].isnan() and spec.eccentricity_per_sample[2].isnan().all()
    assert not spec.eigv[keep].isnan().any() and not spec.eccentricity_per_sample[keep].isnan().any()
    assert torch.equal(spec.eigv[keep], fuq.laplacian_spectrum(t(W[keep])).eigv)
    h = fuq.heat_kernel_entropy(t(Wb))
    assert h[2].isnan() and torch.equal(h[keep], fuq.heat_kernel_entropy(t(W[keep])))


def test_sym_eig_float32_and_half():
    rng = np.random.default_rng(6)
    A = rand_sym(rng, 10, 9)
    A32 = t(A).float()
    vals, vecs = fuq.sym_eig(A32, eigenvectors=True)
    assert vals.dtype == torch.float32 and vecs.dtype == torch.float32
    ref = np.linalg.eigvalsh(A32.double().numpy())
    np.testing.assert_allclose(vals.numpy(), ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    for q in range(10):  # fp64 arithmetic inside: reconstruction limited by the fp32 output rounding
        V = vecs[q].double().numpy()
        Aq = A32[q].double().numpy()
        assert np.abs(Aq @ V - V * vals[q].double().numpy()).max() <= 1e-5 * np.abs(ref[q]).max()
    for dt in (torch.float16, torch.bfloat16):
        Ah = t(A).to(dt)
        v, V = fuq.sym_eig(Ah, eigenvectors=True)
        assert v.dtype == torch.float32 and V.dtype == torch.float32
        ref = np.linalg.eigvalsh(Ah.double().numpy())
        np.testing.assert_allclose(v.numpy(), ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_sym_eig_numpy_input():
    rng = np.random.default_rng(7)
    A = rand_sym(rng, 4, 5)
    vals, _ = fuq.sym_eig(A)
    assert isinstance(vals, torch.Tensor)
    torch.testing.assert_close(vals, torch.linalg.eigvalsh(t(A)), rtol=0, atol=1e-13)


def test_sym_eig_empty_shapes():
    v, V = fuq.sym_eig(torch.zeros(0, 4, 4, dtype=F64), eigenvectors=True)
    assert v.shape == (0, 4) and V.shape == (0, 4, 4)
    v, V = fuq.sym_eig(torch.zeros(3, 0, 0), eigenvectors=True)
    assert v.shape == (3, 0) and V.shape == (3, 0, 0)
    assert fuq.laplacian_spectrum(torch.zeros(2, 0, 0)).eigv.isnan().all()
    assert fuq.heat_kernel_entropy(torch.zeros(2, 0, 0)).isnan().all()


def test_views_grad_and_meta():
    rng = np.random.default_rng(17)
    W = t(rand_graph(rng, 4, 6))
    ref = fuq.laplacian_spectrum(W)
    # non-contiguous views are copied, never misread
    Wt = W.transpose(1, 2).contiguous().transpose(1, 2)
    assert not Wt.is_contiguous()
    assert torch.equal(fuq.laplacian_spectrum(Wt).eigv, ref.eigv)
    big = torch.zeros(4, 6, 9, dtype=F64)
    big[:, :, 2:8] = W
    assert torch.equal(fuq.laplacian_spectrum(big[:, :, 2:8]).eigv, ref.eigv)
    assert torch.equal(fuq.laplacian_spectrum(W[:1].expand(4, 6, 6)).eigv, ref.eigv[:1].expand(4))
    # inputs that require grad are accepted; the results are constants
    Wg = W.clone().requires_grad_(True)
    out = fuq.laplacian_spectrum(Wg)
    assert not out.eigv.requires_grad and torch.equal(out.eigv, ref.eigv)
    # meta tensors give shapes only
    m = torch.empty(4, 6, 6, device="meta")
    spec = fuq.laplacian_spectrum(m, sample_mask=torch.ones(4, 6, dtype=torch.bool, device="meta"))
    assert spec.eigv.shape == (4,) and spec.eccentricity_per_sample.shape == (4, 6)
    assert fuq.sym_eig(m, eigenvectors=True)[1].shape == (4, 6, 6)


# ---- size-1 dimensions with odd strides (torch calls them contiguous) ----------------------------------

def test_single_question_with_odd_batch_stride():
    # A [1, K, K] view whose (size-1) batch stride is not K*K is contiguous for torch: it must be accepted.
    # numpy's A[None] has batch stride 0; a slice of a wider array has a larger one.
    A = rand_sym(np.random.default_rng(8), 1, 3)[0]
    ref = np.linalg.eigvalsh(A)
    np.testing.assert_allclose(fuq.sym_eig(A[None])[0][0].numpy(), ref, atol=1e-14)
    wide = torch.zeros(6, 3, dtype=F64)
    wide[:3] = t(A)
    np.testing.assert_allclose(fuq.sym_eig(wide[None, :3])[0][0].numpy(), ref, atol=1e-14)


def test_single_sample_slice():
    W = torch.rand(1, 4, 4, dtype=F64) + 0.1
    assert fuq.laplacian_spectrum(W[:, :1, :1]).eigv.item() == pytest.approx(1.0, abs=1e-15)


# ---- sample_mask -----------------------------------------------------------------------------------------

def test_sym_eig_mask_matches_unpadded_submatrix():
    rng = np.random.default_rng(9)
    Q, K = 20, 9
    A = rand_sym(rng, Q, K)
    mask = rand_mask(rng, Q, K)
    mask[3] = False  # an all-masked question
    garbage = A.copy()
    garbage[~mask] = np.nan                      # masked rows
    garbage.transpose(0, 2, 1)[~mask] = np.inf   # masked columns
    vals, vecs = fuq.sym_eig(t(garbage), sample_mask=t(mask), eigenvectors=True)
    vals_only, _ = fuq.sym_eig(t(garbage), sample_mask=t(mask))
    assert torch.equal(vals.isnan(), vals_only.isnan())
    assert torch.allclose(vals.nan_to_num(0), vals_only.nan_to_num(0), rtol=0, atol=1e-12)  # root-free QL
    for q in range(Q):
        idx = np.flatnonzero(mask[q])
        n = len(idx)
        if n == 0:
            assert vals[q].isnan().all() and vecs[q].isnan().all()
            continue
        sub = A[q][np.ix_(idx, idx)]
        v1, V1 = fuq.sym_eig(t(sub[None]), eigenvectors=True)
        assert torch.equal(vals[q, :n], v1[0]), "padding must not change a single bit"
        assert vals[q, n:].isnan().all()
        V = vecs[q]
        assert V[~t(mask[q])].isnan().all(), "masked rows are NaN"
        assert V[:, n:].isnan().all(), "padded columns are NaN"
        assert torch.equal(V[t(idx)][:, :n], V1[0]), "rows come back in the original sample order"
        check_eig(sub, vals[q, :n].numpy(), V[t(idx)][:, :n].numpy())


def test_mask_integer_and_bool_agree():
    rng = np.random.default_rng(10)
    W = rand_graph(rng, 8, 6)
    m = rand_mask(rng, 8, 6)
    a = fuq.laplacian_spectrum(t(W), sample_mask=t(m))
    b = fuq.laplacian_spectrum(t(W), sample_mask=t(m.astype(np.int64) * 3))
    assert all(nan_eq(x, y) for x, y in zip(a, b))
    full = fuq.laplacian_spectrum(t(W), sample_mask=torch.ones(8, 6, dtype=torch.bool))
    assert all(nan_eq(x, y) for x, y in zip(full, fuq.laplacian_spectrum(t(W))))


# ---- laplacian_spectrum vs the LM-Polygraph transcription -------------------------------------------

@pytest.mark.parametrize("K", [1, 2, 3, 7, 20, 33])
def test_laplacian_spectrum_vs_reference(K):
    rng = np.random.default_rng(100 + K)
    Q = 12
    W = rand_graph(rng, Q, K)
    W[: Q // 2] += rng.uniform(-0.04, 0.04, size=(Q // 2, K, K))  # non-symmetric: symmetrised inside
    spec = fuq.laplacian_spectrum(t(W))
    assert spec.eigv.dtype == F64 and spec.eigv.shape == (Q,)
    assert spec.eccentricity.shape == (Q,) and spec.eccentricity_per_sample.shape == (Q, K)
    for q in range(Q):
        assert spec.eigv[q].item() == pytest.approx(eigv_ref(W[q]), rel=1e-12, abs=1e-12)
        ecc, per = eccentricity_ref(W[q])
        assert spec.eccentricity[q].item() == pytest.approx(ecc, rel=1e-10, abs=1e-12)
        np.testing.assert_allclose(spec.eccentricity_per_sample[q].numpy(), per, rtol=1e-9, atol=1e-11)
    # Σ per-sample² = eccentricity²
    torch.testing.assert_close((spec.eccentricity_per_sample ** 2).sum(1), spec.eccentricity ** 2,
                               rtol=1e-12, atol=1e-12)
    # eigenvalues only
    fast = fuq.laplacian_spectrum(t(W), eccentricity=False)
    assert fast.eccentricity is None and fast.eccentricity_per_sample is None
    torch.testing.assert_close(fast.eigv, spec.eigv, rtol=1e-14, atol=1e-14)


def test_laplacian_spectrum_masked_vs_reference():
    rng = np.random.default_rng(11)
    Q, K = 25, 12
    W = rand_graph(rng, Q, K)
    mask = rand_mask(rng, Q, K)
    mask[0] = False
    Wg = W.copy()
    Wg[~mask] = np.nan
    spec = fuq.laplacian_spectrum(t(Wg), sample_mask=t(mask), threshold=0.7)
    assert spec.eigv[0].isnan() and spec.eccentricity[0].isnan() and spec.eccentricity_per_sample[0].isnan().all()
    for q in range(1, Q):
        idx = np.flatnonzero(mask[q])
        sub = W[q][np.ix_(idx, idx)]
        assert spec.eigv[q].item() == pytest.approx(eigv_ref(sub), rel=1e-12, abs=1e-12)
        ecc, per = eccentricity_ref(sub, 0.7)
        assert spec.eccentricity[q].item() == pytest.approx(ecc, rel=1e-10, abs=1e-12)
        got = spec.eccentricity_per_sample[q].numpy()
        np.testing.assert_allclose(got[idx], per, rtol=1e-9, atol=1e-11)  # original sample order
        assert np.isnan(got[~mask[q]]).all()


def test_laplacian_threshold():
    rng = np.random.default_rng(12)
    Q, K = 10, 8
    W = rand_graph(rng, Q, K)
    mask = rand_mask(rng, Q, K)
    n = mask.sum(1)
    # all eigenvectors kept (λ ≤ 2 < threshold): ‖U - 1ūᵀ‖_F² = n - ‖Uᵀ1‖²/n = n - 1
    spec = fuq.laplacian_spectrum(t(W), sample_mask=t(mask), threshold=2.5)
    torch.testing.assert_close(spec.eccentricity, t(np.sqrt(n - 1.0)), rtol=1e-12, atol=1e-7)
    # none kept
    spec = fuq.laplacian_spectrum(t(W), sample_mask=t(mask), threshold=-1)
    assert torch.equal(spec.eccentricity, torch.zeros(Q, dtype=F64))
    per = spec.eccentricity_per_sample
    assert torch.equal(per[t(mask)], torch.zeros(int(n.sum()), dtype=F64)) and per[~t(mask)].isnan().all()
    for thr in (0.3, 0.9, 1.2):
        spec = fuq.laplacian_spectrum(t(W), threshold=thr)
        for q in range(Q):
            assert spec.eccentricity[q].item() == pytest.approx(eccentricity_ref(W[q], thr)[0], rel=1e-10)
    # the threshold does not touch EigV
    assert torch.equal(fuq.laplacian_spectrum(t(W), threshold=0.1).eigv, fuq.laplacian_spectrum(t(W)).eigv)


def test_laplacian_zero_degree_is_nan():
    # Documented policy: a response with zero total similarity (LM-Polygraph's inv(sqrt(D)) is singular)
    # makes its question NaN, and only that question.
    rng = np.random.default_rng(13)
    W = rand_graph(rng, 5, 6)
    W[1, 2, :] = 0
    W[1, :, 2] = 0
    W[3, 0, :] = -0.5  # a negative degree as well
    W[3, :, 0] = -0.5
    spec = fuq.laplacian_spectrum(t(W))
    for q in (1, 3):
        assert spec.eigv[q].isnan() and spec.eccentricity[q].isnan() and spec.eccentricity_per_sample[q].isnan().all()
    for q in (0, 2, 4):
        assert spec.eigv[q].item() == pytest.approx(eigv_ref(W[q]), rel=1e-12)
    # the reference indeed cannot do it
    with pytest.raises(np.linalg.LinAlgError), np.errstate(all="ignore"):
        normalized_laplacian_ref(W[1])
    # masking the isolated response out makes the question valid again
    m = np.ones((5, 6), dtype=bool)
    m[1, 2] = False
    spec = fuq.laplacian_spectrum(t(W), sample_mask=t(m))
    sub = np.delete(np.delete(W[1], 2, 0), 2, 1)
    assert spec.eigv[1].item() == pytest.approx(eigv_ref(sub), rel=1e-12)


def test_laplacian_known_graphs():
    # c disconnected complete blocks: L has eigenvalue 0 c times and 1 otherwise -> EigV = c,
    # eccentricity = sqrt(c - 1) (the kept space is spanned by the block indicators)
    for sizes in ([3, 3, 3], [1, 4, 2, 5], [6], [1, 1, 1, 1]):
        n = sum(sizes)
        W = scipy.linalg.block_diag(*[np.ones((b, b)) for b in sizes])
        spec = fuq.laplacian_spectrum(t(W[None]))
        c = len(sizes)
        assert spec.eigv.item() == pytest.approx(c, abs=1e-12)
        assert spec.eccentricity.item() == pytest.approx(math.sqrt(c - 1), abs=1e-12)
        vals, _ = fuq.sym_eig(t(np.eye(n) - W / W.sum(1)[:, None] ** 0.5 / W.sum(1)[None, :] ** 0.5)[None])
        np.testing.assert_allclose(vals[0].numpy(), [0] * c + [1] * (n - c), atol=1e-14)


def test_eccentricity_near_repeated_eigenvalues():
    # blocks of equal weights plus noise of 1e-14 .. 1e-4: the kept eigenvalues (near 0) are
    # (nearly) repeated, which inverse iteration must separate by orthogonalisation; the result
    # depends only on the kept eigenspace, so it is compared with numpy's eigh
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = list(rng.integers(1, 6, size=rng.integers(1, 6)))
        W = scipy.linalg.block_diag(*[np.full((b, b), 0.9) for b in sizes])
        n = len(W)
        N = rng.uniform(0, 10.0 ** rng.integers(-14, -3), (n, n))
        W = W + (N + N.T) / 2
        deg = W.sum(1)
        lam, U = np.linalg.eigh(np.eye(n) - W / np.sqrt(deg)[:, None] / np.sqrt(deg)[None])
        Uk = U[:, lam < 0.9]
        C = Uk - Uk.mean(0)
        spec = fuq.laplacian_spectrum(t(W[None]))
        assert spec.eccentricity.item() == pytest.approx(np.linalg.norm(C), abs=1e-10)
        np.testing.assert_allclose(spec.eccentricity_per_sample[0].numpy(), np.linalg.norm(C, axis=1), atol=1e-10)


# ---- heat_kernel_entropy vs scipy.linalg.expm --------------------------------------------------------

@pytest.mark.parametrize("tt", [0.3, 0.05, 2.5])
def test_heat_kernel_entropy_vs_reference(tt):
    rng = np.random.default_rng(int(tt * 100))
    Q = 8
    Ks = [2, 3, 5, 10, 20, 33]
    for K in Ks:
        W = rng.uniform(0, 2, size=(Q, K, K))  # KLE's weights lie in [0, 2]; non-symmetric on purpose
        h = fuq.heat_kernel_entropy(t(W), t=tt)
        assert h.dtype == F64 and h.shape == (Q,)
        ref = np.array([heat_entropy_ref(W[q], tt) for q in range(Q)])
        np.testing.assert_allclose(h.numpy(), ref, rtol=1e-9, atol=1e-11)
        assert (h.numpy() <= np.log(K) + 1e-9).all()


@pytest.mark.parametrize("K", [2, 20, 64, 70])
def test_heat_kernel_entropy_of_many_or_tiny_weights(K):
    """Graphs the scalar path's eigenvector QL could not finish (NaN before): KLE's two clusters of
    answers at t = 1 and identical answers (W = 2 everywhere) with up to 70 samples, and weights
    of 1e-200 (the root-free QL's squares underflowed)."""
    lab = np.arange(K) % 2
    same = lab[:, None] == lab[None, :]
    E, C = np.where(same, 0.9, 0.05), np.where(same, 0.05, 0.9)
    W = np.stack([_kle_weights(t(E[None]), t(C[None]))[0].numpy(), np.full((K, K), 2.0), rand_graph(np.random.default_rng(K), 1, K)[0] * 1e-200])
    for tt in (0.3, 1.0):
        h = fuq.heat_kernel_entropy(t(W), t=tt).numpy()
        assert np.isfinite(h).all(), (K, tt, h)
        np.testing.assert_allclose(h[:2], [heat_entropy_ref(w, tt) for w in W[:2]], rtol=1e-9, atol=1e-11)
        # weights of 1e-200: L is ~0, the heat kernel I, the entropy ln K (less the normaliser's 1e-12)
        assert h[2] == pytest.approx(math.log(K), abs=1e-10)
    kle = fuq.methods.kernel_language_entropy(t(E[None]), t(C[None]), t=1.0)
    assert torch.isfinite(kle).all()


def test_heat_kernel_entropy_masked_and_limits():
    rng = np.random.default_rng(14)
    Q, K = 20, 10
    W = rng.uniform(0, 2, size=(Q, K, K))
    mask = rand_mask(rng, Q, K, min_valid=2)
    mask[5] = False
    Wg = W.copy()
    Wg[~mask] = np.nan
    h = fuq.heat_kernel_entropy(t(Wg), sample_mask=t(mask))
    assert h[5].isnan()
    for q in range(Q):
        if q == 5:
            continue
        idx = np.flatnonzero(mask[q])
        assert h[q].item() == pytest.approx(heat_entropy_ref(W[q][np.ix_(idx, idx)], 0.3), rel=1e-9, abs=1e-11)
    # t = 0: Kh = I, the normalised kernel is I/n, VNE = ln n (up to the 1e-12 of the normaliser)
    h0 = fuq.heat_kernel_entropy(t(W), t=0.0)
    torch.testing.assert_close(h0, torch.full((Q,), math.log(K), dtype=F64), rtol=1e-10, atol=0)
    # float32 input -> float32 output
    h32 = fuq.heat_kernel_entropy(t(W).float())
    assert h32.dtype == torch.float32
    torch.testing.assert_close(h32.double(), fuq.heat_kernel_entropy(t(W).float().double()), rtol=1e-6, atol=1e-7)


def test_heat_kernel_lanes_scaling_and_squaring():
    """On the CPU lanes the heat kernel is a Taylor polynomial of -t(L + cJ - μI)/2^s squared s times
    (csrc/cpu/graph_lanes.h, docs/numerics.md#small-eigenproblems): it agrees with the scalar path's
    eigen-decomposition to rounding and with scipy's expm to 1e-9, for small, large and negative t;
    a question whose |t|·max|λ| may exceed 128 (Gershgorin) is computed on the scalar path instead,
    bit for bit."""
    rng = np.random.default_rng(52)
    Q, K = 40, 20
    W = rng.uniform(0, 2, size=(Q, K, K))
    W[:8] *= rng.uniform(0, 0.2, size=(8, 1, 1))  # some sparse-weight graphs: small norms, s = 0..2
    Ws = (W + W.transpose(0, 2, 1)) / 2
    L = np.einsum("qij->qi", Ws)[:, :, None] * np.eye(K) - Ws
    off = ~np.eye(K, dtype=bool)
    L = L + Ws[:, off].mean(1)[:, None, None]  # L + cJ, c the mean off-diagonal weight (same spectrum but 0)
    diag = np.einsum("qii->qi", L)
    radius = np.abs(L).sum(2) - np.abs(diag)
    gersh = np.maximum(np.abs((diag - radius).min(1)), np.abs((diag + radius).max(1)))  # max |λ| <= gersh
    counts = torch.full((Q,), K, dtype=torch.int32)
    for tt in (-0.4, 0.01, 0.3, 1.0, 3.0, 8.0):
        outs = [torch.full((Q,), float("nan"), dtype=F64) for _ in range(2)]
        for o, lanes in zip(outs, (True, False)):
            _ext._C.graph(2, t(W), counts, 0.9, tt, o, None, None, 2, lanes=lanes)
        np.testing.assert_allclose(outs[0].numpy(), outs[1].numpy(), rtol=1e-12, atol=1e-12)
        scalar = abs(tt) * gersh > 128
        assert torch.equal(outs[0][torch.from_numpy(scalar)], outs[1][torch.from_numpy(scalar)])
        ref = np.array([heat_entropy_ref(W[q], tt) for q in range(Q)])
        np.testing.assert_allclose(outs[0].numpy(), ref, rtol=1e-9, atol=1e-11)
        if tt == 8.0:
            assert scalar.any() and not scalar.all()  # both routes ran
        if tt == 0.3:  # the lanes' own route ran (equal to the scalar path only to rounding)
            assert not scalar.any() and not torch.equal(outs[0], outs[1])
    # Gershgorin bounds that are finite while hi - lo is not (mixed-sign weights near the largest
    # double, a tiny t): the scalar path's question, not a Taylor polynomial evaluated far outside
    # its radius
    Wx = np.full((1, 4, 4), 6e307)
    Wx[0, 0, 1] = Wx[0, 1, 0] = Wx[0, 2, 3] = Wx[0, 3, 2] = -6e307
    got = [torch.full((1,), 7.0, dtype=F64) for _ in range(2)]
    for o, lanes in zip(got, (True, False)):
        _ext._C.graph(2, t(Wx), torch.full((1,), 4, dtype=torch.int32), 0.9, 1e-306, o, None, None, 1, lanes=lanes)
    assert nan_eq(got[0], got[1])


def _kle_weights(E, C):
    """Kernel Language Entropy's W as the method built it in torch before the kernel built it."""
    Es, Cs = E + E.transpose(1, 2), C + C.transpose(1, 2)
    return torch.rsub(Es, 2).sub_(Cs).mul_(0.5).add_(Es)


@pytest.mark.parametrize("fp64", [True, False])
def test_nli_heat_kernel_entropy_is_the_built_W_bitwise(fp64):
    """KLE's W built inside the kernel from E and C (op 3) gives bitwise what building W in torch and
    calling heat_kernel_entropy gives: on the lane path (3 <= n <= 64) and the scalar one (n < 3,
    n > 64, lanes=False), in every ISA build, masked or not; a non-finite E or C entry costs only its
    question; the values match scipy's expm transcription."""
    from flashuq.ops.graph import nli_heat_kernel_entropy
    rng = np.random.default_rng(44)
    dt = F64 if fp64 else torch.float32
    for K, Q in ((20, 70), (70, 5), (2, 4)):
        E = t(rng.uniform(0, 1, size=(Q, K, K))).to(dt)  # asymmetric, as NLI probabilities are
        C = (t(rng.uniform(0, 1, size=(Q, K, K))).to(dt) * (1 - E))
        E[3 % Q, 0, K - 1] = float("nan")
        C[1, K - 1, 0] = float("inf")
        mask = t(rand_mask(rng, Q, K))
        W = _kle_weights(E, C)
        for m in (None, mask):
            for level in (2, 1, 0):
                with limited_isa(level):
                    got = nli_heat_kernel_entropy(E, C, t=0.3, sample_mask=m)
                    assert got.dtype == dt
                    assert nan_eq(got, fuq.heat_kernel_entropy(W, t=0.3, sample_mask=m)), (K, m is None, level)
            if m is None:  # (a mask may drop the bad entries)
                assert got[3 % Q].isnan() and got[1].isnan() and got[0].isfinite()
        for lanes in (True, False):
            counts = torch.full((Q,), K, dtype=torch.int32)
            outs = [torch.full((Q,), float("nan"), dtype=dt) for _ in range(2)]
            _ext._C.graph(3, E, counts, 0.9, 0.3, outs[0], None, None, 2, lanes=lanes, C=C)
            _ext._C.graph(2, W, counts, 0.9, 0.3, outs[1], None, None, 2, lanes=lanes)
            assert nan_eq(outs[0], outs[1]), (K, lanes)
        if fp64:
            got = nli_heat_kernel_entropy(E, C, t=0.3)
            for q in range(Q):
                if q not in (1, 3 % Q):
                    assert got[q].item() == pytest.approx(heat_entropy_ref(W[q].numpy(), 0.3), rel=1e-9, abs=1e-11)


def test_nli_heat_kernel_entropy_binding_refuses_misuse():
    E = torch.rand(3, 5, 5, dtype=F64)
    counts = torch.full((3,), 5, dtype=torch.int32)
    out = torch.empty(3, dtype=F64)
    with pytest.raises(ValueError, match="C"):  # op 3 needs C ...
        _ext._C.graph(3, E, counts, 0.9, 0.3, out, None, None, 1)
    with pytest.raises(ValueError, match="C"):  # ... and only op 3 takes it
        _ext._C.graph(2, E, counts, 0.9, 0.3, out, None, None, 1, C=E.clone())
    with pytest.raises(TypeError):
        _ext._C.graph(3, E, counts, 0.9, 0.3, out, None, None, 1, C=E.float())
    with pytest.raises(ValueError, match="C"):
        _ext._C.graph(3, E, counts, 0.9, 0.3, out, None, None, 1, C=E[:, :4, :4].contiguous())
    with pytest.raises(ValueError, match="C"):
        _ext._C.graph(3, E, counts, 0.9, 0.3, out, None, None, 1, C=E.transpose(1, 2))


# ---- determinism -----------------------------------------------------------------------------------

def _all_ops(W, mask=None):
    v, V = fuq.sym_eig(W, sample_mask=mask, eigenvectors=True)
    s = fuq.laplacian_spectrum(W, sample_mask=mask)
    h = fuq.heat_kernel_entropy(W, sample_mask=mask)
    return [v, V, s.eigv, s.eccentricity, s.eccentricity_per_sample, h]


def test_deterministic_and_batch_independent():
    rng = np.random.default_rng(15)
    Q, K = 100, 13
    W = t(rand_graph(rng, Q, K))
    mask = t(rand_mask(rng, Q, K))
    a = _all_ops(W, mask)
    b = _all_ops(W.clone(), mask.clone())
    assert all(nan_eq(x, y) for x, y in zip(a, b))
    for q in (0, 37, 99):
        alone = _all_ops(W[q:q + 1].clone(), mask[q:q + 1].clone())
        assert all(nan_eq(x[q:q + 1], y) for x, y in zip(a, alone)), f"question {q} depends on the batch"
    n_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _all_ops(W, mask)
        torch.set_num_threads(2)
        two = _all_ops(W, mask)
    finally:
        torch.set_num_threads(n_threads)
    assert all(nan_eq(x, y) for x, y in zip(one, two))
    assert all(nan_eq(x, y) for x, y in zip(one, a))


def _hard_questions(rng, K):
    """Questions that exercise every branch of the eigenvalue code: already-reduced columns
    (beta == 0), exact zeros and ties, repeated eigenvalues, a zero degree, a non-finite entry."""
    qs = []
    block = np.zeros((K, K))  # two disconnected cliques: exact zeros below the sub-diagonal
    block[:K // 2, :K // 2] = 1.0
    block[K // 2:, K // 2:] = 1.0
    qs.append(block)
    qs.append(np.ones((K, K)))                    # complete graph: eigenvalue 1 repeated K-1 times
    qs.append(np.eye(K))                          # already diagonal
    qs.append(np.round(rand_graph(rng, 1, K)[0] * 4) / 4)  # quantised: ties everywhere
    zero_row = rand_graph(rng, 1, K)[0]
    zero_row[1, :] = zero_row[:, 1] = 0.0         # a zero degree: NaN on the Laplacian path
    qs.append(zero_row)
    nan_entry = rand_graph(rng, 1, K)[0]
    nan_entry[0, 2] = np.nan
    qs.append(nan_entry)
    qs.append(np.zeros((K, K)))                   # sym_eig of the zero matrix; no degree at all
    tri = np.diag(np.full(K, 2.0)) + np.diag(np.full(K - 1, -1.0), 1) + np.diag(np.full(K - 1, -1.0), -1)
    qs.append(tri)                                # already tridiagonal, signed entries
    sizes = [K - K // 2 - 2, K // 2, 1, 1] if K >= 5 else [K]
    qs.append(_permuted_blocks_of_ones(rng, [b for b in sizes if b > 0]))  # tiny columns and rows
    return np.stack(qs)


@pytest.mark.parametrize("level", isa_levels())
@pytest.mark.parametrize("fp64", [True, False])
def test_simd_lanes_match_scalar_path_bitwise(fp64, level):
    """On the CPU, eigenvalues of questions with 3..64 samples run in SIMD lanes, several questions
    of one size per group (csrc/cpu/graph_lanes.h): each lane performs the scalar code's
    operations in the same order, so every result is bitwise the scalar path's, whatever shares
    its group (the binding's lanes=False runs everything on the scalar path). Kernel Language
    Entropy's heat kernel comes from scaling and squaring in the lanes and from QL's eigenvectors
    on the scalar path: there the two agree to rounding, and the lanes' result is still the same on 1 and 2
    threads. On each instruction-set build this processor runs (2, 4 or 8 lanes per register)."""
    rng = np.random.default_rng(31)
    K = 70
    parts, counts = [], []
    for n in list(range(0, 66)) + [70]:  # every size, each a few times, so groups are full and ragged
        # at least 5 (fewer questions of one size take the scalar path, csrc/cpu/graph_impl.h)
        reps = 5 + (n % 3) + (30 if n == 20 else 0)
        parts.append(rand_graph(rng, reps, K))
        counts += [n] * reps
    for n in (3, 4, 7, 20, 33, 64):
        hard = _hard_questions(rng, n)
        pad = np.full((len(hard), K, K), 7.0)  # entries past a question's count must not be read
        pad[:, :n, :n] = hard
        parts.append(pad)
        counts += [n] * len(hard)
    perm = rng.permutation(len(counts))
    W = torch.from_numpy(np.concatenate(parts)[perm]).to(F64 if fp64 else torch.float32).contiguous()
    counts = torch.tensor(np.array(counts)[perm], dtype=torch.int32)
    Q = W.shape[0]

    def run(op, vectors, lanes, num_threads):
        outs = [torch.full((n,), float("nan"), dtype=W.dtype)
                for n in ([Q * K, 0, 0] if op == 0 else [Q, Q, Q * K])]
        o1 = outs[1] if vectors else None
        o2 = outs[2] if vectors else None
        with limited_isa(level):
            _ext._C.graph(op, W, counts, 0.9, 0.3, outs[0], o1, o2, num_threads, lanes=lanes)
        return outs

    with pytest.raises(TypeError):  # lanes is a bool
        _ext._C.graph(1, W, counts, 0.9, 0.3, torch.empty(Q, dtype=W.dtype), None, None, 1, lanes="no")
    for op, vectors in ((0, False), (1, False), (1, True), (2, False)):
        scalar = run(op, vectors, False, 1)
        for num_threads in (1, 2):
            simd = run(op, vectors, True, num_threads)
            if op == 2:  # the heat kernel: scaling and squaring in the lanes, QL's eigenvectors on the scalar path
                tol = 1e-12 if fp64 else 1e-5
                np.testing.assert_allclose(simd[0].numpy(), scalar[0].numpy(), rtol=tol, atol=tol)
                if num_threads == 1:
                    first = simd
                else:
                    assert nan_eq(simd[0], first[0])
                continue
            assert all(nan_eq(x, y) for x, y in zip(simd, scalar)), (op, vectors, num_threads)
        # and they are right: every finite question against the float64 transcriptions
        if op == 1 and vectors and fp64:
            for q in range(0, Q, 7):
                n = int(counts[q])
                Wq = W[q, :n, :n].numpy()
                if n < 2 or not np.isfinite(Wq).all() or (Wq.sum(1) <= 0).any():
                    continue
                ecc, per_sample = eccentricity_ref(Wq)
                np.testing.assert_allclose(scalar[0][q].item(), eigv_ref(Wq), rtol=1e-9, atol=1e-9)
                np.testing.assert_allclose(scalar[1][q].item(), ecc, rtol=1e-7, atol=1e-7)
                np.testing.assert_allclose(scalar[2][q * K:q * K + n].numpy(), per_sample, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("op,vectors", [(0, False), (1, False), (1, True)])
def test_a_question_gets_the_same_bits_in_any_batch(op, vectors):
    """A few questions of one size (fewer than 5) take the scalar path, many take the SIMD lanes
    (csrc/cpu/graph_impl.h): either way a question's eigenvalues, EigV and Eccentricity are the same
    bits, alone, in a pair or in a batch of 40."""
    rng = np.random.default_rng(23)
    K = 20
    W = torch.from_numpy(np.concatenate([rand_graph(rng, 40, K), _hard_questions(rng, K)[:4]]))
    Q = W.shape[0]

    def run(idx):
        Wb = W[idx].contiguous()
        q = Wb.shape[0]
        outs = [torch.full((n,), float("nan"), dtype=F64) for n in ([q * K, 0, 0] if op == 0 else [q, q, q * K])]
        _ext._C.graph(op, Wb, torch.full((q,), K, dtype=torch.int32), 0.9, 0.3, outs[0],
                      outs[1] if vectors else None, outs[2] if vectors else None, 2)
        return [o.view(q, -1) if o.numel() else o for o in outs]

    batch = run(list(range(Q)))
    for idx in ([0], [41], [3, 40], [5, 7, 42, 43], list(range(10, 14))):
        alone = run(idx)
        for a, b in zip(alone, batch):
            if a.numel():
                assert nan_eq(a, b[idx]), (op, vectors, idx)
    want = np.array([eigv_ref(W[q].numpy()) for q in range(0, 40, 9)])
    if op == 1:  # and they are right
        np.testing.assert_allclose(batch[0][0:40:9, 0].numpy(), want, rtol=1e-9, atol=1e-9)


def test_eccentricity_without_per_sample_norms_is_the_same_bits():
    """Eccentricity needs only the kept eigenvectors' means, which come from c = Qᵀ1 in the
    tridiagonal basis; the per-sample norms need the vectors mapped back. Without them
    (per_sample=False, methods.eccentricity's default) the scores are the same bits, on the lanes
    and the scalar path (the binding's out2=None), and right against the float64 transcription."""
    rng = np.random.default_rng(29)
    K = 12
    W = t(np.concatenate([rand_graph(rng, 37, K), _hard_questions(rng, K)]))
    mask = t(rand_mask(rng, W.shape[0], K))
    full = fuq.laplacian_spectrum(W, sample_mask=mask)
    bare = fuq.laplacian_spectrum(W, sample_mask=mask, per_sample=False)
    assert bare.eccentricity_per_sample is None
    assert nan_eq(bare.eccentricity, full.eccentricity) and nan_eq(bare.eigv, full.eigv)
    ecc, per = fuq.methods.eccentricity(W, sample_mask=mask, return_per_sample=True)
    assert nan_eq(fuq.methods.eccentricity(W, sample_mask=mask), ecc) and nan_eq(per, full.eccentricity_per_sample)
    Q = W.shape[0]
    counts = torch.full((Q,), K, dtype=torch.int32)
    Wc = W.contiguous()
    got = {}
    for lanes in (True, False):
        for with_o2 in (True, False):
            o = [torch.full((Q,), float("nan"), dtype=F64), torch.full((Q,), float("nan"), dtype=F64),
                 torch.full((Q * K,), float("nan"), dtype=F64)]
            _ext._C.graph(1, Wc, counts, 0.9, 0.3, o[0], o[1], o[2] if with_o2 else None, 2, lanes=lanes)
            got[lanes, with_o2] = o
            assert with_o2 or torch.isnan(o[2]).all()  # not written
    for key, o in got.items():
        assert nan_eq(o[0], got[True, True][0]) and nan_eq(o[1], got[True, True][1]), key
    for q in range(0, 37, 6):
        want, _ = eccentricity_ref(W[q].numpy())
        np.testing.assert_allclose(got[True, False][1][q].item(), want, rtol=1e-9, atol=1e-12)
    with pytest.raises(TypeError, match="per_sample"):
        fuq.laplacian_spectrum(W, per_sample="no")
    with pytest.raises(TypeError, match="eccentricity must be a bool"):
        fuq.laplacian_spectrum(W, eccentricity=1)
    with pytest.raises(TypeError, match="return_per_sample"):
        fuq.methods.eccentricity(W, return_per_sample=1)


def test_lanes_sort_signed_zeros_as_scalar_path():
    """Eigenvalues that compare equal but differ in sign (+0 and -0) sort in one total order,
    -0 first, on the CPU lanes' sorting network and the scalar path's selection sort alike
    (flashuq/symeig.h sort_eigen): the bits of every value agree, on every instruction-set build,
    whatever order the zeros came in."""
    rng = np.random.default_rng(5)
    diags = [rng.permutation([0.0, -0.0, 0.0, -0.0, 1.0, -0.0, 2.0]) for _ in range(40)]
    n = len(diags[0])
    W = torch.zeros(len(diags), n, n, dtype=F64)
    for q, d in enumerate(diags):  # diagonal: QL leaves the eigenvalues as given, in place
        W[q] = torch.diag(torch.from_numpy(d))
    counts = torch.full((len(diags),), n, dtype=torch.int32)
    outs = []
    for level in isa_levels():  # 2, 4 and 8 lanes per register
        for lanes in (True, False):
            o = torch.full((len(diags) * n,), float("nan"), dtype=F64)
            with limited_isa(level):
                _ext._C.graph(0, W, counts, 0.9, 0.3, o, None, None, 1, lanes=lanes)
            outs.append(o.view(-1, n))
    want = torch.tensor([-0.0, -0.0, -0.0, 0.0, 0.0, 1.0, 2.0], dtype=F64).expand(len(diags), n)
    for o in outs:
        assert torch.equal(o, want) and torch.equal(torch.signbit(o), torch.signbit(want))


# ---- torch.compile -------------------------------------------------------------------------------------

def test_torch_compile_fullgraph():
    rng = np.random.default_rng(16)
    W = t(rand_graph(rng, 6, 7))
    mask = t(rand_mask(rng, 6, 7))

    def f(W, mask):
        return (fuq.methods.eigv(W, sample_mask=mask) * 2 + 1,
                fuq.laplacian_spectrum(W).eccentricity_per_sample,
                fuq.methods.eccentricity(W, sample_mask=mask),  # without the per-sample norms
                fuq.sym_eig(W, sample_mask=mask, eigenvectors=True)[1],
                fuq.heat_kernel_entropy(W, sample_mask=mask),
                fuq.methods.kernel_language_entropy(W, W.mT, sample_mask=mask))

    torch._dynamo.reset()
    g = torch.compile(f, fullgraph=True, backend="aot_eager")
    for x, y in zip(g(W, mask), f(W, mask)):
        assert nan_eq(x, y)


def test_plain_cpu_calls_skip_the_dispatch_and_agree_with_the_op():
    """A CPU call that nothing observes runs the graph kernel without torch.library's dispatch
    (ops/_common.py, plain_cpu_call; ~30 µs of a one-question call); the results are the registered
    op's, bit for bit. Under a dispatch mode the call goes through the op."""
    rng = np.random.default_rng(17)
    W = t(rand_graph(rng, 9, 7))
    counts = torch.full((9,), 7, dtype=torch.int32)
    spec = fuq.laplacian_spectrum(W)
    want = torch.ops.flashuq.graph_spectra((W + W.mT) / 2, counts, 1, True, 0.9, 0.0)
    for got, w in zip((spec.eigv, spec.eccentricity, spec.eccentricity_per_sample), want):
        assert torch.equal(got, w)
    seen = SeenOps()
    with seen:
        again = fuq.laplacian_spectrum(W)
    assert any("flashuq.graph_spectra" in op for op in seen.ops), seen.ops
    assert torch.equal(again.eigv, spec.eigv) and torch.equal(again.eccentricity, spec.eccentricity)


def test_registered_op_fake_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        W = torch.empty(4, 5, 5, dtype=F64)
        c = torch.empty(4, dtype=torch.int32)
        for op, vec, shapes in [(0, True, [(4, 5), (4, 5, 5), (0,)]), (0, False, [(4, 5), (0,), (0,)]),
                                (1, True, [(4,), (4,), (4, 5)]), (1, False, [(4,), (0,), (0,)]),
                                (2, False, [(4,), (0,), (0,)])]:
            out = torch.ops.flashuq.graph_spectra(W, c, op, vec, 0.9, 0.3)
            assert [tuple(o.shape) for o in out] == shapes
            assert all(o.dtype == F64 for o in out)


# ---- argument errors -------------------------------------------------------------------------------------

def test_errors():
    W = torch.rand(2, 4, 4)
    for fn, name in ((lambda x, **k: fuq.sym_eig(x, **k), "A"),
                     (lambda x, **k: fuq.laplacian_spectrum(x, **k), "W"),
                     (lambda x, **k: fuq.heat_kernel_entropy(x, **k), "W")):
        with pytest.raises(ValueError, match=rf"^{name} must have shape"):
            fn(torch.rand(4, 4))
        with pytest.raises(ValueError, match=rf"^{name} must have shape"):
            fn(torch.rand(2, 3, 4))
        with pytest.raises(ValueError, match=rf"^{name} must have shape"):
            fn(torch.rand(2, 2, 3, 3))
        with pytest.raises(TypeError, match=rf"^{name} must be a floating"):
            fn(torch.ones(2, 4, 4, dtype=torch.int64))
        with pytest.raises(TypeError, match=rf"^{name} must be a floating"):
            fn(torch.ones(2, 4, 4, dtype=torch.bool))
        with pytest.raises(TypeError, match=rf"^{name} must be a torch.Tensor"):
            fn([[[1.0]]])
        with pytest.raises(ValueError, match="sample_mask"):
            fn(W, sample_mask=torch.ones(2, 3, dtype=torch.bool))
        with pytest.raises(ValueError, match="sample_mask"):
            fn(W, sample_mask=torch.ones(2, 4, 1, dtype=torch.bool))
        with pytest.raises(TypeError, match="sample_mask"):
            fn(W, sample_mask=torch.ones(2, 4))
        with pytest.raises(TypeError, match="sample_mask"):
            fn(W, sample_mask=[[True] * 4] * 2)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="threshold"):
            fuq.laplacian_spectrum(W, threshold=bad)
        with pytest.raises(ValueError, match=r"^t must"):
            fuq.heat_kernel_entropy(W, t=bad)
    for bad in ("0.9", None, True):  # not a number: TypeError, as everywhere (tests/test_checks.py)
        with pytest.raises(TypeError, match="threshold"):
            fuq.laplacian_spectrum(W, threshold=bad)
        with pytest.raises(TypeError, match=r"^t must"):
            fuq.heat_kernel_entropy(W, t=bad)


# ---- the binding -------------------------------------------------------------------------------------

def _binding_ok_args(Q=3, K=4, dtype=F64):
    W = torch.rand(Q, K, K, dtype=dtype) + 0.1
    c = torch.full((Q,), K, dtype=torch.int32)
    nan = lambda *s: torch.full(s, float("nan"), dtype=dtype)  # noqa: E731
    return W, c, nan


def test_binding_misuse_raises():
    W, c, nan = _binding_ok_args()
    G = _ext._C.graph
    G(0, W, c, 0.9, 0.3, nan(12), nan(48), None, 1)  # fine
    bad_calls = [
        lambda: G(3, W, c, 0.9, 0.3, nan(3), None, None, 1),                          # op
        lambda: G(-1, W, c, 0.9, 0.3, nan(3), None, None, 1),
        lambda: G(0, W.half(), c, 0.9, 0.3, nan(12), None, None, 1),                  # W dtype
        lambda: G(0, W.int(), c, 0.9, 0.3, nan(12), None, None, 1),
        lambda: G(0, W[:, :, :3].contiguous(), c, 0.9, 0.3, nan(12), None, None, 1),   # non-square
        lambda: G(0, W.reshape(3, 16), c, 0.9, 0.3, nan(12), None, None, 1),          # ndim
        lambda: G(0, W.transpose(1, 2), c, 0.9, 0.3, nan(12), None, None, 1),         # strides
        lambda: G(0, W, c.long(), 0.9, 0.3, nan(12), None, None, 1),                  # counts dtype
        lambda: G(0, W, c[:2], 0.9, 0.3, nan(12), None, None, 1),                     # counts size
        lambda: G(0, W, torch.tensor([4, 5, 4], dtype=torch.int32), 0.9, 0.3, nan(12), None, None, 1),
        lambda: G(0, W, torch.tensor([4, -1, 4], dtype=torch.int32), 0.9, 0.3, nan(12), None, None, 1),
        lambda: G(0, W, torch.full((3, 1), 4, dtype=torch.int32), 0.9, 0.3, nan(12), None, None, 1),
        lambda: G(0, W, torch.full((6,), 4, dtype=torch.int32)[::2], 0.9, 0.3, nan(12), None, None, 1),
        lambda: G(0, W, c, 0.9, 0.3, nan(11), None, None, 1),                         # out sizes
        lambda: G(0, W, c, 0.9, 0.3, nan(12).float(), None, None, 1),                 # out dtype
        lambda: G(0, W, c, 0.9, 0.3, nan(12), nan(47), None, 1),
        lambda: G(1, W, c, 0.9, 0.3, nan(3), nan(3), nan(11), 1),
        lambda: G(1, W, c, 0.9, 0.3, nan(4), None, None, 1),
        lambda: G(2, W, c, 0.9, 0.3, nan(12), None, None, 1),
        lambda: G(2, W.numpy(), c, 0.9, 0.3, nan(3).int(), None, None, 1),
        lambda: G(0, "W", c, 0.9, 0.3, nan(12), None, None, 1),
        lambda: G(0, W, c, "x", 0.3, nan(12), None, None, 1),
    ]
    for i, call in enumerate(bad_calls):
        with pytest.raises((ValueError, TypeError)):
            call()
            pytest.fail(f"bad call {i} was accepted")


def test_binding_rejects_strided_outputs():
    # The binding writes its outputs as contiguous arrays: a strided output of the right size must be
    # refused (otherwise results land in the wrong elements, silently).
    W, c, nan = _binding_ok_args()
    base = nan(24)
    with pytest.raises(ValueError, match="out0"):
        _ext._C.graph(0, W, c, 0.9, 0.3, base[::2], None, None, 1)


def test_binding_negative_stride_output_does_not_corrupt_memory():
    # numpy views may have negative strides; nanobind hands the binding a pointer to the *last* element
    # in memory, so contiguous writes run past the buffer. Must raise, never corrupt the heap.
    code = textwrap.dedent(f"""
        import importlib.util
        import numpy as np
        spec = importlib.util.spec_from_file_location("flashuq._C", {_ext._C.__file__!r})
        C = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(C)
        Q, K = 4, 8
        W = np.eye(K)[None].repeat(Q, 0)
        counts = np.full(Q, K, dtype=np.int32)
        out = np.full(Q * K, np.nan)[::-1]
        try:
            C.graph(0, W, counts, 0.0, 0.0, out, None, None, 1)
        except (ValueError, TypeError):
            print("raised")
        for _ in range(2000):
            np.empty(Q * K)
        import gc; gc.collect()
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, f"process died with {r.returncode}: {r.stderr[-500:]}"
    assert "raised" in r.stdout


def _python_op(op, W, counts, threshold, tt, vectors):
    """The same request through the public Python ops (counts -> a prefix mask)."""
    Q, K = W.shape[:2]
    mask = torch.arange(K)[None, :] < counts.long()[:, None]
    if op == 0:
        v, V = fuq.sym_eig(W, sample_mask=mask, eigenvectors=vectors)
        return [v.reshape(-1)] + ([V.reshape(-1)] if vectors else [])
    if op == 1:
        s = fuq.laplacian_spectrum(W, sample_mask=mask, threshold=threshold, eccentricity=vectors)
        return [s.eigv] + ([s.eccentricity, s.eccentricity_per_sample.reshape(-1)] if vectors else [])
    return [fuq.heat_kernel_entropy(W, sample_mask=mask, t=tt)]


BAD = ["op", "dtype", "layout", "counts_dtype", "counts_len", "counts_2d", "counts_range", "out_dtype",
       "out_size"]


@settings(max_examples=150, deadline=None)
@given(
    op=st.integers(0, 2),
    Q=st.integers(0, 4),
    K=st.integers(0, 9),
    fp64=st.booleans(),
    bad=st.one_of(st.just(frozenset()), st.frozensets(st.sampled_from(BAD), min_size=1, max_size=2)),
    seed=st.integers(0, 2**31 - 1),
    which_out=st.integers(0, 2),
    with_out1=st.booleans(),
    with_out2=st.booleans(),
    threshold=st.floats(-1, 3),
    tt=st.floats(-1, 2),
    num_threads=st.integers(-1, 3),
)
def test_binding_fuzz(op, Q, K, fp64, bad, seed, which_out, with_out1, with_out2, threshold, tt, num_threads):
    """Random requests, mostly valid, some with one or two things wrong: an inconsistent one must raise
    ValueError/TypeError, a consistent one must return exactly what the public Python op returns."""
    g = torch.Generator().manual_seed(seed)
    dtype = F64 if fp64 else torch.float32
    if "op" in bad:
        op = int(torch.randint(0, 2, (), generator=g)) * 7 - 2  # -2 or 5
    if "layout" in bad:  # transposed, or rows longer than K
        if seed % 2:
            W = (torch.rand(Q, K, K, generator=g, dtype=F64) + 0.05).transpose(1, 2)
        else:
            W = (torch.rand(Q, K, K + 2, generator=g, dtype=F64) + 0.05)[:, :, :K]
    else:
        W = torch.rand(Q, K, K, generator=g, dtype=F64) + 0.05
    if Q and K and seed % 5 == 0:
        W[0, 0, K - 1] = float("nan")
    W = W.to([torch.float16, torch.int32, torch.bfloat16][seed % 3] if "dtype" in bad else dtype)
    counts = torch.randint(0, K + 1, (Q,), generator=g, dtype=torch.int32)
    if "counts_range" in bad and Q:
        counts[seed % Q] = -1 if seed % 2 else K + 1
    if "counts_dtype" in bad:
        counts = counts.to([torch.int64, torch.int16, torch.float32][seed % 3])
    if "counts_len" in bad:
        counts = torch.cat([counts, counts[:1] if Q else torch.zeros(1, dtype=counts.dtype)]) if seed % 2 \
            else counts[:-1] if Q else torch.zeros(1, dtype=counts.dtype)
    if "counts_2d" in bad:
        counts = counts[:, None]
    odt = (torch.float32 if fp64 else F64) if "out_dtype" in bad else dtype
    sizes = [Q * K if op == 0 else Q, Q * K * K if op == 0 else Q, Q * K]
    if "out_size" in bad:
        sizes[which_out] += 1 if seed % 2 or sizes[which_out] == 0 else -1
    outs = [torch.full((n,), float("nan"), dtype=odt) for n in sizes]
    o1 = outs[1] if with_out1 else None
    o2 = outs[2] if with_out2 else None
    vectors = with_out1 and op in (0, 1)
    need = [0] + ([1] if vectors else []) + ([2] if vectors and op == 1 and with_out2 else [])  # out2 optional
    exact = [Q * K if op == 0 else Q, Q * K * K if op == 0 else Q, Q * K]
    # the binding's contract; W.is_contiguous(): torch ignores the strides of size-1 dimensions, as the binding
    consistent = (0 <= op <= 2 and W.dtype in (torch.float32, F64) and odt == W.dtype and W.is_contiguous()
                  and counts.dtype == torch.int32 and counts.dim() == 1 and counts.numel() == Q
                  and bool(((counts >= 0) & (counts <= K)).all())
                  and all(outs[i].numel() == exact[i] for i in need))
    call = lambda: _ext._C.graph(op, W, counts, threshold, tt, outs[0], o1, o2, num_threads)  # noqa: E731
    if not consistent:  # refused, whatever was wrong (a binding that accepted it would fail here)
        with pytest.raises((ValueError, TypeError)):
            call()
        event("refused")
        return
    call()  # a consistent request is accepted (a binding that refused it would fail here) ...
    event(f"accepted op {op}")
    # ... and its outputs equal the public op's
    want = _python_op(op, W.contiguous(), counts, threshold, tt, vectors)
    for i, w in zip(need, want):
        assert outs[i].dtype == w.dtype
        assert nan_eq(outs[i], w), (op, i)


def test_every_isa_build_agrees_bitwise():
    """Every op takes its instruction-set level from one dispatcher (csrc/cpu/dispatch.h), so
    limit_isa(level) runs the graph spectra on that build: compiled without FMA contraction, the
    baseline (2 lanes per register), AVX2 (4) and AVX-512 (8) builds give bitwise the same results
    (docs/cpu_kernels.md)."""
    g = torch.Generator().manual_seed(7)
    W = torch.rand(40, 12, 12, generator=g, dtype=torch.float64)
    W = (W + W.transpose(1, 2)) / 2
    mask = torch.arange(12)[None, :] < torch.randint(1, 13, (40, 1), generator=g)

    def run():
        return (fuq.sym_eig(W, sample_mask=mask, eigenvectors=True), fuq.laplacian_spectrum(W, sample_mask=mask),
                fuq.heat_kernel_entropy(W, sample_mask=mask))

    wide = run()
    for level in (0, 1):  # on a machine without AVX2 (AVX-512) these repeat a narrower build
        with limited_isa(level):
            for a, b in zip(torch.utils._pytree.tree_leaves(wide), torch.utils._pytree.tree_leaves(run())):
                assert torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0)), _ext._C.isa()
