"""flashuq.claim_reduce and flashuq.claims_from_lists (docs/methods.md#claim-level): every op against a
numpy loop over LM-Polygraph-style ``aligned_token_ids`` (overlapping, unsorted and empty claims), the
CSR checks and their errors."""

import numpy as np
import pytest
import torch

import flashuq as fuq

ALIGNED = [[[0, 1, 2], [4, 2], []], [], [[5], [1, 3, 5, 6]], [[6, 0]]]


def numpy_claims(values, aligned, op):
    fns = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min,
           "logsumexp": lambda x: np.log(np.sum(np.exp(x)))}
    out = []
    for b, claims in enumerate(aligned):
        for ids in claims:
            x = values[b][np.array(ids, dtype=np.int64)]
            out.append(0.0 if op == "sum" and not ids else (np.nan if not ids else fns[op](x)))
    return np.array(out)


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min", "logsumexp"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ops_match_numpy(op, dtype):
    g = torch.Generator().manual_seed(0)
    values = torch.randn(4, 7, generator=g, dtype=torch.float64)
    claims = fuq.claims_from_lists(ALIGNED)
    assert claims.rows.tolist() == [0, 0, 0, 2, 2, 3] and claims.cu.tolist() == [0, 3, 5, 5, 6, 10, 12]
    got = fuq.claim_reduce(values.to(dtype), claims, op=op)
    want = numpy_claims(values.to(dtype).double().numpy(), ALIGNED, op)
    assert got.dtype == dtype and got.shape == (6,)
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-12 if dtype == torch.float64 else 1e-6)


def test_claims_ignore_every_other_position_and_accept_numpy_ids():
    values = torch.randn(4, 7, dtype=torch.float64)
    other = values.clone()
    used = torch.zeros(4, 7, dtype=torch.bool)
    for b, claims in enumerate(ALIGNED):
        for ids in claims:
            used[b, ids] = True
    other[~used] = torch.nan
    cl = fuq.claims_from_lists([[np.array(ids) for ids in claims] for claims in ALIGNED])
    torch.testing.assert_close(fuq.claim_reduce(other, cl, op="mean"), fuq.claim_reduce(values, cl, op="mean"),
                               rtol=0, atol=0, equal_nan=True)
    # the CSR arrays may come as numpy too, in any integer dtype
    raw = fuq.Claims(cl.rows.numpy().astype(np.int32), cl.cu.numpy(), cl.tokens.numpy().astype(np.int16))
    torch.testing.assert_close(fuq.claim_reduce(values, raw, op="sum"), fuq.claim_reduce(values, cl, op="sum"),
                               rtol=0, atol=0)
    assert fuq.claim_reduce(values, fuq.claims_from_lists([[], []]), op="max").shape == (0,)


def test_errors_name_the_argument():
    values = torch.randn(2, 4)
    good = fuq.claims_from_lists([[[0, 1]], [[3]]])
    with pytest.raises(ValueError, match="claims.tokens"):
        fuq.claim_reduce(values, fuq.claims_from_lists([[[0, 4]]]))
    with pytest.raises(ValueError, match="claims.rows"):
        fuq.claim_reduce(values, fuq.claims_from_lists([[], [], [[0]]]))
    with pytest.raises(ValueError, match="claims.cu"):
        fuq.claim_reduce(values, fuq.Claims(good.rows, torch.tensor([0, 2, 2]), good.tokens))
    with pytest.raises(ValueError, match="claims.cu"):
        fuq.claim_reduce(values, fuq.Claims(good.rows, torch.tensor([0, 3]), good.tokens))
    with pytest.raises(TypeError, match="claims.tokens"):
        fuq.claim_reduce(values, fuq.Claims(good.rows, good.cu, good.tokens.double()))
    with pytest.raises(TypeError, match="claims must be"):
        fuq.claim_reduce(values, [[0, 1]])
    with pytest.raises(ValueError, match="op"):
        fuq.claim_reduce(values, good, op="median")
    with pytest.raises(ValueError, match="values"):
        fuq.claim_reduce(values[0], good)
    with pytest.raises(TypeError, match="values"):
        fuq.claim_reduce(values.long(), good)
    with pytest.raises(TypeError, match=r"aligned_token_ids\[0\]\[0\]"):
        fuq.claims_from_lists([[[0.5]]])
    with pytest.raises(TypeError, match=r"aligned_token_ids\[1\]"):
        fuq.claims_from_lists([[[0]], 3])
    with pytest.raises(TypeError, match="aligned_token_ids"):
        fuq.claims_from_lists("0 1")
