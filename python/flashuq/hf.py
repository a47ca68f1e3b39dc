"""transformers integration: record token statistics inside ``generate``, score (prompt, response)
pairs teacher-forced without materialising logits.

``transformers`` is imported lazily (it is not a dependency of flashuq). ECOSYSTEM.md §1 has the
patterns; METHODS.md §1.1 the orientation of every score (uncertainties: higher = less trustworthy).

- :class:`UncertaintyRecorder` — a ``LogitsProcessor`` that runs ``fuq.token_stats`` on each step's
  scores on their device (no host synchronisation, nothing of size V kept beyond the current
  step) and returns the scores unchanged; or, with :meth:`UncertaintyRecorder.attach`, forward
  hooks that read the raw ``lm_head`` logits before any processor.
- :func:`generate` — the greedy answer (and optional samples) with per-token statistics, the
  response mask, every sequence score that applies, and the samples' log-probabilities.
- :func:`score` — teacher-forced statistics of given responses from the final hidden states and the
  head weight through ``fuq.token_stats_linear``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from torch import Tensor

from .methods.scores import sequence_scores
from .ops.token_stats import TokenStats, token_stats
from .ops.token_stats_linear import token_stats_linear


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

    def __init__(self, *, temperature: float = 1.0, topk: int = 0, renyi: bool = True):
        self.temperature = temperature
        self.topk = topk
        self.renyi = renyi
        self.reset()

    def reset(self) -> "UncertaintyRecorder":
        self._steps: List[TokenStats] = []
        self._chosen_lp: List[Tensor] = []
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
        self._steps.append(token_stats(scores, temperature=self.temperature, topk=self.topk, renyi=self.renyi))
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


@dataclass
class Generation:
    """What :func:`generate` returns. ``B`` prompts, ``T`` new tokens, ``K`` samples per prompt."""

    sequences: Tensor                 #: ``[B, L + T]`` prompt and greedy answer
    new_tokens: Tensor                #: ``[B, T]`` the greedy answer
    stats: TokenStats                 #: ``[B, T]`` per-token statistics of the greedy answer
    mask: Tensor                      #: ``[B, T]`` real answer tokens (through the first EOS)
    scores: Dict[str, Tensor]         #: every sequence score of ``fuq.sequence_scores``, ``[B]`` each
    sample_sequences: Optional[Tensor] = None   #: ``[B, K, L + Ts]``
    sample_stats: Optional[TokenStats] = None   #: ``[B, K, Ts]``
    sample_mask: Optional[Tensor] = None        #: ``[B, K, Ts]``
    sample_log_probs: Optional[Tensor] = None   #: ``[B, K]`` Σ log p over each sample's tokens, EOS included
    sample_lengths: Optional[Tensor] = None     #: ``[B, K]`` tokens per sample, EOS excluded (LM-Polygraph)
    extra: dict = field(default_factory=dict)


def _eos_of(model, kwargs):
    eos = kwargs.get("eos_token_id")
    if eos is None and getattr(model, "generation_config", None) is not None:
        eos = model.generation_config.eos_token_id
    return eos


def _run(model, input_ids, attention_mask, recorder, **kwargs):
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, logits_processor=[recorder],
                         return_dict_in_generate=False, **kwargs)
    seqs = out if isinstance(out, Tensor) else out.sequences
    L = input_ids.shape[-1]
    new = seqs[:, L:]
    stats = recorder.stats(seqs)
    mask = response_mask(new, _eos_of(model, kwargs))
    return seqs, new, stats, mask


def _shared_prompt_cache(model, input_ids: Tensor, attention_mask: Optional[Tensor], k: int):
    """``generate`` keyword arguments that start ``k`` samples per prompt from one prefill of the
    prompts (all but the last token; the key/value cache repeated ``k`` times), instead of the
    ``k`` identical prefills of ``num_return_sequences``; ``{}`` where the model's cache cannot be
    shared that way (then the caller falls back to ``num_return_sequences``)."""
    try:
        from transformers.generation import utils as gen_utils

        name = "cache" if "cache" in getattr(gen_utils, "ALL_CACHE_NAMES", ()) else "past_key_values"
        am = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        if input_ids.shape[1] < 2:
            return {}
        with torch.no_grad():
            out = model(input_ids=input_ids[:, :-1], attention_mask=am[:, :-1],
                        position_ids=position_ids_from_mask(am[:, :-1]), use_cache=True)
        cache = getattr(out, "cache", None)  # transformers >= 5.x; "past_key_values" before
        if cache is None:
            cache = getattr(out, "past_key_values", None)
        if cache is None or not hasattr(cache, "batch_repeat_interleave"):
            return {}
        cache.batch_repeat_interleave(k)
    except (AttributeError, TypeError, ValueError, NotImplementedError, ImportError):
        return {}
    return {name: cache, "input_ids": input_ids.repeat_interleave(k, 0), "attention_mask": am.repeat_interleave(k, 0)}


def generate(model, input_ids: Tensor, attention_mask: Optional[Tensor] = None, *, num_samples: int = 0,
             temperature: float = 1.0, topk: int = 0, sample_kwargs: Optional[dict] = None,
             **generate_kwargs) -> Generation:
    """Greedy answer with its per-token statistics and sequence scores, plus ``num_samples`` sampled
    answers per prompt with their log-probabilities (for the sample-based methods).

    ``generate_kwargs`` go to ``model.generate`` (``max_new_tokens``, ``eos_token_id``, ...). The
    greedy pass uses ``do_sample=False``; the sampling pass ``do_sample=True``, ``temperature`` and
    ``sample_kwargs`` on top of ``generate_kwargs`` (e.g. ``{"max_new_tokens": 16, "top_p": 0.95}``).
    The samples of a prompt share one prefill of it (its key/value cache repeated), which saves
    ``num_samples - 1`` prompt passes; models whose cache cannot be repeated fall back to
    ``num_return_sequences``. Statistics are of the scores the recorder sees (first user processor,
    see :class:`UncertaintyRecorder`).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be an int >= 0, got {num_samples!r}")
    for k in ("do_sample", "num_return_sequences", "logits_processor", "return_dict_in_generate"):
        if k in generate_kwargs:
            raise ValueError(f"{k}: set by flashuq.hf.generate itself")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
    rec = UncertaintyRecorder(topk=topk)
    seqs, new, stats, mask = _run(model, input_ids, attention_mask, rec, do_sample=False, **generate_kwargs)
    g = Generation(seqs, new, stats, mask, sequence_scores(stats, mask))
    if num_samples:
        B = input_ids.shape[0]
        rec = UncertaintyRecorder(topk=topk)
        kw = {**generate_kwargs, **(sample_kwargs or {})}
        for k in ("do_sample", "num_return_sequences", "logits_processor", "return_dict_in_generate"):
            if k in kw:
                raise ValueError(f"sample_kwargs: {k} is set by flashuq.hf.generate itself")
        shared = _shared_prompt_cache(model, input_ids, attention_mask, num_samples)
        if shared:
            ids, am = shared.pop("input_ids"), shared.pop("attention_mask")
            s_seqs, s_new, s_stats, s_mask = _run(model, ids, am, rec, do_sample=True, temperature=temperature,
                                                  **shared, **kw)
        else:
            s_seqs, s_new, s_stats, s_mask = _run(model, input_ids, attention_mask, rec, do_sample=True,
                                                  num_return_sequences=num_samples, temperature=temperature, **kw)
        lp = torch.where(s_mask, s_stats.logprob, 0.0).sum(-1)
        eos = _eos_of(model, kw)
        n_eos = torch.zeros_like(lp) if eos is None else (s_mask & _is_eos(s_new, eos)).sum(-1).to(lp.dtype)
        lengths = s_mask.sum(-1).to(lp.dtype) - n_eos

        def per_prompt(t):
            return None if t is None else t.reshape(B, num_samples, *t.shape[1:])

        g.sample_sequences = per_prompt(s_seqs)
        g.sample_stats = TokenStats(*(per_prompt(f) for f in s_stats))
        g.sample_mask = per_prompt(s_mask)
        g.sample_log_probs = per_prompt(lp)
        g.sample_lengths = per_prompt(lengths)
    return g


