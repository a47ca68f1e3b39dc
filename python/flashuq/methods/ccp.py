"""Claim-Conditioned Probability (docs/methods.md#ccp): each generated token's probability renormalised
over the alternatives that an NLI model finds to mean the same as it or to contradict it, batched over
sequences. The NLI step runs outside flashuq; its labels come in as integer codes."""

from __future__ import annotations

import string
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ._inputs import bool_mask, check_shape, input_tensor

ENTAIL, NEUTRAL, CONTRA = 0, 1, 2  #: NLI label codes


def combine_nli(forward, backward) -> Tensor:
    """LM-Polygraph's rule for two directional NLI labels ``NLI(x, y)`` and ``NLI(y, x)`` (codes
    :data:`ENTAIL`, :data:`NEUTRAL`, :data:`CONTRA`): equal labels stay; entail and contra together
    give neutral; otherwise whichever of entail or contra is present."""
    f = input_tensor(forward, "nli_forward", None, "int")
    b = input_tensor(backward, "nli_backward", f.dim(), "int", f)
    check_shape(b, "nli_backward", f.shape)
    if bool(((f < 0) | (f > 2) | (b < 0) | (b > 2)).any()):
        raise ValueError("nli_forward/nli_backward: labels must be 0 (entail), 1 (neutral) or 2 (contra)")
    either = lambda c: (f == c) | (b == c)  # noqa: E731
    both_sides = either(ENTAIL) & either(CONTRA)
    out = torch.where(either(ENTAIL), ENTAIL, torch.where(either(CONTRA), CONTRA, NEUTRAL))
    return torch.where(f == b, f, torch.where(both_sides, NEUTRAL, out))


def ccp_token_logprobs(alt_logprobs, nli_forward, nli_backward=None, *, alt_mask=None) -> Tensor:
    """``log ccp_t = logsumexp(alt_lp[entail]) - logsumexp(alt_lp[entail ∪ contra])`` per token, ``[B, T]``.

    ``alt_logprobs [B, T, A]``: the log-probabilities of each step's alternatives (LM-Polygraph: the
    top 10 by logit), alternative 0 the emitted token, which always counts as entailed.
    ``nli_forward [B, T, A]``: the label of ``NLI(w_0, w_i)``; with ``nli_backward`` (``NLI(w_i, w_0)``)
    the two are combined by :func:`combine_nli`. Neutral alternatives are dropped. ``alt_mask [B, T, A]``
    drops alternatives (a step with fewer than A).
    """
    lp = input_tensor(alt_logprobs, "alt_logprobs", 3, "float")
    f = input_tensor(nli_forward, "nli_forward", 3, "int", lp)
    check_shape(f, "nli_forward", lp.shape)
    label = f if nli_backward is None else combine_nli(f, input_tensor(nli_backward, "nli_backward", 3, "int", lp))
    if nli_backward is None and bool(((f < 0) | (f > 2)).any()):
        raise ValueError("nli_forward: labels must be 0 (entail), 1 (neutral) or 2 (contra)")
    valid = bool_mask(alt_mask, "alt_mask", lp.shape, lp)
    first = torch.zeros(lp.shape[-1], dtype=torch.bool, device=lp.device)
    first[0] = True
    entail = valid & ((label == ENTAIL) | first)
    contra = valid & (label == CONTRA) & ~first
    neg_inf = torch.tensor(-torch.inf, dtype=lp.dtype, device=lp.device)
    num = torch.logsumexp(torch.where(entail, lp, neg_inf), -1)
    den = torch.logsumexp(torch.where(entail | contra, lp, neg_inf), -1)
    return num - den


_STRIP = string.punctuation + " \n"


