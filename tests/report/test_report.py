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
