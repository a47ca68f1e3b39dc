"""flashuq.hf.AttentionCapture on config-built tiny Llama models (multi-head and grouped-query, no
download), against the full maps of an eager pass with output_attentions=True: diagonals of
teacher-forced passes (right and left padding) and of generate (greedy; dynamic and static cache),
the UQAC response rows, the streamed UQAC reduction, uqac_inputs, the outputs left unchanged and the
attention implementation restored."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

import flashuq as fuq  # noqa: E402
from flashuq import hf  # noqa: E402

V = 300
EOS = 2
ATOL = 1e-5


def tiny(kv_heads, layers=3, heads=8):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=64, intermediate_size=64, num_hidden_layers=layers,
                                   num_attention_heads=heads, num_key_value_heads=kv_heads,
                                   max_position_embeddings=128, tie_word_embeddings=True, pad_token_id=0,
                                   bos_token_id=1, eos_token_id=EOS)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():  # sharper attention and next-token distributions than the init gives
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(6.0)
        model.get_output_embeddings().weight.mul_(8.0)
    return model.eval()


@pytest.fixture(params=[8, 2], ids=["mha", "gqa"])
def model(request):
    return tiny(request.param)


def batch(side, B=3, N=10):
    """Token ids and mask with rows shorter by 0, 3 and 5 tokens, padded on ``side``."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, V, (B, N), generator=g)
    mask = torch.ones_like(ids)
    for b, short in enumerate([0, 3, 5][:B]):
        if short == 0:
            continue
        if side == "left":
            mask[b, :short] = 0
        else:
            mask[b, N - short:] = 0
    return ids.masked_fill(mask == 0, 0), mask


@torch.no_grad()
def eager_maps(model, ids, mask):
    """``[B, L, H, N, N]`` attention of an eager teacher-forced pass (positions as generate uses them)."""
    prev = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        out = model(ids, attention_mask=mask, position_ids=hf.position_ids_from_mask(mask), output_attentions=True,
                    output_hidden_states=True)
    finally:
        model.set_attn_implementation(prev)
    return torch.stack(out.attentions, dim=1), out


def assert_real_close(got, want, mask):
    """Compare ``[B, L, H, N]`` tensors on the positions ``mask`` marks real."""
    m = mask.bool()[:, None, None, :].expand_as(want)
    torch.testing.assert_close(got[m], want[m], atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------------
# diagonals
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["right", "left"])
def test_teacher_forced_diagonals_equal_eager(model, side):
    ids, mask = batch(side)
    got = hf.attention_diagonals(model, ids, mask)
    maps, _ = eager_maps(model, ids, mask)
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    assert got.shape == (3, L, H, ids.shape[1]) and got.dtype == torch.float32
    assert_real_close(got, maps.diagonal(dim1=-2, dim2=-1), mask)
    assert torch.all(got[~mask.bool()[:, None, None, :].expand_as(got)] == 0)  # pads hold 0
    assert model.config._attn_implementation == "sdpa"


def test_diagonals_without_mask_and_small_chunks(model):
    ids, _ = batch("right")
    mask = torch.ones_like(ids)
    maps, _ = eager_maps(model, ids, mask)
    with hf.AttentionCapture(model, chunk_elems=7) as cap:  # one query row per block: the chunked LSE
        model(ids)  # no attention_mask: SDPA's implicit causal mask
    assert_real_close(cap.diagonals, maps.diagonal(dim1=-2, dim2=-1), mask)


def test_layer_subset(model):
    ids, mask = batch("left")
    got = hf.attention_diagonals(model, ids, mask, layers=[2, 0])
    maps, _ = eager_maps(model, ids, mask)
    assert got.shape[1] == 2
    assert_real_close(got, maps[:, [0, 2]].diagonal(dim1=-2, dim2=-1), mask)
    with pytest.raises(ValueError, match="layers"):
        hf.AttentionCapture(model, layers=[7])


def _eager_over_generation(model, ids, mask, seqs):
    full_mask = torch.cat([mask, torch.ones(seqs.shape[0], seqs.shape[1] - ids.shape[1], dtype=mask.dtype)], 1)
    maps, _ = eager_maps(model, seqs, full_mask)
    return maps.diagonal(dim1=-2, dim2=-1), full_mask


