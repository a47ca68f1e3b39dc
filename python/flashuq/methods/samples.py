"""Sample- and similarity-graph estimators over K sampled responses per question (docs/methods.md#sample-methods).

Every estimator is batched over Q questions: it takes ``[Q, K]`` per-sample values and/or ``[Q, K, K]``
pair matrices (computed outside flashuq by an NLI model, a cross-encoder, ROUGE, embeddings...) and
returns an **uncertainty** ``[Q]``: higher means less trustworthy (the LM-Polygraph convention). Where
the natural quantity is a confidence (the uqlm scores), the function returns its negation and says so.

Common conventions:

- ``sample_mask [Q, K]`` (bool, or integers with nonzero = valid; default all valid) marks the valid
  samples. Masked samples never affect a result, whatever their entries hold (NaN included): a question
  with 3 valid samples padded to K = 5 gives the number of the unpadded K = 3 question. A question with
  no valid sample (or too few for the method, e.g. no pair) gives NaN.
- numpy arrays are accepted (``torch.as_tensor``). Floating inputs are computed in fp64 if any is fp64,
  else in fp32 (fp16/bf16 are upcast); the result has that dtype. Integer-only inputs give fp32.
- Malformed inputs raise ``TypeError``/``ValueError`` naming the argument.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int, check_real
from ._inputs import bool_mask, check_shape, compute_dtype, input_tensor, sample_mask_of

__all__ = [
    "similarity", "symmetrize", "nli_argmax_is_entail", "greedy_bidirectional_clusters",
    "monte_carlo_sequence_entropy", "monte_carlo_normalized_sequence_entropy", "semantic_entropy",
    "sentence_sar", "sar", "luq", "vr", "vro", "lexical_similarity", "label_prob",
    "semantic_sets_confidence", "uqlm_semantic_negentropy",
]


def _temperature(t) -> float:
    return check_real(t, "temperature", 0.0, lo_open=True)


def _choice(value, name: str, options) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


# ---- masked reductions -----------------------------------------------------------------------------

def _mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean over the last axis where ``valid``; NaN where nothing is valid."""
    return torch.where(valid, values, 0).sum(-1) / valid.sum(-1).to(values.dtype)


def _pair_valid(valid: Tensor, *, upper: bool = False) -> Tensor:
    """[Q, K, K]: both samples valid and i != j (i < j with ``upper``)."""
    K = valid.shape[-1]
    i = torch.arange(K, device=valid.device)
    off = (i[:, None] < i[None, :]) if upper else (i[:, None] != i[None, :])
    return valid[:, :, None] & valid[:, None, :] & off


def _pair_mean(S: Tensor, valid: Tensor, *, upper: bool = False) -> Tensor:
    """Mean of ``S[q, i, j]`` over valid pairs i != j (i < j with ``upper``); NaN without a pair."""
    pv = _pair_valid(valid, upper=upper)
    return torch.where(pv, S, 0).sum((-2, -1)) / pv.sum((-2, -1)).to(S.dtype)


def _class_ids(class_ids, sample_mask, name: str = "class_ids", like: Optional[Tensor] = None):
    """Validated int64 class ids [Q, K] (valid entries in [0, K)) and the sample mask."""
    c = input_tensor(class_ids, name, 2, "int", like)
    Q, K = c.shape
    valid = sample_mask_of(sample_mask, Q, K, c)
    if bool((valid & ((c < 0) | (c >= K))).any()):
        raise ValueError(f"{name}: the class id of every valid sample must lie in [0, K={K})")
    return c.long(), valid


def _members(c: Tensor, valid: Tensor) -> Tensor:
    """[Q, C=K, K] bool: sample k is valid and in class c."""
    ids = torch.arange(c.shape[1], device=c.device)
    return (c[:, None, :] == ids[None, :, None]) & valid[:, None, :]


# ---- similarity matrices ---------------------------------------------------------------------------

def _unit(e: Tensor) -> Tensor:
    return e / torch.linalg.vector_norm(e, dim=-1, keepdim=True)  # 0/0 = NaN for a zero vector


def _cosine(e: Tensor) -> Tensor:
    u = _unit(e)
    return (u @ u.transpose(-1, -2)).clamp(-1.0, 1.0)


