"""flashuq.token_stats_linear: the statistics of hidden @ weight.T (+ bias) in row blocks, against the
float64 reference on the materialised logits."""

import pytest
import torch
import torch.nn.functional as F

import flashuq as fuq
from stats_cases import assert_close_stats, reference


def setup(seed=0, lead=(3, 7), D=24, V=700, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(*lead, D, generator=g, dtype=torch.float64).to(dtype)
    W = (torch.randn(V, D, generator=g, dtype=torch.float64) / D**0.5 * 3).to(dtype)
    b = torch.randn(V, generator=g, dtype=torch.float64).to(dtype)
    t = torch.randint(0, V, lead, generator=g)
    return h, W, b, t


@pytest.mark.parametrize("block_rows", [1, 4, 21, None])
def test_matches_reference_on_materialised_logits(block_rows):
    h, W, b, t = setup()
    got = fuq.token_stats_linear(h, W, t, bias=b, topk=5, renyi=True, temperature=0.7, block_rows=block_rows)
    ref = reference(F.linear(h, W, b), t, topk=5, renyi=True, temperature=0.7)
    assert got.entropy.shape == (3, 7) and got.topk_ids.shape == (3, 7, 5)
    assert_close_stats(got, ref, rtol=1e-12, renyi=True)


def test_float32_head_and_blocks_give_the_same_rows():
    h, W, _, t = setup(dtype=torch.float32, V=3000)
    a = fuq.token_stats_linear(h, W, t, block_rows=2)
    ref = reference(F.linear(h.double(), W.double()), t)
    assert_close_stats(a, ref, rtol=2e-5)


def test_scale_and_softcap_as_the_model_applies_them():
    h, W, b, t = setup(seed=1)
    got = fuq.token_stats_linear(h, W, t, bias=b, logit_scale=0.25, softcap=30.0, block_rows=5)
    z = torch.tanh(F.linear(h, W, b) * 0.25 / 30.0) * 30.0
    assert_close_stats(got, reference(z, t), rtol=1e-12)


def test_empty_rows():
    h, W, _, _ = setup()
    got = fuq.token_stats_linear(h[:0], W)
    assert got.entropy.shape == (0, 7)


@pytest.mark.parametrize(
    "kw, exc, name",
    [
        (dict(hidden=torch.ones(3, 4, dtype=torch.int64)), TypeError, "hidden"),
        (dict(weight=torch.ones(10, 5, dtype=torch.float64)), ValueError, "weight"),
        (dict(weight=torch.ones(10, 24, dtype=torch.float32)), TypeError, "weight"),
        (dict(weight=torch.ones(0, 24, dtype=torch.float64)), ValueError, "weight"),
        (dict(bias=torch.ones(3, dtype=torch.float64)), ValueError, "bias"),
        (dict(tokens=torch.zeros(3, 6, dtype=torch.int64)), ValueError, "tokens"),
        (dict(tokens=torch.full((3, 7), 700)), ValueError, "tokens"),
        (dict(temperature=0.0), ValueError, "temperature"),
        (dict(topk=701), ValueError, "topk"),
        (dict(softcap=-1.0), ValueError, "softcap"),
        (dict(logit_scale=0.0), ValueError, "logit_scale"),
        (dict(block_rows=0), ValueError, "block_rows"),
    ],
)
def test_bad_input_raises_naming_the_argument(kw, exc, name):
    h, W, b, t = setup()
    args = dict(hidden=h, weight=W, tokens=t)
    args.update({k: v for k, v in kw.items() if k in args})
    extra = {k: v for k, v in kw.items() if k not in args}
    with pytest.raises(exc, match=name):
        fuq.token_stats_linear(args["hidden"], args["weight"], args["tokens"], **extra)


def test_decode_step_compiles_fullgraph():
    # a user's decode step: head matmul fused into the statistics, then the running sequence scores
    h, W, b, t = setup(lead=(4, 3), dtype=torch.float32)

    def step(hidden, tokens):
        s = fuq.token_stats_linear(hidden, W, tokens, bias=b, renyi=True, block_rows=5)
        lp = fuq.token_stats(F.linear(hidden, W, b), tokens, renyi=True)
        return s.logprob.sum(-1), s.renyi_term, lp.entropy

    compiled = torch.compile(step, fullgraph=True)
    got, want = compiled(h, t), step(h, t)
    for a, b_ in zip(got, want):
        torch.testing.assert_close(a, b_)
