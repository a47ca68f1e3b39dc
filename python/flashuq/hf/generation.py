"""``generate`` with per-token statistics (the greedy answer and optional samples) and teacher-forced
``score`` of (prompt, response) pairs through ``fuq.token_stats_linear``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

from .._checks import check_int
from ..methods.scores import sequence_scores
from ..ops.token_stats import TokenStats
from ..ops.token_stats_linear import token_stats_linear
from ._model import _head_params, position_ids_from_mask
from .attention import AttentionCapture
from .recorder import UncertaintyRecorder, _is_eos, response_mask


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
    #: ``[B, L_layers, H, L + T]`` float32 with ``capture_attention=True``: column ``i`` is ``a_ii``, the
    #: attention of the token ``sequences[:, i]`` to itself (aligned with ``sequences``; left-pad
    #: columns 0; the last column NaN: the final token is never fed back to the model)
    attention_diagonals: Optional[Tensor] = None
    #: ``[B, T]`` per-token BoostedProb of the greedy answer, with ``boostedprob=True``
    boostedprob: Optional[Tensor] = None
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
             capture_attention: bool = False, attention_layers: Optional[Sequence[int]] = None,
             boostedprob: bool = False, **generate_kwargs) -> Generation:
    """Greedy answer with its per-token statistics and sequence scores, plus ``num_samples`` sampled
    answers per prompt with their log-probabilities (for the sample-based methods).

    ``generate_kwargs`` go to ``model.generate`` (``max_new_tokens``, ``eos_token_id``, ...). The
    greedy pass uses ``do_sample=False``; the sampling pass ``do_sample=True``, ``temperature`` and
    ``sample_kwargs`` on top of ``generate_kwargs`` (e.g. ``{"max_new_tokens": 16, "top_p": 0.95}``).
    The samples of a prompt share one prefill of it (its key/value cache repeated), which saves
    ``num_samples - 1`` prompt passes; models whose cache cannot be repeated fall back to
    ``num_return_sequences``. Statistics are of the scores the recorder sees (first user processor,
    see :class:`UncertaintyRecorder`).

    ``capture_attention=True`` records the attention diagonals of the greedy pass with
    :class:`AttentionCapture` (the model runs the ``"fuq_capture_sdpa"`` implementation for that pass,
    outputs unchanged) into :attr:`Generation.attention_diagonals` ``[B, L_layers, H, L + T]``,
    aligned with ``sequences``: the prompt columns come from the prefill, then one column per decoding
    step; the last column is NaN (the final token is never fed back); left-pad columns hold 0. Column
    ``i`` equals the diagonal of a teacher-forced pass over ``sequences`` (with the prompt's mask
    extended by ones and positions from :func:`position_ids_from_mask`, as ``generate`` runs it).
    ``attention_layers`` restricts the capture to those layers (ascending).

    ``boostedprob=True`` also records each greedy token's BoostedProb (:attr:`Generation.boostedprob`)
    from the step's 32 largest log-probabilities, which the recorder's ``token_stats`` pass returns; a
    step they do not decide (its 32nd probability above 0.005) is redone from its scores.
    """
    num_samples = check_int(num_samples, "num_samples", 0)
    for k in ("do_sample", "num_return_sequences", "logits_processor", "return_dict_in_generate"):
        if k in generate_kwargs:
            raise ValueError(f"{k}: set by flashuq.hf.generate itself")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
    rec = UncertaintyRecorder(topk=topk, boostedprob=boostedprob)
    if capture_attention:
        with AttentionCapture(model, diagonals=True, layers=attention_layers) as cap:
            seqs, new, stats, mask = _run(model, input_ids, attention_mask, rec, do_sample=False, **generate_kwargs)
        diag = cap.diagonals
        pad = seqs.shape[1] - diag.shape[-1]
        if pad < 0:
            raise RuntimeError("capture_attention: captured more positions than generate returned")
        diag = torch.cat([diag, diag.new_full((*diag.shape[:-1], pad), float("nan"))], dim=-1)
    else:
        diag = None
        seqs, new, stats, mask = _run(model, input_ids, attention_mask, rec, do_sample=False, **generate_kwargs)
    g = Generation(seqs, new, stats, mask, sequence_scores(stats, mask), attention_diagonals=diag,
                   boostedprob=rec.boostedprob_scores(seqs) if boostedprob else None)
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