@pytest.mark.parametrize("B", [1, 3])
def test_generate_diagonals_equal_eager_over_the_generated_sequence(model, B):
    ids, mask = batch("left", B=B)
    g = hf.generate(model, ids, mask, max_new_tokens=6, pad_token_id=0, capture_attention=True)
    want, full_mask = _eager_over_generation(model, ids, mask, g.sequences)
    got = g.attention_diagonals
    assert got.shape == (B, 3, 8, g.sequences.shape[1])
    assert torch.isnan(got[..., -1]).all()  # the last token is never fed back
    keep = full_mask.clone()
    keep[:, -1] = 0
    assert_real_close(got, want, keep)
    assert model.config._attn_implementation == "sdpa"
    # the statistics are those of a plain run
    plain = hf.generate(model, ids, mask, max_new_tokens=6, pad_token_id=0)
    assert torch.equal(plain.sequences, g.sequences)
    torch.testing.assert_close(plain.stats.entropy, g.stats.entropy)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_model_generate_inside_capture(model, cache):
    ids, mask = batch("left")
    kw = {} if cache == "dynamic" else {"cache_implementation": "static"}
    with hf.AttentionCapture(model) as cap:
        seqs = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0, **kw)
    got = cap.diagonals
    assert got.shape[-1] == seqs.shape[1] - 1
    want, full_mask = _eager_over_generation(model, ids, mask, seqs)
    assert_real_close(got, want[..., :-1], full_mask[:, :-1])


def test_a_new_sequence_resets_the_capture(model):
    ids, mask = batch("right")
    with hf.AttentionCapture(model) as cap:
        model(ids[:, :4])
        model(ids, attention_mask=mask)  # no cache: a new sequence, not appended
        got = cap.diagonals
    maps, _ = eager_maps(model, ids, mask)
    assert got.shape[-1] == ids.shape[1]
    assert_real_close(got, maps.diagonal(dim1=-2, dim2=-1), mask)


# ------------------------------------------------------------------------------------------------
# outputs unchanged, implementation restored
# ------------------------------------------------------------------------------------------------
def test_outputs_unchanged_and_implementation_restored(model):
    ids, mask = batch("left")
    with torch.no_grad():
        want = model(ids, attention_mask=mask).logits
        with hf.AttentionCapture(model, response_rows=True, uqac_reduced=True, response_start=7) as cap:
            assert model.config._attn_implementation == hf.ATTN_IMPLEMENTATION
            got = model(ids, attention_mask=mask).logits
    assert torch.equal(got, want)  # the same SDPA call computes the output
    assert model.config._attn_implementation == "sdpa"
    assert all(not hasattr(m, "_flashuq_capture") for m in model.modules())
    assert cap.diagonals.shape[-1] == ids.shape[1]
    # restored on an exception too, and to whatever was set before
    model.set_attn_implementation("eager")
    with pytest.raises(RuntimeError, match="boom"):
        with hf.AttentionCapture(model):
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "eager"
    model.set_attn_implementation("sdpa")


def test_capture_errors(model):
    with pytest.raises(ValueError, match="nothing to capture"):
        hf.AttentionCapture(model, diagonals=False)
    with pytest.raises(ValueError, match="reduction"):
        hf.AttentionCapture(model, uqac_reduced=True, reduction="min")
    cap = hf.AttentionCapture(model)
    with pytest.raises(RuntimeError, match="nothing captured"):
        cap.diagonals
    with cap:
        with pytest.raises(RuntimeError, match="another capture"):
            hf.AttentionCapture(model).attach()
    ids, mask = batch("right")
    with hf.AttentionCapture(model, response_rows=True) as cap:
        with pytest.raises(ValueError, match="response_start"):
            model(ids, attention_mask=mask)


# ------------------------------------------------------------------------------------------------
# UQAC response rows and the streamed reduction
# ------------------------------------------------------------------------------------------------
CAL = torch.tensor(hf.UQAC_CALIBRATION, dtype=torch.float64)