def similarity(emb, *, kind: str = "cosine") -> Tensor:
    """Pairwise similarity ``[Q, K, K]`` of sample embeddings ``emb [Q, K, D]``: batched matmul of the
    L2-normalised rows, clamped to [-1, 1].

    - ``kind="cosine"``: ``cos(e_i, e_j)`` (Look Before You Leap's VR/VRO, uqlm ``cosine_sim`` before its
      affine map).
    - ``kind="abs_cosine"``: ``|cos|`` (Inv-Entropy's code, ``variant="reference"``, docs/methods.md#variant).
    - ``kind="half_cosine"``: ``(1 + cos)/2`` (Inv-Entropy's paper; uqlm's per-pair ``0.5 + cos/2``).

    A zero-norm embedding has no direction: its row and column are NaN (so a valid zero embedding makes
    the downstream score NaN, while a zero-padded, masked one is ignored like any padding).
    """
    _choice(kind, "kind", ("cosine", "abs_cosine", "half_cosine"))
    e = input_tensor(emb, "emb", 3, "float")
    cos = _cosine(e.to(compute_dtype(e)))
    if kind == "abs_cosine":
        return cos.abs()
    if kind == "half_cosine":
        return (1.0 + cos) / 2.0
    return cos


def symmetrize(E) -> Tensor:
    """``(E + Eᵀ)/2`` over the last two axes: LM-Polygraph's W from an entailment matrix (DegMat, EigV,
    Eccentricity, docs/methods.md#degree). ``E [..., K, K]`` floating; fp64 stays fp64, other floats give fp32."""
    if not isinstance(E, (Tensor, np.ndarray)):
        raise TypeError(f"E must be a torch.Tensor or numpy.ndarray, got {type(E).__name__}")
    E = torch.as_tensor(E)
    if E.dim() < 2 or E.shape[-1] != E.shape[-2]:
        raise ValueError(f"E must be [..., K, K] square matrices, got shape {tuple(E.shape)}")
    if not E.dtype.is_floating_point:
        raise TypeError(f"E must be a floating tensor, got {E.dtype}")
    E = E.to(compute_dtype(E))
    return (E + E.transpose(-1, -2)) / 2


# ---- semantic classes ------------------------------------------------------------------------------

def nli_argmax_is_entail(probs, entail_index: int) -> Tensor:
    """``argmax(probs, -1) == entail_index`` for NLI scores ``probs [Q, K, K, n_labels]`` (probabilities or
    logits: the argmax is the same). Ties go to the first label, as numpy's argmax. The result is the
    ``entail_is_argmax`` input of :func:`greedy_bidirectional_clusters`. DeBERTa-MNLI's labels are
    (contradiction, neutral, entailment): ``entail_index=2``."""
    p = input_tensor(probs, "probs", 4, "float")
    n = p.shape[-1]
    return p.argmax(-1) == check_int(entail_index, "entail_index", 0, n - 1)


