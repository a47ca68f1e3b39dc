"""Sequence-level estimators built from per-token statistics (docs/methods.md#token-statistics).

Every function takes the :class:`~flashuq.TokenStats` of ``[B, T]`` rows (``fuq.token_stats`` of
the logits that produced each generated token, with the generated ``tokens``) and an optional
``mask [B, T]`` (1 = generated token, 0 = padding), and returns an **uncertainty** ``[B]``:
higher means less trustworthy (the LM-Polygraph convention). Where the natural quantity is a
confidence, the function returns its negation and says so. Padding never enters a reduction; an
empty sequence gives NaN. Reductions run in flashuq's own kernels (``masked_reduce``,
``masked_quantile``).
"""

from __future__ import annotations


import numpy as np
import torch
from torch import Tensor

from .._checks import check_int, check_real
from ..ops.masked_quantile import masked_quantile
from ..ops.masked_reduce import masked_reduce
from ..ops.segment_reduce import segment_reduce
from ..ops.token_stats import TokenStats


def _empty_nan(x: Tensor, mask) -> Tensor:
    """NaN where a sequence has no token (masked_reduce's sum gives 0 there)."""
    if mask is None:
        return x if x.shape[-1:] != (0,) else torch.full_like(x, float("nan"))
    n = masked_reduce(torch.ones_like(mask, dtype=x.dtype), mask, op="sum")
    return torch.where(n > 0, x, float("nan"))


def _sum(values: Tensor, mask) -> Tensor:
    return _empty_nan(masked_reduce(values, mask, op="sum"), mask)


def msp(stats: TokenStats, mask=None) -> Tensor:
    """Maximum Sequence Probability: ``-Σ_t log p(y_t)``. LM-Polygraph ``MaximumSequenceProbability``."""
    return -_sum(stats.logprob, mask)


def gnll(stats: TokenStats, mask=None) -> Tensor:
    """G-NLL: ``-Σ_t log max_v p_t(v)``, the NLL of the greedy sequence (Aichberger et al., arXiv 2412.15176).

    A sum, not a mean; it equals ``msp`` when decoding was greedy.
    """
    return -_sum(stats.max_logprob, mask)


def perplexity(stats: TokenStats, mask=None) -> Tensor:
    """Log-perplexity ``-mean_t log p(y_t)`` (no exp), as LM-Polygraph ``Perplexity``."""
    return -masked_reduce(stats.logprob, mask, op="mean")


def mean_token_entropy(stats: TokenStats, mask=None) -> Tensor:
    """``mean_t H_t``, the full-vocabulary entropy of each step. LM-Polygraph ``MeanTokenEntropy``."""
    return masked_reduce(stats.entropy, mask, op="mean")


def max_token_entropy(stats: TokenStats, mask=None) -> Tensor:
    """``max_t H_t`` (docs/methods.md#sequence-scores)."""
    return masked_reduce(stats.entropy, mask, op="max")


def geometric_mean_prob(stats: TokenStats, mask=None) -> Tensor:
    """``-exp(mean_t log p(y_t))``: the geometric-mean token probability, **negated** (a confidence).

    Park et al., arXiv 2501.17187; uqlm ``sequence_probability`` with ``length_normalize=True``.
    """
    return -torch.exp(masked_reduce(stats.logprob, mask, op="mean"))


def arithmetic_mean_prob(stats: TokenStats, mask=None) -> Tensor:
    """``-mean_t p(y_t)``: the arithmetic-mean token probability, **negated** (Park et al.)."""
    return -masked_reduce(torch.exp(stats.logprob), mask, op="mean")


def mean_kurtosis(stats: TokenStats, mask=None) -> Tensor:
    """``-mean_t kurt(p_t)``: mean excess kurtosis of the next-token distributions, **negated**
    (a peaked distribution is a confident one). Park et al.; the definition is unverified (docs/methods.md#kurtosis).
    """
    return -masked_reduce(stats.kurtosis, mask, op="mean")


