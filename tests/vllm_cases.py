"""Helpers of the vLLM tests (tests/vllm): engine shutdown, vLLM's full-vocabulary log-probs as an
array, and the comparison of recorded statistics with their float64 reference."""

import numpy as np
import torch

from flashuq.reference import token_stats as ref_stats


def shutdown(llm) -> None:
    """Stop an engine's processes now (tests start a few engines one after the other)."""
    import gc

    engine = getattr(llm, "llm_engine", None)
    core = getattr(engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()
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