def greedy_bidirectional_clusters(entail_is_argmax, *, rule: str = "polygraph", sample_mask=None,
                                  return_membership: bool = False):
    """Greedy semantic clustering of K samples per question from the NLI decisions.

    ``entail_is_argmax [Q, K, K]`` bool: ``[q, i, j]`` is True when the NLI argmax for premise i,
    hypothesis j is ENTAILMENT. Samples are visited in index order (valid ones only); each is compared
    with the **first member** of every class opened so far:

    - ``rule="polygraph"`` (LM-Polygraph ``SemanticClassesCalculator``, docs/methods.md#semantic-entropy): the sample
      joins the **first** class whose first member c has entailment c→i **and** i→c, else it opens a
      new class.
    - ``rule="uqlm"`` (uqlm ``NLIScorer._cluster_responses``, docs/methods.md#uqlm-semantic-negentropy): entailment in **either** direction.
      uqlm has no break, so a response joins *every* matching cluster; ``class_ids`` holds the first one
      (the clusters opened and their first members are the same as uqlm's), and
      ``return_membership=True`` gives uqlm's multi-membership. uqlm also counts two identical strings
      as entailing without running the NLI model: put that into the matrix if you need it.

    Returns ``class_ids`` int64 ``[Q, K]``: 0, 1, 2, ... in order of opening, -1 for masked samples.
    With ``return_membership=True`` returns ``(class_ids, membership)`` with ``membership [Q, K, K]``
    bool, ``membership[q, c, k]`` = sample k belongs to class c (one class per sample for "polygraph").
    The loop runs over K; every step is batched over the Q questions.
    """
    _choice(rule, "rule", ("polygraph", "uqlm"))
    E = input_tensor(entail_is_argmax, "entail_is_argmax", 3, "bool")
    Q, K = E.shape[0], E.shape[1]
    check_shape(E, "entail_is_argmax", (Q, K, K))
    valid = sample_mask_of(sample_mask, Q, K, E)
    dev = E.device
    ids = torch.full((Q, K), -1, dtype=torch.long, device=dev)
    first = torch.zeros(Q, K, dtype=torch.long, device=dev)   # first member of each class
    opened = torch.zeros(Q, K, dtype=torch.bool, device=dev)
    n = torch.zeros(Q, dtype=torch.long, device=dev)          # classes opened so far
    member = torch.zeros(Q, K, K, dtype=torch.bool, device=dev)
    slots = torch.arange(K, device=dev)
    for i in range(K):
        fwd = E[:, :, i].gather(1, first)  # first member -> i
        bwd = E[:, i, :].gather(1, first)  # i -> first member
        ok = (fwd & bwd if rule == "polygraph" else fwd | bwd) & opened & valid[:, i, None]
        hit = ok.any(1)
        new = valid[:, i] & ~hit
        cid = torch.where(hit, ok.to(torch.uint8).argmax(1), n)
        ids[:, i] = torch.where(valid[:, i], cid, -1)
        slot = n.clamp(max=K - 1)[:, None]  # a new class opens at slot n <= i (no host sync)
        first.scatter_(1, slot, torch.where(new[:, None], i, first.gather(1, slot)))
        opened.scatter_(1, slot, new[:, None] | opened.gather(1, slot))
        own = (slots == cid[:, None]) & valid[:, i, None]
        member[:, :, i] = (ok | own) if rule == "uqlm" else own
        n = n + new.long()
    return (ids, member) if return_membership else ids


# ---- Monte-Carlo entropies (docs/methods.md#monte-carlo-entropy) ------------------------------------------------------------------

def monte_carlo_sequence_entropy(sample_logprobs, *, sample_mask=None) -> Tensor:
    """``-mean_k log p(s_k)`` over the valid samples, with ``sample_logprobs [Q, K]`` the summed token
    log-probs of each sample. LM-Polygraph ``MonteCarloSequenceEntropy``; with the summed NLL of the
    SAR repository it is its predictive entropy PE. Uncertainty."""
    lp = input_tensor(sample_logprobs, "sample_logprobs", 2, "float")
    valid = sample_mask_of(sample_mask, *lp.shape, lp)
    return -_mean(lp.to(compute_dtype(lp)), valid)


def monte_carlo_normalized_sequence_entropy(sample_logprobs, sample_lengths, *, eos_consistent: bool = False,
                                            sample_mask=None) -> Tensor:
    """``-mean_k log p(s_k) / len_k`` (length-normalised predictive entropy), LM-Polygraph
    ``MonteCarloNormalizedSequenceEntropy``. Uncertainty.

    ``sample_lengths [Q, K]`` (integer or floating, >= 0 where valid) are token counts.

    - ``eos_consistent=False`` (the reference; docs/methods.md#monte-carlo-entropy): divides by ``sample_lengths`` as given. In
      LM-Polygraph the log-prob sums **include** EOS while the lengths **exclude** it; this is kept.
      Samples of length 0 are left out of the mean, as the reference does (``if len(t_i)``).
    - ``eos_consistent=True``: divides by ``sample_lengths + 1``, counting the EOS step the log-prob
      includes (for LM-Polygraph-style inputs where every sample ended with EOS). No sample is left out.

    With per-token mean NLL this is the SAR repository's length-normalised PE.
    """
    lp = input_tensor(sample_logprobs, "sample_logprobs", 2, "float")
    ln = input_tensor(sample_lengths, "sample_lengths", 2, "real", lp)
    check_shape(ln, "sample_lengths", lp.shape)
    valid = sample_mask_of(sample_mask, *lp.shape, lp)
    if bool((valid & (ln < 0)).any()):
        raise ValueError("sample_lengths must be >= 0 for every valid sample")
    dt = compute_dtype(lp, ln)
    denom = ln.to(dt) + (1.0 if eos_consistent else 0.0)
    use = valid & (denom > 0)
    return -_mean(lp.to(dt) / torch.where(use, denom, 1.0), use)


