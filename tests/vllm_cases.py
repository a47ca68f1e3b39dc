"""Helpers of the vLLM tests (tests/vllm): engine shutdown, vLLM's full-vocabulary log-probs as an
array, and the comparison of recorded statistics with their float64 reference."""

import numpy as np
import torch

from flashuq.reference import token_stats as ref_stats


def shutdown(llm) -> None:
    """Stop an engine's processes now (tests start a few engines one after the other)."""
    import gc

    import flashuq.vllm as fv

    fv.shutdown(llm)
    del llm
    gc.collect()


def vllm_logprobs(completion) -> np.ndarray:
    """``[T, V]`` float64 log-probabilities vLLM returned with ``logprobs=-1`` (the whole vocabulary),
    ordered by token id."""
    rows = []
    for d in completion.logprobs:
        V = max(d) + 1
        assert len(d) >= V, "logprobs=-1 returns every token id"
        row = np.full(V, np.nan)
        for tid, lp in d.items():
            row[tid] = lp.logprob
        rows.append(row)
    return np.stack(rows)


def check_against_vllm(completion, stats, covered, *, temperature=1.0, topk=0, renyi=False):
    """Every recorded field of every position against the float64 reference of vLLM's log-probs."""
    lp = vllm_logprobs(completion)
    tok = torch.tensor(completion.token_ids)
    assert len(tok) == stats.logprob.shape[0] > 0 and covered.all()
    ref = ref_stats(torch.from_numpy(lp), tok, temperature=temperature, topk=topk, renyi=renyi)
    for f in ("logprob", "max_logprob", "entropy", "margin", "collision", "self_certainty"):
        torch.testing.assert_close(getattr(stats, f).double(), getattr(ref, f), rtol=2e-4, atol=5e-5, msg=f)
    # kurtosis of V = 49152 probabilities is in the thousands: relative tolerance
    torch.testing.assert_close(stats.kurtosis.double(), ref.kurtosis, rtol=2e-3, atol=1e-3)
    assert torch.equal(stats.argmax, ref.argmax)
    if topk:
        torch.testing.assert_close(stats.topk_logprobs.double(), ref.topk_logprobs, rtol=2e-4, atol=5e-5)
        assert torch.equal(stats.topk_ids, ref.topk_ids)
    if renyi:
        torch.testing.assert_close(stats.renyi_term.double(), ref.renyi_term, rtol=2e-4, atol=2e-4)
        torch.testing.assert_close(stats.fisher_rao.double(), ref.fisher_rao, rtol=2e-4, atol=2e-5)


def check_against_vllm_topk(completion, stats, covered):
    """The cheaper check (``logprobs=k``, the option ``topk=k``): the emitted token's log-prob, the largest
    log-prob and the top-k ids and log-probs of every position against vLLM's top-k log-probs."""
    k = stats.topk_ids.shape[1]
    assert k > 0 and covered.all() and len(completion.token_ids) == stats.logprob.shape[0] > 0
    for t, (tok, d) in enumerate(zip(completion.token_ids, completion.logprobs)):
        top = sorted((lp.rank, tid, lp.logprob) for tid, lp in d.items() if lp.rank <= k)
        np.testing.assert_allclose(stats.topk_logprobs[t].numpy(), [lp for _, _, lp in top], rtol=2e-4, atol=5e-5)
        # bf16 logits tie often, and vLLM orders ties its own way: each id of ours has its value in vLLM's list
        for tid, lp in zip(stats.topk_ids[t].tolist(), stats.topk_logprobs[t].tolist()):
            if tid in d:
                assert d[tid].logprob == pytest_approx(lp), (t, tid)
            else:  # a tie at the boundary of vLLM's top k
                assert lp == pytest_approx(top[-1][2]), (t, tid)
        assert stats.max_logprob[t].item() == pytest_approx(top[0][2])
        assert stats.logprob[t].item() == pytest_approx(d[tok].logprob)


def pytest_approx(x):
    import pytest

    return pytest.approx(x, rel=2e-4, abs=5e-5)