def ccp_nli_labels(alt_ids, decode, nli, *, alt_mask=None, batch_size: int = 64):
    """The directional NLI labels CCP needs, ``(nli_forward, nli_backward)`` int64 ``[B, T, A]``, from an NLI
    model the caller passes, with every (word, alternative) pair scored once for the whole batch.

    ``alt_ids [B, T, A]``: each step's alternatives (alternative 0 the emitted token). ``decode(id) -> str``
    turns a token id into text (e.g. ``lambda i: tokenizer.decode([i])``); as LM-Polygraph's
    ``GreedyAlternativesNLICalculator`` does, the word is that text stripped of punctuation, spaces and
    newlines. ``nli(pairs) -> [n, 3]`` scores a list of ``(premise, hypothesis)`` pairs: probabilities
    (or logits) in the order ``ENTAIL, NEUTRAL, CONTRA``, whose argmax is the label (ties go to entail,
    then contra, then neutral, LM-Polygraph's order), or ``[n]`` integer labels. It is called on at most
    ``batch_size`` pairs at a time, each distinct pair once (LM-Polygraph re-scores them at every step).
    Alternative 0's labels are ENTAIL; masked alternatives (``alt_mask``) are not scored (NEUTRAL)."""
    from .._checks import check_int

    ids = input_tensor(alt_ids, "alt_ids", 3, "int")
    if not callable(decode):
        raise TypeError(f"decode must be a callable token id -> str, got {type(decode).__name__}")
    if not callable(nli):
        raise TypeError(f"nli must be a callable list of (premise, hypothesis) -> [n, 3], got {type(nli).__name__}")
    batch_size = check_int(batch_size, "batch_size", 1)
    valid = bool_mask(alt_mask, "alt_mask", ids.shape, ids).cpu()
    idc = ids.cpu()
    words = {}
    for i in torch.unique(idc[valid]).tolist():
        w = decode(int(i))
        if not isinstance(w, str):
            raise TypeError(f"decode({i}) must return a str, got {type(w).__name__}")
        words[i] = w.strip(_STRIP)
    B, T, A = idc.shape
    first = idc[..., :1].expand(B, T, A)
    use = valid.clone()
    use[..., 0] = False
    use &= valid[..., :1]
    heads, alts = first[use].tolist(), idc[use].tolist()
    pairs = sorted({(words[h], words[a]) for h, a in zip(heads, alts)}
                   | {(words[a], words[h]) for h, a in zip(heads, alts)})
    label = {}
    prefer = torch.tensor([ENTAIL, CONTRA, NEUTRAL])  # LM-Polygraph's max over {entail, contra, neutral}
    for lo in range(0, len(pairs), batch_size):
        chunk = pairs[lo:lo + batch_size]
        out = nli(chunk)
        out = torch.as_tensor(out.detach().cpu() if isinstance(out, Tensor) else np.asarray(out))
        if out.dtype.is_floating_point:
            if tuple(out.shape) != (len(chunk), 3):
                raise ValueError(f"nli must return [n, 3] scores for {len(chunk)} pairs, got shape {tuple(out.shape)}")
            lab = prefer[out.double()[:, prefer].argmax(1)]
        else:
            if tuple(out.shape) != (len(chunk),) or bool(((out < 0) | (out > 2)).any()):
                raise ValueError(f"nli must return {len(chunk)} labels in {{0, 1, 2}} or [n, 3] scores, got "
                                 f"{out.dtype} {tuple(out.shape)}")
            lab = out.long()
        label.update(zip(chunk, lab.tolist()))
    fwd = torch.full((B, T, A), NEUTRAL, dtype=torch.long)
    bwd = torch.full((B, T, A), NEUTRAL, dtype=torch.long)
    fwd[..., 0] = ENTAIL
    bwd[..., 0] = ENTAIL
    fwd[use] = torch.tensor([label[(words[h], words[a])] for h, a in zip(heads, alts)], dtype=torch.long)
    bwd[use] = torch.tensor([label[(words[a], words[h])] for h, a in zip(heads, alts)], dtype=torch.long)
    return fwd.to(ids.device), bwd.to(ids.device)


def ccp(alt_logprobs, nli_forward, nli_backward=None, mask=None, *, alt_mask=None) -> Tensor:
    """Claim-Conditioned Probability (Fadeeva et al., "Fact-Checking the Output of Large Language Models
    via Token-Level Uncertainty Quantification", ACL Findings 2024; LM-Polygraph ``CCP``), uncertainty:
    ``-exp(Σ_t log ccp_t)`` over the tokens of ``mask [B, T]``, minus the product of the per-token
    CCPs (:func:`ccp_token_logprobs`, whose arguments it takes). For a claim, sum
    ``ccp_token_logprobs`` over the claim's tokens (:func:`flashuq.masked_reduce` with the claim's
    token mask, ``op="sum"``) and take ``-exp``; LM-Polygraph counts stop-words as entailed there
    (leave them out of the claim's mask)."""
    t = ccp_token_logprobs(alt_logprobs, nli_forward, nli_backward, alt_mask=alt_mask)
    m: Optional[Tensor] = None if mask is None else bool_mask(mask, "mask", t.shape, t)
    s = t.sum(-1) if m is None else torch.where(m, t, 0.0).sum(-1)
    return -torch.exp(s)


__all__ = ["ENTAIL", "NEUTRAL", "CONTRA", "combine_nli", "ccp_token_logprobs", "ccp_nli_labels", "ccp"]