# ---- semantic entropy (docs/methods.md#semantic-entropy) ----------------------------------------------------------------------

def semantic_entropy(sample_logprobs, class_ids, *, estimator: str = "mean", mode: str = "sum",
                     unique: bool = False, text_ids=None, sample_mask=None) -> Tensor:
    """Semantic entropy as LM-Polygraph computes it (Kuhn et al. 2023; ``semantic_entropy.py`` with
    ``utils/semantic_entropy.py``, docs/methods.md#semantic-entropy). Uncertainty.

    ``sample_logprobs [Q, K]`` are the summed log-probs of each sample, ``class_ids [Q, K]`` integer
    semantic classes (any ids in [0, K) for the valid samples, e.g. from
    :func:`greedy_bidirectional_clusters`). With n valid samples:

    - class log-probability ``lc_c``: ``mode="sum"``: ``logsumexp_{k in c} log p(s_k)`` (not
      normalised over classes; duplicates can push it above 0, LM-Polygraph issue #223);
      ``mode="frequency"``: ``log(|c| / n)`` (``sample_logprobs`` may then be None).
    - ``estimator="mean"``: ``-(1/n) Σ_j lc_{c(j)}``; ``estimator="direct"``: ``-Σ_j lc_{c(j)}·exp(lc_{c(j)})``,
      summed over **samples** (a class counts |c| times), with ``0·log 0 = 0``.

    ``unique=True`` is LM-Polygraph's ``use_unique_responses`` (PR #426): inside each class, samples with
    the same text enter the class logsumexp once (the first occurrence); the average still runs over
    all samples. Texts are not tensors, so ``text_ids [Q, K]`` (integers, same id = same text) is then
    required. It applies to ``mode="sum"`` only (the reference has no frequency variant of it).
    """
    _choice(estimator, "estimator", ("mean", "direct"))
    _choice(mode, "mode", ("sum", "frequency"))
    lp = None
    if sample_logprobs is not None or mode == "sum":
        if sample_logprobs is None:
            raise ValueError("sample_logprobs: mode='sum' needs the sample log-probabilities")
        lp = input_tensor(sample_logprobs, "sample_logprobs", 2, "float")
    c, valid = _class_ids(class_ids, sample_mask, like=lp)
    if lp is not None:
        check_shape(c, "class_ids", lp.shape)
    Q, K = c.shape
    dt = compute_dtype(lp)
    if mode == "sum":
        if unique:
            members = _members(c, valid)
            if text_ids is None:
                raise ValueError("text_ids: unique=True needs text_ids [Q, K] (same id = same text)")
            t = input_tensor(text_ids, "text_ids", 2, "int", lp)
            check_shape(t, "text_ids", (Q, K))
            same = (t[:, :, None] == t[:, None, :]) & (c[:, :, None] == c[:, None, :]) & _pair_valid(valid)
            dup = torch.tril(same, diagonal=-1).any(-1)  # an earlier valid sample has the same text and class
            members = members & ~dup[:, None, :]
            lc = torch.logsumexp(torch.where(members, lp.to(dt)[:, None, :], -math.inf), -1)  # [Q, C]
        else:  # per-class logsumexp by scatter over [Q, K]: O(QK), not the O(QK²) of the members mask
            x = torch.where(valid, lp.to(dt), -math.inf)
            cc = torch.where(valid, c, 0)
            top = torch.full_like(x, -math.inf).scatter_reduce(1, cc, x, "amax")
            top = torch.where(top == -math.inf, 0.0, top)  # empty classes stay -inf below
            ssum = torch.zeros_like(x).scatter_add(1, cc, torch.exp(x - top.gather(1, cc)))
            lc = top + torch.log(ssum)
    else:
        if unique:
            raise ValueError("unique: only defined for mode='sum' (LM-Polygraph's use_unique_responses)")
        counts = torch.zeros(Q, K, dtype=dt, device=c.device).scatter_add(1, torch.where(valid, c, 0), valid.to(dt))
        lc = torch.log(counts / valid.sum(-1, keepdim=True).to(dt))
    lcj = lc.gather(1, c.clamp(0, K - 1))  # the class log-prob of each sample
    if estimator == "mean":
        return -_mean(lcj, valid)
    plogp = torch.where(lcj == -math.inf, 0.0, lcj * torch.exp(lcj))
    out = -torch.where(valid, plogp, 0).sum(-1)
    return torch.where(valid.any(-1), out, math.nan)


