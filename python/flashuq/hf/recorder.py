"""The ``generate`` recorder: :class:`UncertaintyRecorder` runs ``fuq.token_stats`` on each decoding
step's scores (a ``LogitsProcessor``) or on the raw ``lm_head`` logits (forward hooks), and
:func:`response_mask` marks the tokens up to the first EOS."""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from ..methods.boostedprob import FAST_TOPK, boosted_from_logits, boosted_from_top
from ..ops.token_stats import TokenStats, token_stats


def _logits_processor_base():
    try:
        from transformers import LogitsProcessor
    except ImportError:  # flashuq works without transformers; the recorder then is a plain callable
        return object
    return LogitsProcessor


def _stack(steps: List[TokenStats], logprob: Tensor) -> TokenStats:
    """Per-step TokenStats ``[B]`` -> ``[B, T]``, with the chosen tokens' log-probabilities."""
    fields = []
    for i, name in enumerate(TokenStats._fields):
        if name == "logprob":
            fields.append(logprob)
        elif steps[0][i] is None:
            fields.append(None)
        else:
            fields.append(torch.stack([s[i] for s in steps], dim=1))
    return TokenStats(*fields)


class UncertaintyRecorder(_logits_processor_base()):
    """Record :class:`~flashuq.TokenStats` at every decoding step of ``model.generate``.

    As a logits processor (``model.generate(..., logits_processor=[rec])``) it sees the scores at its
    place in the processor list: put it first to record the model's own distribution (after
    generate's built-in processors such as repetition penalty, which run before user ones), and the
    statistics are of ``softmax(scores / temperature)``. It returns the scores unchanged. Each step
    costs one ``token_stats`` launch on the scores' device and keeps one reference to the current
    step's scores (to read the chosen token's logit once the next step reveals it); nothing is
    synchronised with the host.

    ``boostedprob=True`` also records each emitted token's BoostedProb (:meth:`boostedprob_scores`): the
    step's 32 largest log-probabilities come from the same pass, and the steps they do not decide are
    redone from the scores (see :func:`flashuq.methods.boostedprob_token_scores`).

    With :meth:`attach` it records from forward hooks on the model instead: the raw ``lm_head``
    logits, before any processor (temperature, top-k/top-p, penalties).

    After generation, :meth:`stats` gives ``[B, T]`` statistics (rows = the batch generate ran, i.e.
    ``batch × num_return_sequences``); ``logprob`` is the log-probability of the token that was
    actually emitted (greedy or sampled). Rows that finished early keep recording (their tokens are
    padding): mask them with :func:`response_mask`.

    Beam search passes **log-probabilities** (the log-softmax of the logits) to the processors, so
    ``lse`` is 0 and the other statistics are those of the model's distribution; but it reorders
    rows between steps, so a row holds a beam slot, not a final hypothesis, and ``logprob`` of the
    last step is NaN (generate returns fewer rows than it ran). Score the returned hypotheses with
    :func:`score` instead.
    """

    def __init__(self, *, temperature: float = 1.0, topk: int = 0, renyi: bool = True, boostedprob: bool = False):
        self.temperature = temperature
        self.topk = topk
        self.renyi = renyi
        self.boostedprob = boostedprob
        self.reset()

    def reset(self) -> "UncertaintyRecorder":
        self._steps: List[TokenStats] = []
        self._chosen_lp: List[Tensor] = []
        self._boosted: List[Tensor] = []
        self._top: Optional[tuple] = None
        self._last: Optional[Tensor] = None
        self._hooks: list = []
        self._hook_prev_token: Optional[Tensor] = None
        return self

    # -- one step ------------------------------------------------------------------------------
    def _record(self, scores: Tensor, prev_token: Optional[Tensor]) -> None:
        if self._last is not None:
            if prev_token is None:
                raise RuntimeError("UncertaintyRecorder: the previous step's token is unknown")
            self._chosen_lp.append(self._chosen_logprob(prev_token))
            if self.boostedprob:
                self._boosted.append(self._chosen_boostedprob(prev_token, self._chosen_lp[-1]))
        if self.boostedprob:  # the step's 32 largest log-probabilities come from the same pass
            k = min(max(self.topk, FAST_TOPK), scores.shape[-1])
            st = token_stats(scores, temperature=self.temperature, topk=k, renyi=self.renyi)
            self._top = (st.topk_logprobs[..., :FAST_TOPK], st.topk_ids[..., :FAST_TOPK])
            st = st._replace(topk_logprobs=st.topk_logprobs[..., :self.topk], topk_ids=st.topk_ids[..., :self.topk])
        else:
            st = token_stats(scores, temperature=self.temperature, topk=self.topk, renyi=self.renyi)
        self._steps.append(st)
        self._last = scores

    def _chosen_logprob(self, token: Tensor) -> Tensor:
        """log p(token) for the kept step: ``(z_y − z_max)/T + log p_max``, the max subtracted first."""
        s = self._steps[-1]
        z = self._last
        if token.shape[0] != z.shape[0]:  # beam search returns fewer rows than it ran (beam slots)
            return torch.full_like(s.max_logprob, float("nan"))
        idx = torch.stack([token.to(z.device, torch.long), s.argmax.clamp(min=0)], dim=-1)
        zz = z.gather(-1, idx).to(s.max_logprob.dtype)
        return (zz[..., 0] - zz[..., 1]) / self.temperature + s.max_logprob

    def _chosen_boostedprob(self, token: Tensor, logprob: Tensor) -> Tensor:
        """BoostedProb of the emitted token at the kept step (of ``softmax(scores / temperature)``), from the
        step's top log-probabilities; the steps they do not decide are redone from the scores: on the CPU
        only those, on a GPU every row (a ``topk`` of about 200 entries, no host synchronisation)."""
        z = self._last
        if token.shape[0] != z.shape[0]:
            return torch.full((z.shape[0],), float("nan"), device=z.device)
        tok = token.to(z.device, torch.long)
        out, exact = boosted_from_top(self._top[0], self._top[1], tok, logprob, z.shape[-1])
        if z.device.type != "cpu":
            zt = z.to(out.dtype) / self.temperature
            return torch.where(exact, out, boosted_from_logits(zt, tok, 0.3, 0.005, "sum_dominant_mass", 0.01))
        if not bool(exact.all()):
            redo = ~exact
            out = out.clone()
            zt = z[redo].to(out.dtype) / self.temperature
            out[redo] = boosted_from_logits(zt, tok[redo], 0.3, 0.005, "sum_dominant_mass", 0.01)
        return out

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        self._record(scores, None if input_ids is None else input_ids[:, -1])
        return scores

    # -- hook mode -------------------------------------------------------------------------------
    def attach(self, model) -> "UncertaintyRecorder":
        """Record from forward hooks: the last position of ``model.get_output_embeddings()``'s output
        (raw logits), with the emitted token read from the model's next ``input_ids``. Call
        :meth:`detach` (or use ``with rec.attach(model): ...``) afterwards."""
        head = model.get_output_embeddings()
        if head is None:
            raise ValueError("model: has no output embeddings (lm_head) to hook")

        def pre_hook(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            self._hook_prev_token = None if ids is None else ids[:, -1]

        def head_hook(module, args, out):
            self._record(out[:, -1, :].detach(), self._hook_prev_token)

        self._hooks = [model.register_forward_pre_hook(pre_hook, with_kwargs=True),
                       head.register_forward_hook(head_hook)]
        return self

    def detach(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()

    # -- results ---------------------------------------------------------------------------------
    def stats(self, sequences: Tensor) -> TokenStats:
        """``[B, T]`` statistics of the ``T`` recorded steps; ``sequences`` is generate's output (its
        last ``T`` columns are the emitted tokens)."""
        if not self._steps:
            raise RuntimeError("UncertaintyRecorder: nothing recorded (was it passed to generate?)")
        T = len(self._steps)
        if sequences.shape[-1] < T:
            raise ValueError(f"sequences: holds {sequences.shape[-1]} tokens, fewer than the {T} recorded steps")
        lps = self._chosen_lp + [self._chosen_logprob(sequences[:, -1])]
        return _stack(self._steps, torch.stack(lps, dim=1))

    def boostedprob_scores(self, sequences: Tensor) -> Tensor:
        """``[B, T]`` per-token BoostedProb of the emitted tokens (:func:`flashuq.methods.boostedprob_token_scores`
        with its defaults), for a recorder made with ``boostedprob=True``; ``sequences`` as in :meth:`stats`."""
        if not self.boostedprob:
            raise RuntimeError("UncertaintyRecorder: made without boostedprob=True")
        if not self._steps:
            raise RuntimeError("UncertaintyRecorder: nothing recorded (was it passed to generate?)")
        if sequences.shape[-1] < len(self._steps):
            raise ValueError(f"sequences: holds {sequences.shape[-1]} tokens, fewer than the {len(self._steps)} "
                             "recorded steps")
        last = self._chosen_boostedprob(sequences[:, -1], self._chosen_logprob(sequences[:, -1]))
        return torch.stack(self._boosted + [last], dim=1)


def _is_eos(tokens: Tensor, eos_token_id) -> Tensor:
    ids = eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]
    return torch.isin(tokens, torch.as_tensor(ids, device=tokens.device))


def response_mask(new_tokens: Tensor, eos_token_id=None) -> Tensor:
    """``[B, T]`` bool: the generated tokens up to and including each row's first EOS (the rest is
    padding that generate appended after the row finished)."""
    if eos_token_id is None:
        return torch.ones_like(new_tokens, dtype=torch.bool)
    is_eos = _is_eos(new_tokens, eos_token_id)
    before = torch.cumsum(is_eos.int(), dim=-1) - is_eos.int()  # EOS seen strictly before t
    return before == 0
