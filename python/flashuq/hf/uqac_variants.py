"""UQAC's variants (docs/methods.md#uqac-variants): the substitution candidates at the kept chain members
and the extra teacher-forced passes over the substituted sequences, batched, so that
:func:`flashuq.methods.uqac` computes the full marginal P̃_M from a model; :func:`uqac_score` runs the
whole pipeline for one (instruction, response) pair."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .._checks import check_int, check_real
from ..ops.token_stats_linear import token_stats_linear
from ._model import _head_params
from .uqac_inputs import uqac_inputs

_VARIANTS = ("reference", "paper")


class UqacVariants(NamedTuple):
    """The variants of one sequence: row 0 is the original, row ``v >= 1`` substitutes one kept token."""

    ans_logprobs: Tensor  #: ``[V, A]`` float32, ``log p_v(answer token a | prefix)``
    seq_logprobs: Tensor  #: ``[V, J]`` float32, ``log p_v(variant v's token after kept member j | prefix)``
    positions: Tensor     #: int64 ``[V - 1]``, the response position each variant substitutes (``keep[r] + 1``)
    tokens: Tensor        #: int64 ``[V - 1]``, the token it puts there


def uqac_candidates(top5_ids, top5_probs, original, *, ens_k: int = 10, ens_threshold: float = 1e-2,
                    variant: str = "reference"):
    """UQAC's substitution candidates (``expand_samples_for_ens_inference``): among the ``[J, 5]`` top-5
    tables of the kept members, the ``ens_k + J`` largest probabilities above ``ens_threshold`` (descending; ties
    to the lower flat index), minus each member's original token. Returns ``(rows, cols)`` int64, in that
    order. ``variant="reference"`` removes column ``argmax(top5_ids[r] == original[r])`` of each row, which
    is column 0 (the most probable candidate) when the original token is not in the row;
    ``variant="paper"`` removes only a column that holds the original token."""
    k = check_int(ens_k, "ens_k", 0)
    threshold = check_real(ens_threshold, "ens_threshold")
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
    ids, probs, orig = torch.as_tensor(top5_ids), torch.as_tensor(top5_probs), torch.as_tensor(original)
    if ids.dim() != 2 or probs.shape != ids.shape or orig.shape != ids.shape[:1]:
        raise ValueError(f"top5_ids, top5_probs must be [J, C] and original [J], got {tuple(ids.shape)}, "
                         f"{tuple(probs.shape)}, {tuple(orig.shape)}")
    J, C = ids.shape
    flat = probs.reshape(-1).double()
    above = torch.nonzero(flat > threshold).squeeze(1)
    order = torch.sort(flat[above], descending=True, stable=True).indices[: k + J]
    pick = above[order]
    rows, cols = pick // C, pick % C
    is_orig = ids == orig[:, None]
    if variant == "reference":
        drop_col = is_orig.long().argmax(1)
        keep_mask = cols != drop_col[rows]
    else:
        keep_mask = ~is_orig[rows, cols]
    return rows[keep_mask], cols[keep_mask]


def _logprobs_at(hidden: Tensor, pos: Tensor, targets: Tensor, head) -> Tensor:
    """``log p(targets | position pos)`` per row of ``hidden [v, N, D]`` at positions ``pos [P]``: ``[v, P]``."""
    weight, bias, scale, softcap = head
    h = hidden[:, pos]                                                       # [v, P, D]
    st = token_stats_linear(h, weight.to(h.dtype), targets, bias=None if bias is None else bias.to(h.dtype),
                            logit_scale=scale, softcap=softcap)
    return st.logprob.float()


@torch.no_grad()
def uqac_variants(model, input_ids: Tensor, response_start: int, ans_src, keep, *,
                  attention_mask: Optional[Tensor] = None, ens_k: int = 10, ens_threshold: float = 1e-2,
                  variant: str = "reference", batch_size: int = 8) -> UqacVariants:
    """UQAC's variants of one sequence and their log-probabilities (docs/methods.md#uqac-variants).

    1. One teacher-forced pass over ``[instruction; response]`` gives the top-5 next-token table at each kept
       member ``j`` (the position that predicts response token ``j + 1``).
    2. :func:`uqac_candidates` picks the substitutions (the reference's ``ens_k`` and ``ens_threshold``);
       each makes one variant, the original sequence with that one token replaced
       (later tokens are not regenerated).
    3. The variants run teacher-forced, ``batch_size`` at a time (they share the original's length, so
       nothing is padded); each gives the log-probabilities of the answer tokens and of its own tokens after
       the kept members, from the final hidden states and the head weight (``fuq.token_stats_linear``).

    ``ans_src [A]`` and ``keep [J]`` are source ids in response coordinates (``-1`` = the last instruction
    position, which predicts response token 0), as :func:`flashuq.methods.uqac_terms` returns them.
    ``variant="reference"`` (default) follows the authors' code where it departs from the paper: a kept
    member ``-1`` reads its candidates from the top-5 table of the **last response position** (Python's
    index ``-1``), and :func:`uqac_candidates` drops column 0 when the original token is not among a
    member's top 5; ``variant="paper"`` uses the table of the position before response token 0 and drops
    only the original token. Pass the result's ``ans_logprobs`` and ``seq_logprobs`` to
    :func:`flashuq.methods.uqac` as ``variant_ans_logprobs`` and ``variant_seq_logprobs``.
    """
    batch_size = check_int(batch_size, "batch_size", 1)
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
    ids = input_ids.reshape(1, -1) if input_ids.dim() == 1 else input_ids
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"input_ids must be [N] or [1, N] (one sequence), got shape {tuple(input_ids.shape)}")
    am = torch.ones_like(ids) if attention_mask is None else attention_mask.reshape(ids.shape)
    cols = torch.nonzero(am[0].bool()).squeeze(-1)
    rs = int(response_start)
    I, R = int((cols < rs).sum()), int((cols >= rs).sum())
    if R < 1:
        raise ValueError("response_start: no response token (non-pad) at or after it")
    toks = ids[0, cols]
    ans = torch.as_tensor(ans_src).reshape(-1).long()
    kept = torch.as_tensor(keep).reshape(-1).long()
    for name, x in (("ans_src", ans), ("keep", kept)):
        if x.numel() and (bool((x < -1).any()) or bool((x > R - 2).any())):
            raise ValueError(f"{name} must lie in [-1, R - 2 = {R - 2}] (a source predicts the next token), "
                             f"got {x.tolist()}")
        if I == 0 and bool((x == -1).any()):
            raise ValueError(f"{name}: -1 (the last instruction position) needs an instruction")
    if ans.numel() == 0:
        raise ValueError("ans_src must name at least one answer source")
    dev = toks.device
    ans, kept = ans.to(dev), kept.to(dev)
    head = _head_params(model)
    pos = torch.arange(toks.numel(), device=dev)[None]

    def hidden_of(rows: Tensor) -> Tensor:
        return model.base_model(input_ids=rows, position_ids=pos.expand(rows.shape[0], -1),
                                use_cache=False).last_hidden_state

    src = torch.cat([ans, kept]) + I                                         # positions predicting the tokens
    h0 = hidden_of(toks[None])
    lp0 = _logprobs_at(h0, src, toks[src + 1][None], head)                   # [1, A + J]
    J = kept.numel()
    if J:
        table = kept + I
        if variant == "reference":
            table = torch.where(kept == -1, I + R - 1, table)
        weight, bias, scale, softcap = head
        h = h0[0, table]
        st = token_stats_linear(h, weight.to(h.dtype), bias=None if bias is None else bias.to(h.dtype), topk=5,
                                logit_scale=scale, softcap=softcap)
        rows, cols_ = uqac_candidates(st.topk_ids.cpu(), st.topk_logprobs.exp().cpu(), toks[kept + I + 1].cpu(),
                                      ens_k=ens_k, ens_threshold=ens_threshold, variant=variant)
        cand = st.topk_ids.cpu()[rows, cols_]
    else:
        rows = cols_ = cand = torch.zeros(0, dtype=torch.long)
    n = rows.numel()
    at = (kept.cpu()[rows] + I + 1).to(dev)                                 # token index each variant replaces
    out = [lp0]
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        seqs = toks[None].repeat(hi - lo, 1)
        seqs[torch.arange(hi - lo, device=dev), at[lo:hi]] = cand[lo:hi].to(dev)
        out.append(_logprobs_at(hidden_of(seqs), src, seqs[:, src + 1], head))
    lp = torch.cat(out, 0)
    A = ans.numel()
    return UqacVariants(lp[:, :A], lp[:, A:], (kept.cpu()[rows] + 1), cand)


@torch.no_grad()
def uqac_score(model, input_ids: Tensor, response_start: int, ans_src, *, attention_mask: Optional[Tensor] = None,
               tokenizer=None, response_tokens=None, stop_words=None, variants: bool = True, ens_k: int = 10,
               ens_threshold: float = 1e-2, variant: str = "reference", batch_size: int = 8,
               **uqac_kwargs) -> Tensor:
    """``-UQAC`` of one (instruction, response) pair from a model, end to end (docs/methods.md#uqac):
    :func:`uqac_inputs` (one pass, the streamed attention reduction), the chain and its kept members
    (:func:`flashuq.methods.uqac_terms`), :func:`uqac_variants` (``variants=True``: the full marginal P̃_M;
    False: P̃_sim), then :func:`flashuq.methods.uqac`. ``tokenizer`` (each response id decoded alone) or
    ``response_tokens`` (the strings) mark UQAC's stop tokens; ``uqac_kwargs`` (``buffer``, ``threshold``,
    ``k``, ...) go to the chain and :func:`flashuq.methods.uqac`. A 0-dim float64 tensor, an uncertainty."""
    from ..methods.attention import uqac, uqac_terms

    if tokenizer is None and response_tokens is None:
        raise ValueError("tokenizer: needed (or response_tokens) to mark UQAC's stop tokens")
    inp = uqac_inputs(model, input_ids, response_start, attention_mask=attention_mask, tokenizer=tokenizer,
                      response_tokens=response_tokens, stop_words=stop_words,
                      n_heads=uqac_kwargs.get("n_heads", 16), reduction=uqac_kwargs.get("reduction", "max"))
    args = (inp.attn, ans_src, inp.is_stop, inp.h_last, inp.token_logprobs)
    if not variants:
        return uqac(*args, **uqac_kwargs)
    var = uqac_variants(model, input_ids, response_start, ans_src, uqac_terms(*args, **uqac_kwargs).keep,
                        attention_mask=attention_mask, ens_k=ens_k, ens_threshold=ens_threshold, variant=variant,
                        batch_size=batch_size)
    return uqac(*args, variant_ans_logprobs=var.ans_logprobs, variant_seq_logprobs=var.seq_logprobs, **uqac_kwargs)


__all__ = ["UqacVariants", "uqac_candidates", "uqac_variants", "uqac_score"]