def reduce_transcription(attn, n_heads=16, reduction="max"):
    """docs/methods.md#uqac-reduction in float64 (test transcription): attn [L, H, R, Ntok] -> [R, Ntok]."""
    A = attn.double().clone()
    L, H, R, Ntok = A.shape
    I = Ntok - R
    for r in range(R):
        A[..., r, I + r] = 0
    A[..., 0] = 0
    for r in range(R):
        for c in range(10):
            col = I + r - 10 + c
            if col >= 0:
                A[..., r, col] *= CAL[c]
    A = A.reshape(L * H, R, Ntok)
    A = A / (A.sum(-1, keepdim=True) + 1e-12)
    Hq = -(A * torch.log(A + 1e-12)).sum(-1)  # [L*H, R]
    out = torch.empty(R, Ntok, dtype=torch.float64)
    for r in range(R):
        sel = sorted(range(L * H), key=lambda s: (Hq[s, r].item(), s))[:n_heads]
        rows = A[sel, r]
        out[r] = rows.max(0).values if reduction == "max" else rows.mean(0)
    return out


def eager_rows(maps, mask, rs):
    """Per sequence [L, H, R, Ntok] eager rows over the non-pad columns, and I."""
    out = []
    for b in range(maps.shape[0]):
        cols = torch.nonzero(mask[b].bool()).squeeze(-1)
        pos = cols[cols >= rs[b]]
        out.append((maps[b][:, :, pos][..., cols], int((cols < rs[b]).sum())))
    return out


@pytest.mark.parametrize("side", ["right", "left"])
def test_response_rows_and_streamed_reduction_equal_eager(model, side):
    ids, mask = batch(side, N=16)
    rs = [6, 5, 4] if side == "right" else [6, 9, 11]  # the last rows hold 16, 13 and 11 tokens
    maps, _ = eager_maps(model, ids, mask)
    with hf.AttentionCapture(model, diagonals=False, response_rows=True, uqac_reduced=True,
                             response_start=torch.tensor(rs)) as cap:
        with torch.no_grad():
            model(ids, attention_mask=mask, position_ids=hf.position_ids_from_mask(mask))
    want = eager_rows(maps, mask, rs)
    for b, (rows, I) in enumerate(want):
        got = cap.response_rows[b]
        assert got.shape == rows.shape and got.dtype == torch.float32
        torch.testing.assert_close(got, rows, atol=ATOL, rtol=0)
        assert cap.n_instr[b] == I
        red = cap.uqac_reduced[b]
        assert red.shape == rows.shape[-2:] and red.dtype == torch.float32
        torch.testing.assert_close(red.double(), reduce_transcription(rows), atol=ATOL, rtol=0)
    with pytest.raises(RuntimeError, match="not requested"):
        cap.diagonals


@pytest.mark.parametrize("n_heads,reduction", [(16, "max"), (5, "mean"), (24, "max")])
def test_streamed_reduction_options(n_heads, reduction):
    model = tiny(2)
    ids, mask = batch("right", B=1, N=18)
    assert mask.all()
    maps, _ = eager_maps(model, ids, mask)
    with hf.AttentionCapture(model, diagonals=False, uqac_reduced=True, response_start=7, n_heads=n_heads,
                             reduction=reduction, chunk_elems=50) as cap:
        with torch.no_grad():
            model(ids)  # no padding, no mask: the rows under SDPA's implicit causal mask
    rows, _ = eager_rows(maps, mask, [7])[0]
    torch.testing.assert_close(cap.uqac_reduced[0].double(), reduce_transcription(rows, n_heads, reduction),
                               atol=ATOL, rtol=0)


def test_streamed_reduction_against_flashuq_ops(model):
    """Against fuq.uqac_reduce_attention, the float64 reference and the test's own transcription."""
    ids, mask = batch("left", B=1, N=20)
    maps, _ = eager_maps(model, ids, mask)
    out = hf.uqac_inputs(model, ids, 8, attention_mask=mask)
    rows, _ = eager_rows(maps, mask, [8])[0]
    torch.testing.assert_close(out.attn, fuq.uqac_reduce_attention(rows).float(), atol=ATOL, rtol=0)
    torch.testing.assert_close(out.attn.double(),
                               torch.as_tensor(fuq.reference.uqac_reduce_attention_ref(rows.double().numpy())).double(),
                               atol=ATOL, rtol=0)
    torch.testing.assert_close(out.attn.double(), reduce_transcription(rows), atol=ATOL, rtol=0)


