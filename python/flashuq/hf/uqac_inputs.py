"""UQAC's per-sequence inputs from one teacher-forced pass under :class:`AttentionCapture`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..ops.token_stats_linear import token_stats_linear
from ._model import _head_params, position_ids_from_mask
from .attention import AttentionCapture
from .uqac import uqac_is_stop


@dataclass
class UQACInputs:
    """What :func:`uqac_inputs` returns for one sequence of ``I`` instruction and ``R`` response tokens
    (pads removed; ``Ntok = I + R``)."""

    attn: Tensor                  #: ``[R, Ntok]`` float32 reduction, or ``[L', H, R, Ntok]`` rows (reduced=False)
    h_last: Tensor                #: ``[R, D]`` last-layer hidden states (after the final norm), response positions
    token_logprobs: Tensor        #: ``[R]`` float32 ``log p(resp_t | instruction, resp_<t)`` (t = 0: NaN if I = 0)
    is_stop: Optional[Tensor]     #: ``[Ntok]`` bool (instruction positions True), when tokens or a tokenizer were given
    n_instr: int                  #: ``I``
    response_ids: Tensor          #: ``[R]`` the response token ids
    reduced: bool                 #: whether ``attn`` is the reduction (True) or the rows (False)


@torch.no_grad()
def uqac_inputs(model, input_ids: Tensor, response_start: int, *, attention_mask: Optional[Tensor] = None,
                reduced: bool = True, n_heads: int = 16, reduction: str = "max",
                rows_dtype: Optional[torch.dtype] = None, layers: Optional[Sequence[int]] = None,
                tokenizer=None, response_tokens=None, stop_words=None, temperature: float = 1.0) -> UQACInputs:
    """UQAC's per-sequence inputs (docs/methods.md#uqac) from ONE teacher-forced pass over
    ``[instruction; response]`` under :class:`AttentionCapture`, without ``[L, H, N, N]`` maps.

    Args:
        input_ids: ``[N]`` or ``[1, N]``; ``attention_mask`` (same shape) may mark pads.
        response_start: index in ``input_ids`` of the first response token.
        reduced: True -> ``attn`` is the streamed UQAC reduction ``[R, Ntok]`` (equal to
            ``flashuq.uqac_reduce_attention(rows, n_heads=n_heads, reduction=reduction)``, memory
            ``[n_heads, R, Ntok]``); False -> the raw rows ``[L', H, R, Ntok]`` in ``rows_dtype``.
        tokenizer / response_tokens / stop_words: for ``is_stop`` (:func:`uqac_is_stop`): either the
            response token strings, or a tokenizer to decode the response ids one by one; neither ->
            ``is_stop`` is None.
        temperature: for the token log-probabilities.

    ``token_logprobs[t]`` is the log-probability of response token ``t`` under the distribution at
    the position before it, from the final hidden states and the head weight
    (``fuq.token_stats_linear``, logits never materialised; ``logit_scale`` / softcapping honoured).
    Chain members of UQAC are source ids ``c`` (position ``c`` predicts token ``c + 1``): their
    probabilities are ``token_logprobs[c + 1]`` and their hidden states ``h_last[c + 1]``.
    """
    ids = input_ids.reshape(1, -1) if input_ids.dim() == 1 else input_ids
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"input_ids must be [N] or [1, N] (one sequence), got shape {tuple(input_ids.shape)}")
    am = torch.ones_like(ids) if attention_mask is None else attention_mask.reshape(ids.shape)
    real = am[0].bool()
    cols = torch.nonzero(real).squeeze(-1)
    rs = int(response_start)
    I = int((cols < rs).sum())
    R = int((cols >= rs).sum())
    if R < 1:
        raise ValueError("response_start: no response token (non-pad) at or after it")
    with AttentionCapture(model, diagonals=False, response_rows=not reduced, uqac_reduced=reduced, layers=layers,
                          response_start=rs, rows_dtype=rows_dtype, n_heads=n_heads, reduction=reduction) as cap:
        hidden = model.base_model(input_ids=ids, attention_mask=am, position_ids=position_ids_from_mask(am),
                                  use_cache=False).last_hidden_state[0, cols]  # [Ntok, D]
    attn = cap.uqac_reduced[0] if reduced else cap.response_rows[0]
    toks = ids[0, cols]
    resp = toks[I:]
    weight, bias, scale, softcap = _head_params(model)
    lp = torch.full((R,), float("nan"), dtype=torch.float32, device=hidden.device)
    if I + R >= 2:
        lo = max(I, 1)
        st = token_stats_linear(hidden[lo - 1:I + R - 1], weight.to(hidden.dtype), toks[lo:],
                                bias=None if bias is None else bias.to(hidden.dtype), temperature=temperature,
                                logit_scale=scale, softcap=softcap)
        lp[lo - I:] = st.logprob.float()
    is_stop = None
    if response_tokens is not None:
        is_stop = uqac_is_stop(response_tokens, I, stop_words=stop_words)
        if is_stop.numel() != I + R:
            raise ValueError(f"response_tokens: {is_stop.numel() - I} tokens for a response of {R}")
    elif tokenizer is not None:
        is_stop = uqac_is_stop(resp.cpu(), I, tokenizer=tokenizer, stop_words=stop_words)
    return UQACInputs(attn, hidden[I:], lp, is_stop, I, resp, reduced)
