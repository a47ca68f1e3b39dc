"""Memory-lean attention capture: :class:`AttentionCapture` switches a model to the
``"fuq_capture_sdpa"`` attention implementation, which computes the real output with SDPA and records
only what the attention methods need (diagonals for RAUQ / AttentionScore, UQAC's response rows or its
streaming lowest-entropy reduction), never ``output_attentions``' ``[L, H, N, N]`` maps;
:func:`attention_diagonals` is the one-call helper."""

from __future__ import annotations

import numbers
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from .._checks import check_int
from ..ops.uqac import uqac_reduce_attention
from ._model import batch_and_mask, position_ids_from_mask

#: The attention implementation name :class:`AttentionCapture` registers and switches models to.
ATTN_IMPLEMENTATION = "fuq_capture_sdpa"  # no "flash" in it: transformers treats such names as flash-attention kernels


def _qk(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """fp32 ``scale · q kᵀ`` for grouped-query attention without repeating ``k``: q ``[B, H, r, D]``,
    k ``[B, Hkv, n, D]`` (head ``h`` reads key head ``h // (H / Hkv)``, as ``repeat_kv``) -> ``[B, H, r, n]``."""
    B, H, r, D = q.shape
    Hkv = k.shape[1]
    if H % Hkv:
        raise ValueError(f"attention capture: {H} query heads are not a multiple of {Hkv} key/value heads")
    s = torch.matmul(q.float().reshape(B, Hkv, (H // Hkv) * r, D), k.float().transpose(-1, -2))
    return s.view(B, H, r, -1).mul_(scale)


def _apply_mask(s: Tensor, m: Optional[Tensor]) -> Tensor:
    """Add a (row-sliced) SDPA mask to fp32 scores in place: bool = True attends, float = additive."""
    if m is None:
        return s
    if m.dtype == torch.bool:
        return s.masked_fill_(~m, float("-inf"))
    return s.add_(m.float())


def _flashuq_sdpa_forward(module, query, key, value, attention_mask, *args, **kwargs):
    """The ``"fuq_capture_sdpa"`` attention: transformers' own SDPA forward for the output, then the
    :class:`AttentionCapture` attached to ``module`` (if any) records what it was asked for."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
    cap = getattr(module, "_flashuq_capture", None)
    if cap is not None:
        cap._observe(module, query, key, attention_mask, kwargs)
    return out, None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, _flashuq_sdpa_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)  # SDPA's bool mask, True = attend


def _attention_modules(model) -> Dict[int, list]:
    """``layer_idx -> [attention modules]``: the modules that call the attention interface."""
    found: Dict[int, list] = {}
    for m in model.modules():
        idx = getattr(m, "layer_idx", None)
        if isinstance(idx, int) and not isinstance(idx, bool) and "attention" in type(m).__name__.lower() \
                and (hasattr(m, "num_key_value_groups") or hasattr(m, "is_causal")):
            found.setdefault(idx, []).append(m)
    return found


def _response_start_list(response_start, B: int, name: str = "response_start") -> List[int]:
    if isinstance(response_start, Tensor):
        response_start = response_start.reshape(-1).tolist()
    if isinstance(response_start, numbers.Integral) and not isinstance(response_start, bool):
        return [int(response_start)] * B
    rs = [int(r) for r in response_start]
    if len(rs) != B:
        raise ValueError(f"{name}: {len(rs)} entries for a batch of {B}")
    return rs


class AttentionCapture:
    """Capture only what the attention methods need, inside ordinary forwards and ``generate``.

    ``with AttentionCapture(model, ...) as cap:`` switches ``model`` to the ``"fuq_capture_sdpa"``
    attention implementation (registered with transformers' ``AttentionInterface`` and
    ``AttentionMaskInterface``): every layer computes its real output with transformers' SDPA forward
    (so the model's outputs are those of ``"sdpa"``), then, for the captured layers, the probabilities
    the capture asks for, in fp32, from ``q``, ``k`` and the mask exactly as the model passes them
    (bool or additive float; ``None`` = SDPA's implicit causal mask), grouped-query aware (``k`` is
    never repeated). On exit the previous implementation is restored (also on an exception).

    What it records (any combination):

    - ``diagonals=True`` -> :attr:`diagonals` ``[B, L', H, N]`` float32, ``a_ii``: the attention of
      each query position to its own key, for RAUQ and AttentionScore. Each row's log-sum-exp is
      computed over blocks of query rows (at most ``chunk_elems`` fp32 scores at a time), then
      ``a_ii = exp(q_i·k_i·scale + mask_ii − LSE_i)``; the ``[N, N]`` probabilities are never stored.
      Positions accumulate over the forwards of one sequence: a forward without cached tokens starts
      a new sequence, later (cached) forwards append their query positions. In ``generate`` the
      columns are the prompt's (from the prefill) and then one per decoding step (the query of a
      step is the newest token, its own key the newest key), i.e. the columns of ``sequences``
      without the last one. Column ``i`` matches ``attn[..., i, i]`` of an eager teacher-forced pass
      over the same tokens with the same padding mask and positions. Padding is kept in place
      (left-padded batches stay left-padded); a position whose own key is masked (pads) holds 0.
    - ``response_rows=True`` -> :attr:`response_rows`, per sequence ``[L', H, R_b, Ntok_b]``: the UQAC
      input (``flashuq.uqac_reduce_attention``): the attention rows of the ``R_b`` response positions
      over the ``Ntok_b`` non-pad columns (instruction ``I_b = Ntok_b − R_b`` first), stored in
      ``rows_dtype`` (default float32; fp16/bf16 halve the memory).
    - ``uqac_reduced=True`` -> :attr:`uqac_reduced`, per sequence ``[R_b, Ntok_b]`` float32: UQAC
      steps 1–2 streamed over the layers (docs/methods.md#uqac): after each layer,
      ``flashuq.uqac_reduce_attention(..., return_selected=True)`` of the rows kept so far and the
      layer's new rows keeps, per response row, only the ``n_heads`` lowest-entropy ``(layer, head)``
      rows (ties: lower flat index ``l·H + h`` first), so the state is ``[n_heads, R_b, Ntok_b]``
      instead of ``[L·H, R_b, Ntok_b]``. The result equals ``uqac_reduce_attention`` of the full rows.

    Response rows need ``response_start`` (an int for the whole batch or ``[B]``): the first response
    column in the padded ``input_ids``; the response is every non-pad position from there on, the
    non-pad columns come from the ``attention_mask`` the model receives (``None`` = no padding). They
    are captured in the forward whose queries contain the whole response (a teacher-forced pass over
    ``[instruction; response]``, or a cached pass over the response after a prefill).

    Args:
        model: a transformers model whose attention layers use the ``AttentionInterface`` (Llama,
            Qwen2/3, Mistral, Gemma, GPT-2, ...).
        diagonals, response_rows, uqac_reduced: what to record (see above).
        layers: layer indices to capture (default all); results list them ascending (``L'``).
        response_start: see above; can also be set later through the attribute.
        rows_dtype: storage dtype of :attr:`response_rows`.
        n_heads, reduction: the UQAC reduction (defaults as the reference: 16, ``"max"``).
        chunk_elems: the largest fp32 score block computed at a time.

    Static caches (``cache_implementation="static"``) are supported for the diagonals; sliding-window
    caches whose keys were trimmed map each query to the last keys (lower-right alignment).
    """

    def __init__(self, model, *, diagonals: bool = True, response_rows: bool = False, uqac_reduced: bool = False,
                 layers: Optional[Sequence[int]] = None, response_start=None, rows_dtype: Optional[torch.dtype] = None,
                 n_heads: int = 16, reduction: str = "max", chunk_elems: int = 1 << 24):
        if not (diagonals or response_rows or uqac_reduced):
            raise ValueError("AttentionCapture: nothing to capture (diagonals, response_rows, uqac_reduced all False)")
        if reduction not in ("max", "mean"):
            raise ValueError(f"reduction must be 'max' or 'mean', got {reduction!r}")
        n_heads = check_int(n_heads, "n_heads", 1)
        chunk_elems = check_int(chunk_elems, "chunk_elems", 1)
        self.model = model
        self.want_diagonals = bool(diagonals)
        self.want_rows = bool(response_rows)
        self.want_reduced = bool(uqac_reduced)
        self.response_start = response_start
        self.rows_dtype = torch.float32 if rows_dtype is None else rows_dtype
        self.n_heads = n_heads
        self.reduction = reduction
        self.chunk_elems = chunk_elems
        mods = _attention_modules(model)
        if not mods:
            raise ValueError("model: no attention modules with a layer_idx found")
        if layers is None:
            layers = sorted(mods)
        else:
            layers = sorted({int(i) for i in layers})
            missing = [i for i in layers if i not in mods]
            if missing:
                raise ValueError(f"layers: {missing} are not attention layers of the model (it has {sorted(mods)})")
        self.layers: List[int] = layers
        self._slot = {l: i for i, l in enumerate(layers)}
        self._modules = [m for l in layers for m in mods[l]]
        self._hooks: list = []
        self._prev_impl = None
        self._active = False
        self.reset()

    # -- lifecycle -------------------------------------------------------------------------------
    def reset(self) -> "AttentionCapture":
        """Drop everything captured (a forward without cached tokens does this by itself)."""
        self._diag: List[List[Tensor]] = [[] for _ in self.layers]
        self._rows: Optional[List[List[Optional[Tensor]]]] = None
        self._red: Optional[list] = None
        self._n_instr: Optional[List[int]] = None
        self._rows_done = [False] * len(self.layers)
        self._mask2d: Optional[Tensor] = None
        self._offset: Optional[int] = None
        return self

    def attach(self) -> "AttentionCapture":
        """Switch the model to ``"fuq_capture_sdpa"`` and start recording (``__enter__`` calls this)."""
        if self._active:
            raise RuntimeError("AttentionCapture: already attached")
        for m in self._modules:
            if getattr(m, "_flashuq_capture", None) is not None:
                raise RuntimeError("AttentionCapture: another capture is attached to this model")
        _register()
        cfg = self.model.config
        self._prev_impl = getattr(cfg, "_attn_implementation", None)
        self.model.set_attn_implementation(ATTN_IMPLEMENTATION)
        if getattr(cfg, "_attn_implementation", None) != ATTN_IMPLEMENTATION:
            self.model.set_attn_implementation(self._prev_impl)
            raise ValueError(f"model: could not switch to the {ATTN_IMPLEMENTATION!r} attention implementation "
                             "(it does not use transformers' AttentionInterface)")
        for m in self._modules:
            m._flashuq_capture = self
        body = getattr(self.model, "base_model", self.model)
        self._hooks = [body.register_forward_pre_hook(self._pre_forward, with_kwargs=True)]
        self._active = True
        self.reset()
        return self

    def detach(self) -> None:
        """Stop recording and restore the previous attention implementation (``__exit__`` calls this)."""
        if not self._active:
            return
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for m in self._modules:
            if getattr(m, "_flashuq_capture", None) is self:
                del m._flashuq_capture
        if self._prev_impl is not None:
            self.model.set_attn_implementation(self._prev_impl)
        self._active = False

    def __enter__(self) -> "AttentionCapture":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    def _pre_forward(self, module, args, kwargs):
        am = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        offset = 0
        if cache is not None and hasattr(cache, "get_seq_length"):
            offset = int(cache.get_seq_length())
        if offset == 0:  # a new sequence
            self.reset()
        self._offset = offset
        self._mask2d = am if isinstance(am, Tensor) and am.dim() == 2 else None

    # -- results ---------------------------------------------------------------------------------
    @property
    def diagonals(self) -> Tensor:
        """``[B, L', H, N]`` float32 captured diagonals (see the class docstring for the layout)."""
        if not self.want_diagonals:
            raise RuntimeError("AttentionCapture: diagonals were not requested")
        if not self._diag or not self._diag[0]:
            raise RuntimeError("AttentionCapture: nothing captured (did the model run inside the capture?)")
        return torch.stack([torch.cat(d, dim=-1) for d in self._diag], dim=1)

    @property
    def n_instr(self) -> List[int]:
        """``I_b`` per sequence: the non-pad columns before the response (set once rows were captured)."""
        self._check_rows_captured()
        return list(self._n_instr)

    @property
    def response_rows(self) -> List[Tensor]:
        """Per sequence ``[L', H, R_b, Ntok_b]`` in ``rows_dtype`` (see the class docstring)."""
        if not self.want_rows:
            raise RuntimeError("AttentionCapture: response_rows were not requested")
        self._check_rows_captured()
        return [torch.stack(r, dim=0) for r in self._rows]

    @property
    def uqac_reduced(self) -> List[Tensor]:
        """Per sequence ``[R_b, Ntok_b]`` float32: the streamed UQAC reduction (see the class docstring)."""
        if not self.want_reduced:
            raise RuntimeError("AttentionCapture: uqac_reduced was not requested")
        self._check_rows_captured()
        out = []
        for kept, reduced in self._red:
            if kept.shape[0] < self.n_heads:
                raise ValueError(f"n_heads={self.n_heads} exceeds the {kept.shape[0]} captured (layer, head) rows")
            out.append(reduced)
        return out

    def _check_rows_captured(self) -> None:
        if not (self.want_rows or self.want_reduced):
            raise RuntimeError("AttentionCapture: response rows were not requested")
        if self._n_instr is None or not all(self._rows_done):
            raise RuntimeError("AttentionCapture: no forward covered the response rows of every captured layer")

    # -- the per-layer work ----------------------------------------------------------------------
    def _observe(self, module, query: Tensor, key: Tensor, mask: Optional[Tensor], kwargs: dict) -> None:
        slot = self._slot.get(module.layer_idx)
        if slot is None:
            return
        with torch.no_grad():
            B, H, Q, D = query.shape
            kv = key.shape[2]
            scale = kwargs.get("scaling")
            scale = D ** -0.5 if scale is None else float(scale)
            is_causal = kwargs.get("is_causal")
            is_causal = getattr(module, "is_causal", True) if is_causal is None else bool(is_causal)
            if kwargs.get("softcap") is not None:
                raise NotImplementedError("attention capture: soft-capped attention logits are not supported")
            bias = kwargs.get("position_bias")
            implicit_causal = mask is None and is_causal and Q > 1  # SDPA's is_causal: upper-left aligned
            # Key index of each query's own token: the position after the cached ones where the key buffer
            # holds every position (dynamic / static caches), else the last keys (trimmed sliding windows).
            off = self._offset
            if implicit_causal:
                base = 0
            elif off is not None and off + Q <= kv:
                base = off
            else:
                base = kv - Q
            if mask is not None and mask.dim() != 4:
                raise ValueError(f"attention capture: expected a 4-D attention mask, got shape {tuple(mask.shape)}")
            if self.want_diagonals:
                self._diag[slot].append(self._diagonal(query, key, mask, bias, scale, base, implicit_causal))
            if self.want_rows or self.want_reduced:
                self._response(slot, query, key, mask, bias, scale, base, implicit_causal)

    def _diagonal(self, q, k, mask, bias, scale, base, implicit_causal) -> Tensor:
        B, H, Q, _ = q.shape
        kv = k.shape[2]
        out = torch.empty((B, H, Q), dtype=torch.float32, device=q.device)
        step = max(1, self.chunk_elems // max(1, B * H * kv))
        keys = torch.arange(kv, device=q.device)
        for i0 in range(0, Q, step):
            i1 = min(Q, i0 + step)
            own = torch.arange(i0, i1, device=q.device) + base  # [r] key index of each query's own token
            s = _qk(q[:, :, i0:i1], k, scale)
            if bias is not None:
                s.add_(bias[..., i0:i1, :].float())
            if implicit_causal:
                _apply_mask(s, keys[None, :] <= own[:, None])
            else:
                _apply_mask(s, None if mask is None else mask[..., i0:i1, :])
            lse = torch.logsumexp(s, dim=-1)
            s_own = s.gather(-1, own.view(1, 1, -1, 1).expand(B, H, -1, 1)).squeeze(-1)
            a = torch.exp(s_own - lse)
            out[:, :, i0:i1] = torch.where(torch.isneginf(lse) | torch.isneginf(s_own), 0.0, a)
        return out

    def _response(self, slot, q, k, mask, bias, scale, base, implicit_causal) -> None:
        B, _, Q, _ = q.shape
        kv = k.shape[2]
        if self.response_start is None:
            raise ValueError("AttentionCapture: response_rows / uqac_reduced need response_start")
        rs = _response_start_list(self.response_start, B)
        m2 = self._mask2d
        M = base + Q if m2 is None else m2.shape[1]  # sequence length (cached + new)
        if m2 is not None and m2.shape[0] != B:
            raise ValueError(f"attention_mask: batch {m2.shape[0]} differs from the attention's batch {B}")
        if M > kv:
            raise NotImplementedError("attention capture: response rows need a key buffer holding every position "
                                      "(not a trimmed sliding-window cache)")
        if self._rows is None:
            self._rows = [[None] * len(self.layers) for _ in range(B)]
            self._red = [None] * B
            self._n_instr = [0] * B
        pos_all = torch.arange(M, device=q.device)
        covered = []
        for b in range(B):
            real = torch.ones(M, dtype=torch.bool, device=q.device) if m2 is None else m2[b].to(q.device).bool()
            cols = pos_all[real]
            pos = cols[cols >= rs[b]]
            qi = pos - base
            inside = (qi >= 0) & (qi < Q)
            covered.append((b, cols, pos, qi, int(inside.sum())))
        n_in = [c[-1] for c in covered]
        if all(n == 0 for n in n_in):
            return  # this forward holds no response query (e.g. the prefill of the instruction)
        for b, cols, pos, qi, n in covered:
            if n != pos.numel():
                raise ValueError("AttentionCapture: the response rows must be computed in one forward (this one "
                                 f"holds {n} of sequence {b}'s {pos.numel()} response positions)")
        for b, cols, pos, qi, _ in covered:
            self._n_instr[b] = cols.numel() - pos.numel()
            p = self._rows_probs(q, k, mask, bias, scale, b, cols, qi, pos, implicit_causal)  # [H, R, Ntok] fp32
            if self.want_rows:
                self._rows[b][slot] = p.to(self.rows_dtype)
            if self.want_reduced:
                self._reduce_step(b, p)
        self._rows_done[slot] = True

    def _rows_probs(self, q, k, mask, bias, scale, b, cols, qi, pos, implicit_causal) -> Tensor:
        H = q.shape[1]
        R, Ntok = qi.numel(), cols.numel()
        kb = k[b:b + 1, :, cols]  # [1, Hkv, Ntok, D]
        out = torch.empty((H, R, Ntok), dtype=torch.float32, device=q.device)
        step = max(1, self.chunk_elems // max(1, H * Ntok))
        for r0 in range(0, R, step):
            r1 = min(R, r0 + step)
            rows = qi[r0:r1]
            s = _qk(q[b:b + 1][:, :, rows], kb, scale)  # [1, H, r, Ntok]
            if bias is not None:
                bb = bias[b if bias.shape[0] > 1 else 0][None]
                s.add_(bb[:, :, rows][..., cols].float())
            if implicit_causal:
                _apply_mask(s, cols[None, :] <= pos[r0:r1, None])
            elif mask is not None:
                mb = mask[b if mask.shape[0] > 1 else 0][None]
                _apply_mask(s, mb[:, :, rows][..., cols])
            p = torch.softmax(s, dim=-1)[0]
            out[:, r0:r1] = torch.nan_to_num(p, nan=0.0)  # a fully masked row (none here for real tokens) -> 0
        return out

    def _reduce_step(self, b: int, p: Tensor) -> None:
        """Merge one layer's ``H`` rows ``p [H, R, Ntok]`` into sequence ``b``'s kept rows: the op selects
        the ``n_heads`` lowest-entropy rows among the kept and the new ones, whose flat order (kept rows by
        ascending ``l·H + h``, then this layer's heads) is that of ``l·H + h``, so ties resolve as over
        the full rows; its reduction is the result so far."""
        R, Ntok = p.shape[1], p.shape[2]
        rows = p if self._red[b] is None else torch.cat([self._red[b][0], p])
        k = min(self.n_heads, rows.shape[0])
        reduced, selected = uqac_reduce_attention(rows[None], n_heads=k, reduction=self.reduction,
                                                  return_selected=True)
        keep = selected.sort(dim=-1).values.T  # [k, R]: the kept rows of each query, in flat order
        self._red[b] = (rows.gather(0, keep.unsqueeze(-1).expand(k, R, Ntok)), reduced)


@torch.no_grad()
def attention_diagonals(model, input_ids: Tensor, attention_mask: Optional[Tensor] = None, *,
                        layers: Optional[Sequence[int]] = None) -> Tensor:
    """Teacher-forced attention diagonals ``[B, L', H, N]`` float32 (``diag[..., i] = attn[..., i, i]``,
    the input RAUQ and AttentionScore accept instead of full maps), from one pass of the model's body
    under :class:`AttentionCapture` (no logits computed). Padding on either side: positions come from
    ``attention_mask`` (:func:`position_ids_from_mask`, as ``generate``); pad positions hold 0."""
    input_ids, attention_mask = batch_and_mask(input_ids, attention_mask)
    with AttentionCapture(model, diagonals=True, layers=layers) as cap:
        model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids_from_mask(attention_mask), use_cache=False)
    return cap.diagonals


@torch.no_grad()
def last_row_attention(model, input_ids: Tensor, attention_mask: Optional[Tensor] = None, *, span_start,
                       span_len, layers: Optional[Sequence[int]] = None):
    """The attention of each sequence's **last real position** to a span of its tokens, ``(rows [B, L', H, T],
    mask [B, T])`` float32 / bool, from one teacher-forced pass of the model's body under
    :class:`AttentionCapture` (one query row per sequence; no ``[N, N]`` map). CSL's input
    (docs/methods.md#csl): pass ``[verification prompt; answer; suffix]`` with ``span_start [B]`` the
    answer's first column in the padded ``input_ids`` and ``span_len [B]`` its length (T = the longest);
    ``mask`` marks each row's real span entries. Padding on either side."""
    input_ids, am = batch_and_mask(input_ids, attention_mask)
    B, N = input_ids.shape
    start = _response_start_list(span_start, B, "span_start")
    length = _response_start_list(span_len, B, "span_len")
    real = am.bool().cpu()
    last = [int(torch.nonzero(real[b]).max()) if bool(real[b].any()) else -1 for b in range(B)]
    for b in range(B):
        if last[b] < 0:
            raise ValueError(f"attention_mask: sequence {b} has no real token")
        if length[b] < 1 or start[b] < 0 or start[b] + length[b] > last[b] + 1:
            raise ValueError(f"span_start/span_len: sequence {b}'s span [{start[b]}, {start[b] + length[b]}) must "
                             f"hold at least one token at or before its last real position {last[b]}")
        if not bool(real[b, start[b]:start[b] + length[b]].all()):
            raise ValueError(f"span_start/span_len: sequence {b}'s span holds padding")
    with AttentionCapture(model, diagonals=False, response_rows=True, layers=layers, response_start=last) as cap:
        model.base_model(input_ids=input_ids, attention_mask=am, position_ids=position_ids_from_mask(am),
                         use_cache=False)
    T = max(length)
    rows = None
    for b, r in enumerate(cap.response_rows):                      # [L', H, 1, Ntok_b] over the real columns
        off = int(real[b, :start[b]].sum())
        if rows is None:
            rows = torch.zeros(B, r.shape[0], r.shape[1], T, dtype=torch.float32, device=r.device)
        rows[b, :, :, :length[b]] = r[:, :, 0, off:off + length[b]].float()
    mask = torch.arange(T)[None, :] < torch.tensor(length)[:, None]
    return rows, mask.to(rows.device)