def test_too_many_heads_raise():
    model = tiny(2, layers=1, heads=8)
    ids, mask = batch("right", B=1)
    with hf.AttentionCapture(model, diagonals=False, uqac_reduced=True, response_start=4) as cap:
        with torch.no_grad():
            model(ids, attention_mask=mask)
    with pytest.raises(ValueError, match="n_heads"):
        cap.uqac_reduced


def continued(out):
    """The keyword that hands a forward's cache to the next one: ``cache`` in the transformers releases
    that renamed it, ``past_key_values`` before (the capture reads either)."""
    if hasattr(out, "cache"):
        return {"cache": out.cache}
    return {"past_key_values": out.past_key_values}


def test_rows_in_low_precision_and_after_a_prefill(model):
    ids, mask = batch("right", B=1, N=14)
    maps, _ = eager_maps(model, ids, mask)
    rows, _ = eager_rows(maps, mask, [8])[0]
    with hf.AttentionCapture(model, diagonals=True, response_rows=True, response_start=8,
                             rows_dtype=torch.bfloat16) as cap:
        with torch.no_grad():
            out = model(ids[:, :8], use_cache=True)  # prefill the instruction
            model(ids[:, 8:], use_cache=True, **continued(out))
    got = cap.response_rows[0]
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), rows, atol=4e-3, rtol=1e-2)
    assert_real_close(cap.diagonals, maps.diagonal(dim1=-2, dim2=-1), mask)
    # a forward that splits the response is refused
    with hf.AttentionCapture(model, diagonals=False, response_rows=True, response_start=8) as cap:
        with torch.no_grad():
            out = model(ids[:, :10], use_cache=True)
            with pytest.raises(ValueError, match="one forward"):
                model(ids[:, 10:], **continued(out))


# ------------------------------------------------------------------------------------------------
# uqac_inputs and the stop rule
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduced", [True, False])
def test_uqac_inputs(model, reduced):
    ids, mask = batch("left", B=1, N=16)  # unpadded single sequence
    ids, mask = ids[0], mask[0]
    rs = 9
    maps, out = eager_maps(model, ids[None], mask[None])
    rows, I = eager_rows(maps, mask[None], [rs])[0]
    toks = [" the", "Cat", " .", "  ", " sat", "’", "on", "x", "Aren’t", " y", "?"][: ids.numel() - rs]
    got = hf.uqac_inputs(model, ids, rs, reduced=reduced, response_tokens=toks)
    R = ids.numel() - rs
    assert got.n_instr == I == rs and torch.equal(got.response_ids, ids[rs:])
    if reduced:
        torch.testing.assert_close(got.attn.double(), reduce_transcription(rows), atol=ATOL, rtol=0)
    else:
        torch.testing.assert_close(got.attn, rows, atol=ATOL, rtol=0)
    torch.testing.assert_close(got.h_last, out.hidden_states[-1][0, rs:], atol=ATOL, rtol=0)
    lp = torch.log_softmax(out.logits[0].double(), -1)[rs - 1:-1].gather(-1, ids[rs:, None])[:, 0]
    torch.testing.assert_close(got.token_logprobs.double(), lp, atol=1e-4, rtol=0)
    assert got.token_logprobs.shape == (R,)
    want_stop = [True] * rs + [True, False, True, True, False, True, True, False, True, False, True][:R]
    assert got.is_stop.tolist() == want_stop


def test_uqac_inputs_with_padding_and_a_tokenizer_stub():
    model = tiny(2)
    ids, mask = batch("left", B=3, N=16)
    ids, mask = ids[2], mask[2]  # five pads on the left

    class Tok:
        def decode(self, i):
            return " the" if i % 2 else "Word"

    maps, out = eager_maps(model, ids[None], mask[None])
    got = hf.uqac_inputs(model, ids, 10, attention_mask=mask, tokenizer=Tok())
    rows, I = eager_rows(maps, mask[None], [10])[0]
    assert got.n_instr == I == 5 and got.attn.shape == (6, 11)
    torch.testing.assert_close(got.attn.double(), reduce_transcription(rows), atol=ATOL, rtol=0)
    torch.testing.assert_close(got.h_last, out.hidden_states[-1][0, 10:], atol=ATOL, rtol=0)
    assert got.is_stop.tolist() == [True] * 5 + [bool(int(t) % 2) for t in ids[10:]]