# ---- SAR (docs/methods.md#sentence-sar, #sar) ------------------------------------------------------------------------------

def _sentence_relevance(lp: Tensor, S: Tensor, t: float, valid: Tensor) -> Tensor:
    """``mean_k -log(p_k + Σ_{j≠k} S[k,j]·p_j / t)`` with ``p = exp(lp)``, computed as
    ``-(m + log(p̃_k + Σ S·p̃_j / t))``, ``p̃ = exp(lp - m)``, m the largest valid log-prob (no underflow)."""
    lp = torch.where(valid, lp, -math.inf)
    m = lp.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, 0.0)
    p = torch.exp(lp - m)
    W = torch.where(_pair_valid(valid), S, 0)
    R = (W @ p[..., None]).squeeze(-1)
    return _mean(-(m + torch.log(p + R / t)), valid)


def _sar_inputs(values, vname: str, similarity, sample_mask):
    v = input_tensor(values, vname, 2, "float")
    S = input_tensor(similarity, "similarity", 3, "float", v)
    Q, K = v.shape
    check_shape(S, "similarity", (Q, K, K))
    dt = compute_dtype(v, S)
    return v.to(dt), S.to(dt), sample_mask_of(sample_mask, Q, K, v)


def sentence_sar(sample_logprobs, similarity, *, temperature: float = 0.001, sample_mask=None) -> Tensor:
    """SentenceSAR (Duan et al., SAR, ACL 2024; LM-Polygraph ``SentenceSAR``, docs/methods.md#sentence-sar). Uncertainty.

    With ``p_k = exp(sample_logprobs_k)`` (sequence probability, not length-normalised) and the
    similarity ``S [Q, K, K]`` of the samples (cross-encoder; its diagonal is never used)::

        ES(k) = -log(p_k + Σ_{j≠k} S[k, j]·p_j / t),   SentenceSAR = mean_k ES(k)

    over the valid samples. With t = 0.001 the value is usually negative (docs/methods.md#golden-values). One valid sample gives
    ``-log p_1`` (the reference's formula with no other sample). Computed with the largest log-prob
    factored out, so long samples do not underflow to ``-log 0``.
    """
    t = _temperature(temperature)
    lp, S, valid = _sar_inputs(sample_logprobs, "sample_logprobs", similarity, sample_mask)
    return _sentence_relevance(lp, S, t, valid)


def sar(token_sar_values, similarity, *, temperature: float = 0.001, sample_mask=None) -> Tensor:
    """SAR (Duan et al.; LM-Polygraph ``SAR``, docs/methods.md#sar): :func:`sentence_sar` with
    ``p_k = exp(-TokenSAR(s_k))``; ``token_sar_values [Q, K]`` is the TokenSAR of each sample
    (``flashuq.methods.token_sar``). One valid sample gives its TokenSAR. Uncertainty."""
    t = _temperature(temperature)
    ts, S, valid = _sar_inputs(token_sar_values, "token_sar_values", similarity, sample_mask)
    return _sentence_relevance(-ts, S, t, valid)


# ---- graph / pair scores ---------------------------------------------------------------------------

