"""flashuq.hf.hidden_states with config-built tiny Llama and GPT-2 models (no download): the hooked layers'
states, reduced to the last real token or a span mean, against ``output_hidden_states=True``; padding
on either side; EigenScore from sampled answers' middle-layer states; argument errors."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from flashuq import hf, methods as M  # noqa: E402

V = 300


def tiny(kind):
    torch.manual_seed(0)
    if kind == "llama":
        cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                       pad_token_id=0, bos_token_id=1, eos_token_id=2)
        model = transformers.LlamaForCausalLM(cfg)
    else:
        cfg = transformers.GPT2Config(vocab_size=V, n_embd=32, n_layer=3, n_head=4, n_positions=128,
                                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
        model = transformers.GPT2LMHeadModel(cfg)
    return model.double().eval()


def batch(left):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, V, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    if left:
        mask[0, :3] = 0
        ids[0, :3] = 0
    else:
        mask[0, 4:] = 0
        ids[0, 4:] = 0
    return ids, mask


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("left", [True, False])
def test_hidden_states_match_output_hidden_states(kind, left):
    model = tiny(kind)
    ids, mask = batch(left)
    from flashuq.hf._model import position_ids_from_mask
    with torch.no_grad():
        ref = model.base_model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                               output_hidden_states=True, use_cache=False).hidden_states
    assert len(ref) == 4
    layers = [0, 1, 2, 3, -2]
    got = hf.hidden_states(model, ids, mask, layers=layers)
    assert got.shape == (3, 5, 32) and got.dtype == torch.float64
    last = torch.tensor([6, 6, 6]) if left else torch.tensor([3, 6, 6])
    for j, l in enumerate(layers):
        want = ref[l][torch.arange(3), last]
        torch.testing.assert_close(got[:, j], want, rtol=1e-12, atol=1e-12)
    start, end = torch.tensor([3, 1, 0]) if left else torch.tensor([0, 1, 0]), torch.tensor([6, 5, 7])
    mean = hf.hidden_states(model, ids, mask, layers=[2, 3], reduce="mean", start=start, end=end)
    for b in range(3):
        for j, l in enumerate([2, 3]):
            torch.testing.assert_close(mean[b, j], ref[l][b, start[b]:end[b]].mean(0), rtol=1e-12, atol=1e-12)
    stacked = torch.stack(ref)  # the op layer's span mean over transformers' stack gives the same
    torch.testing.assert_close(M.mean_hidden_over_span(stacked, start, end)[:, [2, 3]], mean, rtol=1e-12, atol=1e-12)
    # no hook is left behind
    blocks = model.model.layers if kind == "llama" else model.transformer.h
    assert all(not blk._forward_pre_hooks for blk in blocks)
    # the pass stops at the highest layer asked for: the blocks above it do not run
    ran = []
    handles = [blk.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, blk in enumerate(blocks)]
    hf.hidden_states(model, ids, mask, layers=[1])
    assert ran == [0]
    ran.clear()
    hf.hidden_states(model, ids, mask, layers=[3])
    assert ran == [0, 1, 2]
    for h in handles:
        h.remove()


def test_eigenscore_from_sampled_answers():
    """EigenScore's inputs: the middle layer's state at each sampled answer's last token."""
    model = tiny("llama")
    g = torch.Generator().manual_seed(5)
    B, K, S = 2, 4, 9
    ids = torch.randint(3, V, (B * K, S), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    Z = hf.hidden_states(model, ids, mask, layers=[3 // 2]).reshape(B, K, -1)
    u = M.eigenscore(Z)
    from flashuq.reference import eigenscore_ref
    for b in range(B):
        assert u[b].item() == pytest.approx(eigenscore_ref(Z[b].numpy()), rel=1e-10)


def test_hidden_states_argument_errors():
    model = tiny("gpt2")
    ids, mask = batch(True)
    with pytest.raises(ValueError, match="layers"):
        hf.hidden_states(model, ids, mask, layers=[4])
    with pytest.raises(TypeError, match="layers"):
        hf.hidden_states(model, ids, mask, layers=[1.0])
    with pytest.raises(ValueError, match="layers"):
        hf.hidden_states(model, ids, mask, layers=[])
    with pytest.raises(ValueError, match="reduce"):
        hf.hidden_states(model, ids, mask, layers=[1], reduce="max")
    with pytest.raises(ValueError, match="start/end"):
        hf.hidden_states(model, ids, mask, layers=[1], reduce="mean")
    with pytest.raises(ValueError, match="start/end"):
        hf.hidden_states(model, ids, mask, layers=[1], reduce="mean", start=torch.tensor([0, 0, 5]),
                         end=torch.tensor([1, 1, 4]))
    with pytest.raises(ValueError, match="attention_mask"):
        hf.hidden_states(model, ids, torch.zeros_like(mask), layers=[1])
    with pytest.raises(ValueError, match="input_ids"):
        hf.hidden_states(model, ids[0], None, layers=[1])
