"""flashuq.hf.uqac_variants, uqac_candidates and uqac_score (docs/methods.md#uqac-variants) on a config-built
tiny Llama (no download): the candidate choice against a transcription of the UQAC repository's
``thresholded_topk_2d`` / ``find_column_indices`` / ``filter_indices`` step, every variant's log-probabilities
against a full eager forward pass over that variant, and the end-to-end score against the marginal computed
from those passes."""

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from flashuq import hf  # noqa: E402
from flashuq import methods as M  # noqa: E402

V = 300


def tiny():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=64, intermediate_size=64, num_hidden_layers=3,
                                   num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=128,
                                   tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():  # sharper next-token distributions than the init gives: top-5 entries above 1e-2
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(6.0)
        model.get_output_embeddings().weight.mul_(3.0)
    return model.eval()


def reference_candidates(ids, probs, orig, ens_k=10, thr=1e-2, paper=False):
    """The UQAC repository's selection, transcribed: thresholded 2-D top-k, then the pairs (row,
    argmax(ids[row] == orig[row])) filtered out; ``paper``: only the pairs holding the original token."""
    J, C = probs.shape
    flat = probs.reshape(-1)
    mask = flat > thr
    vals = flat[mask]
    k = ens_k + J
    idx = vals.sort(descending=True).indices if vals.numel() <= k else vals.topk(k).indices
    top = torch.nonzero(mask).squeeze(1)[idx]
    rows, cols = top // C, top % C
    attn_cols = (ids == orig[:, None]).long().argmax(1)
    drop = torch.stack([torch.arange(J), attn_cols], 1)
    pairs = torch.stack([rows, cols], 1)
    keep = ~(pairs[:, None, :] == drop[None]).all(2).any(1)
    if paper:
        keep = ids[rows, cols] != orig[rows]
    return rows[keep], cols[keep]


def test_candidates_match_the_reference_transcription():
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        J = int(torch.randint(1, 8, (1,), generator=g))
        probs = torch.softmax(torch.randn(J, 40, generator=g) * 3, -1).topk(5, -1)
        ids, p = probs.indices, probs.values
        orig = ids[torch.arange(J), torch.randint(0, 5, (J,), generator=g)]
        orig[::3] = 39 + 1000  # some originals outside the top 5
        rows, cols = hf.uqac_candidates(ids, p, orig, ens_k=3)
        want_r, want_c = reference_candidates(ids, p, orig, ens_k=3)
        assert rows.tolist() == want_r.tolist() and cols.tolist() == want_c.tolist(), trial
        # "paper": only a column holding the original token goes
        pr, pc = hf.uqac_candidates(ids, p, orig, ens_k=3, variant="paper")
        want_pr, want_pc = reference_candidates(ids, p, orig, ens_k=3, paper=True)
        assert pr.tolist() == want_pr.tolist() and pc.tolist() == want_pc.tolist(), trial
        assert not bool((ids[pr, pc] == orig[pr]).any()) and len(pr) >= len(rows)
    with pytest.raises(ValueError, match="variant"):
        hf.uqac_candidates(ids, p, orig, variant="other")
    with pytest.raises(ValueError, match="ens_k"):
        hf.uqac_candidates(ids, p, orig, ens_k=-1)


def case(model):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, V, (18,), generator=g)
    rs = 9                                            # I = 9 instruction tokens, R = 9 response tokens
    return ids, rs


def full_logprobs(model, seq):
    with torch.no_grad():
        z = model(seq[None], position_ids=torch.arange(seq.numel())[None]).logits[0].double()
    return torch.log_softmax(z, -1)


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_variant_logprobs_equal_full_passes(variant):
    model = tiny()
    ids, rs = case(model)
    ans, keep = torch.tensor([6, 7]), torch.tensor([-1, 1, 3, 4])
    thr = 7e-3  # (the tiny model's top-5 tails sit near 1e-2)
    got = hf.uqac_variants(model, ids, rs, ans, keep, variant=variant, batch_size=3, ens_threshold=thr)
    n = got.positions.numel()
    assert got.ans_logprobs.shape == (n + 1, 2) and got.seq_logprobs.shape == (n + 1, 4) and n >= 3
    # the candidates: the original pass's top-5 at each kept member (member -1: the last response row when
    # variant="reference"), through the repository's selection
    lp0 = full_logprobs(model, ids)
    rows_at = keep + rs
    if variant == "reference":
        rows_at = torch.where(keep == -1, ids.numel() - 1, rows_at)
    top = lp0[rows_at].exp().topk(5, -1)
    orig = ids[keep + rs + 1]
    r, c = reference_candidates(top.indices, top.values.float(), orig, thr=thr, paper=variant == "paper")
    assert got.positions.tolist() == (keep[r] + 1).tolist() and got.tokens.tolist() == top.indices[r, c].tolist()
    for v in range(n + 1):
        seq = ids.clone()
        if v:
            seq[rs + int(got.positions[v - 1])] = int(got.tokens[v - 1])
        lp = full_logprobs(model, seq)
        want_a = lp[ans + rs, seq[ans + rs + 1]]
        want_s = lp[keep + rs, seq[keep + rs + 1]]
        torch.testing.assert_close(got.ans_logprobs[v].double(), want_a, atol=1e-4, rtol=0)
        torch.testing.assert_close(got.seq_logprobs[v].double(), want_s, atol=1e-4, rtol=0)