def luq(entail_logits, contra_logits, *, sample_mask=None) -> Tensor:
    """LUQ (Zhang et al., EMNLP 2024; LM-Polygraph ``LUQ``, docs/methods.md#luq). Uncertainty.

    From the raw NLI logits ``[Q, K, K]`` (premise i, hypothesis j):
    ``s_ij = e^{E_ij} / (e^{E_ij} + e^{C_ij}) = sigmoid(E_ij - C_ij)`` and
    ``LUQ = 1 - mean_i mean_{j≠i} s_ij``. One valid sample gives NaN (the reference divides 0 by 0).
    """
    El = input_tensor(entail_logits, "entail_logits", 3, "float")
    Cl = input_tensor(contra_logits, "contra_logits", 3, "float", El)
    Q, K = El.shape[:2]
    check_shape(El, "entail_logits", (Q, K, K))
    check_shape(Cl, "contra_logits", (Q, K, K))
    valid = sample_mask_of(sample_mask, Q, K, El)
    dt = compute_dtype(El, Cl)
    return 1.0 - _pair_mean(torch.sigmoid(El.to(dt) - Cl.to(dt)), valid)


def vr(similarity=None, *, embeddings=None, sample_mask=None) -> Tensor:
    """VR (Look Before You Leap, ``utils.compute_VR``; docs/methods.md#vr-vro). Uncertainty.

    ``VR = 1 - (1/K) Σ_a (1/(K-1)) Σ_{b≠a} sim(y_a, y_b)``, one minus the mean pairwise similarity over the
    valid samples. Give exactly one of ``similarity [Q, K, K]`` (``1 - dist``; its diagonal is not used)
    or ``embeddings=[Q, K, D]`` (cosine similarity, the reference's ``cosine_dist_func``). Fewer than two
    valid samples give NaN.
    """
    if (similarity is None) == (embeddings is None):
        raise ValueError("similarity/embeddings: give exactly one of similarity [Q, K, K] or embeddings=[Q, K, D]")
    if similarity is None:
        e = input_tensor(embeddings, "embeddings", 3, "float")
        S = _cosine(e.to(compute_dtype(e)))
    else:
        S = input_tensor(similarity, "similarity", 3, "float")
        check_shape(S, "similarity", (S.shape[0], S.shape[1], S.shape[1]))
        S = S.to(compute_dtype(S))
    valid = sample_mask_of(sample_mask, S.shape[0], S.shape[1], S)
    return 1.0 - _pair_mean(S, valid)


def vro(similarity=None, *, embeddings=None, reference=None, sample_mask=None) -> Tensor:
    """VRO (Look Before You Leap, ``utils.compute_VRO``; docs/methods.md#vr-vro). Uncertainty.

    ``VRO = 1 - mean_a sim(y_a, y_ref)`` over the valid samples, against the greedy (original) output.
    Give either ``similarity [Q, K]`` (each sample's similarity to the reference output) or
    ``embeddings=[Q, K, D]`` with ``reference=[Q, D]`` (cosine similarity).
    """
    if (similarity is None) == (embeddings is None):
        raise ValueError("similarity/embeddings: give exactly one of similarity [Q, K] or "
                         "embeddings=[Q, K, D] with reference=[Q, D]")
    if similarity is None:
        if reference is None:
            raise ValueError("reference: embeddings=... needs the reference embedding [Q, D]")
        e = input_tensor(embeddings, "embeddings", 3, "float")
        r = input_tensor(reference, "reference", 2, "float", e)
        check_shape(r, "reference", (e.shape[0], e.shape[2]))
        dt = compute_dtype(e, r)
        s = (_unit(e.to(dt)) * _unit(r.to(dt))[:, None, :]).sum(-1).clamp(-1.0, 1.0)
    else:
        if reference is not None:
            raise ValueError("reference: only used with embeddings=...; similarity is already to the reference")
        s = input_tensor(similarity, "similarity", 2, "float")
        s = s.to(compute_dtype(s))
    valid = sample_mask_of(sample_mask, *s.shape, s)
    return 1.0 - _mean(s, valid)