def test_uqac_is_stop_rule():
    got = hf.uqac_is_stop(["The", " cat", "\n", "Couldn’t", "couldn't", "’", "'", "<|instr|>", "…", "42"], 2)
    assert got.tolist() == [True, True, True, False, True, True, False, True, True, True, True, False]
    assert hf.uqac_is_stop(["cat", "the"], 0, stop_words={"cat"}).tolist() == [True, False]
    assert len(hf.UQAC_STOP_WORDS) == 175 + 24 + 1 - 0  # 174 words + "", 24 characters, the marker
    with pytest.raises(ValueError, match="tokenizer"):
        hf.uqac_is_stop(torch.tensor([5, 6]), 1)


# ------------------------------------------------------------------------------------------------
# last_row_attention (CSL's input)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["left", "right"])
def test_last_row_attention_equals_eager_and_feeds_csl(model, side):
    ids, mask = batch(side, B=3, N=12)
    maps, _ = eager_maps(model, ids, mask)                   # [B, L, H, N, N]
    real = mask.bool()
    first = [int(torch.nonzero(real[b]).min()) for b in range(3)]
    last = [int(torch.nonzero(real[b]).max()) for b in range(3)]
    start = [first[b] + 2 for b in range(3)]
    length = [4, 3, 2]
    rows, span = hf.last_row_attention(model, ids, mask, span_start=start, span_len=length)
    assert rows.shape == (3, 3, 8, 4) and span.tolist() == [[True] * 4, [True] * 3 + [False], [True] * 2 + [False] * 2]
    for b in range(3):
        want = maps[b, :, :, last[b], start[b]:start[b] + length[b]]
        torch.testing.assert_close(rows[b, :, :, :length[b]].double(), want.double(), atol=ATOL, rtol=0)
        assert bool((rows[b, :, :, length[b]:] == 0).all())
    # CSL from these rows: LM-Polygraph's weights (the mean over every layer and head, normalised)
    g = torch.Generator().manual_seed(5)
    ll = -torch.rand(3, 4, generator=g, dtype=torch.float64)
    got = fuq.methods.csl(rows, ll, span)
    for b in range(3):
        w = maps[b, :, :, last[b], start[b]:start[b] + length[b]].double().mean((0, 1))
        w = w / w.sum()
        assert got[b].item() == pytest.approx(-(w * ll[b, :length[b]]).sum().item(), rel=1e-4)
    with pytest.raises(ValueError, match="span_start"):
        hf.last_row_attention(model, ids, mask, span_start=[0, 0, 0], span_len=12)
    with pytest.raises(ValueError, match="span_len"):
        hf.last_row_attention(model, ids, mask, span_start=start, span_len=[1, 2])


def test_focus_from_captured_response_rows_equals_eager(model):
    # Focus's [L, H, T, T] answer block from the captured response rows of a left-padded batch
    ids, mask = batch("left", B=3, N=12)
    rs = 8                                                   # 4 response tokens per sequence
    maps, out = eager_maps(model, ids, mask)
    with hf.AttentionCapture(model, diagonals=False, response_rows=True, response_start=rs) as cap:
        with torch.no_grad():
            model.base_model(input_ids=ids, attention_mask=mask, position_ids=hf.position_ids_from_mask(mask))
    block = torch.stack([r[..., i:] for r, i in zip(cap.response_rows, cap.n_instr)])    # [B, L, H, 4, 4]
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 4, V, generator=g, dtype=torch.float64) * 3
    tokens = torch.randint(0, V, (3, 4), generator=g)
    kw = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    idf = torch.rand(V, generator=g, dtype=torch.float64) + 0.5
    got = fuq.methods.focus(logits, tokens, block.double(), kw, idf, gamma=0.9, p_threshold=0.01)
    want = fuq.methods.focus(logits, tokens, maps[:, :, :, rs:, rs:].double(), kw, idf, gamma=0.9, p_threshold=0.01)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
