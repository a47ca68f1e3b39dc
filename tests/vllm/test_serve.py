"""``flashuq serve``: a real vLLM server on 127.0.0.1 queried with the official ``openai`` client.

The served scores are checked against ``flashuq.vllm.generate`` on the same prompt tokens (an engine
in this process), streaming against non-streaming, the policy's decision against its threshold; each
bad request gets a 4xx and the next good request an answer (docs/serving.md)."""

import json
import math
import subprocess
import time

import numpy as np
import pytest

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

import flashuq.vllm as fv  # noqa: E402
from flashuq.methods.scores import SCORES  # noqa: E402
from flashuq.vllm.serve import RequestError, parse_request_options, serve_args  # noqa: E402

from serve_cases import KEY, MAX_MODEL_LEN, THRESHOLD, flashuq_bin, policy  # noqa: E402
from vllm_cases import shutdown  # noqa: E402

PROMPT = "The capital of France is"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(flashuq_server):
    return {**flashuq_server,
            "client": openai.OpenAI(base_url=flashuq_server["base"] + "/v1", api_key=KEY, max_retries=0, timeout=120)}


@pytest.fixture(scope="module")
def served(server):
    """The greedy answers the tests compare: a completion and a chat completion, each with and without
    streaming."""
    c = server["client"]
    opts = {"flashuq": {"tokens": True, "topk": 3}, "return_token_ids": True}
    comp = c.completions.create(model="smollm2", prompt=PROMPT, max_tokens=12, temperature=0, extra_body=opts)
    chat = c.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=12, temperature=0,
                                     extra_body=opts)
    stream = list(c.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=12, temperature=0,
                                            stream=True, extra_body={"flashuq": {"tokens": True, "topk": 3}}))
    return comp, chat, stream


def _fq(choice) -> dict:
    return choice.model_extra["flashuq"]


def test_served_scores_equal_flashuq_vllm_generate(served, smollm2_dir):
    from vllm import SamplingParams

    comp, chat, _ = served
    cases = [(comp.choices[0].prompt_token_ids, comp.choices[0]), (chat.prompt_token_ids, chat.choices[0])]
    llm = fv.LLM(smollm2_dir, dtype="float32", enforce_eager=True, max_model_len=MAX_MODEL_LEN, seed=0)
    try:
        gens = fv.generate(llm, [{"prompt_token_ids": list(ids)} for ids, _ in cases],
                           SamplingParams(temperature=0, max_tokens=12), topk=3)
    finally:
        shutdown(llm)
    for (ids, choice), g in zip(cases, gens):
        fq = _fq(choice)
        tokens = list(g.output.outputs[0].token_ids)
        assert choice.model_extra["token_ids"] == tokens  # the client asked for them: kept
        assert fq["length"] == fq["covered"] == len(tokens) > 0
        assert set(fq["scores"]) == set(SCORES) - {"renyi_neg", "fisher_rao"}
        for name, v in g.scores[0].items():
            assert fq["scores"][name] == pytest.approx(v, rel=1e-5, abs=1e-5), name
        for f in ("logprob", "entropy", "max_logprob", "margin", "collision", "self_certainty", "lse"):
            np.testing.assert_allclose(fq["tokens"][f], getattr(g.stats[0], f).numpy(), rtol=1e-5, atol=1e-5,
                                       err_msg=f)
        np.testing.assert_allclose(fq["tokens"]["kurtosis"], g.stats[0].kurtosis.numpy(), rtol=1e-4)
        assert fq["tokens"]["argmax"] == g.stats[0].argmax.tolist() == tokens  # greedy: the emitted token
        assert fq["tokens"]["topk_ids"] == g.stats[0].topk_ids.tolist()
        np.testing.assert_allclose(fq["tokens"]["topk_logprobs"], g.stats[0].topk_logprobs.numpy(), rtol=1e-5,
                                   atol=1e-5)


def test_streaming_gives_the_scores_of_the_non_streaming_answer_in_the_final_chunk(served):
    _, chat, stream = served
    finals = [ch for ch in stream if ch.choices and ch.choices[0].finish_reason is not None]
    assert len(finals) == 1 and finals[0] is [ch for ch in stream if ch.choices][-1]
    assert all("flashuq" not in (ch.choices[0].model_extra or {}) for ch in stream if ch.choices and
               ch.choices[0].finish_reason is None)
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert text == chat.choices[0].message.content
    s, ns = _fq(finals[0].choices[0]), _fq(chat.choices[0])
    assert s["length"] == ns["length"] and s["tokens"]["argmax"] == ns["tokens"]["argmax"]
    for name in ns["scores"]:
        assert s["scores"][name] == pytest.approx(ns["scores"][name], rel=1e-6, abs=1e-6), name
    # the client did not ask for token ids: the ones the server asked vLLM for are gone
    assert all("token_ids" not in (ch.choices[0].model_extra or {}) for ch in stream if ch.choices)


