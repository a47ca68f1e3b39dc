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
- :class:`AttentionCapture` — memory-lean attention capture (ECOSYSTEM.md §1.3): a custom attention
  implementation (``"fuq_capture_sdpa"``) that computes the real output with SDPA and records only what
  the attention methods need (diagonals ``a_ii`` for RAUQ / AttentionScore, the UQAC response rows,
  or UQAC's streaming lowest-entropy reduction), so ``output_attentions``' ``[L, H, N, N]`` maps are
  never built. :func:`attention_diagonals` and :func:`uqac_inputs` are one-call helpers;
  ``generate(..., capture_attention=True)`` records the diagonals during generation.
"""

from __future__ import annotations

import numbers
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

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
    #: ``[B, L_layers, H, L + T]`` float32 with ``capture_attention=True``: column ``i`` is ``a_ii``, the
    #: attention of the token ``sequences[:, i]`` to itself (aligned with ``sequences``; left-pad
    #: columns 0; the last column NaN: the final token is never fed back to the model)
    attention_diagonals: Optional[Tensor] = None
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

    ``capture_attention=True`` records the attention diagonals of the greedy pass with
    :class:`AttentionCapture` (the model runs the ``"fuq_capture_sdpa"`` implementation for that pass,
    outputs unchanged) into :attr:`Generation.attention_diagonals` ``[B, L_layers, H, L + T]``,
    aligned with ``sequences``: the prompt columns come from the prefill, then one column per decoding
    step; the last column is NaN (the final token is never fed back); left-pad columns hold 0. Column
    ``i`` equals the diagonal of a teacher-forced pass over ``sequences`` (with the prompt's mask
    extended by ones and positions from :func:`position_ids_from_mask`, as ``generate`` runs it).
    ``attention_layers`` restricts the capture to those layers (ascending).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"num_samples must be an int >= 0, got {num_samples!r}")
    for k in ("do_sample", "num_return_sequences", "logits_processor", "return_dict_in_generate"):
        if k in generate_kwargs:
            raise ValueError(f"{k}: set by flashuq.hf.generate itself")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
    rec = UncertaintyRecorder(topk=topk)
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
    g = Generation(seqs, new, stats, mask, sequence_scores(stats, mask), attention_diagonals=diag)
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


# ------------------------------------------------------------------------------------------------
# Attention capture (METHODS.md §6, ECOSYSTEM.md §1.3)
# ------------------------------------------------------------------------------------------------

#: The attention implementation name :class:`AttentionCapture` registers and switches models to.
ATTN_IMPLEMENTATION = "fuq_capture_sdpa"  # no "flash" in it: transformers treats such names as flash-attention kernels

#: UQAC's recency calibration (METHODS.md §6.1 step 1): factor ``c`` multiplies the key at absolute
#: column ``I + r − 10 + c`` of response row ``r`` (the reversed ``CALIBRATION_RATIO`` of the UQAC
#: repository, full precision); the immediately preceding key gets 0.16644488.
UQAC_CALIBRATION = (0.93925344, 0.87378443, 0.81274293, 0.73914525, 0.67549127,
                    0.59304059, 0.46061748, 0.32959151, 0.20938152, 0.16644488)

#: UQAC's instruction marker: every instruction position counts as a stop token.
UQAC_INSTR_TOKEN = "<|instr|>"

#: UQAC's stop set (``src/utils/macro.py``: ``STOP_WORDS ∪ STOP_CHARACTERS ∪ {INSTR_TOKEN}``): the
#: empty string (so whitespace-only tokens count), 174 English stop words (contractions with the
#: typographic apostrophe ’, as in the repository), and 24 punctuation characters. A token is a stop
#: token when its decoded text, whitespace removed and lower-cased, is in the set.
UQAC_STOP_WORDS = frozenset(
    """a about above after again against all am an and any are aren’t as at be because been before being below
between both but by cannot can’t could couldn’t did didn’t do does doesn’t doing don’t down during each few
for from further had hadn’t has hasn’t have haven’t having he her here here’s hers herself he’d he’ll he’s him
himself his how how’s i if in into is isn’t it its itself it’s i’d i’ll i’m i’ve let’s me more most mustn’t my
myself no nor not of off on once only or other ought our ours ourselves out over own same shan’t she she’d
she’ll she’s should shouldn’t so some such than that that’s the their theirs them themselves then there
there’s these they they’d they’ll they’re they’ve this those through to too under until up very was wasn’t we
were weren’t we’d we’ll we’re we’ve what what’s when when’s where where’s which while who whom who’s why why’s
with won’t would wouldn’t you your yours yourself yourselves you’d you’ll you’re you’ve""".split()
) | frozenset("!\"'(),.:;?@[\\]_`{}~‘’“”…") | frozenset({"", UQAC_INSTR_TOKEN})


def uqac_is_stop(response_tokens, n_instr: int, *, tokenizer=None, stop_words=None) -> Tensor:
    """UQAC's ``is_stop`` ``[n_instr + R]`` bool (METHODS.md §6.1 inputs): every instruction position
    True; response token ``t`` True when its text, all whitespace removed and lower-cased, is in
    ``stop_words`` (default :data:`UQAC_STOP_WORDS`).

    ``response_tokens``: the ``R`` response token strings, or their ids with ``tokenizer`` (each id
    decoded on its own, ``tokenizer.decode(id)``, as the reference's ``ids_to_tks`` does).
    """
    if isinstance(n_instr, bool) or int(n_instr) != n_instr or n_instr < 0:
        raise ValueError(f"n_instr must be an int >= 0, got {n_instr!r}")
    words = UQAC_STOP_WORDS if stop_words is None else frozenset(stop_words)
    if isinstance(response_tokens, Tensor):
        response_tokens = response_tokens.reshape(-1).tolist()
    toks = list(response_tokens)
    if toks and not isinstance(toks[0], str):
        if tokenizer is None:
            raise ValueError("response_tokens: token ids need a tokenizer to decode them")
        toks = [tokenizer.decode(int(t)) for t in toks]
    flags = [True] * int(n_instr) + [re.sub(r"\s+", "", t).lower() in words for t in toks]
    return torch.tensor(flags, dtype=torch.bool)


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


def _response_start_list(response_start, B: int) -> List[int]:
    if isinstance(response_start, Tensor):
        response_start = response_start.reshape(-1).tolist()
    if isinstance(response_start, numbers.Integral) and not isinstance(response_start, bool):
        return [int(response_start)] * B
    rs = [int(r) for r in response_start]
    if len(rs) != B:
        raise ValueError(f"response_start: {len(rs)} entries for a batch of {B}")
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
      steps 1–2 streamed over the layers (METHODS.md §6.1): each layer's rows are preprocessed (own
      column, column 0 and the 10 calibration factors), renormalised (``/(sum + 1e-12)``) and their
      entropies taken; per response row only the ``n_heads`` lowest-entropy ``(layer, head)`` rows so
      far are kept (ties: lower flat index ``l·H + h`` first), so the state is
      ``[n_heads, R_b, Ntok_b]`` instead of ``[L·H, R_b, Ntok_b]``. The result is the ``reduction``
      (``"max"`` or ``"mean"``) over the kept rows, i.e. ``uqac_reduce_attention`` of the full rows.

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
        if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1:
            raise ValueError(f"n_heads must be an int >= 1, got {n_heads!r}")
        if isinstance(chunk_elems, bool) or not isinstance(chunk_elems, int) or chunk_elems < 1:
            raise ValueError(f"chunk_elems must be an int >= 1, got {chunk_elems!r}")
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
        for ent, _, rows in self._red:
            if ent.shape[0] < self.n_heads:
                raise ValueError(f"n_heads={self.n_heads} exceeds the {ent.shape[0]} captured (layer, head) rows")
            out.append(rows.amax(dim=0) if self.reduction == "max" else rows.mean(dim=0))
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
                self._response(slot, module.layer_idx, query, key, mask, bias, scale, base, implicit_causal)

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

    def _response(self, slot, layer, q, k, mask, bias, scale, base, implicit_causal) -> None:
        B, H, Q, _ = q.shape
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
            R, Ntok = pos.numel(), cols.numel()
            I = Ntok - R
            self._n_instr[b] = I
            p = self._rows_probs(q, k, mask, bias, scale, b, cols, qi, pos, implicit_causal)  # [H, R, Ntok] fp32
            if self.want_rows:
                self._rows[b][slot] = p.to(self.rows_dtype)
            if self.want_reduced:
                self._reduce_step(b, layer, H, p, I)
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

    def _reduce_step(self, b: int, layer: int, H: int, p: Tensor, I: int) -> None:
        """Merge one layer's ``H`` preprocessed, renormalised rows into sequence ``b``'s lowest-entropy state."""
        R, Ntok = p.shape[1], p.shape[2]
        A = p.clone()
        r = torch.arange(R, device=A.device)
        A[:, r, I + r] = 0.0  # each response token's own column
        A[:, :, 0] = 0.0  # the attention sink
        for c, f in enumerate(UQAC_CALIBRATION):
            col = I + r - 10 + c
            ok = col >= 0
            A[:, r[ok], col[ok]] *= f
        A.div_(A.sum(dim=-1, keepdim=True) + 1e-12)
        ent = -(A * torch.log(A + 1e-12)).sum(dim=-1)  # [H, R]
        sidx = (layer * H + torch.arange(H, device=A.device)).view(H, 1).expand(H, R)
        if self._red[b] is not None:
            e0, s0, a0 = self._red[b]
            ent, sidx, A = torch.cat([e0, ent]), torch.cat([s0, sidx]), torch.cat([a0, A])
        # order by (entropy, flat index): stable sort by index, then stable sort by entropy
        o = torch.sort(sidx, dim=0, stable=True).indices
        ent, sidx = ent.gather(0, o), sidx.gather(0, o)
        o2 = torch.sort(ent, dim=0, stable=True).indices[: self.n_heads]
        keep = o.gather(0, o2)
        self._red[b] = (ent.gather(0, o2), sidx.gather(0, o2),
                        A.gather(0, keep.unsqueeze(-1).expand(-1, -1, Ntok)))


@torch.no_grad()
def attention_diagonals(model, input_ids: Tensor, attention_mask: Optional[Tensor] = None, *,
                        layers: Optional[Sequence[int]] = None) -> Tensor:
    """Teacher-forced attention diagonals ``[B, L', H, N]`` float32 (``diag[..., i] = attn[..., i, i]``,
    the input RAUQ and AttentionScore accept instead of full maps), from one pass of the model's body
    under :class:`AttentionCapture` (no logits computed). Padding on either side: positions come from
    ``attention_mask`` (:func:`position_ids_from_mask`, as ``generate``); pad positions hold 0."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, N], got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}")
    with AttentionCapture(model, diagonals=True, layers=layers) as cap:
        model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids_from_mask(attention_mask), use_cache=False)
    return cap.diagonals


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
    """UQAC's per-sequence inputs (METHODS.md §6.1) from ONE teacher-forced pass over
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


__all__ = ["UncertaintyRecorder", "Generation", "Scored", "generate", "score", "response_mask",
           "position_ids_from_mask", "AttentionCapture", "attention_diagonals", "uqac_inputs", "UQACInputs",
           "uqac_is_stop", "UQAC_STOP_WORDS", "UQAC_CALIBRATION", "ATTN_IMPLEMENTATION"]
