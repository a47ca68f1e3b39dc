"""`flashuq calibrate` and flashuq.policy: the policy's threshold is abstention_threshold's on the
method's scores of the same greedy answers (run_eval run directly), and bad policy files are refused."""

import json
import math

import pytest

from flashuq import cli, evaluate, metrics, policy
from flashuq import data as fd


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calib.jsonl"
    items = evaluate.load_questions()[:60]
    lines = [json.dumps({"question": it.question, "answers": it.answers}) for it in items]
    path.write_text("\n".join(lines[:30] + ["{not json"] + lines[30:]) + "\n")
    return path, items


def test_calibrate_writes_the_threshold_of_the_direct_run(calib, smollm2_dir, tmp_path, capsys):
    path, items = calib
    out = tmp_path / "policy.json"
    rc = cli.main(["calibrate", "--model", smollm2_dir, "--data", str(path), "--method", "msp", "--risk", "0.5",
                   "--delta", "0.2", "--max-new-tokens", "12", "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    model, tok = fd.load_model(smollm2_dir)
    res = evaluate.run_eval(model, tok, items, max_new_tokens=12, progress=None)
    want = metrics.abstention_threshold(res.scores["msp"], res.correct, risk=0.5, delta=0.2)
    pol = policy.load_policy(out, model=smollm2_dir, methods=["msp", "perplexity"])
    assert pol.method == "msp" and (pol.risk, pol.delta, pol.bound) == (0.5, 0.2, "binomial")
    assert pol.threshold == pytest.approx(want.threshold, rel=1e-6) or pol.threshold == want.threshold == -math.inf
    c = pol.calibration
    assert (c["n"], c["kept"], c["errors"]) == (60, want.kept, want.errors)
    assert c["accuracy"] == pytest.approx(res.correct.mean())
    assert pol.generation["max_new_tokens"] == 12 and pol.generation["samples"] == 0
    # the policy applied to the calibration answers keeps exactly the counted ones
    kept = [not pol.abstain(u) for u in res.scores["msp"]]
    assert sum(kept) == want.kept
    assert pol.abstain(math.nan) and pol.abstain(math.inf)
    assert ("keeps" in printed) == (want.kept > 0)


def test_bad_policy_files(tmp_path):
    good = policy.Policy("msp", 1.5, 0.2, 0.1, "binomial", "smollm2", {"samples": 0}, {"n": 10})
    p = good.save(tmp_path / "p.json")
    assert policy.load_policy(p, model="smollm2", methods=["msp"]).threshold == 1.5
    with pytest.raises(ValueError, match="calibrated on"):
        policy.load_policy(p, model=str(tmp_path))
    with pytest.raises(ValueError, match="not computed here"):
        policy.load_policy(p, methods=["perplexity"])
    never = policy.Policy("msp", -math.inf, 0.2, 0.1, "binomial", "smollm2", {}, {})
    assert policy.load_policy(never.save(tmp_path / "n.json")).threshold == -math.inf
    assert json.loads((tmp_path / "n.json").read_text())["threshold"] is None
    for text, why in (("{", "not a JSON"), ("[]", "version"), (json.dumps({"version": 1}), "lacks"),
                      (json.dumps({**good.to_json(), "risk": 1.5}), "risk"),
                      (json.dumps({**good.to_json(), "threshold": "low"}), "threshold"),
                      (json.dumps({**good.to_json(), "bound": "chernoff"}), "bound")):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ValueError, match=why):
            policy.load_policy(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        policy.load_policy(tmp_path / "missing.json")


def test_calibrate_refuses_bad_arguments(calib, tmp_path, capsys):
    path, _ = calib
    out = str(tmp_path / "p.json")
    assert cli.main(["calibrate", "--model", "smollm2", "--data", str(path), "--method", "semantic_entropy",
                     "--risk", "0.2", "--out", out]) == 2
    assert "samples=0" in capsys.readouterr().err
    assert cli.main(["calibrate", "--model", "smollm2", "--data", str(path), "--method", "msp", "--risk", "1.2",
                     "--out", out]) == 2
    assert "risk" in capsys.readouterr().err
    assert cli.main(["calibrate", "--model", "smollm2", "--data", str(tmp_path / "none.jsonl"), "--method", "msp",
                     "--risk", "0.2", "--out", out]) == 2
    assert not (tmp_path / "p.json").exists()
    for kw, err, why in (({"samples": -1}, ValueError, "samples"), ({"max_new_tokens": 0}, ValueError, "max_new_tokens"),
                         ({"samples": 2.0}, TypeError, "samples"), ({"temperature": 0.0}, ValueError, "temperature"),
                         ({"batch_size": 0}, ValueError, "batch_size")):
        with pytest.raises(err, match=why):
            policy.calibrate("smollm2", path, method="msp", risk=0.2, **kw)
