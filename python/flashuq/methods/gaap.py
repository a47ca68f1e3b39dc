"""GAAP, the Inv-Entropy paper's genetic-algorithm perturbation of a question (docs/methods.md#gaap): the
perturbed questions whose answers the Inv-Entropy family compares. A host-side text procedure; the
caller passes the keyword choice, the substitution sets and the similarity model, and flashuq runs the
search: batched fitness rows, roulette selection, one-point crossover and one-token mutation, seeded."""

from __future__ import annotations

import numbers
from typing import Callable, List, NamedTuple, Optional, Sequence

import torch

from .._checks import check_int, check_real

Tokens = tuple  #: a question as a tuple of tokens (a deleted token is absent)


class GaapResult(NamedTuple):
    """What :func:`gaap_perturbations` returns."""

    perturbations: List[str]         #: exactly ``n_out`` perturbed questions
    generations: int                 #: generations run (0: only the initial population)
    best_similarity: List[float]     #: ``max_i aSim(x0, x_i)`` of each generation's population


def _roulette(fitness: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` draws with replacement, ``P(i) = f_i / Σ_j f_j`` (negative fitness counts as 0; all zero:
    uniform)."""
    w = fitness.double().clamp(min=0)
    if not bool((w > 0).any()):
        w = torch.ones_like(w)
    return torch.multinomial(w, n, replacement=True, generator=gen)


def _crossover(a: Tokens, b: Tokens, h: int):
    """One-point crossover at ``h``: ``(a[:h] + b[h:], b[:h] + a[h:])``."""
    return a[:h] + b[h:], b[:h] + a[h:]


def gaap_perturbations(question: str, keywords, substitutes: Callable[[str], Sequence[str]],
                       similarity: Callable[[str, List[str]], torch.Tensor], *, ratio: Optional[float] = None,
                       n_parents: int = 10, num_generations: int = 10, tau: int = 2, delta: float = 0.7,
                       n_out: int = 9, seed: int = 0, tokenize: Callable[[str], List[str]] = str.split,
                       join: Callable[[Sequence[str]], str] = " ".join) -> GaapResult:
    """GAAP, Genetic-Algorithm Adversarial Perturbation (Song, Ji, Shi, Lai, Al Kontar, Inv-Entropy,
    NeurIPS 2025, arXiv 2506.09684, Appendix C; the authors' repository paraphrases with ChatGPT instead).

    1. ``x0 = tokenize(question)``; the keyword positions come from ``keywords``: a sequence of token
       positions, or a callable ``keywords(tokens) -> positions`` ranked by importance (the paper uses
       KeyBERT), of which the first ``int(ratio · len(tokens))`` (at least one) are taken when ``ratio``
       is given.
    2. ``SUB(t) = substitutes(t) ∪ {∅}``: the caller's substitutions (the paper: WordNet hypernyms,
       hyponyms and synonyms) plus deletion.
    3. ``Pop_0``: every single-keyword substitution of ``x0``.
    4. Each generation: the fitness ``aSim(x0, x_i)`` of the whole population in one
       ``similarity(question, texts)`` call (a ``[n]`` tensor, e.g. embedding cosines); ``n_parents``
       parents drawn by roulette wheel, ``P(i) = aSim_i / Σ_j aSim_j``; random parent pairs crossed at
       ``h ~ U{1..p−1}`` (p the shorter length); in each offspring one random token replaced by a uniform
       draw from its ``SUB``; ``Pop_{t+1} = parents ∪ offspring ∪ mutants``.
    5. Stop after ``num_generations`` generations, or when ``max_i aSim(x0, x_i) < delta`` (0.7).
    6. The output: ``n_out`` (9) questions drawn uniformly without replacement from
       ``Pop_0 ∪ Pop_τ ∪ Pop_2τ ∪ …``, or all of them and random duplicates when there are fewer.

    The paper leaves the population size, ``Num``, ``τ`` and the keyword ratio open; the defaults here
    (``n_parents = 10``, ``num_generations = 10``, ``tau = 2``) are choices. Every random draw comes from
    one ``torch.Generator`` seeded with ``seed``, so a result is reproducible.
    """
    if not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    n_parents = check_int(n_parents, "n_parents", 2)
    num_generations = check_int(num_generations, "num_generations", 0)
    tau = check_int(tau, "tau", 1)
    n_out = check_int(n_out, "n_out", 1)
    delta = check_real(delta, "delta", -1.0, 1.0)
    seed = check_int(seed, "seed")
    if not callable(substitutes):
        raise TypeError(f"substitutes must be a callable token -> substitutions, got {type(substitutes).__name__}")
    if not callable(similarity):
        raise TypeError(f"similarity must be a callable (question, texts) -> [n] tensor, "
                        f"got {type(similarity).__name__}")
    x0 = tuple(tokenize(question))
    p = len(x0)
    if p == 0:
        raise ValueError("question: no tokens to perturb")
    pos = list(keywords(list(x0)) if callable(keywords) else keywords)
    if ratio is not None:
        ratio = check_real(ratio, "ratio", 0.0, 1.0, lo_open=True)
        pos = pos[: max(1, int(ratio * p))]
    for k, i in enumerate(pos):
        if isinstance(i, torch.Tensor) and i.dim() == 0 and not i.dtype.is_floating_point:
            i = pos[k] = int(i)
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise TypeError(f"keywords must be integer token positions, got {i!r}")
        if not 0 <= i < p:
            raise ValueError(f"keywords must be token positions in [0, {p}), got {i!r}")
        pos[k] = int(i)
    if not pos:
        raise ValueError("keywords: no keyword position to perturb")
    cache = {}

    def sub(t: str) -> List[Optional[str]]:  # SUB(t): substitutions and None (deletion)
        if t not in cache:
            s = substitutes(t)
            if isinstance(s, str) or not all(isinstance(w, str) for w in s):
                raise TypeError(f"substitutes({t!r}) must return a list of str")
            if isinstance(s, (set, frozenset)):
                s = sorted(s)  # a set's order follows the string hash: sort it, for reproducible draws
            cache[t] = [w for w in dict.fromkeys(s) if w != t] + [None]
        return cache[t]

    def replaced(x: Tokens, i: int, w: Optional[str]) -> Tokens:
        return x[:i] + x[i + 1:] if w is None else x[:i] + (w,) + x[i + 1:]

    gen = torch.Generator().manual_seed(seed)
    pop: List[Tokens] = [replaced(x0, i, w) for i in dict.fromkeys(pos) for w in sub(x0[i])]
    snapshots: List[List[Tokens]] = [pop]
    best: List[float] = []
    t = 0
    while True:
        fit = torch.as_tensor(similarity(question, [join(x) for x in pop]))
        if fit.dtype.is_complex or fit.dtype == torch.bool:
            raise TypeError(f"similarity must return real values, got {fit.dtype}")
        if fit.numel() != len(pop):
            raise ValueError(f"similarity must return one value per text ({len(pop)}), got shape {tuple(fit.shape)}")
        fit = fit.reshape(-1).double().cpu().nan_to_num(0.0)  # (a NaN similarity counts as 0)
        best.append(float(fit.max()))
        if t >= num_generations or best[-1] < delta:
            break
        parents = [pop[int(j)] for j in _roulette(fit, n_parents, gen)]
        order = torch.randperm(n_parents, generator=gen).tolist()
        offspring: List[Tokens] = []
        for a, b in zip(order[0::2], order[1::2]):
            A, B = parents[a], parents[b]
            short = min(len(A), len(B))
            if short < 2:
                offspring += [A, B]
                continue
            h = int(torch.randint(1, short, (1,), generator=gen))
            offspring += list(_crossover(A, B, h))
        mutants: List[Tokens] = []
        for x in offspring:
            if not x:
                mutants.append(x)
                continue
            i = int(torch.randint(0, len(x), (1,), generator=gen))
            options = sub(x[i])
            mutants.append(replaced(x, i, options[int(torch.randint(0, len(options), (1,), generator=gen))]))
        pop = parents + offspring + mutants
        t += 1
        if t % tau == 0:
            snapshots.append(pop)
    pool = [x for snap in snapshots for x in snap]
    if len(pool) >= n_out:
        pick = torch.randperm(len(pool), generator=gen)[:n_out].tolist()
    else:
        pick = list(range(len(pool))) + torch.randint(0, len(pool), (n_out - len(pool),), generator=gen).tolist()
    return GaapResult([join(pool[i]) for i in pick], t, best)


__all__ = ["GaapResult", "gaap_perturbations"]