def chow_sum(stats: TokenStats, mask=None) -> Tensor:
    """Chow-Sum ``Σ_t log p(y_t)``, **negated** (= msp). Gupta et al., ICLR 2024."""
    return -_sum(stats.logprob, mask)


def chow_avg(stats: TokenStats, mask=None) -> Tensor:
    """Chow-Average ``mean_t log p(y_t)``, **negated** (= perplexity). Gupta et al., ICLR 2024."""
    return -masked_reduce(stats.logprob, mask, op="mean")


def chow_quantile(stats: TokenStats, mask=None, *, alpha: float = 0.0) -> Tensor:
    """Chow-Quantile-α ``quantile_α({log p(y_t)})`` with numpy's linear interpolation, **negated**.

    α = 0 is the least likely token. Gupta et al., ICLR 2024.
    """
    return -masked_quantile(stats.logprob, check_real(alpha, "alpha", 0.0, 1.0), mask)


def self_certainty(stats: TokenStats, mask=None) -> Tensor:
    """``-mean_t KL(U ‖ p_t)``: LM-Polygraph ``SelfCertainty`` (already an uncertainty; a uniform
    distribution gives 0, confident ones are very negative)."""
    return -masked_reduce(stats.self_certainty, mask, op="mean")


def _tempered(stats: TokenStats, name: str) -> TokenStats:
    if getattr(stats, "renyi_term", None) is None or getattr(stats, "fisher_rao", None) is None:
        raise ValueError(f"stats: {name} needs the tempered statistics; compute them with "
                         "fuq.token_stats(logits, tokens, renyi=True)")
    return stats


def renyi_neg(stats: TokenStats, mask=None, *, variant: str = "reference", vocab_size=None) -> Tensor:
    """RenyiNeg with the orientation fixed: the Rényi divergence (α = ½) of ``q_t = softmax(log p_t / 2)``
    from the uniform distribution, averaged over tokens and **negated** (a distribution far from
    uniform is a confident one). Darrin et al., RAINPROOF (arXiv 2212.09171); LM-Polygraph ``RenyiNeg``.

    - ``variant="reference"`` (default): ``-mean_t r_t`` with LM-Polygraph's per-step value
      ``r_t = D_½(q_t‖U) − 2·log V``, i.e. exactly LM-Polygraph's number negated (its sign rises with
      confidence: LM-Polygraph issue #284; docs/methods.md#renyi-neg).
    - ``variant="paper"``: ``-mean_t D_½(q_t‖U)``; needs ``vocab_size`` (V of the logits, -inf entries
      included). The two differ by the constant ``2·log V`` and rank identically.

    ``stats`` must come from ``fuq.token_stats(..., renyi=True)``.
    """
    stats = _tempered(stats, "renyi_neg")
    if variant not in ("reference", "paper"):
        raise ValueError(f"variant must be 'reference' or 'paper', got {variant!r}")
    out = -masked_reduce(stats.renyi_term, mask, op="mean")
    if variant == "paper":
        if vocab_size is None:
            raise ValueError("vocab_size: variant='paper' needs the vocabulary size V >= 1")
        out = out - 2.0 * float(np.log(check_int(vocab_size, "vocab_size", 1)))
    return out


def fisher_rao(stats: TokenStats, mask=None) -> Tensor:
    """FisherRao with the orientation fixed: ``-mean_t (2/π)·arccos(Σ_v √(q_t,v / V))``, the Fisher–Rao
    distance of ``q_t = softmax(log p_t / 2)`` from uniform (in [0, 1]), averaged and **negated**.
    LM-Polygraph ``FisherRao`` negated (docs/methods.md#fisher-rao). ``stats`` from ``token_stats(..., renyi=True)``.
    """
    stats = _tempered(stats, "fisher_rao")
    return -masked_reduce(stats.fisher_rao, mask, op="mean")


