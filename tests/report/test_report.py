"""flashuq.report: the plots hold the numbers of flashuq.metrics and are written as PNG / SVG."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import flashuq as fuq  # noqa: E402
from flashuq import report  # noqa: E402


def data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    quality = rng.random(n)
    good = -quality + 0.3 * rng.standard_normal(n)   # an informative uncertainty
    noise = rng.standard_normal(n)                    # an uninformative one
    return quality, good, noise


def test_rejection_curve_plot_holds_the_metric_curves(tmp_path):
    q, good, noise = data()
    fig = report.plot_rejection_curve(np.stack([good, noise]), q, tmp_path / "rej.png", names=["good", "noise"])
    lines = {ln.get_label().split(" (")[0]: ln for ln in fig.axes[0].get_lines()}
    assert set(lines) == {"oracle", "good", "noise", "random"}
    c = fuq.metrics.rejection_curve(good, q)
    np.testing.assert_array_equal(lines["good"].get_xdata(), c.rejection_rate)
    np.testing.assert_array_equal(lines["good"].get_ydata(), c.quality)
    np.testing.assert_array_equal(lines["oracle"].get_ydata(), c.oracle)
    np.testing.assert_allclose(lines["random"].get_ydata(), q.mean(), rtol=1e-12)
    assert f"PRR {fuq.metrics.prr(good, q):.3f}" in lines["good"].get_label()
    png = (tmp_path / "rej.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_reliability_plot_bins_match_ece(tmp_path):
    q, good, _ = data(seed=1)
    correct = (q > 0.5).astype(float)
    fig = report.plot_reliability(good, correct, tmp_path / "rel.svg", n_bins=10)
    b = fuq.metrics.reliability_bins(good, correct, n_bins=10)
    acc_bars = [p for p in fig.axes[0].patches][: int((b.count > 0).sum())]
    np.testing.assert_allclose([p.get_height() for p in acc_bars], b.accuracy[b.count > 0], rtol=1e-12)
    np.testing.assert_array_equal([p.get_height() for p in fig.axes[1].patches], b.count)
    assert f"ECE {fuq.metrics.ece(good, correct, n_bins=10):.3f}" in fig.axes[0].get_title()
    # ece is Σ n_b/N |acc_b - conf_b| over the same bins
    used = b.count > 0
    assert fuq.metrics.ece(good, correct, n_bins=10) == pytest.approx(
        float(np.sum(b.count[used] / b.n * np.abs(b.accuracy[used] - b.confidence[used]))), rel=1e-12)
    assert (tmp_path / "rel.svg").read_text().lstrip().startswith(("<?xml", "<svg"))


def test_bad_arguments():
    q, good, _ = data(n=20)
    with pytest.raises(ValueError, match="path"):
        report.plot_rejection_curve(good, q, "curve.pdf")
    with pytest.raises(ValueError, match="uncertainty"):
        report.plot_rejection_curve(good[:-1], q)
    with pytest.raises(ValueError, match="names"):
        report.plot_rejection_curve(np.stack([good, good]), q, names=["a"])


def _eval_result(n=30, seed=0):
    from flashuq import evaluate

    rng = np.random.default_rng(seed)
    correct = rng.random(n) < 0.6
    items = [evaluate.Item(f"Question {i}?", [f"a{i}"], i + 1) for i in range(n)]
    toks = [[f"tok{i}_{j} " for j in range(1 + i % 4)] + ["<b>&"] for i in range(n)]
    stats = [{"logprob": list(np.log(rng.random(len(t)))), "entropy": list(rng.random(len(t)))} for t in toks]
    scores = {"good": -correct.astype(float) + 0.4 * rng.standard_normal(n), "noise": rng.standard_normal(n)}
    return evaluate.EvalResult(items, ["".join(t) for t in toks], correct, scores, toks, stats)


def test_html_report_holds_every_token_and_the_leaderboard(tmp_path):
    from html.parser import HTMLParser

    from flashuq import evaluate

    res = _eval_result()
    board = evaluate.leaderboard(res, n_resamples=20)
    path = report.write_html(res, board, tmp_path / "r.html")

    class Collect(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tok, self.rows, self.imgs, self.text = [], 0, [], []
            self._in_tok = False

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "span" and a.get("class") == "tok":
                self.tok.append(a)
                self._in_tok = True
            if tag == "tr" and a.get("class") == "lb":
                self.rows += 1
            if tag == "img":
                self.imgs.append(a["src"])

        def handle_endtag(self, tag):
            self._in_tok = False

        def handle_data(self, data):
            if self._in_tok:
                self.text.append(data)

    c = Collect()
    c.feed(open(path, encoding="utf-8").read())
    assert len(c.tok) == sum(len(t) for t in res.tokens)          # every token is a coloured span
    assert c.text.count("<b>&") == len(res.tokens)                 # escaped, not interpreted
    assert c.rows == 2 and len(c.imgs) == 2 and all(s.startswith("data:image/png;base64,") for s in c.imgs)
    first = c.tok[0]
    p = float(np.exp(res.token_stats[0]["logprob"][0]))
    assert f"p {p:.4g}" in first["title"] and "entropy" in first["title"]
    assert first["style"].startswith(f"background:hsl({120 * p:.0f},")
    assert "http" not in open(path, encoding="utf-8").read().replace("http-equiv", "")  # self-contained


def test_html_report_in_headless_chromium(tmp_path):
    import shutil
    import subprocess

    from flashuq import evaluate

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    res = _eval_result()
    path = report.write_html(res, evaluate.leaderboard(res, n_resamples=20), tmp_path / "r.html")
    shot = tmp_path / "shot.png"
    # no sandbox: CI runs as root; no network, first-run or GPU work: the page is self-contained
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run(flags + ["--hide-scrollbars", f"--screenshot={shot}", "--window-size=1000,1400", f"file://{path}"],
                   check=True, capture_output=True, timeout=120)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    dom = subprocess.run(flags + ["--dump-dom", f"file://{path}"],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    assert dom.count("class=\"tok\"") == sum(len(t) for t in res.tokens)  # the spans survive the real parser
