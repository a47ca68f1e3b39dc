"""bench/gpu.py's result checks (the benchmark itself needs a GPU; its checks run anywhere)."""


import pytest
import torch

import flashuq as fuq

from bench_loader import load_bench


def test_check_linear_accepts_agreement_and_refuses_a_wrong_field(monkeypatch):
    bench = load_bench("gpu")
    g = torch.Generator().manual_seed(0)
    h = torch.randn(16, 32, generator=g)
    w = torch.randn(300, 32, generator=g) * 32 ** -0.5
    tok = torch.randint(0, 300, (16,), generator=g)
    assert bench.check_linear(h, w, tok) < 1e-5
    real = fuq.token_stats_linear

    def off(*a, **k):  # entropies 5% too large
        s = real(*a, **k)
        return s._replace(entropy=s.entropy * 1.05)

    monkeypatch.setattr(fuq, "token_stats_linear", off)
    with pytest.raises(RuntimeError, match="entropy differs"):
        bench.check_linear(h, w, tok)
