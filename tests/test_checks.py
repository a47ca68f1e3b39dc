"""The same mistake gets the same error everywhere (flashuq._checks): a number of the wrong type (a
string, a bool, a float for an int) raises TypeError, a number out of range ValueError, each naming
the argument, across ops, methods, metrics, the transformers adapter, datasets and policies."""

import math

import numpy as np
import pytest
import torch

import flashuq as fuq
from flashuq import _checks, metrics
from flashuq import methods as M
from flashuq.data import GenerateOptions
from flashuq.data.qtuning import token_keep_mask


def _stats():
    g = torch.Generator().manual_seed(0)
    return fuq.token_stats(torch.randn(2, 5, 11, generator=g), torch.randint(0, 11, (2, 5), generator=g), renyi=True)


def _similarity():
    W = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return (W + W.transpose(-1, -2)) / 2


def _calls():
    """(name of the argument, a call taking the value) for int and real arguments of public functions."""
    logits = torch.randn(3, 11)
    stats, W = _stats(), _similarity()
    u, c = np.linspace(0, 1, 40), np.arange(40) % 2
    ints = [
        ("topk", lambda v: fuq.token_stats(logits, topk=v)),
        ("k", lambda v: M.maqa_max_prob(torch.randn(1, 3, 11), torch.zeros(1, 2, dtype=torch.long), k=v)),
        ("grid", lambda v: metrics.abstention_threshold(u, c, risk=0.3, grid=v)),
        ("n_resamples", lambda v: metrics.bootstrap(lambda a, b: float(np.mean(a)), u, c, n_resamples=v)),
        ("n_bins", lambda v: metrics.ece(u, c, n_bins=v)),
        ("vocab_size", lambda v: M.renyi_neg(stats, variant="paper", vocab_size=v)),
        ("replicates", lambda v: M.inv_entropy(W, W, replicates=v)),
        ("entail_index", lambda v: M.nli_argmax_is_entail(torch.rand(1, 2, 2, 3), v)),
        ("samples", lambda v: GenerateOptions(samples=v).check()),
        ("max_new_tokens", lambda v: GenerateOptions(max_new_tokens=v).check()),
    ]
    reals = [
        ("temperature", lambda v: fuq.token_stats(logits, temperature=v)),
        ("temperature", lambda v: M.sentence_sar(torch.randn(2, 4), W, temperature=v)),
        ("temperature", lambda v: GenerateOptions(temperature=v).check()),
        ("alpha", lambda v: M.chow_quantile(stats, alpha=v)),
        ("risk", lambda v: metrics.abstention_threshold(u, c, risk=v)),
        ("threshold", lambda v: fuq.laplacian_spectrum(W, threshold=v)),
        ("t", lambda v: fuq.heat_kernel_entropy(W, t=v)),
        ("keep_tokens", lambda v: token_keep_mask(torch.rand(6).numpy(), v)),
    ]
    return ints, reals


INTS, REALS = _calls()
OUT_OF_RANGE = {"topk": -1, "k": 0, "grid": 0, "n_resamples": 0, "n_bins": 0, "vocab_size": 0, "replicates": 0,
                "entail_index": 3, "samples": -1, "max_new_tokens": 0, "temperature": 0.0, "alpha": 1.5,
                "risk": 1.0, "threshold": math.nan, "t": math.inf, "keep_tokens": 0.0}


@pytest.mark.parametrize("name,call", INTS, ids=[n for n, _ in INTS])
@pytest.mark.parametrize("wrong", ["3", 2.0, True], ids=["str", "float", "bool"])
def test_an_int_argument_of_the_wrong_type_raises_TypeError(name, call, wrong):
    with pytest.raises(TypeError, match=name):
        call(wrong)


@pytest.mark.parametrize("name,call", REALS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(REALS)])
@pytest.mark.parametrize("wrong", ["0.5", True, [0.5]], ids=["str", "bool", "list"])
def test_a_real_argument_of_the_wrong_type_raises_TypeError(name, call, wrong):
    with pytest.raises(TypeError, match=name):
        call(wrong)


@pytest.mark.parametrize("name,call", INTS + REALS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(INTS + REALS)])
def test_a_value_out_of_range_raises_ValueError(name, call):
    with pytest.raises(ValueError, match=name):
        call(OUT_OF_RANGE[name])


def test_the_shared_checks():
    assert _checks.check_int(np.int64(3), "n", 0, 3) == 3 and type(_checks.check_int(np.int64(3), "n")) is int
    assert _checks.check_real(np.float32(0.5), "x", 0, 1) == 0.5
    assert _checks.check_real(math.inf, "x", finite=False) == math.inf
    for bad, kw in [(0.0, dict(lo=0.0, lo_open=True)), (1.0, dict(hi=1.0, hi_open=True)), (math.inf, {}),
                    (math.nan, dict(finite=False)), (-1.0, dict(lo=0.0))]:
        with pytest.raises(ValueError, match="x"):
            _checks.check_real(bad, "x", **kw)
    with pytest.raises(ValueError, match=r"n must be in \[0, 2\], got 3"):
        _checks.check_int(3, "n", 0, 2)
    with pytest.raises(ValueError, match="n must be <= 2"):
        _checks.check_int(3, "n", hi=2)
    assert _checks.check_bool(np.bool_(True), "f") is True and _checks.check_bool(False, "f") is False
    for bad in (1, 0, "yes", None, 1.0, torch.tensor(True)):
        with pytest.raises(TypeError, match="f must be a bool"):
            _checks.check_bool(bad, "f")