def test_left_padding_gives_the_same_variants():
    model = tiny()
    ids, rs = case(model)
    ans, keep = torch.tensor([6, 7]), torch.tensor([0, 2])
    plain = hf.uqac_variants(model, ids, rs, ans, keep)
    padded = torch.cat([torch.zeros(3, dtype=torch.long), ids])
    mask = (torch.arange(padded.numel()) >= 3).long()
    got = hf.uqac_variants(model, padded, rs + 3, ans, keep, attention_mask=mask)
    assert torch.equal(got.positions, plain.positions) and torch.equal(got.tokens, plain.tokens)
    torch.testing.assert_close(got.ans_logprobs, plain.ans_logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.seq_logprobs, plain.seq_logprobs, atol=1e-5, rtol=0)


def test_uqac_score_end_to_end():
    model = tiny()
    g = torch.Generator().manual_seed(3)
    ids, rs = torch.randint(3, V, (34,), generator=g), 6   # a longer response: a chain with kept members
    toks = [f"w{i}" for i in range(28)]
    ans = torch.tensor([24, 25])
    kw = dict(similarity_threshold=-1.0)
    got = hf.uqac_score(model, ids, rs, ans, response_tokens=toks, ens_threshold=7e-3, **kw)
    inp = hf.uqac_inputs(model, ids, rs, response_tokens=toks)
    keep = M.uqac_terms(inp.attn, ans, inp.is_stop, inp.h_last, inp.token_logprobs, **kw).keep
    var = hf.uqac_variants(model, ids, rs, ans, keep, ens_threshold=7e-3)
    assert keep.numel() >= 2 and var.positions.numel() >= 2
    # the marginal from full eager passes over every variant
    floor = np.log(1e-12)
    total = 0.0
    for v in range(var.positions.numel() + 1):
        seq = ids.clone()
        if v:
            seq[rs + int(var.positions[v - 1])] = int(var.tokens[v - 1])
        lp = full_logprobs(model, seq)
        a = lp[ans + rs, seq[ans + rs + 1]].clamp(min=floor).sum()
        s = lp[keep + rs, seq[keep + rs + 1]].clamp(min=floor).sum()
        total += float(torch.exp(a + s))
    assert got.dtype == torch.float64 and got.item() == pytest.approx(-total, rel=1e-4)
    sim = hf.uqac_score(model, ids, rs, ans, response_tokens=toks, variants=False, **kw)
    want_sim = M.uqac(inp.attn, ans, inp.is_stop, inp.h_last, inp.token_logprobs, **kw)
    assert sim.item() == pytest.approx(want_sim.item(), rel=1e-6)
    assert got.item() < sim.item()  # the variants add probability mass
    with pytest.raises(ValueError, match="tokenizer"):
        hf.uqac_score(model, ids, rs, ans)


def test_argument_errors():
    model = tiny()
    ids, rs = case(model)
    with pytest.raises(ValueError, match="keep"):
        hf.uqac_variants(model, ids, rs, [6], [8])
    with pytest.raises(ValueError, match="ans_src"):
        hf.uqac_variants(model, ids, rs, [-2], [1])
    with pytest.raises(ValueError, match="ans_src"):
        hf.uqac_variants(model, ids, rs, [], [1])
    with pytest.raises(ValueError, match="response_start"):
        hf.uqac_variants(model, ids, 18, [0], [1])
    with pytest.raises(ValueError, match="keep"):
        hf.uqac_variants(model, ids, 0, [1], [-1])
    with pytest.raises(ValueError, match="batch_size"):
        hf.uqac_variants(model, ids, rs, [6], [1], batch_size=0)
