"""Benchmark: the sample-graph estimators for Q questions x K sampled answers (CPU).

    python bench/graph.py                       # Q = 10,000 questions, K = 20 samples, 2 threads
    python bench/graph.py --quick               # a smoke run (Q = 200, 2 repeats)
    python bench/graph.py --Q 10000 --K 20 --repeats 9 --threads 2

Methods: eigv, eccentricity, degree, inv_entropy and semantic_entropy (the issue's five), plus the
extras kernel_language_entropy, num_sem_sets and inv_entropy with its bootstrap (N = 10 inputs x
r = 5 answers, S = 20 draws, the Inv-Entropy repository's layout). Each runs three ways:

- **flashuq**: ``flashuq.methods.<method>`` on the whole ``[Q, K, K]`` batch (float64 tensors).
- **numpy loop**: one Python call per question, transcribed from the references (LM-Polygraph
  ``eig_val_laplacian.py``: ``np.linalg.eig`` of ``L`` built with ``np.linalg.inv(np.sqrt(D))``;
  ``eccentricity.py``: ``scipy.linalg.eigh``; ``deg_mat.py``; ``semantic_entropy.py``;
  ``kernel_language_entropy.py``: ``scipy.linalg.expm`` + ``np.linalg.eig``; ``num_sem_sets.py``:
  DFS over an adjacency list; the Inv-Entropy repository's ``evaluate.py`` row loop). The loop is
  slow, so it is timed on the first ``loop_q`` questions (all Q when that fits --loop-budget
  seconds, otherwise 1,000) and scaled linearly to Q; the JSON and the table say so.
- **torch batched**: the same formulas as batched torch ops over all questions:
  ``torch.linalg.eigvalsh`` (eigv) / ``torch.linalg.eigh`` (eccentricity, centring batched), an
  eigh-based ``expm`` + ``eigvalsh`` (KLE), masked logsumexp (semantic entropy), row-normalised
  products (Inv-Entropy), min-label propagation (num_sem_sets).

Before any timing every method's flashuq result is checked against both baselines (float64 allclose;
the largest absolute difference goes into the JSON); a disagreement stops the run. Then all methods
are timed together, in --loop-repeats rounds: a round visits every method in turn and times its
flashuq and torch calls (interleaved) and its loops, so that each method's --repeats runs spread
over the whole benchmark and a slow phase of the machine spoils one round, not a median. Times are
medians, after a warm-up; flashuq's and torch's runs each follow an untimed call on a copy of the
first 64 questions, which wakes their thread pool after the loops timed before them (on a virtual
machine a worker thread idle for 150 ms can start milliseconds late) but reads none of the timed
inputs: their times are those of an awake pool, as in a loop over batches.
Inputs are NLI-like and seeded: each question's K answers fall into
1-6 semantic clusters, ``E[i, j]`` (P(entail)) is high inside a cluster and low across, with noise
and an asymmetric ``E``; ``C`` (P(contradict)) the reverse, with ``E + C <= 1``; every method
symmetrises ``W = (E + Eᵀ)/2`` itself (as LM-Polygraph does). Inv-Entropy takes ``sx`` = |cos| of
paraphrase embeddings and ``sy`` = the answers' ``W``. Semantic entropy takes the cluster ids (numbered
by first appearance, what the greedy clustering returns) and per-sample log-probabilities; the
clustering itself is not timed.

With LM-Polygraph installed (``pip install --no-deps lm-polygraph==0.7.0``; ``--lm-polygraph
require`` fails without it, ``off`` skips it) a fourth column times LM-Polygraph's own estimator
classes (``EigValLaplacian``, ``Eccentricity``, ``DegMat``, ``KernelLanguageEntropy``,
``NumSemSets``): their ``__call__``, i.e. their own per-question loop, on the stats they read. Only
those estimator modules are imported (:func:`load_lm_polygraph`), and their results are checked too.

Targets (CPU, 2 threads, K = 20): ">= 50x the per-question numpy/scipy loop and >= 3x batched
torch.linalg for the spectral methods" (eigv, eccentricity); against LM-Polygraph's own estimators
(issue 21, measured at Q = 2,000): >= 100x for eigv and eccentricity, >= 50x for
kernel_language_entropy and num_sem_sets; one-draw inv_entropy >= 50x its repository's row loop.
The other methods are reported without a target. Writes bench/results/graph-cpu-<UTC stamp>.json
with the machine description.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import numpy as np
import scipy.linalg
import torch

from flashuq import methods as M

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lm_polygraph_modules import import_modules  # noqa: E402
from token_stats import exit_code, machine_info  # noqa: E402

THRESHOLD = 0.9   # eccentricity's eigenvalue threshold (LM-Polygraph's thres)
KLE_T = 0.3       # the heat kernel's t (LM-Polygraph / the paper)
BOOT = {"N": 10, "r": 5, "S": 20}  # Inv-Entropy bootstrap layout of the repository (10 inputs x 5 answers, 20 draws)
SPECTRAL = ("eigv", "eccentricity")
ISSUE_METHODS = ("eigv", "eccentricity", "degree", "inv_entropy", "semantic_entropy")
TARGET_VS_NUMPY, TARGET_VS_TORCH = 50.0, 3.0
# against LM-Polygraph's own estimator classes (issue 21): the spectral ones 100x, KLE and NumSemSets 50x;
# one-draw Inv-Entropy, which LM-Polygraph does not have, 50x its repository's row loop (the numpy loop)
TARGET_VS_LMP = {"eigv": 100.0, "eccentricity": 100.0, "kernel_language_entropy": 50.0, "num_sem_sets": 50.0}
TARGET_VS_NUMPY_EXTRA = {"inv_entropy": 50.0}
PRIMER_Q = 64     # questions of the untimed call before each timed batched run (_rounds_ms)


# ---- inputs ------------------------------------------------------------------------------------

def _clusters(rng, Q, K, max_clusters=6):
    """[Q, K] cluster ids, numbered by first appearance (as greedy bidirectional clustering numbers them)."""
    n = rng.integers(1, max_clusters + 1, size=Q)
    w = rng.gamma(1.0, size=(Q, max_clusters)) * (np.arange(max_clusters) < n[:, None])
    cdf = np.cumsum(w / w.sum(1, keepdims=True), axis=1)
    lab = np.minimum((rng.random((Q, K))[:, :, None] > cdf[:, None, :]).sum(-1), n[:, None] - 1)
    out = np.empty_like(lab)
    for q in range(Q):
        _, first, inv = np.unique(lab[q], return_index=True, return_inverse=True)
        out[q] = np.argsort(np.argsort(first))[inv]
    return out


def _nli(rng, lab):
    """Entailment and contradiction probabilities [Q, K, K] (asymmetric, E + C <= 1) for cluster ids."""
    Q, K = lab.shape
    same = lab[:, :, None] == lab[:, None, :]
    E = np.where(same, rng.uniform(0.70, 0.99, (Q, K, K)), rng.uniform(0.0, 0.15, (Q, K, K)))
    E = np.clip(E + rng.normal(0.0, 0.03, (Q, K, K)), 1e-4, 1.0)
    C = np.where(same, rng.uniform(0.0, 0.05, (Q, K, K)), rng.uniform(0.2, 0.95, (Q, K, K)))
    C = np.minimum(C, 1.0 - E)
    i = np.arange(K)
    E[:, i, i] = rng.uniform(0.95, 1.0, (Q, K))  # a sentence entails itself
    C[:, i, i] = np.minimum(rng.uniform(0.0, 0.01, (Q, K)), 1.0 - E[:, i, i])
    return E, C


def _abs_cos(rng, Q, N, D=32, spread=0.6):
    """|cos| of N paraphrase embeddings per question [Q, N, N] (the Inv-Entropy input similarity)."""
    x = rng.normal(size=(Q, 1, D)) + spread * rng.normal(size=(Q, N, D))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    s = np.abs(x @ x.transpose(0, 2, 1))
    return (s + s.transpose(0, 2, 1)) / 2


def make_data(Q, K, seed=0):
    rng = np.random.default_rng(seed)
    lab = _clusters(rng, Q, K)
    E, C = _nli(rng, lab)
    lengths = rng.integers(3, 31, size=(Q, K))
    logprobs = -lengths * rng.gamma(2.0, 0.25, size=(Q, K))  # summed token log-probs of each sample
    sx = _abs_cos(rng, Q, K)
    N, r, S = BOOT["N"], BOOT["r"], BOOT["S"]
    Eb, _ = _nli(rng, _clusters(rng, Q, N * r))
    sy_b = (Eb + Eb.transpose(0, 2, 1)) / 2
    sx_b = _abs_cos(rng, Q, N)
    keep = np.arange(N) * r + rng.integers(0, r, size=(Q, S, N))
    return {"E": E, "C": C, "labels": lab, "logprobs": logprobs, "sx": sx, "sy": (E + E.transpose(0, 2, 1)) / 2,
            "sx_b": sx_b, "sy_b": sy_b, "keep": keep}


# ---- numpy/scipy per question, transcribed from the references -------------------------------------

def lmp_eigv(E):
    """LM-Polygraph EigValLaplacian.U_EigVal_Laplacian (affinity='entail')."""
    W = (E + np.transpose(E)) / 2
    D = np.diag(W.sum(axis=1))
    D_inverse_sqrt = np.linalg.inv(np.sqrt(D))
    L = np.eye(D.shape[0]) - D_inverse_sqrt @ W @ D_inverse_sqrt
    return sum([max(0, 1 - lambda_k) for lambda_k in np.linalg.eig(L)[0]])


def lmp_eccentricity(E, thres=THRESHOLD):
    """LM-Polygraph Eccentricity.U_Eccentricity (affinity='entail'), the U_Ecc part."""
    W = (E + np.transpose(E)) / 2
    D = np.diag(W.sum(axis=1))
    D_inverse_sqrt = np.linalg.inv(np.sqrt(D))
    L = np.eye(D.shape[0]) - D_inverse_sqrt @ W @ D_inverse_sqrt
    eigenvalues, eigenvectors = scipy.linalg.eigh(L)
    keep_mask = eigenvalues < thres
    eigenvalues, smallest_eigenvectors = eigenvalues[keep_mask], eigenvectors[:, keep_mask]
    smallest_eigenvectors = smallest_eigenvectors.T
    C_Ecc_s_j = (-1) * np.asarray([np.linalg.norm(x - x.mean(0), 2) for x in smallest_eigenvectors])
    return np.linalg.norm(C_Ecc_s_j, 2)


def lmp_degree(E):
    """LM-Polygraph DegMat.U_DegMat (affinity='entail'); len(answers) = K."""
    W = (E + np.transpose(E)) / 2
    D = np.diag(W.sum(axis=1))
    n = W.shape[0]
    return np.trace(n - D) / (n ** 2)


def lmp_semantic_entropy(loglikelihoods, labels):
    """LM-Polygraph SemanticEntropy.batched_call for one question, given the classes (its get_classes
    dictionaries built from the cluster ids; the clustering itself is not part of the timing)."""
    class_to_sample, sample_to_class = [], {}
    for j, c in enumerate(labels.tolist()):
        if c == len(class_to_sample):
            class_to_sample.append([])
        class_to_sample[c].append(j)
        sample_to_class[j] = c
    class_likelihoods = [np.array(loglikelihoods)[np.array(class_idx)] for class_idx in class_to_sample]
    class_lp = [np.logaddexp.reduce(likelihoods) for likelihoods in class_likelihoods]
    log_weights = [0 for _ in range(len(labels))]
    return -np.mean([class_lp[sample_to_class[j]] * np.exp(log_weights[j]) for j in range(len(labels))])


def _row_normalize(matrix):
    row_sums = matrix.sum(axis=1, keepdims=True)
    return matrix / row_sums


def repo_inv_entropy(simX, simY):
    """The Inv-Entropy repository's evaluate.py row body, the lines that give pseduo_entropy_x_y_I
    (Inv-Entropy) only: the repository also computes NI-Entropy, scipy's wasserstein_distance and
    max_y_I in the same loop; leaving them out makes this baseline faster, not slower."""
    px = _row_normalize(simX)
    py = _row_normalize(simY)
    px_y_I = py @ px
    px_y_I = px_y_I.T
    return -np.sum(np.diag(px_y_I) * np.log(np.diag(px_y_I)))


def repo_inv_entropy_bootstrap(simX, simY_0, keep):
    """The repository's bootstrap: slice the answers' matrix per draw, average over the draws."""
    vals = []
    for keep_indices in keep:
        simY = simY_0[keep_indices, :][:, keep_indices]
        vals.append(repo_inv_entropy(simX, simY))
    return sum(vals) / len(vals)


def _normalize_kernel(K):
    EPS = 1e-12
    diagonal_values = np.sqrt(np.diag(K)) + EPS
    return K / np.outer(diagonal_values, diagonal_values)


def _vn_entropy(K, normalize=True, scale=True, jitter=0.0):
    """LM-Polygraph kernel_language_entropy.vn_entropy."""
    if normalize:
        K = _normalize_kernel(K) / K.shape[0]
    result = 0
    eigvs = np.linalg.eig(K + jitter * np.eye(K.shape[0])).eigenvalues.astype(np.float64)
    for e in eigvs:
        if np.abs(e) > 1e-8:
            result -= e * np.log(e)
    if scale:
        result = result / -np.log(1.0 / K.shape[0])
    return np.float64(result)


def lmp_kle(E, C, t=KLE_T):
    """KLE(K_heat) with LM-Polygraph's helpers (scipy.linalg.expm, vn_entropy) per question, on the
    paper's per-question graph (docs/methods.md#kle): LM-Polygraph itself sums the degrees over the batch
    axis and uses W - D, which is no per-question function (see flashuq.methods.kernel_language_entropy)."""
    Es, Cs = E + E.T, C + C.T
    W = Es + 0.5 * (2 - Es - Cs)
    L = np.diag(np.sum(W, axis=1)) - W
    return _vn_entropy(scipy.linalg.expm(-t * L))


def lmp_num_sem_sets(W_entail, W_contra):
    """LM-Polygraph NumSemSets.U_NumSemSets (its adjacency list and recursive DFS)."""
    W = (W_entail > W_contra).astype(int)
    W = W * np.transpose(W)
    W = np.triu(W, k=1)
    a = [[i] for i in range(W.shape[0])]
    for i, row in enumerate(W):
        a[i].extend(np.where(row != 0)[0].tolist())
    graph = [[] for _ in range(len(a))]
    for sublist in a:
        for i in range(len(sublist) - 1):
            graph[sublist[i]].append(sublist[i + 1])
            graph[sublist[i + 1]].append(sublist[i])
    visited = [False] * len(graph)

    def dfs(node, component):
        visited[node] = True
        component.append(node)
        for neighbor in graph[node]:
            if not visited[neighbor]:
                dfs(neighbor, component)

    components = []
    for i in range(len(graph)):
        if not visited[i]:
            component = []
            dfs(i, component)
            components.append(component)
    return len(components)


# ---- LM-Polygraph's own estimators ------------------------------------------------------------------

def load_lm_polygraph():
    """``(version, {method: estimator})`` from an installed LM-Polygraph (``pip install --no-deps
    lm-polygraph==0.7.0``), or None when it is not installed: exactly the five estimator files run
    (lm_polygraph_modules.import_modules), not the library's ``__init__``."""
    found = import_modules("estimators", ("eig_val_laplacian", "eccentricity", "deg_mat", "kernel_language_entropy",
                                          "num_sem_sets"))
    if found is None:
        return None
    version, mod = found
    estimators = {
        "eigv": mod["eig_val_laplacian"].EigValLaplacian(),
        "eccentricity": mod["eccentricity"].Eccentricity(thres=THRESHOLD),
        "degree": mod["deg_mat"].DegMat(),
        "kernel_language_entropy": mod["kernel_language_entropy"].KernelLanguageEntropy(t=KLE_T),
        "num_sem_sets": mod["num_sem_sets"].NumSemSets(),
    }
    return version, estimators