@dataclass
class Scored:
    """What :func:`score` returns: statistics of the distribution that predicted each token."""

    stats: TokenStats                 #: ``[B, L − 1]``: position t predicts token t + 1
    mask: Tensor                      #: ``[B, L − 1]``: the predicted token is a response token
    scores: Dict[str, Tensor]         #: ``fuq.sequence_scores(stats, mask)``


def _head_params(model):
    head = model.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise ValueError("model: needs an output projection (get_output_embeddings()) with a weight")
    cfg = getattr(model, "config", None)
    softcap = getattr(cfg, "final_logit_softcapping", None)
    scale = getattr(cfg, "logit_scale", None)
    return head.weight, getattr(head, "bias", None), scale, softcap


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions that skip left padding (as ``generate`` computes them): ``cumsum(mask) − 1``, 0 on pads."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp(min=0)


@torch.no_grad()
def score(model, input_ids: Tensor, attention_mask: Optional[Tensor] = None, response_mask: Optional[Tensor] = None,
          *, temperature: float = 1.0, topk: int = 0, renyi: bool = True,
          block_rows: Optional[int] = None) -> Scored:
    """Teacher-forced statistics of (prompt, response) pairs without materialising the logits.

    Runs the model's body (``model.base_model``) once to get the final hidden states, then
    ``fuq.token_stats_linear`` with the head weight (tied embeddings included), its bias, and the
    config's ``logit_scale`` / ``final_logit_softcapping`` when present. Position ``t`` of the result
    holds the distribution that predicted token ``t + 1`` and its ``logprob``. Left padding is
    handled through position ids from ``attention_mask``, as ``generate`` does.

    Args:
        input_ids: ``[B, L]`` prompt + response tokens.
        attention_mask: ``[B, L]`` (1 = real token); None = all real.
        response_mask: ``[B, L]`` (1 = response token to score); None = every real token after the first.

    Returns:
        :class:`Scored` with ``[B, L − 1]`` statistics and mask, and the sequence scores.
    """
    if input_ids.dim() != 2 or input_ids.shape[1] < 2:
        raise ValueError(f"input_ids must be [B, L] with L >= 2, got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}")
    if response_mask is None:
        response_mask = attention_mask
    if response_mask.shape != input_ids.shape:
        raise ValueError(f"response_mask must have the shape of input_ids {tuple(input_ids.shape)}")
    weight, bias, scale, softcap = _head_params(model)
    body = model.base_model
    hidden = body(input_ids=input_ids, attention_mask=attention_mask,
                  position_ids=position_ids_from_mask(attention_mask)).last_hidden_state
    stats = token_stats_linear(hidden[:, :-1], weight.to(hidden.dtype), input_ids[:, 1:],
                               bias=None if bias is None else bias.to(hidden.dtype), temperature=temperature,
                               topk=topk, renyi=renyi, logit_scale=scale, softcap=softcap, block_rows=block_rows)
    mask = response_mask[:, 1:].bool() & attention_mask[:, 1:].bool()
    return Scored(stats, mask, sequence_scores(stats, mask))


__all__ = ["UncertaintyRecorder", "Generation", "Scored", "generate", "score", "response_mask",
           "position_ids_from_mask"]