def lexical_similarity(pair_scores, *, sample_mask=None) -> Tensor:
    """``-mean_{i<j} sim(s_i, s_j)`` over the valid pairs (LM-Polygraph ``LexicalSimilarity``, docs/methods.md#lexical-similarity).
    ``pair_scores [Q, K, K]`` holds the text metric (ROUGE-1/2/L F, BLEU...) computed outside flashuq;
    only the upper triangle (i < j) is read. Fewer than two valid samples give NaN. Uncertainty
    (a negated mean similarity)."""
    S = input_tensor(pair_scores, "pair_scores", 3, "float")
    check_shape(S, "pair_scores", (S.shape[0], S.shape[1], S.shape[1]))
    valid = sample_mask_of(sample_mask, S.shape[0], S.shape[1], S)
    return -_pair_mean(S.to(compute_dtype(S)), valid, upper=True)


# ---- class-count scores ----------------------------------------------------------------------------

def _counts(class_ids, sample_mask):
    c, valid = _class_ids(class_ids, sample_mask)
    return _members(c, valid).sum(-1).float(), valid.sum(-1).float()  # [Q, C], [Q]


def label_prob(class_ids, *, sample_mask=None) -> Tensor:
    """LabelProb: ``1 - max_c |c| / n`` over the n valid samples (LM-Polygraph ``LabelProb``, docs/methods.md#class-counts).
    Uncertainty, fp32."""
    counts, n = _counts(class_ids, sample_mask)
    return 1.0 - counts.amax(-1) / n


def semantic_sets_confidence(class_ids, *, sample_mask=None) -> Tensor:
    """uqlm ``semantic_sets_confidence`` **negated**: ``-(n - n_sets)/(n - 1)`` with n the valid responses
    **including** the original one (uqlm's ``(m + 1 - n_sets)/m`` with m sampled responses, PR #371 bounds;
    docs/methods.md#class-counts) and n_sets the distinct classes. One response gives NaN. fp32."""
    counts, n = _counts(class_ids, sample_mask)
    sets = (counts > 0).sum(-1).float()
    return torch.where(n > 1, -(n - sets) / (n - 1), math.nan)


def uqlm_semantic_negentropy(clusters, *, response_probs=None, sample_mask=None) -> Tensor:
    """uqlm ``semantic_negentropy`` **negated** (docs/methods.md#uqlm-semantic-negentropy): ``SE / log n - 1``.

    ``clusters`` is either ``class_ids [Q, K]`` (integer) or uqlm's multi-membership ``[Q, K, K]`` bool
    (``membership[q, c, k]``, from ``greedy_bidirectional_clusters(..., rule="uqlm",
    return_membership=True)``); the n valid responses include the original one. Each cluster gets
    ``P_c = Σ_{k in c} w_k``, renormalised to sum 1 (a response in several clusters counts in each), and
    ``SE = -Σ_c P_c log P_c``. ``w`` is uniform (uqlm's discrete entropy) or ``response_probs [Q, K]``
    (its token-probability variant). One response gives NaN (``log 1 = 0``).
    """
    if not isinstance(clusters, (Tensor, np.ndarray)):
        raise TypeError(f"clusters must be a torch.Tensor or numpy.ndarray, got {type(clusters).__name__}")
    if torch.as_tensor(clusters).dtype == torch.bool:
        member = input_tensor(clusters, "clusters", 3, "bool")
        Q, K = member.shape[0], member.shape[2]
        check_shape(member, "clusters", (Q, K, K))
        valid = sample_mask_of(sample_mask, Q, K, member)
        member = member & valid[:, None, :]
    else:
        c, valid = _class_ids(clusters, sample_mask, "clusters")
        member = _members(c, valid)
        Q, K = c.shape
    if response_probs is None:
        w, dt = torch.ones(Q, K, device=member.device), torch.float32
    else:
        w = input_tensor(response_probs, "response_probs", 2, "float", member)
        check_shape(w, "response_probs", (Q, K))
        dt = compute_dtype(w)
        w = w.to(dt)
    P = torch.where(member, w[:, None, :], 0).sum(-1).to(dt)  # [Q, C]
    P = P / P.sum(-1, keepdim=True)
    se = -torch.special.xlogy(P, P).sum(-1)
    n = valid.sum(-1).to(dt)
    return torch.where(n > 1, se / torch.log(n), math.nan) - 1.0