def lm_polygraph_call(estimator, E, C, n):
    """The estimator's own ``__call__`` (its per-question loop) on the first n questions, with the
    stats it reads: the NLI matrices and K sample texts per question (DegMat counts them)."""
    K = E.shape[1]
    stats = {"semantic_matrix_entail": E[:n], "semantic_matrix_contra": C[:n], "sample_texts": [[""] * K] * n}
    return np.asarray(estimator(stats), dtype=np.float64)


# ---- batched torch ---------------------------------------------------------------------------------

def _t_laplacian(E):
    W = (E + E.transpose(1, 2)) / 2
    d = W.sum(-1).rsqrt()
    return torch.eye(W.shape[-1], dtype=W.dtype) - d[:, :, None] * W * d[:, None, :]


def torch_eigv(E):
    return (1 - torch.linalg.eigvalsh(_t_laplacian(E))).clamp(min=0).sum(-1)


def torch_eccentricity(E, thres=THRESHOLD):
    lam, V = torch.linalg.eigh(_t_laplacian(E))
    Vc = V - V.mean(-2, keepdim=True)  # centre each eigenvector over the responses
    return (Vc.square() * (lam < thres)[:, None, :]).sum((1, 2)).sqrt()


def torch_degree(E):
    return 1 - ((E + E.transpose(1, 2)) / 2).mean((1, 2))