def test_each_choice_of_a_sampled_stream_gets_its_own_scores(server):
    c = server["client"]
    chunks = list(c.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=6, temperature=1.0,
                                            seed=3, n=3, stream=True, stream_options={"include_usage": True},
                                            extra_body={"flashuq": {"tokens": True}, "return_token_ids": True}))
    assert chunks[-1].usage is not None and not chunks[-1].choices  # usage still comes last
    ids = {i: [] for i in range(3)}
    final = {}
    for ch in chunks:
        for choice in ch.choices:
            ids[choice.index] += choice.model_extra.get("token_ids") or []
            if choice.finish_reason is not None:
                final[choice.index] = _fq(choice)
    assert sorted(final) == [0, 1, 2]
    for i, fq in final.items():
        assert fq["length"] == fq["covered"] == len(ids[i]) > 0
        lp = np.array(fq["tokens"]["logprob"])
        assert np.isfinite(lp).all() and (lp <= 0).all()
        # msp = -sum log p(token): the per-token log-probs of this choice, not another's
        assert fq["scores"]["msp"] == pytest.approx(-lp.sum(), rel=1e-5, abs=1e-5)


def test_the_policy_decides_from_its_method_and_threshold(served):
    comp, chat, _ = served
    seen = set()
    for choice in (comp.choices[0], chat.choices[0]):
        fq = _fq(choice)
        assert fq["method"] == "msp" and fq["threshold"] == THRESHOLD
        assert fq["abstain"] is (not fq["scores"]["msp"] <= THRESHOLD)
        seen.add(fq["abstain"])
    assert seen == {False, True}, "the two answers fall on both sides of the threshold"


def test_requests_that_do_not_opt_in_are_untouched(server):
    c = server["client"]
    r = c.completions.create(model="smollm2", prompt=PROMPT, max_tokens=4, temperature=0)
    assert "flashuq" not in r.choices[0].model_extra and r.choices[0].model_extra.get("token_ids") is None
    assert r.choices[0].text.strip().startswith("Paris")


def _good(server):
    r = server["client"].completions.create(model="smollm2", prompt=PROMPT, max_tokens=3, temperature=0,
                                            extra_body={"flashuq": {}})
    assert math.isfinite(_fq(r.choices[0])["scores"]["msp"])


BAD_OPTIONS = [
    ({"flashuq": {"bogus": 1}}, "flashuq.bogus"),
    ({"flashuq": {"key": "mine"}}, "flashuq.key"),
    ({"flashuq": {"topk": "3"}}, "flashuq.topk"),
    ({"flashuq": {"topk": 65}}, "flashuq.topk"),
    ({"flashuq": {"temperature": 1.0}}, "flashuq.temperature"),
    ({"flashuq": {"renyi": 1}}, "flashuq.renyi"),
    ({"flashuq": {"tokens": "yes"}}, "flashuq.tokens"),
    ({"flashuq": 5}, "flashuq"),
    ({"flashuq": {}, "vllm_xargs": {"flashuq": "{}"}}, "vllm_xargs"),
    ({"flashuq": {}, "echo": True}, "echo"),
]


@pytest.mark.parametrize("body,param", BAD_OPTIONS, ids=[p for _, p in BAD_OPTIONS])
def test_bad_flashuq_options_get_400_naming_the_option(server, body, param):
    with pytest.raises(openai.BadRequestError) as e:
        server["client"].completions.create(model="smollm2", prompt=PROMPT, max_tokens=3, extra_body=body)
    assert e.value.status_code == 400 and e.value.body["param"] == param
    _good(server)


def test_other_bad_requests_get_4xx_and_the_server_keeps_answering(server):
    c, base = server["client"], server["base"]
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = httpx.post(base + "/v1/completions", content=b'{"model": "smollm2", "prompt": "x", "flashuq": {',
                   headers=auth, timeout=30)
    assert r.status_code == 400
    _good(server)
    with pytest.raises(openai.BadRequestError):  # a wrong type of vLLM's own
        c.completions.create(model="smollm2", prompt=PROMPT, max_tokens="many", extra_body={"flashuq": {}})
    _good(server)
    with pytest.raises(openai.BadRequestError) as e:  # longer than the context
        c.completions.create(model="smollm2", prompt="word " * (2 * MAX_MODEL_LEN), max_tokens=3,
                             extra_body={"flashuq": {}})
    assert e.value.status_code == 400
    _good(server)
    with pytest.raises(openai.BadRequestError) as e:  # several prompts share one request's parameters
        c.completions.create(model="smollm2", prompt=["a", "b"], max_tokens=3, extra_body={"flashuq": {}})
    assert e.value.body["param"] == "prompt"
    _good(server)
    r = httpx.post(base + "/v1/completions", content=b"x" * (64 * 1024 * 1024 + 1), headers=auth, timeout=60)
    assert r.status_code == 413
    _good(server)


