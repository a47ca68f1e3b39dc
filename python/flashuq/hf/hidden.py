"""Hidden states of the layers asked for, from one teacher-forced pass (docs/architecture.md#hidden-states):
forward hooks on those layers only, each state reduced as it passes (the last real token, or a mean
over a span of positions), so neither ``output_hidden_states`` for every layer nor an
``[L + 1, B, S, D]`` stack is kept, and the pass stops once the highest layer asked for is read."""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor

from ._model import batch_and_mask, position_ids_from_mask


class _Captured(Exception):
    """Raised by the last hook that the call needs: the layers above it do not run."""


def _decoder_layers(model) -> torch.nn.ModuleList:
    """The body's list of decoder blocks (``layers`` for Llama-like models, ``h`` for GPT-2)."""
    body = model.base_model
    n = getattr(model.config, "num_hidden_layers", None)
    for name in ("layers", "h", "blocks"):
        mods = getattr(body, name, None)
        if isinstance(mods, torch.nn.ModuleList) and (n is None or len(mods) == n):
            return mods
    raise ValueError(f"{type(model).__name__}: no list of decoder layers found (layers / h / blocks)")


def _final_norm(model) -> torch.nn.Module:
    body = model.base_model
    for name in ("norm", "ln_f", "final_layernorm"):
        mod = getattr(body, name, None)
        if isinstance(mod, torch.nn.Module):
            return mod
    raise ValueError(f"{type(model).__name__}: no final norm found (norm / ln_f / final_layernorm)")


@torch.no_grad()
def hidden_states(model, input_ids: Tensor, attention_mask: Optional[Tensor] = None, *, layers: Sequence[int],
                  reduce: str = "last", start: Optional[Tensor] = None, end: Optional[Tensor] = None) -> Tensor:
    """``[B, len(layers), D]`` hidden states (fp32, or fp64 for an fp64
    model) of a teacher-forced pass, numbered as transformers'
    ``output_hidden_states`` numbers them: 0 = the first decoder layer's input (the embeddings),
    ``l`` = the input of layer ``l`` (the output of layer ``l - 1``), ``L`` = the final norm's output;
    negative indices count from ``L + 1``.

    - ``reduce="last"``: the state at each row's last real token (``attention_mask``; left or right
      padding). EigenScore's embedding of a sampled answer is the middle layer's
      (``layers=[L // 2]``) at the answer's last token (docs/methods.md#eigenscore).
    - ``reduce="mean"``: the mean over positions ``start[b] <= s < end[b]`` (``[B]`` each); Feature
      Gaps takes ``start = P - 1``, ``end = S - 1`` (docs/methods.md#feature-gaps). An empty span gives
      NaN.
    """
    input_ids, am = batch_and_mask(input_ids, attention_mask, "S")
    B, S = input_ids.shape
    blocks = _decoder_layers(model)
    L = len(blocks)
    idx: List[int] = []
    for v in layers:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"layers must hold ints, got {type(v).__name__}")
        if not -(L + 1) <= v <= L:
            raise ValueError(f"layers: indices must lie in [{-(L + 1)}, {L}] for a model of {L} layers, got {v}")
        idx.append(v % (L + 1))
    if not idx:
        raise ValueError("layers: give at least one layer")
    pos = torch.arange(S, device=input_ids.device)
    if reduce == "last":
        real = am.bool()
        if not bool(real.any(1).all()):
            raise ValueError("attention_mask: every row needs a real token")
        last = torch.where(real, pos, -1).amax(1)
    elif reduce == "mean":
        if start is None or end is None:
            raise ValueError('start/end: reduce="mean" needs both ([B] each)')
        st = torch.as_tensor(start, device=input_ids.device).reshape(-1)
        en = torch.as_tensor(end, device=input_ids.device).reshape(-1)
        if st.numel() != B or en.numel() != B:
            raise ValueError(f"start/end: expected {B} entries each")
        if bool(((st < 0) | (en > S) | (st > en)).any()):
            raise ValueError(f"start/end: need 0 <= start <= end <= S = {S}")
        span = ((pos[None, :] >= st[:, None]) & (pos[None, :] < en[:, None])).double()
        weights = span / (en - st)[:, None].double()  # an empty span: 0/0 = NaN
    else:
        raise ValueError(f'reduce must be "last" or "mean", got {reduce!r}')

    out: dict = {}
    wanted = set(idx)

    def keep(l: int, h: Tensor) -> None:  # [B, S, D] -> [B, D] on the spot, fp32 at least
        dt = torch.promote_types(h.dtype, torch.float32)
        if reduce == "last":
            out[l] = h[torch.arange(B, device=h.device), last.to(h.device)].to(dt)
        else:
            out[l] = torch.einsum("bs,bsd->bd", weights.to(h.device, dt), h.to(dt))
        if len(out) == len(wanted):  # the layers above are not needed: stop the pass here
            raise _Captured

    hooks = []
    try:
        for l in sorted(set(idx)):
            if l == L:
                hooks.append(_final_norm(model).register_forward_hook(lambda m, a, o, l=l: keep(l, o)))
            else:
                def pre(m, args, kwargs, l=l):
                    keep(l, args[0] if args else kwargs["hidden_states"])
                hooks.append(blocks[l].register_forward_pre_hook(pre, with_kwargs=True))
        try:
            model.base_model(input_ids=input_ids, attention_mask=am, position_ids=position_ids_from_mask(am),
                             use_cache=False)
        except _Captured:
            pass
    finally:
        for h in hooks:
            h.remove()
    return torch.stack([out[l] for l in idx], 1)


__all__ = ["hidden_states"]