def _t_inv(sx, sy):
    px = sx / sx.sum(-1, keepdim=True)
    py = sy / sy.sum(-1, keepdim=True)
    d = (py * px.transpose(-1, -2)).sum(-1)  # diag(Py·Px)
    return -torch.special.xlogy(d, d).sum(-1)


def torch_inv_entropy(sx, sy):
    return _t_inv(sx, sy)


def torch_inv_entropy_bootstrap(sx, sy, keep):
    q = torch.arange(sy.shape[0])[:, None, None, None]
    return _t_inv(sx[:, None], sy[q, keep[..., :, None], keep[..., None, :]]).mean(1)


def torch_semantic_entropy(lp, labels):
    K = lp.shape[1]
    members = labels[:, None, :] == torch.arange(K)[None, :, None]
    lc = torch.logsumexp(torch.where(members, lp[:, None, :], -torch.inf), -1)
    return -lc.gather(1, labels).mean(-1)


def torch_kle(E, C, t=KLE_T):
    Es, Cs = E + E.transpose(1, 2), C + C.transpose(1, 2)
    W = Es + 0.5 * (2 - Es - Cs)
    L = torch.diag_embed(W.sum(-1)) - W
    lam, V = torch.linalg.eigh(L)
    Kh = (V * torch.exp(-t * lam)[:, None, :]) @ V.transpose(1, 2)  # expm(-tL)
    s = torch.diagonal(Kh, dim1=1, dim2=2).sqrt() + 1e-12
    n = E.shape[-1]
    ev = torch.linalg.eigvalsh(Kh / (s[:, :, None] * s[:, None, :]) / n)
    ent = -torch.where(ev.abs() > 1e-8, ev * torch.log(ev), 0).sum(-1)
    return ent / np.log(n)