def token_sar(stats: TokenStats, relevance, mask=None) -> Tensor:
    """TokenSAR: ``Σ_t -log p(y_t)·R_t / Σ_t R_t`` with ``R = 1 - leave-one-token-out similarity``.

    Duan et al. (SAR), LM-Polygraph ``TokenSAR``. ``relevance [B, T]`` comes from an external
    cross-encoder; ``Σ R = 0`` gives NaN. Uncertainty.
    """
    relevance = _per_token(relevance, "relevance", stats)
    return masked_reduce(-stats.logprob, mask, op="mean", weights=relevance)


def _per_token(x, name: str, stats: TokenStats) -> Tensor:
    """A [B, T] per-token input aligned with the stats, as the stats' dtype and device."""
    if not isinstance(x, (Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    x = torch.as_tensor(x)
    if x.shape != stats.logprob.shape:
        raise ValueError(f"{name} must have the shape of the token statistics {tuple(stats.logprob.shape)}, "
                         f"got {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")
    return x.to(device=stats.logprob.device, dtype=stats.logprob.dtype)


def _first_token(mask, like: Tensor) -> Tensor:
    """True at each sequence's first real token (works for left and right padding)."""
    real = torch.ones_like(like, dtype=torch.bool) if mask is None else torch.as_tensor(mask) != 0
    return real & (torch.cumsum(real.to(torch.int32), -1) == 1)


def pmi(stats: TokenStats, lm_logprobs, mask=None) -> Tensor:
    """Pointwise mutual information: ``-mean_t s_t`` with ``s_t = log p(y_t|x,y<t) - log p(y_t|y<t)``
    (the prompt-free term is 0 at the first token). ``lm_logprobs [B, T]`` are the log-probs of the
    same tokens from a pass without the prompt. LM-Polygraph ``PointwiseMutualInformation``.
    """
    lm = _per_token(lm_logprobs, "lm_logprobs", stats)
    s = stats.logprob - torch.where(_first_token(mask, lm), 0.0, lm)
    return -masked_reduce(s, mask, op="mean")


def cpmi(stats: TokenStats, lm_logprobs, mask=None, *, tau: float = 0.0656, lam: float = 3.599) -> Tensor:
    """Conditional PMI: ``-mean_t s_t``, ``s_t = log p(y_t|x,y<t) - λ·log p(y_t|y<t)`` where ``H_t ≥ τ``
    and the step is not the first, else ``log p(y_t|x,y<t)``. LM-Polygraph
    ``ConditionalPointwiseMutualInformation`` (τ = 0.0656, λ = 3.599).
    """
    lm = _per_token(lm_logprobs, "lm_logprobs", stats)
    use = ~_first_token(mask, lm) & (stats.entropy >= tau)
    s = stats.logprob - torch.where(use, lam * lm, 0.0)
    return -masked_reduce(s, mask, op="mean")


# ---- Look Before You Leap: sentence-level scores (Huang et al., arXiv 2307.10236, docs/methods.md#look-before-you-leap) ----
# seg_ids [B, T] marks the sentence of each token (from the caller's sentencizer); every score is
# the mean over sentences of a per-sentence max or mean. Uncertainties.

def sentence_level_max_nll(stats: TokenStats, seg_ids, mask=None) -> Tensor:
    """``mean_sentences max_{t in s} -log p(y_t)`` (LBYL "Max Prob")."""
    return segment_reduce(-stats.logprob, seg_ids, mask, op="max")


def sentence_level_avg_nll(stats: TokenStats, seg_ids, mask=None) -> Tensor:
    """``mean_sentences mean_{t in s} -log p(y_t)`` (LBYL "Avg Prob")."""
    return segment_reduce(-stats.logprob, seg_ids, mask, op="mean")


def sentence_level_max_entropy(stats: TokenStats, seg_ids, mask=None) -> Tensor:
    """``mean_sentences max_{t in s} H_t`` (LBYL "Max Ent")."""
    return segment_reduce(stats.entropy, seg_ids, mask, op="max")


def sentence_level_avg_entropy(stats: TokenStats, seg_ids, mask=None) -> Tensor:
    """``mean_sentences mean_{t in s} H_t`` (LBYL "Avg Ent")."""
    return segment_reduce(stats.entropy, seg_ids, mask, op="mean")