def test_a_stream_cut_off_midway_leaves_the_server_answering(server):
    body = {"model": "smollm2", "prompt": PROMPT, "max_tokens": 200, "temperature": 1.0, "stream": True,
            "ignore_eos": True, "flashuq": {"tokens": True}}
    with httpx.stream("POST", server["base"] + "/v1/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.status_code == 200
        it = r.iter_lines()
        first = next(line for line in it if line.startswith("data: "))
        assert json.loads(first[6:])["choices"]
    # the connection is closed with most of the 200 tokens still to come
    _good(server)
    _good(server)
    # what was recorded for the cut-off request is freed (a second after vLLM aborts it)
    deadline = time.time() + 30
    while _status(server)["keys"] and time.time() < deadline:
        time.sleep(0.5)
    assert _status(server)["keys"] == 0


def _status(server) -> dict:
    r = httpx.get(server["base"] + "/flashuq/status", timeout=30)
    assert r.status_code == 200
    return r.json()


def test_the_status_endpoint_counts_what_the_workers_hold(server):
    before = _status(server)
    assert before["processors"] >= 1 and before["dropped_keys"] == 0
    _good(server)
    after = _status(server)
    assert after["steps"] >= before["steps"] + 3  # three tokens recorded ...
    assert after["keys"] == 0  # ... and fetched with the response


def test_a_wrong_or_missing_api_key_gets_401(server):
    for key in ("wrong", None):
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        # a bad option too: authentication answers first
        r = httpx.post(server["base"] + "/v1/completions", headers=headers, timeout=30,
                       json={"model": "smollm2", "prompt": PROMPT, "max_tokens": 3, "flashuq": {"bogus": 1}})
        assert r.status_code == 401
    bad = openai.OpenAI(base_url=server["base"] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="smollm2", prompt=PROMPT, max_tokens=3)
    _good(server)


# -- without a server --------------------------------------------------------------------------------

def test_request_options_parse_and_name_the_wrong_one():
    assert parse_request_options({}) == {"topk": 0, "temperature": "model", "renyi": False, "tokens": False}
    assert parse_request_options(True)["topk"] == 0
    assert parse_request_options({"topk": 5, "temperature": "sampling", "renyi": True, "tokens": True}) == \
        {"topk": 5, "temperature": "sampling", "renyi": True, "tokens": True}
    for raw, param in [({"topk": -1}, "flashuq.topk"), ({"topk": True}, "flashuq.topk"), ([], "flashuq"),
                       ({"temperature": "hot"}, "flashuq.temperature"), ({"x": 1, "y": 2}, "flashuq.x")]:
        with pytest.raises(RequestError) as e:
            parse_request_options(raw)
        assert e.value.param == param and e.value.status == 400
        assert isinstance(e.value, ValueError)


def test_serve_adds_its_processor_extension_and_middleware_to_vllms_arguments(smollm2_dir):
    _, _, args = serve_args(smollm2_dir, ["--logits-processors", "my.mod:Proc", "--max-model-len", "128"])
    assert args.logits_processors == ["my.mod:Proc", fv.PROCESSOR]
    assert args.worker_extension_cls == fv.WORKER_EXTENSION
    assert args.middleware == ["flashuq.vllm.serve.FlashUQMiddleware"]
    assert args.host == "127.0.0.1" and args.port == 8000 and args.max_model_len == 128
    with pytest.raises(ValueError, match="--worker-extension-cls"):
        serve_args(smollm2_dir, ["--worker-extension-cls", "other.Ext"])
    with pytest.raises(ValueError, match="--api-key"):
        serve_args(smollm2_dir, ["--api-key", "k"])


@pytest.mark.parametrize("pol,message", [(policy(model="/elsewhere/model"), "calibrated on '/elsewhere/model'"),
                                         (policy(method="semantic_entropy"), "is not computed here")])
def test_serve_refuses_a_policy_for_another_model_or_method(tmp_path, pol, message):
    path = pol.save(tmp_path / "policy.json")
    r = subprocess.run([flashuq_bin(), "serve", "smollm2", "--policy", str(path)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]


def test_the_processor_takes_its_options_as_json_text_too():
    from flashuq.vllm._record import Options, parse_options

    as_text = parse_options({"flashuq": '{"key": "k", "topk": 2}'})
    assert as_text == parse_options({"flashuq": {"key": "k", "topk": 2}}) == Options("k", 2, "model", False)
    assert parse_options({"other": "x"}) is None