def torch_num_sem_sets(E, C):
    A = E > C
    K = A.shape[-1]
    A = (A & A.transpose(1, 2)) | torch.eye(K, dtype=torch.bool)
    labels = torch.arange(K).expand(A.shape[0], K)
    big = torch.tensor(K)
    while True:  # min-label propagation: every response takes the smallest label among its neighbours
        new = torch.where(A, labels[:, None, :], big).amin(-1)
        if torch.equal(new, labels):
            break
        labels = new
    return (labels == torch.arange(K)).sum(-1).to(torch.float64)


# ---- driver ------------------------------------------------------------------------------------

def _loop(fn, arrays, n):
    return np.array([fn(*(a[q] for a in arrays)) for q in range(n)], dtype=np.float64)


def _rounds_ms(plans, rounds):
    """{method: {key: (median ms, runs ms)}}: every method's callables timed round after round.

    plans: {method: {key: (fn, runs per round, warm-up calls, primer)}}. A round visits every method
    in turn and times each of its callables ``runs per round`` times, interleaved (a callable with
    fewer runs sits out the method's later turns), so that one method's runs spread over the whole
    benchmark: a slow phase of the machine (its speed drifts within seconds) spoils at most the runs
    of one round, not a method's median, and falls on flashuq, torch and the loops alike.
    ``primer`` (or None) runs untimed right before each timed run: the batched callables' primer is
    the same call on a copy of the first PRIMER_Q questions, which wakes their thread pool after the
    loops before them (on a virtual machine a worker thread idle that long can start milliseconds
    late) without reading the timed inputs."""
    for fns in plans.values():
        for fn, _, warmup, _ in fns.values():
            for _ in range(warmup):
                fn()
    runs = {m: {k: [] for k in fns} for m, fns in plans.items()}
    for _ in range(rounds):
        for m, fns in plans.items():
            for i in range(max(per for _, per, _, _ in fns.values())):
                for k, (fn, per, _, primer) in fns.items():
                    if i < per:
                        if primer is not None:
                            primer()
                        t0 = time.perf_counter()
                        fn()
                        runs[m][k].append((time.perf_counter() - t0) * 1e3)
    return {m: {k: (statistics.median(v), v) for k, v in r.items()} for m, r in runs.items()}


