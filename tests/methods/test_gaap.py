"""flashuq.methods.gaap_perturbations (docs/methods.md#gaap): GAAP's rules checked one by one (the initial
population, crossover, mutation drawn from SUB, roulette proportions, the stopping rule, the output of
exactly n_out), its reproducibility, a run with the offline all-MiniLM-L6-v2 as the similarity model,
and argument errors. The paper describes GAAP in prose only (no reference code), so the tests check
each rule of that description."""

import pytest
import torch

from flashuq import methods as M
from flashuq.methods.gaap import _crossover, _roulette

Q = "which river flows through the capital city of france"
SYN = {"river": ["stream", "waterway"], "capital": ["main", "chief"], "city": ["town"], "france": ["gaul"],
       "flows": ["runs"], "stream": ["brook"], "town": ["village"]}
KEYWORDS = [1, 5, 6, 8]  # river, capital, city, france


def substitutes(t):
    return SYN.get(t, [])


def overlap(question, texts):
    """A deterministic similarity: the fraction of the question's words a text keeps."""
    q = question.split()
    return torch.tensor([sum(w in t.split() for w in q) / len(q) for t in texts], dtype=torch.float64)


def allowed_words():
    return set(Q.split()) | {w for ws in SYN.values() for w in ws}


def test_initial_population_only():
    # num_generations = 0: the output comes from Pop_0, every single-keyword substitution (or deletion)
    res = M.gaap_perturbations(Q, KEYWORDS, substitutes, overlap, num_generations=0, n_out=9, seed=1)
    x0 = Q.split()
    pop0 = set()
    for i in KEYWORDS:
        for w in SYN[x0[i]] + [None]:
            pop0.add(" ".join(x0[:i] + ([] if w is None else [w]) + x0[i + 1:]))
    assert len(pop0) == 10 and res.generations == 0 and len(res.best_similarity) == 1
    assert len(res.perturbations) == 9 and len(set(res.perturbations)) == 9   # drawn without replacement
    assert set(res.perturbations) <= pop0
    # fewer candidates than n_out: all of them, then random duplicates
    small = M.gaap_perturbations(Q, [8], substitutes, overlap, num_generations=0, n_out=9)
    assert len(small.perturbations) == 9 and set(small.perturbations) == {Q.replace("france", "gaul"),
                                                                         Q.replace(" france", "")}


def test_generations_use_only_the_substitution_sets_and_are_reproducible():
    res = M.gaap_perturbations(Q, KEYWORDS, substitutes, overlap, num_generations=6, tau=2, delta=0.0, seed=3)
    assert res.generations == 6 and len(res.best_similarity) == 7
    for text in res.perturbations:
        assert set(text.split()) <= allowed_words()
        assert text != Q
    again = M.gaap_perturbations(Q, KEYWORDS, substitutes, overlap, num_generations=6, tau=2, delta=0.0, seed=3)
    assert again == res
    others = [M.gaap_perturbations(Q, KEYWORDS, substitutes, overlap, num_generations=6, delta=0.0, seed=s)
              for s in range(4, 8)]
    assert any(o.perturbations != res.perturbations for o in others)


def test_stopping_rule_and_keyword_ratio():
    # every similarity below delta: the search stops after scoring Pop_0
    low = lambda q, texts: torch.full((len(texts),), 0.5)  # noqa: E731
    res = M.gaap_perturbations(Q, KEYWORDS, substitutes, low, num_generations=8, delta=0.7)
    assert res.generations == 0 and res.best_similarity == [0.5]
    # a ranked keyword callable with ratio: int(0.2 * 9) = 1 keyword, the first one
    calls = []

    def ranked(tokens):
        calls.append(list(tokens))
        return [8, 1, 5]
    res = M.gaap_perturbations(Q, ranked, substitutes, overlap, ratio=0.2, num_generations=0)
    assert calls == [Q.split()]
    assert set(res.perturbations) == {Q.replace("france", "gaul"), Q.replace(" france", "")}


