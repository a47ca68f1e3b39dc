"""Q-Tuning's Error–Uncertainty plane (flashuq.data.qtuning, `flashuq select`; docs/eu_plane.md):
hand-made samples in each quadrant, the float64 transcriptions of flashuq.reference, the bisection's
maximality checked on a grid of levels, and `flashuq select` on a real SmolLM2-scored set."""

import json
import math

import numpy as np
import pytest

from flashuq import cli
from flashuq import data as fd
from flashuq import reference as R
from flashuq.data import qtuning as E

#: SFT-like pairs: some answers right and plain, some wrong or odd (high error), some open-ended
PAIRS = [
    {"id": "p0", "prompt": "What is the capital of Italy?", "response": "The capital of Italy is Rome."},
    {"id": "p1", "prompt": "What is 7 times 8?", "response": "7 times 8 is 56."},
    {"id": "p2", "prompt": "Name the largest ocean.", "response": "The largest ocean is the Sahara Ocean."},
    {"id": "p3", "prompt": "Write a short poem about rain.", "response": "Soft rain taps the window, a quiet song."},
    {"id": "p4", "prompt": "Who painted the Mona Lisa?", "response": "Zebra quantum marmalade seventeen."},
    {"id": "p5", "prompt": "Give me a tip for sleeping well.", "response": "Keep a regular bedtime and a dark room."},
    {"id": "p6", "prompt": "What color is grass?", "response": "Grass is green."},
    {"id": "p7", "prompt": "Tell me something about cats.", "response": "Cats sleep for much of the day."},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def clusters(n=10, seed=0):
    """n samples around each quadrant's corner: Q1 (high PPL, high Ent), Q2 (high, low), Q3 (low, low),
    Q4 (low, high)."""
    rng = np.random.default_rng(seed)
    centre = {1: (40.0, 3.0), 2: (40.0, 0.5), 3: (2.0, 0.5), 4: (2.0, 3.0)}
    ppl, ent, truth = [], [], []
    for q, (p, e) in centre.items():
        ppl += list(p * np.exp(rng.normal(0, 0.1, n)))
        ent += list(e + rng.normal(0, 0.05, n))
        truth += [q] * n
    return np.array(ppl), np.array(ent), np.array(truth)


def test_hand_made_samples_land_in_their_quadrants():
    ppl, ent, truth = clusters()
    plane = E.eu_plane(ppl, ent, keep_samples=0.5)
    assert plane.budget == 20
    assert plane.quadrant.tolist() == truth.tolist()
    assert plane.kept.tolist() == [q in (2, 4) for q in truth]  # Q2 and Q4 kept, Q1 and Q3 dropped
    # a smaller budget keeps only the extreme corners of Q2 and Q4: within budget, never Q1 or Q3
    small = E.eu_plane(ppl, ent, keep_samples=0.2)
    assert 0 < small.kept.sum() <= 8 and set(truth[small.kept]) <= {2, 4}
    assert small.quadrant.tolist() == truth.tolist()


@pytest.mark.parametrize("keep", [0.05, 0.125, 0.25, 0.4, 0.5, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plane_equals_the_float64_transcription(keep, seed):
    rng = np.random.default_rng(seed)
    N = 97
    ent = rng.gamma(2.0, 0.6, N)
    ppl = np.exp(rng.normal(1.0, 0.8, N) - 0.3 * ent)  # correlated axes, as in real sets
    ppl[:5] = ppl[5]  # ties
    plane = E.eu_plane(ppl, ent, keep)
    level, (pl, ph, el, eh), quadrant, kept = R.eu_plane_ref(ppl.tolist(), ent.tolist(), keep)
    assert plane.level == level
    assert (plane.ppl_low, plane.ppl_high, plane.ent_low, plane.ent_high) == pytest.approx((pl, ph, el, eh), rel=1e-12)
    assert plane.quadrant.tolist() == quadrant and plane.kept.tolist() == kept
    # the bisection's level is the largest within budget: on a grid of levels every larger one keeps too many
    count = lambda a: sum(1 for q in R.eu_kept_ref(ppl.tolist(), ent.tolist(), a)[1] if q)  # noqa: E731
    assert count(plane.level) <= plane.budget or plane.level == 0.0
    assert int(plane.kept.sum()) == count(plane.level)
    for a in np.linspace(0, 0.5, 401):
        if a > plane.level + 1e-9:
            assert count(a) > plane.budget


def test_nan_samples_take_no_part():
    ppl, ent, truth = clusters(n=5)
    ppl[0] = math.nan
    plane = E.eu_plane(ppl, ent, 0.5)
    assert plane.quadrant[0] == 0 and not plane.kept[0]
    # the other 19 are placed as if the NaN sample were not there (under the same budget of 10)
    ref = E.eu_plane(ppl[1:], ent[1:], plane.budget / 19)
    assert ref.budget == plane.budget == 10
    assert plane.quadrant[1:].tolist() == ref.quadrant.tolist() and plane.kept[1:].tolist() == ref.kept.tolist()
    assert plane.level == ref.level


def test_token_scores_and_mask():
    lp = [-0.1, -0.1, -5.0, -0.1, -0.1, -0.1]
    t = [math.exp(0.1), math.exp(0.1), math.exp(5.0)]
    # by hand, λ = 0.5: the spike and its two neighbours score ~75, the rest ~1.66
    s = E.context_token_scores(lp, 0.5)
    assert s[0] == pytest.approx(0.5 * t[0] + 0.5 * 2 * t[0])
    assert s[1] == pytest.approx(0.5 * t[0] + 0.5 * (t[0] + t[2]))
    assert s[2] == pytest.approx(0.5 * t[2] + 0.5 * 2 * t[0])
    assert E.token_keep_mask(lp, 0.5, 0.5).tolist() == [1, 0, 0, 0, 1, 1]
    assert E.token_keep_mask(lp, 0.5, 0.0).tolist() == [1, 1, 0, 1, 0, 0]  # own PPL only; ties: the earlier
    rng = np.random.default_rng(4)
    for T in (1, 2, 3, 17, 64):
        lp = (-rng.gamma(1.0, 1.5, T)).tolist()
        for keep in (0.1, 0.5, 0.7, 1.0):
            for lam in (0.0, 0.3, 1.0):
                assert E.context_token_scores(lp, lam).tolist() == pytest.approx(R.context_token_scores_ref(lp, lam),
                                                                                 rel=1e-13)
                got = E.token_keep_mask(lp, keep, lam)
                assert got.tolist() == R.token_keep_mask_ref(lp, keep, lam)
                assert got.sum() == math.ceil(keep * T - 1e-9)


def test_bad_arguments():
    ppl, ent, _ = clusters(n=2)
    for keep in (0, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="keep_samples"):
            E.eu_plane(ppl, ent, keep)
    for keep in ("0.5", None, True):
        with pytest.raises(TypeError, match="keep_samples"):
            E.eu_plane(ppl, ent, keep)
    with pytest.raises(ValueError, match="ppl and ent"):
        E.eu_plane(ppl, ent[:-1], 0.5)
    with pytest.raises(ValueError, match="ppl"):
        E.eu_plane(np.ones((2, 2)), np.ones((2, 2)), 0.5)
    with pytest.raises(ValueError, match="keep_tokens"):
        E.token_keep_mask([-1.0, -2.0], 0.0)
    with pytest.raises(ValueError, match="lam"):
        E.context_token_scores([-1.0], 1.5)


@pytest.fixture(scope="module")
def scored(smollm2_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eu")
    run = fd.score(smollm2_dir, write_jsonl(tmp / "pairs.jsonl", PAIRS), tmp / "scored.parquet", tokens=True)
    assert run.scored == len(PAIRS)
    return run.out


def test_flashuq_select_on_a_scored_set(scored, tmp_path, capsys):
    out = tmp_path / "kept.jsonl"
    rc = cli.main(["select", "--scored", str(scored), "--keep-samples", "0.5", "--keep-tokens", "0.6",
                   "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    table = fd.read_scores(scored).to_pylist()
    lp = [r["token_logprob"] for r in table]
    ppl = [math.exp(-float(np.mean(v))) for v in lp]
    ent = [float(np.mean(r["token_entropy"])) for r in table]
    for r, p in zip(table, ppl):  # the plane's error is exp of flashuq score's perplexity (mean NLL)
        assert p == pytest.approx(math.exp(r["perplexity"]), rel=1e-5)
    _, _, quadrant, kept = R.eu_plane_ref(ppl, ent, 0.5)
    lines = [json.loads(s) for s in out.read_text().splitlines()]
    assert [x["row"] for x in lines] == [r["row"] for r, k in zip(table, kept) if k]
    assert 0 < len(lines) <= 4
    for x in lines:
        r = table[x["row"]]
        assert x["id"] == PAIRS[x["row"]]["id"] and x["quadrant"] == quadrant[x["row"]]
        assert x["ppl"] == pytest.approx(ppl[x["row"]]) and x["entropy"] == pytest.approx(ent[x["row"]])
        assert len(x["loss_mask"]) == r["response_tokens"] == len(x["response_ids"])
        want = R.token_keep_mask_ref(r["token_logprob"], 0.6) if x["quadrant"] == 2 else [1] * r["response_tokens"]
        assert x["loss_mask"] == want
        assert "token_logprob" not in x and "msp" not in x
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert f"kept {len(lines)} of {len(PAIRS)} samples" in printed


def test_flashuq_select_refuses(scored, tmp_path, capsys):
    out = str(tmp_path / "k.jsonl")
    assert cli.main(["select", "--scored", str(tmp_path / "nope"), "--keep-samples", "0.5", "--out", out]) == 2
    assert "scored" in capsys.readouterr().err
    assert cli.main(["select", "--scored", str(scored), "--keep-samples", "1.5", "--out", out]) == 2
    assert "keep_samples" in capsys.readouterr().err
    assert cli.main(["select", "--scored", str(scored), "--keep-samples", "0.5", "--keep-tokens", "0",
                     "--out", out]) == 2
    assert "keep_tokens" in capsys.readouterr().err