def _max_abs(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    d = np.abs(a - b)[~both_nan]
    return float(d.max()) if d.size else 0.0


def cases(d):
    """(name, flashuq fn, torch fn, numpy per-question fn, numpy arrays, extra?)"""
    t = {k: torch.from_numpy(v) for k, v in d.items()}
    E, C = t["E"], t["C"]
    return [
        ("eigv", lambda: M.eigv(E), lambda: torch_eigv(E), lmp_eigv, (d["E"],), False),
        ("eccentricity", lambda: M.eccentricity(E, threshold=THRESHOLD), lambda: torch_eccentricity(E),
         lmp_eccentricity, (d["E"],), False),
        ("degree", lambda: M.degree(E), lambda: torch_degree(E), lmp_degree, (d["E"],), False),
        ("inv_entropy", lambda: M.inv_entropy(t["sx"], t["sy"]), lambda: torch_inv_entropy(t["sx"], t["sy"]),
         repo_inv_entropy, (d["sx"], d["sy"]), False),
        ("semantic_entropy", lambda: M.semantic_entropy(t["logprobs"], t["labels"]),
         lambda: torch_semantic_entropy(t["logprobs"], t["labels"]), lmp_semantic_entropy,
         (d["logprobs"], d["labels"]), False),
        ("kernel_language_entropy", lambda: M.kernel_language_entropy(E, C, t=KLE_T), lambda: torch_kle(E, C),
         lmp_kle, (d["E"], d["C"]), True),
        ("num_sem_sets", lambda: M.num_sem_sets(E, C), lambda: torch_num_sem_sets(E, C), lmp_num_sem_sets,
         (d["E"], d["C"]), True),
        (f"inv_entropy (bootstrap N={BOOT['N']}, r={BOOT['r']}, S={BOOT['S']})",
         lambda: M.inv_entropy(t["sx_b"], t["sy_b"], keep=t["keep"]),
         lambda: torch_inv_entropy_bootstrap(t["sx_b"], t["sy_b"], t["keep"]), repo_inv_entropy_bootstrap,
         (d["sx_b"], d["sy_b"], d["keep"]), True),
    ]


def _loop_questions(per_q, Q, loop_q, loop_repeats, loop_budget):
    """How many questions a per-question loop is timed on: loop_q if given, else all Q when its runs fit
    loop_budget seconds, else 1,000 (scaled linearly to Q)."""
    if loop_q is not None:
        return min(Q, loop_q)
    return Q if per_q * Q * loop_repeats <= loop_budget else min(Q, 1000)


def run(Q, K, repeats, loop_repeats, loop_q, loop_budget, rtol, atol, seed=0, log=print, lmp=None):
    """Every method checked against its baselines, then all timed together (_rounds_ms): loop_repeats
    rounds, each with ceil(repeats / loop_repeats) runs of flashuq and of torch per method."""
    d = make_data(Q, K, seed)
    lmp_estimators = lmp[1] if lmp else {}
    # the primers' inputs: copies of the first questions (every array is per question), so that a
    # primer reads none of the timed arrays' memory
    small = {k: v[:PRIMER_Q].copy() for k, v in d.items()}
    primers = {c[0]: (c[1], c[2]) for c in cases(small)}
    per_round = -(-repeats // loop_repeats)
    checked, plans = {}, {}
    for name, f_fuq, f_torch, f_np, arrays, extra in cases(d):
        # correctness first: flashuq vs torch on all Q, vs the numpy loop on the questions it is timed on
        out_fuq = f_fuq().double().numpy()
        out_torch = f_torch().double().numpy()
        probe = min(Q, 100)
        t0 = time.perf_counter()
        _loop(f_np, arrays, probe)
        per_q = (time.perf_counter() - t0) / probe
        n_loop = _loop_questions(per_q, Q, loop_q, loop_repeats, loop_budget)
        out_np = _loop(f_np, arrays, n_loop)
        diff_np, diff_torch = _max_abs(out_fuq[:n_loop], out_np), _max_abs(out_fuq, out_torch)
        ok = (np.allclose(out_fuq[:n_loop], out_np, rtol=rtol, atol=atol, equal_nan=True)
              and np.allclose(out_fuq, out_torch, rtol=rtol, atol=atol, equal_nan=True))
        f_lmp, n_lmp, diff_lmp = None, 0, None
        if name in lmp_estimators:
            est = lmp_estimators[name]
            t0 = time.perf_counter()
            lm_polygraph_call(est, d["E"], d["C"], probe)
            n_lmp = _loop_questions((time.perf_counter() - t0) / probe, Q, loop_q, loop_repeats, loop_budget)
            f_lmp = lambda est=est, n=n_lmp: lm_polygraph_call(est, d["E"], d["C"], n)  # noqa: E731
            out_lmp = f_lmp()
            diff_lmp = _max_abs(out_fuq[:n_lmp], out_lmp)
            ok = ok and np.allclose(out_fuq[:n_lmp], out_lmp, rtol=rtol, atol=atol, equal_nan=True)
        if not ok:
            raise SystemExit(f"{name}: flashuq disagrees with a baseline (max |diff| vs numpy loop {diff_np:.3g}, "
                             f"vs torch {diff_torch:.3g}, vs LM-Polygraph {diff_lmp}; rtol={rtol}, atol={atol})")
        p_fuq, p_torch = primers[name]
        plans[name] = {"fuq": (f_fuq, per_round, 1, p_fuq), "torch": (f_torch, per_round, 1, p_torch),
                       "loop": (lambda f_np=f_np, arrays=arrays, n=n_loop: _loop(f_np, arrays, n), 1, 0, None)}
        if f_lmp is not None:
            plans[name]["lmp"] = (f_lmp, 1, 0, None)
        checked[name] = dict(extra=extra, n_loop=n_loop, n_lmp=n_lmp, diff_np=diff_np, diff_torch=diff_torch,
                             diff_lmp=diff_lmp)
    # timing: every method's flashuq, torch, numpy loop and LM-Polygraph in turn, round after round
    timings = _rounds_ms(plans, loop_repeats)
    results = []
    for name, c in checked.items():
        tm, n_loop, n_lmp = timings[name], c["n_loop"], c["n_lmp"]
        (ms_fuq, runs_fuq), (ms_torch, runs_torch), (ms_loop, runs_loop) = tm["fuq"], tm["torch"], tm["loop"]
        ms_np = ms_loop * Q / n_loop
        lmp_r = {}
        if "lmp" in tm:
            ms_lmp_measured, runs_lmp = tm["lmp"]
            ms_lmp = ms_lmp_measured * Q / n_lmp
            lmp_r = {"lm_polygraph_ms": ms_lmp, "lm_polygraph_questions_timed": n_lmp,
                     "lm_polygraph_measured_ms": ms_lmp_measured, "lm_polygraph_runs_ms": runs_lmp,
                     "speedup_vs_lm_polygraph": ms_lmp / ms_fuq, "max_abs_diff_vs_lm_polygraph": c["diff_lmp"]}
        r = {"method": name, "extra": c["extra"], "flashuq_ms": ms_fuq, "torch_batched_ms": ms_torch,
             "numpy_loop_ms": ms_np, "numpy_loop_questions_timed": n_loop,
             "numpy_loop_scaled_from_subset": n_loop < Q, "numpy_loop_measured_ms": ms_loop,
             "speedup_vs_numpy_loop": ms_np / ms_fuq, "speedup_vs_torch_batched": ms_torch / ms_fuq,
             "max_abs_diff_vs_numpy_loop": c["diff_np"], "max_abs_diff_vs_torch_batched": c["diff_torch"],
             "runs_ms": {"flashuq": runs_fuq, "torch_batched": runs_torch, "numpy_loop_measured": runs_loop},
             **lmp_r}
        targets = {}
        if name in SPECTRAL:
            targets["vs_numpy_loop"] = {"target": TARGET_VS_NUMPY, "met": r["speedup_vs_numpy_loop"] >= TARGET_VS_NUMPY}
            targets["vs_torch_batched"] = {"target": TARGET_VS_TORCH,
                                           "met": r["speedup_vs_torch_batched"] >= TARGET_VS_TORCH}
        if name in TARGET_VS_NUMPY_EXTRA:
            targets["vs_numpy_loop"] = {"target": TARGET_VS_NUMPY_EXTRA[name],
                                        "met": r["speedup_vs_numpy_loop"] >= TARGET_VS_NUMPY_EXTRA[name]}
        if name in TARGET_VS_LMP and lmp_r:
            targets["vs_lm_polygraph"] = {"target": TARGET_VS_LMP[name],
                                          "met": r["speedup_vs_lm_polygraph"] >= TARGET_VS_LMP[name]}
        r["targets"] = targets
        r["targets_met"] = all(v["met"] for v in targets.values()) if targets else None
        results.append(r)
        log(f"  {name}: flashuq {ms_fuq:.2f} ms, torch {ms_torch:.2f} ms, numpy loop {ms_np:.1f} ms "
            f"({n_loop} questions timed)" + (f", LM-Polygraph {lmp_r['lm_polygraph_ms']:.1f} ms" if lmp_r else ""),
            flush=True)
    return results


def format_table(results, Q):
    with_lmp = any("lm_polygraph_ms" in r for r in results)
    head = "| method | flashuq ms | " + ("LM-Polygraph's estimator ms (×speedup) | " if with_lmp else "") + \
        "numpy loop ms (×speedup) | torch batched ms (×speedup) | target met? |"
    lines = [head, "|---|---|" + ("---|" if with_lmp else "") + "---|---|---|"]
    scaled = set()
    for r in results:
        star = ""
        if r["numpy_loop_scaled_from_subset"]:
            star = "*"
            scaled.add(r["numpy_loop_questions_timed"])
        if r["targets"]:
            parts = []
            for k, lbl in (("vs_lm_polygraph", "LM-Polygraph"), ("vs_numpy_loop", "numpy"), ("vs_torch_batched", "torch")):
                if k in r["targets"]:
                    v = r["targets"][k]
                    parts.append(f"≥{v['target']:g}× {lbl} {'✓' if v['met'] else '✗'}")
            met = ("yes" if r["targets_met"] else "NO") + " (" + ", ".join(parts) + ")"
        elif r["extra"]:
            met = "— (extra, no target)"
        else:
            met = "— (no target)"
        lmp = ""
        if with_lmp:
            if "lm_polygraph_ms" in r:
                lstar = "*" if r["lm_polygraph_questions_timed"] < Q else ""
                if lstar:
                    scaled.add(r["lm_polygraph_questions_timed"])
                lmp = f"{r['lm_polygraph_ms']:.1f}{lstar} ({r['speedup_vs_lm_polygraph']:.0f}×) | "
            else:
                lmp = "— | "
        lines.append(f"| {r['method']} | {r['flashuq_ms']:.2f} | {lmp}{r['numpy_loop_ms']:.1f}{star} "
                     f"({r['speedup_vs_numpy_loop']:.0f}×) | {r['torch_batched_ms']:.2f} "
                     f"({r['speedup_vs_torch_batched']:.1f}×) | {met} |")
    if scaled:
        lines.append("")
        lines.append(f"\\* loop timed on the first {', '.join(str(n) for n in sorted(scaled))} questions "
                     f"and scaled linearly to Q = {Q:,}.")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--Q", type=int, default=None, help="questions (default 10,000; 200 with --quick)")
    ap.add_argument("--K", type=int, default=20, help="samples per question")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs of flashuq and of torch per method "
                    "(median; rounded up to a multiple of --loop-repeats; default 9, 2 quick)")
    ap.add_argument("--loop-repeats", type=int, default=None, help="timed runs of the numpy loop (default 3, 1 quick)")
    ap.add_argument("--loop-q", type=int, default=None,
                    help="questions to time the numpy loop on (default: all Q if that takes under --loop-budget "
                         "seconds for all its runs, else 1,000)")
    ap.add_argument("--loop-budget", type=float, default=60.0, help="seconds (see --loop-q)")
    ap.add_argument("--threads", type=int, default=2, help="torch (and flashuq OpenMP, BLAS) threads")
    ap.add_argument("--rtol", type=float, default=1e-8)
    ap.add_argument("--atol", type=float, default=1e-10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a smoke run: Q = 200, 2 repeats, 1 loop run")
    ap.add_argument("--lm-polygraph", choices=("auto", "require", "off"), default="auto",
                    help="time LM-Polygraph's own estimator classes too: when installed (auto), or fail without "
                         "them (require); install with pip install --no-deps lm-polygraph==0.7.0")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    Q = args.Q if args.Q is not None else (200 if args.quick else 10_000)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 9)
    loop_repeats = args.loop_repeats if args.loop_repeats is not None else (1 if args.quick else 3)
    torch.set_num_threads(args.threads)
    blas_threads = None
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
        # The loops' BLAS calls (numpy, scipy; LM-Polygraph's estimators) on 20 x 20 matrices run on
        # the calling thread whatever the limit, but with a pool of two OpenBLAS's idle worker keeps
        # spinning after each call and takes a core from whatever runs next: flashuq's KLE measured
        # 12-17 ms right after LM-Polygraph's loop, 8-10 ms with one BLAS thread (the loop no slower).
        threadpool_limits(1, user_api="blas")
        blas_threads = 1
    except ImportError:
        pass
    info = machine_info(torch.device("cpu"))
    info.update({"numpy": np.__version__, "scipy": scipy.__version__})
    lmp = None if args.lm_polygraph == "off" else load_lm_polygraph()
    if lmp is None and args.lm_polygraph == "require":
        raise SystemExit("--lm-polygraph require: LM-Polygraph is not installed "
                         "(pip install --no-deps lm-polygraph==0.7.0)")
    info["lm_polygraph"] = lmp[0] if lmp else None
    load_before = os.getloadavg()
    print(f"# similarity-graph estimators: Q={Q:,} questions, K={args.K} samples, float64, on {info['cpu']} "
          f"({info['threads']} threads; load average {load_before[0]:.2f})\n", flush=True)
    results = run(Q, args.K, repeats, loop_repeats, args.loop_q, args.loop_budget, args.rtol, args.atol,
                  seed=args.seed, lmp=lmp)
    load_after = os.getloadavg()
    print()
    print(format_table(results, Q))
    # a --quick run is too small to time: its targets are reported, not enforced
    missed = [] if args.quick else [
        f"{r['method']}: " + ", ".join(f"{r['speedup_' + k]:.1f}x {k} (target >= {v['target']:g}x)"
                                       for k, v in r["targets"].items() if not v["met"])
        for r in results if r.get("targets_met") is False]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"graph-cpu-{stamp}.json")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump({
            "benchmark": "graph", "shape": {"Q": Q, "K": args.K}, "dtype": "float64", "quick": args.quick,
            "threads": args.threads, "repeats": -(-repeats // loop_repeats) * loop_repeats,
            "loop_repeats": loop_repeats, "statistic": "median",
            "timing": f"{loop_repeats} rounds; each visits every method in turn and times its flashuq and torch "
                      f"{-(-repeats // loop_repeats)} times each, interleaved, then its numpy loop and LM-Polygraph "
                      "once: a method's runs spread over the whole benchmark, after all results were checked",
            "primer": f"each timed flashuq and torch run follows an untimed call on a copy of the first {PRIMER_Q} "
                      "questions (wakes the thread pool after the loops; reads none of the timed inputs)",
            "numpy_loop_note": "per-question numpy/scipy loop timed on numpy_loop_questions_timed questions; "
                               "numpy_loop_ms is scaled linearly to Q (numpy_loop_measured_ms is the raw time)",
            "check": {"rtol": args.rtol, "atol": args.atol, "passed": True},
            "missed": missed,
            "targets": {"vs_numpy_loop": TARGET_VS_NUMPY, "vs_numpy_loop_methods": list(SPECTRAL),
                        "vs_torch_batched": TARGET_VS_TORCH, "vs_torch_batched_methods": list(SPECTRAL),
                        "vs_numpy_loop_extra": TARGET_VS_NUMPY_EXTRA,
                        "vs_lm_polygraph": TARGET_VS_LMP if lmp else None},
            "params": {"eccentricity_threshold": THRESHOLD, "kle_t": KLE_T, "inv_entropy_bootstrap": BOOT,
                       "seed": args.seed, "blas_threads": blas_threads},
            "load_average": {"before": load_before, "after": load_after},
            "machine": info, "timestamp": stamp, "results": results}, f, indent=2)
    print(f"\nwrote {out}")
    return exit_code(missed)


if __name__ == "__main__":
    sys.exit(main())