def test_crossover_and_roulette():
    a, b = tuple("abcdef"), tuple("uvwxyz")
    assert _crossover(a, b, 2) == (tuple("abwxyz"), tuple("uvcdef"))
    assert _crossover(a, b[:3], 3) == (tuple("abc"), tuple("uvwdef"))
    g = torch.Generator().manual_seed(0)
    f = torch.tensor([0.1, 0.0, 0.6, 0.3, -0.2])
    draws = _roulette(f, 40000, g)
    freq = torch.bincount(draws, minlength=5).double() / 40000
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0], dtype=torch.float64), atol=0.01,
                               rtol=0)
    uniform = torch.bincount(_roulette(torch.zeros(4), 40000, g), minlength=4).double() / 40000
    torch.testing.assert_close(uniform, torch.full((4,), 0.25, dtype=torch.float64), atol=0.01, rtol=0)


def test_with_the_offline_sentence_encoder():
    pytest.importorskip("transformers")
    from flashuq.models import SentenceEncoder

    enc = SentenceEncoder()

    def cosine(question, texts):
        e = enc([question] + texts)
        return e[1:] @ e[0]

    res = M.gaap_perturbations(Q, KEYWORDS, substitutes, cosine, num_generations=4, seed=0)
    assert len(res.perturbations) == 9 and res.generations >= 1
    assert all(set(t.split()) <= allowed_words() for t in res.perturbations)
    assert all(0.7 <= s <= 1.0 + 1e-6 for s in res.best_similarity[:-1])


def test_set_substitutions_and_numpy_keywords_are_reproducible():
    import os
    import subprocess
    import sys

    code = ("import torch, numpy as np; from flashuq import methods as M\n"
            "syn = {'river': {'stream', 'waterway', 'brook', 'creek'}, 'city': {'town', 'burg', 'borough'}}\n"
            "sim = lambda q, t: torch.tensor([len(set(q.split()) & set(x.split())) / 9 for x in t])\n"
            f"r = M.gaap_perturbations({Q!r}, np.array([1, 6]), lambda w: syn.get(w, set()), sim, "
            "num_generations=3, delta=0.0, seed=2)\n"
            "print(r.perturbations)")
    outs = set()
    for h in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": h}
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True).stdout)
    assert len(outs) == 1


def test_argument_errors():
    with pytest.raises(TypeError, match="question"):
        M.gaap_perturbations(3, KEYWORDS, substitutes, overlap)
    with pytest.raises(ValueError, match="keywords"):
        M.gaap_perturbations(Q, [9], substitutes, overlap)
    with pytest.raises(ValueError, match="keywords"):
        M.gaap_perturbations(Q, [], substitutes, overlap)
    with pytest.raises(TypeError, match="keywords"):
        M.gaap_perturbations(Q, [1.0], substitutes, overlap)
    with pytest.raises(ValueError, match="question"):
        M.gaap_perturbations("   ", [0], substitutes, overlap)
    with pytest.raises(ValueError, match="n_out"):
        M.gaap_perturbations(Q, KEYWORDS, substitutes, overlap, n_out=0)
    with pytest.raises(ValueError, match="n_parents"):
        M.gaap_perturbations(Q, KEYWORDS, substitutes, overlap, n_parents=1)
    with pytest.raises(ValueError, match="tau"):
        M.gaap_perturbations(Q, KEYWORDS, substitutes, overlap, tau=0)
    with pytest.raises(ValueError, match="num_generations"):
        M.gaap_perturbations(Q, KEYWORDS, substitutes, overlap, num_generations=-1)
    with pytest.raises(TypeError, match="seed"):
        M.gaap_perturbations(Q, KEYWORDS, substitutes, overlap, seed=1.5)
    with pytest.raises(ValueError, match="delta"):
        M.gaap_perturbations(Q, KEYWORDS, substitutes, overlap, delta=2.0)
    with pytest.raises(ValueError, match="ratio"):
        M.gaap_perturbations(Q, KEYWORDS, substitutes, overlap, ratio=0.0)
    with pytest.raises(TypeError, match="substitutes"):
        M.gaap_perturbations(Q, KEYWORDS, {"a": ["b"]}, overlap)
    with pytest.raises(TypeError, match="substitutes"):
        M.gaap_perturbations(Q, KEYWORDS, lambda t: "word", overlap)
    with pytest.raises(ValueError, match="similarity"):
        M.gaap_perturbations(Q, KEYWORDS, substitutes, lambda q, texts: torch.zeros(2))
    with pytest.raises(TypeError, match="similarity"):
        M.gaap_perturbations(Q, KEYWORDS, substitutes, lambda q, texts: torch.zeros(len(texts), dtype=torch.bool))
