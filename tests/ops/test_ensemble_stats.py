"""flashuq.ensemble_stats on the CPU (C++ kernel) and the public API around it."""

import math

import numpy as np
import pytest
import torch
from scipy.special import log_softmax as np_log_softmax
from scipy.special import logsumexp as np_logsumexp
from scipy.special import xlogy

import flashuq as fuq
from flashuq.reference import ensemble_stats as reference
from isa_cases import isa_levels, limited_isa
from thread_count import torch_threads

FIELDS = fuq.EnsembleStats._fields
# docs/methods.md#ensemble golden values: three members, logits = log P
GOLDEN_P = [[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.9, 0.05, 0.05]]
GOLDEN = dict(total=0.7881169759375681, aleatoric=0.7131882121066063, epistemic=0.07492876383096181,
              epkl=0.166262760762798, rmi=0.09133399693183619)


def make(M=3, lead=(2, 5), V=1000, *, dtype=torch.float32, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(M, *lead, V, generator=g, dtype=torch.float64) * scale).to(dtype)


def assert_close(got, want, *, rtol, atol=0.0):
    for f in FIELDS:
        u, v = getattr(got, f), getattr(want, f)
        assert u.shape == v.shape, f
        torch.testing.assert_close(u.double(), v.double(), rtol=rtol, atol=atol, equal_nan=True, msg=f)


def assert_bitwise(a, b):
    for f in FIELDS:
        u, v = getattr(a, f), getattr(b, f)
        assert torch.equal(torch.isnan(u), torch.isnan(v)), f
        assert torch.equal(u.nan_to_num(0.0), v.nan_to_num(0.0)), f


def numpy_stats(logits, dim=0, member_ll=None, temperature=1.0):
    """An independent transcription with numpy/scipy (ValUES / LM-Polygraph style), finite rows."""
    x = np.moveaxis(np.asarray(logits, dtype=np.float64), dim, 0) / temperature
    M = x.shape[0]
    lp = np_log_softmax(x, axis=-1)
    p = np.exp(lp)
    if member_ll is None:
        w = np.full(x.shape[:-1] + (1,), 1.0 / M)
    else:
        ll = np.moveaxis(np.asarray(member_ll, dtype=np.float64), dim, 0)
        w = np.exp(ll - np_logsumexp(ll, axis=0, keepdims=True))[..., None]
    pbar = (w * p).sum(0)
    tu = -xlogy(pbar, pbar).sum(-1)
    au = (w[..., 0] * -xlogy(p, p).sum(-1)).sum(0)
    epkl_total = -(pbar * (w * lp).sum(0)).sum(-1)
    return dict(total=tu, aleatoric=au, epistemic=tu - au, epkl=epkl_total - au, rmi=epkl_total - tu)


# ---- values -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)], ids=str)
def test_golden(dtype, tol):
    x = torch.tensor(GOLDEN_P, dtype=torch.float64).log().to(dtype)
    got = fuq.ensemble_stats(x)
    assert got.total.dtype == dtype and got.total.shape == ()
    for f, want in GOLDEN.items():
        assert abs(getattr(got, f).item() - want) <= tol * abs(want), f
    # the same members on another axis, repeated over a batch
    got2 = fuq.ensemble_stats(x.unsqueeze(0).expand(4, 3, 3), dim=1)
    for f, want in GOLDEN.items():
        assert torch.allclose(getattr(got2, f).double(), torch.full((4,), want, dtype=torch.float64), rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("V", [7, 1025, 3000])
def test_matches_reference(dtype, V):
    x = make(M=4, V=V, dtype=dtype, seed=V)
    got = fuq.ensemble_stats(x)
    want = reference(x)  # float64 on the same (rounded) inputs
    fdt = torch.float64 if dtype == torch.float64 else torch.float32
    assert all(getattr(got, f).dtype == fdt for f in FIELDS)
    assert_close(got, want, rtol=1e-12 if dtype == torch.float64 else 2e-6, atol=1e-12)


@pytest.mark.parametrize("M", [1, 2, 5])
@pytest.mark.parametrize("scale", [0.3, 3.0, 12.0])
def test_matches_numpy_transcription(M, scale):
    x = make(M=M, lead=(3, 4), V=257, dtype=torch.float64, scale=scale, seed=M)
    got = fuq.ensemble_stats(x)
    want = numpy_stats(x.numpy())
    for f in FIELDS:
        np.testing.assert_allclose(getattr(got, f).numpy(), want[f], rtol=1e-10, atol=1e-13, err_msg=f)


def test_identities_and_signs():
    x = make(M=6, lead=(4, 7), V=500, dtype=torch.float32, scale=5.0)
    s = fuq.ensemble_stats(x)
    assert all(bool((getattr(s, f) >= 0).all()) for f in FIELDS)
    torch.testing.assert_close(s.total, s.aleatoric + s.epistemic, rtol=1e-6, atol=0)
    torch.testing.assert_close(s.epkl, s.epistemic + s.rmi, rtol=1e-6, atol=0)
    assert bool((s.total <= math.log(500) + 1e-5).all())


def test_single_member_has_no_epistemic_part():
    x = make(M=1, lead=(5,), V=300, dtype=torch.float64)
    s = fuq.ensemble_stats(x)
    H = fuq.token_stats(x[0]).entropy
    torch.testing.assert_close(s.aleatoric, H, rtol=1e-13, atol=0)
    torch.testing.assert_close(s.total, H, rtol=1e-13, atol=0)
    assert torch.equal(s.epistemic, torch.zeros(5, dtype=torch.float64))
    assert torch.equal(s.epkl, torch.zeros(5, dtype=torch.float64))
    assert torch.equal(s.rmi, torch.zeros(5, dtype=torch.float64))


def test_vocabulary_of_one_and_empty_batch():
    s = fuq.ensemble_stats(torch.randn(3, 4, 1))
    assert torch.equal(s.aleatoric, torch.zeros(4))
    # one column: p̄ = 1 up to the rounding of log Σ w (the kernel's vectorised log against the
    # weights' log), so the epistemic terms are 0 up to the square of a rounding error
    assert all(bool(((getattr(s, f) >= 0) & (getattr(s, f) <= 1e-25)).all()) for f in FIELDS)
    e = fuq.ensemble_stats(torch.randn(3, 0, 5, 10), dim=0)
    assert all(getattr(e, f).shape == (0, 5) for f in FIELDS)


def test_temperature():
    x = make(M=3, lead=(4,), V=333, dtype=torch.float64)
    got = fuq.ensemble_stats(x, temperature=0.7)
    assert_close(got, reference(x, temperature=0.7), rtol=1e-12, atol=1e-14)
    assert_close(got, fuq.ensemble_stats(x / 0.7), rtol=1e-12, atol=1e-14)


def test_epistemic_keeps_its_digits_when_members_agree():
    # members differ by ~1e-4 in their logits: MI ~ 1e-9 << TU ~ 5. fp32 TU - AU would be noise
    # (fp32 rounding of TU is ~5e-7); the non-negative terms keep MI to ~1e-6 relative.
    g = torch.Generator().manual_seed(3)
    base = torch.randn(1, 4, 2000, generator=g, dtype=torch.float64) * 2
    x64 = base + 1e-4 * torch.randn(5, 4, 2000, generator=g, dtype=torch.float64)
    x = x64.float()
    got = fuq.ensemble_stats(x)
    want = numpy_stats(x.double().numpy())
    # the float64 reference's TU - AU has an absolute error ~1e-15, i.e. ~1e-6 relative here
    assert bool((got.epistemic > 0).all())
    np.testing.assert_allclose(got.epistemic.numpy(), want["epistemic"], rtol=1e-5)
    np.testing.assert_allclose(got.rmi.numpy(), want["rmi"], rtol=1e-5)
    # identical members: 0 up to the square of a rounding error (r_mv = O(eps), φ = O(r²))
    same = fuq.ensemble_stats(x[:1].expand(4, 4, 2000))
    assert bool((same.epistemic <= 1e-25).all()) and bool((same.rmi <= 1e-25).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_fp32_first_pass_keeps_the_epistemic_digits(dtype):
    # For fp32, bf16 and fp16 logits the members' normalisers come from fp32 sums (token_stats'
    # passes, docs/numerics.md#ensemble-numerics): their ~1e-7 error moves MI and RMI by ~1e-7
    # relative, not absolutely, so nearly agreeing members (MI ~ 1e-8 here) keep their digits, also
    # at a temperature (1/T rounded to fp32 in that pass) and over several blocks of columns.
    g = torch.Generator().manual_seed(5)
    base = torch.randn(1, 3, 5000, generator=g, dtype=torch.float64) * 2
    x = (base + 1e-3 * torch.randn(4, 3, 5000, generator=g, dtype=torch.float64)).to(dtype)
    for t in (1.0, 0.7):
        got = fuq.ensemble_stats(x, temperature=t)
        want = numpy_stats(x.double().numpy(), temperature=t)
        assert bool((got.epistemic > 0).all())
        np.testing.assert_allclose(got.epistemic.numpy(), want["epistemic"], rtol=1e-5)
        np.testing.assert_allclose(got.rmi.numpy(), want["rmi"], rtol=1e-5)
        np.testing.assert_allclose(got.aleatoric.numpy(), want["aleatoric"], rtol=2e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_fp32_second_pass_keeps_the_epistemic_digits(dtype):
    # Pass 2 of fp32, bf16 and fp16 logits runs in fp32 relative to a reference member per column
    # (docs/numerics.md#ensemble-numerics): nearly agreeing members keep MI's and RMI's digits with
    # unequal weights (mode "ep") and with logits offset per member by large constants (which the
    # normalisers absorb, and which an fp32 difference of log-probabilities would turn into noise).
    g = torch.Generator().manual_seed(8)
    base = torch.randn(1, 3, 3000, generator=g, dtype=torch.float64) * 2
    x = base + 1e-3 * torch.randn(4, 3, 3000, generator=g, dtype=torch.float64)
    x = (x + torch.tensor([0.0, 37.0, -55.0, 120.0], dtype=torch.float64).view(4, 1, 1)).to(dtype)
    ll = torch.tensor([0.0, -0.4, -1.1, 0.3], dtype=torch.float64).view(4, 1).expand(4, 3)
    spread = torch.tensor([0.0, -0.4, -5.1, 0.3], dtype=torch.float64).view(4, 1).expand(4, 3)  # δ in two floats
    for w in (None, ll, spread):
        kwargs = {} if w is None else {"mode": "ep", "member_ll": w}
        got = fuq.ensemble_stats(x, **kwargs)
        want = numpy_stats(x.double().numpy(), member_ll=None if w is None else w.numpy())
        assert bool((got.epistemic > 0).all())
        np.testing.assert_allclose(got.epistemic.numpy(), want["epistemic"], rtol=1e-5)
        np.testing.assert_allclose(got.rmi.numpy(), want["rmi"], rtol=1e-5)


def test_reference_member_with_a_small_weight():
    # mode "ep", member 2 with weight ~1e-4 but sure of columns 0..19 where members 0 and 1 (which
    # nearly agree) are not: there it is each column's reference member and p̄_v / P_ref,v ~ 1e-4, a
    # sum that 1 + (its difference to 1) would round to noise in fp32
    g = torch.Generator().manual_seed(12)
    base = torch.randn(1, 4, 600, generator=g, dtype=torch.float64) * 2
    x = base + 1e-3 * torch.randn(3, 4, 600, generator=g, dtype=torch.float64)
    x[:2, :, :20] -= 12.0
    x = x.float()
    ll = torch.tensor([0.0, 0.0, -9.0]).view(3, 1).expand(3, 4)
    got = fuq.ensemble_stats(x, mode="ep", member_ll=ll)
    want = numpy_stats(x.double().numpy(), member_ll=ll.double().numpy())
    for f in FIELDS:
        np.testing.assert_allclose(getattr(got, f).numpy(), want[f], rtol=2e-6, err_msg=f)


def numpy_kl(logits, member_ll, temperature=1.0):
    """MI = Σ_m w_m KL(P_m ‖ p̄) and RMI = Σ_m w_m KL(p̄ ‖ P_m) summed as KL divergences (numpy, finite
    logits): no TU - AU cancellation, for ensembles whose MI is far below the total."""
    x = np.asarray(logits, dtype=np.float64) / temperature
    ll = np.asarray(member_ll, dtype=np.float64)
    lw = (ll - np_logsumexp(ll, axis=0, keepdims=True))[..., None]
    lp = np_log_softmax(x, axis=-1)
    lpbar = np_logsumexp(lw + lp, axis=0)
    w, p, pbar = np.exp(lw), np.exp(lp), np.exp(lpbar)
    return dict(epistemic=(w * p * (lp - lpbar)).sum((0, -1)), rmi=(w * pbar * (lpbar - lp)).sum((0, -1)))


def test_light_member_far_above_the_reference_keeps_its_digits():
    # mode "ep": member 1 with weight e^-68 puts its mass where member 0 puts e^-66 (T = 1), so there
    # δ = ln(P_1 / P_0) ~ 66 > 0 and e^δ carries it: δ rounded to one float would cost e^δ a
    # relative 66 · 2^-24 (MI off by up to 3e-6); weights spanning more than e^4 keep δ in two floats
    x = torch.tensor([[[0.0, -66.0]], [[-80.0, 0.0]]])
    ll = torch.tensor([[0.0], [-68.0]])
    for t in (0.97, 0.9825, 0.985, 1.0):
        got = fuq.ensemble_stats(x, mode="ep", member_ll=ll, temperature=t)
        want = numpy_kl(x.numpy(), ll.numpy(), t)
        for f in ("epistemic", "rmi"):
            np.testing.assert_allclose(getattr(got, f).numpy(), want[f], rtol=5e-7, err_msg=f"{f} at T={t}")


@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_logits_masked_with_the_float_minimum(temperature):
    # member 0 masks ten tokens with torch.finfo(float32).min (as Hugging Face does), member 1 does
    # not: at T = 0.7 their log-probability difference lies beyond the float range, so those columns
    # are computed alone in fp64 (RMI ~ 2.6e33, finite, not inf)
    x = (torch.randn(2, 1, 1000, generator=torch.Generator().manual_seed(0)) * 3).float()
    x[0, 0, :10] = torch.finfo(torch.float32).min
    got = fuq.ensemble_stats(x, temperature=temperature)
    want = numpy_stats(x.double().numpy(), temperature=temperature)
    assert math.isfinite(got.rmi.item()) and got.rmi.item() > 1e33
    for f in FIELDS:
        np.testing.assert_allclose(getattr(got, f).numpy(), want[f], rtol=2e-6, err_msg=f)


def test_float_minimum_masks_of_the_heavy_members_keep_rmi_finite():
    # the heavy members mask token 0 with the float minimum, the light one (weight ~e^-40) does not:
    # their δ ~ -3.4e38 rounds to -FLT_MAX, not -inf, and Σ w |r| over the heavy members (weights
    # summing to 1 + 3e-8 in fp32) would overflow a float, so the column is computed alone
    # (RMI = EPKL ~ 2.03e20, finite; it came out +inf)
    x = torch.zeros(5, 1, 2)
    x[:4, 0, 0] = torch.finfo(torch.float32).min
    ll = torch.tensor([0.0, 0.0, -0.25, -0.25, -40.0]).view(5, 1)
    got = fuq.ensemble_stats(x, mode="ep", member_ll=ll)
    want = numpy_stats(x.double().numpy(), member_ll=ll.double().numpy())
    assert 2e20 < want["rmi"][0] < 2.1e20
    for f in FIELDS:  # the other fields are ~1e-17 (the light member's share): fp32's absolute floor
        np.testing.assert_allclose(getattr(got, f).numpy(), want[f], rtol=2e-6, atol=1e-18, err_msg=f)
    assert_close(got, fuq.ensemble_stats(x.double(), mode="ep", member_ll=ll), rtol=2e-6, atol=1e-18)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_float_minimum_masks_shared_by_all_members(dtype):
    # every member masks the same tokens with the float minimum (fp32's in an fp64 tensor): p̄ there
    # is e^-3.4e38, whose share rounds to 0, so the result is that of the vocabulary without them
    x = make(M=4, lead=(3,), V=300, dtype=dtype)
    x[:, :, ::7] = torch.finfo(torch.float32 if dtype == torch.float64 else dtype).min
    keep = torch.ones(300, dtype=torch.bool)
    keep[::7] = False
    for mode, ll in (("pe", None), ("ep", torch.tensor([0.0, -1.0, -6.0, -30.0]).view(4, 1).expand(4, 3))):
        got = fuq.ensemble_stats(x, mode=mode, member_ll=ll)
        assert all(bool(torch.isfinite(getattr(got, f)).all()) for f in FIELDS)
        assert_close(got, fuq.ensemble_stats(x[..., keep].contiguous(), mode=mode, member_ll=ll), rtol=1e-6,
                     atol=1e-12)
        assert_close(got, reference(x.double(), mode=mode, member_ll=ll), rtol=2e-6, atol=1e-12)


def test_token_impossible_under_one_member_with_weights_spanning_beyond_e4():
    # weights spanning e^6 keep δ in two floats; a -inf logit in one member where the others give
    # the token mass has δ = -inf (its low part is 0, not -inf - -inf): EPKL and RMI are +inf, the
    # rest finite and as the reference's
    x = make(M=3, lead=(4,), V=500, dtype=torch.float32, seed=7)
    x[1, :, ::10] = -math.inf
    ll = torch.tensor([0.0, -6.0, -2.0]).view(3, 1).expand(3, 4)
    got = fuq.ensemble_stats(x, mode="ep", member_ll=ll)
    want = reference(x.double(), mode="ep", member_ll=ll)
    assert bool((got.rmi == math.inf).all()) and bool((got.epkl == math.inf).all())
    assert_close(got, want, rtol=2e-6, atol=1e-12)


def test_mixture_below_the_smallest_normal_float_with_a_light_reference():
    # column 1: member 1 (weight e^-69) gives P ~ e^-50 and is the column's reference (member 0 gives
    # e^-3e38), so p̄ = P_ref u ~ e^-50 e^-69 falls below the smallest normal float although
    # log P_ref > -87: p̄ is then taken in fp64, and member 0's ψ ~ 3e38 still counts (RMI ~ 6e-14;
    # MI ~ 1e-50 is below the fp32 outputs' range)
    x = torch.tensor([[[0.0, -3e38]], [[0.0, -50.0]]])
    ll = torch.tensor([[0.0], [-69.0]])
    got = fuq.ensemble_stats(x, mode="ep", member_ll=ll)
    want = numpy_stats(x.double().numpy(), member_ll=ll.double().numpy())
    assert want["rmi"][0] > 1e-14
    for f in FIELDS:
        np.testing.assert_allclose(getattr(got, f).numpy(), want[f], rtol=2e-6, atol=1e-44, err_msg=f)


@pytest.mark.parametrize("span", [60.0, 90.0])
def test_weights_spanning_beyond_the_fp32_pass(span):
    # mode "ep" weights spanning e^60 (fp32 pass 2: e^δ <= w_max / w_min fits a float) and e^90
    # (beyond e^69: the fp64 pass), with members that disagree strongly where the light one is sure
    x = make(M=3, lead=(4,), V=400, dtype=torch.float32, scale=6.0, seed=4)
    ll = torch.tensor([0.0, -span, -2.0]).view(3, 1).expand(3, 4)
    got = fuq.ensemble_stats(x, mode="ep", member_ll=ll)
    want = numpy_stats(x.double().numpy(), member_ll=ll.double().numpy())
    for f in FIELDS:
        np.testing.assert_allclose(getattr(got, f).numpy(), want[f], rtol=2e-6, atol=1e-30, err_msg=f)
    # the light member sure of a token the heavy one gives e^-(span - 1): δ = span - 1 there (e^89
    # would overflow a float; MI and RMI come from that column alone)
    x = torch.tensor([[[0.0, 1.0 - span]], [[1.0 - span, 0.0]]])
    ll = torch.tensor([[0.0], [-span]])
    got = fuq.ensemble_stats(x, mode="ep", member_ll=ll)
    want = numpy_kl(x.numpy(), ll.numpy())
    assert want["epistemic"][0] > 1e-38 if span > 69 else want["epistemic"][0] > 1e-25
    for f in ("epistemic", "rmi"):
        np.testing.assert_allclose(getattr(got, f).numpy(), want[f], rtol=2e-6, err_msg=f)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_a_mixture_below_the_float_range_still_counts(dtype):
    # column 1: P ~ e^-3e38 under member 0 and e^-100 under member 1, so p̄ ~ 2e-44 (below fp32's
    # range, where the fp32 pass takes fp64 exponentials) while ψ ~ 1.5e38 for member 0: RMI ~ 3e-6
    # comes from that column alone
    x = torch.tensor([[[0.0, -3e38]], [[0.0, -100.0]]], dtype=torch.float64).to(dtype)
    got = fuq.ensemble_stats(x)
    want = numpy_stats(x.double().numpy())
    assert want["rmi"][0] > 1e-6
    for f in FIELDS:
        np.testing.assert_allclose(getattr(got, f).numpy(), want[f], rtol=2e-6, atol=1e-30, err_msg=f)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_columns_whose_mixture_underflows(dtype):
    # p̄_v below the smallest normal double in columns 40..79 (every member's logit ~800 under the
    # row's): the kernel drops their share (p̄_v times a bounded sum) and matches the reference,
    # and a member without mass there still makes EPKL and RMI infinite.
    x = make(M=3, lead=(2,), V=300, dtype=torch.float64)
    x[:, :, 40:80] -= 800.0
    x = x.to(dtype)
    got = fuq.ensemble_stats(x)
    want = numpy_stats(x.double().numpy())
    for f in FIELDS:
        np.testing.assert_allclose(getattr(got, f).numpy(), want[f], rtol=1e-12 if dtype == torch.float64 else 2e-6,
                                   atol=1e-14, err_msg=f)
    x[2, 1, 60] = -math.inf
    got = fuq.ensemble_stats(x)
    assert got.rmi[1].item() == math.inf and got.epkl[1].item() == math.inf
    assert math.isfinite(got.epistemic[1].item()) and math.isfinite(got.rmi[0].item())


def test_a_mixture_below_the_smallest_normal_double_still_counts():
    # column 1: member 0 gives the token P ~ e^-1e308, member 1 P ~ e^-709.8, so p̄ ~ 1e-308 (subnormal)
    # while ψ(r) ~ 1e308 for member 0: that column alone carries most of RMI (0.137)
    x = torch.tensor([[[0.0, -1e308]], [[0.0, -709.8]]], dtype=torch.float64)
    got, want = fuq.ensemble_stats(x), reference(x)
    assert want.rmi.item() > 0.1
    assert_close(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("temperature", [1e38, 1e-30])
def test_extreme_temperatures_with_fp32_logits(temperature):
    # 1/T = 1e-38 with logits spanning beyond the float range (the members' normalisers then come from
    # the fp64 loop, docs/numerics.md#ensemble-numerics), and the smallest temperature allowed with a
    # tied maximum
    x = torch.tensor([[[3e38, -3e38, 0.0, 1e38, 3e38]], [[3e38, -2e38, 1e38, -3e38, 1e38]]], dtype=torch.float32)
    got = fuq.ensemble_stats(x, temperature=temperature)
    want = reference(x, temperature=temperature)  # in fp32, as the outputs are: 2.5e67 is +inf there
    assert_close(got, type(want)(*(v.float() for v in want)), rtol=2e-6, atol=1e-12)


def test_epistemic_never_negative_on_random_batches():
    for seed in range(5):
        x = make(M=2 + seed, lead=(16,), V=64, dtype=torch.bfloat16, scale=0.5 * (seed + 1), seed=seed)
        s = fuq.ensemble_stats(x)
        assert bool((s.epistemic >= 0).all()) and bool((s.rmi >= 0).all()) and bool((s.epkl >= 0).all())


# ---- layouts ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [1, 2, -2, -3])
def test_member_axis_anywhere(dim):
    x0 = make(M=3, lead=(4, 5), V=129, dtype=torch.float32)  # [M, 4, 5, V]
    want = fuq.ensemble_stats(x0)
    x = x0.movedim(0, dim).contiguous()
    got = fuq.ensemble_stats(x, dim=dim)
    assert_bitwise(got, want)  # one position, same arithmetic: whatever the layout


def test_strided_inputs():
    x = make(M=4, lead=(6, 8), V=300, dtype=torch.float32)
    views = [x[:, ::2], x[:, :, 1::3], x.transpose(1, 2), x[::2], x.movedim(0, 2)[:, ::2].movedim(2, 0)]
    for v in views:
        assert not v.is_contiguous()
        assert_bitwise(fuq.ensemble_stats(v), fuq.ensemble_stats(v.contiguous()))
    # broadcast (stride-0) members and positions
    b = x[:1, :1].expand(4, 6, 8, 300)
    assert_bitwise(fuq.ensemble_stats(b), fuq.ensemble_stats(b.contiguous()))
    # more than two leading dimensions that do not coalesce: the op copies once
    y = make(M=2, lead=(3, 4, 5), V=50).permute(0, 3, 1, 2, 4)[:, ::2]
    assert_close(fuq.ensemble_stats(y), reference(y), rtol=2e-6, atol=1e-12)


def test_numpy_input():
    x = make(M=3, lead=(2,), V=40, dtype=torch.float64)
    got = fuq.ensemble_stats(x.numpy())
    assert isinstance(got.total, torch.Tensor)
    assert_bitwise(got, fuq.ensemble_stats(x))


# ---- masks, infinities, NaN -------------------------------------------------------------------

def test_masked_vocabulary_shared_by_all_members():
    x = make(M=3, lead=(4,), V=200, dtype=torch.float32)
    x[:, :, 150:] = -math.inf  # the same masked columns everywhere: same as dropping them
    got = fuq.ensemble_stats(x)
    assert all(bool(torch.isfinite(getattr(got, f)).all()) for f in FIELDS)
    assert_close(got, fuq.ensemble_stats(x[..., :150].contiguous()), rtol=1e-6, atol=1e-12)
    assert_close(got, reference(x), rtol=2e-6, atol=1e-12)


def test_token_impossible_under_one_member_makes_epkl_infinite():
    x = make(M=3, lead=(4,), V=100, dtype=torch.float64)
    x[1, 2, 17] = -math.inf  # member 1 gives token 17 probability 0 at position 2; the others do not
    got = fuq.ensemble_stats(x)
    want = reference(x)
    assert got.epkl[2].item() == math.inf and got.rmi[2].item() == math.inf
    assert want.epkl[2].item() == math.inf and want.rmi[2].item() == math.inf
    for f in ("total", "aleatoric", "epistemic"):
        assert math.isfinite(getattr(got, f)[2].item())
    assert_close(got, want, rtol=1e-12, atol=1e-14)
    # other positions untouched
    clean = fuq.ensemble_stats(torch.cat([x[:, :2], x[:, 3:]], 1))
    for f in FIELDS:
        assert torch.equal(torch.cat([getattr(got, f)[:2], getattr(got, f)[3:]]), getattr(clean, f))


@pytest.mark.parametrize("bad", [math.nan, math.inf, "all_ninf"])
def test_invalid_member_row_poisons_only_its_position(bad):
    x = make(M=3, lead=(3, 4), V=64, dtype=torch.float32)
    clean = fuq.ensemble_stats(x)
    y = x.clone()
    if bad == "all_ninf":
        y[2, 1, 3, :] = -math.inf
    else:
        y[2, 1, 3, 10] = bad
    got = fuq.ensemble_stats(y)
    want = reference(y)
    for f in FIELDS:
        u = getattr(got, f)
        assert math.isnan(u[1, 3].item()) and math.isnan(getattr(want, f)[1, 3].item()), f
        keep = torch.ones(3, 4, dtype=torch.bool)
        keep[1, 3] = False
        assert torch.equal(u[keep], getattr(clean, f)[keep]), f


# ---- mode "ep" --------------------------------------------------------------------------------

def test_ep_mode_matches_numpy_and_reference():
    x = make(M=4, lead=(3, 5), V=211, dtype=torch.float64, seed=9)
    ll = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    got = fuq.ensemble_stats(x, mode="ep", member_ll=ll)
    want = numpy_stats(x.numpy(), member_ll=ll.numpy())
    for f in FIELDS:
        np.testing.assert_allclose(getattr(got, f).numpy(), want[f], rtol=1e-10, atol=1e-13, err_msg=f)
    assert_close(got, reference(x, mode="ep", member_ll=ll), rtol=1e-12, atol=1e-14)
    # fp32 logits with fp16 member_ll, members on dim 1
    xf, llf = x.float().movedim(0, 1), ll.half().movedim(0, 1)
    assert_close(fuq.ensemble_stats(xf, dim=1, mode="ep", member_ll=llf),
                 reference(xf, dim=1, mode="ep", member_ll=llf), rtol=2e-6, atol=1e-12)


def test_ep_with_equal_likelihoods_is_pe():
    x = make(M=5, lead=(4,), V=300, dtype=torch.float32)
    ll = torch.full((5, 4), -12.5)
    assert_close(fuq.ensemble_stats(x, mode="ep", member_ll=ll), fuq.ensemble_stats(x), rtol=1e-6, atol=1e-12)


def test_ep_member_without_weight_drops_out():
    x = make(M=3, lead=(4,), V=120, dtype=torch.float64)
    x[2, :, 5] = -math.inf  # would make EPKL infinite if member 2 counted
    ll = torch.tensor([0.0, 0.0, -math.inf]).unsqueeze(1).expand(3, 4)
    got = fuq.ensemble_stats(x, mode="ep", member_ll=ll)
    assert_close(got, fuq.ensemble_stats(x[:2]), rtol=1e-13, atol=1e-15)
    assert_close(got, reference(x, mode="ep", member_ll=ll), rtol=1e-12, atol=1e-14)


def test_ep_invalid_likelihood_poisons_only_its_position():
    x = make(M=3, lead=(4,), V=50, dtype=torch.float32)
    ll = torch.zeros(3, 4)
    ll[1, 2] = math.nan
    got = fuq.ensemble_stats(x, mode="ep", member_ll=ll)
    assert all(math.isnan(getattr(got, f)[2].item()) for f in FIELDS)
    assert all(bool(torch.isfinite(getattr(got, f)[[0, 1, 3]]).all()) for f in FIELDS)


# ---- determinism ------------------------------------------------------------------------------

def test_deterministic_across_thread_counts_and_batches():
    x = make(M=4, lead=(37,), V=3000, dtype=torch.bfloat16, seed=5)
    with torch_threads(1):
        one = fuq.ensemble_stats(x)
    with torch_threads(4):
        four = fuq.ensemble_stats(x)
        alone = fuq.ensemble_stats(x[:, 11:12])
    assert_bitwise(one, four)
    for f in FIELDS:
        assert torch.equal(getattr(alone, f)[0], getattr(one, f)[11]), f


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_few_positions_split_over_threads(dtype):
    """With fewer positions than threads (decoding), each position's columns are split into fixed
    chunks over the threads, its partial sums merged in column order: the same bits as one thread
    and as the same position inside a batch, and the float64 reference's values; a NaN in one chunk
    of one member still voids only its own position."""
    x = make(M=3, lead=(2,), V=40000, dtype=dtype, seed=9)  # three chunks of columns
    x[1, 1, 20000] = float("nan")
    batch = make(M=3, lead=(9,), V=40000, dtype=dtype, seed=10)
    batch[:, 4] = x[:, 0]
    with torch_threads(1):
        one = fuq.ensemble_stats(x)
    with torch_threads(4):
        split = fuq.ensemble_stats(x)
        in_batch = fuq.ensemble_stats(batch)
    assert_bitwise(one, split)
    for f in FIELDS:
        assert torch.equal(getattr(split, f)[0], getattr(in_batch, f)[4]), f
        assert math.isnan(getattr(split, f)[1].item()), f
    assert_close(split, reference(x), rtol=1e-12 if dtype == torch.float64 else 2e-6, atol=1e-14)


# ---- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(dim=2), ValueError, "vocabulary"),
    (dict(dim=-1), ValueError, "vocabulary"),
    (dict(dim=3), ValueError, "dim"),
    (dict(dim=-4), ValueError, "dim"),
    (dict(dim=1.0), TypeError, "dim"),
    (dict(dim=True), TypeError, "dim"),
    (dict(mode="mean"), ValueError, "mode"),
    (dict(mode="ep"), ValueError, "member_ll"),
    (dict(member_ll=torch.zeros(3, 4)), ValueError, "member_ll"),
    (dict(mode="ep", member_ll=torch.zeros(4, 3)), ValueError, "member_ll"),
    (dict(mode="ep", member_ll=torch.zeros(3, 4, 5)), ValueError, "member_ll"),
    (dict(mode="ep", member_ll=torch.zeros(3, 4, dtype=torch.int64)), TypeError, "member_ll"),
    (dict(mode="ep", member_ll=torch.zeros(3, 4, device="meta")), ValueError, "member_ll"),
    (dict(mode="ep", member_ll=[[0.0] * 4] * 3), TypeError, "member_ll"),
    (dict(temperature=0.0), ValueError, "temperature"),
    (dict(temperature=-1.0), ValueError, "temperature"),
    (dict(temperature=math.inf), ValueError, "temperature"),
    (dict(temperature=1e-40), ValueError, "temperature"),
    (dict(temperature="1"), TypeError, "temperature"),
])
def test_bad_arguments_raise(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fuq.ensemble_stats(torch.randn(3, 4, 10), **kwargs)


def test_bad_logits_raise():
    with pytest.raises(TypeError, match="logits"):
        fuq.ensemble_stats(torch.zeros(3, 4, 10, dtype=torch.int32))
    with pytest.raises(TypeError, match="logits"):
        fuq.ensemble_stats([[0.0, 1.0]])
    with pytest.raises(ValueError, match="logits"):
        fuq.ensemble_stats(torch.zeros(10))
    with pytest.raises(ValueError, match="member"):
        fuq.ensemble_stats(torch.zeros(0, 4, 10))
    with pytest.raises(ValueError, match="vocabulary"):
        fuq.ensemble_stats(torch.zeros(3, 4, 0))
    with pytest.raises(ValueError, match="stride"):
        fuq.ensemble_stats(torch.zeros(3, 10, 4).transpose(1, 2))


# ---- torch.library: opcheck, compile ------------------------------------------------------------

def test_opcheck():
    x = torch.randn(3, 4, 50)
    op = torch.ops.flashuq.ensemble_stats.default
    torch.library.opcheck(op, (x, None, 0, 1.0))
    torch.library.opcheck(op, (x.bfloat16().transpose(0, 1), None, 1, 0.8))
    torch.library.opcheck(op, (x.double(), torch.randn(3, 4, dtype=torch.float64), 0, 1.0))


def test_torch_compile_fullgraph():
    def f(logits, ll):
        pe = fuq.ensemble_stats(logits, dim=1)
        ep = fuq.ensemble_stats(logits, dim=1, mode="ep", member_ll=ll)
        return pe.epistemic.sum(-1) + ep.total.mean(-1), pe.rmi

    x = make(M=3, lead=(2, 4), V=65).movedim(0, 1).contiguous()  # [2, M, 4, V]
    ll = torch.randn(2, 3, 4)
    got = torch.compile(f, fullgraph=True)(x, ll)
    want = f(x, ll)
    for u, v in zip(got, want):
        torch.testing.assert_close(u, v)


@pytest.mark.parametrize("level", isa_levels())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_every_build_matches_the_reference(level, dtype):
    """The kernel has a baseline, an AVX2 and an AVX-512 build (the column loops vectorise over the
    vocabulary, csrc/cpu/ensemble_stats_impl.h); each matches the float64 reference: several
    blocks of columns, members that disagree and members that nearly agree (both sides of the
    series' |r| < 1/4), a member without mass on some columns (EPKL +inf), and mode "ep"."""
    g = torch.Generator().manual_seed(21)
    base = torch.randn(1, 3, 700, generator=g, dtype=torch.float64) * 2
    far = torch.randn(4, 3, 700, generator=g, dtype=torch.float64) * 3
    near = base + 1e-3 * torch.randn(4, 3, 700, generator=g, dtype=torch.float64)
    x = torch.cat([far, near], 1).to(dtype)
    x[1, 0, :50] = float("-inf")
    ll = torch.randn(4, 6, generator=g, dtype=torch.float64)
    with limited_isa(level):
        got, got_ep = fuq.ensemble_stats(x), fuq.ensemble_stats(x, mode="ep", member_ll=ll)
    rtol = 1e-12 if dtype == torch.float64 else 2e-6
    assert_close(got, reference(x), rtol=rtol, atol=1e-14)
    assert_close(got_ep, reference(x, mode="ep", member_ll=ll), rtol=rtol, atol=1e-14)
    assert got.epkl[0].item() == float("inf") and got.rmi[0].item() == float("inf")


def test_expm1_exp_f32_error_bound():
    """The fp32 pass 2's e^x - 1 and e^x (flashuq/cpu_math.h): within 3 ulp (relative), e^x - 1
    relative to itself for small |x|, and -1 and 0 below -87."""
    from flashuq import _ext
    rng = np.random.default_rng(6)
    small = rng.uniform(-1, 1, 100_000) * 10.0 ** rng.integers(-30, 1, 100_000)
    x = np.concatenate([rng.uniform(-87, 88, 200_000), small,
                        [0.0, -0.0, -86.99, 88.0, 0.34657, -0.34657, 1e-40]]).astype(np.float32)
    em1, e = torch.empty(len(x)), torch.empty(len(x))
    _ext._C._expm1_exp_f32(torch.from_numpy(x), em1, e)
    want1, want = np.expm1(x.astype(np.float64)), np.exp(x.astype(np.float64))
    assert (np.abs(em1.numpy() - want1) <= 3 * 2.0 ** -24 * np.abs(want1)).all()
    assert (np.abs(e.numpy() - want) <= 3 * 2.0 ** -24 * want).all()
    low = torch.tensor([-87.5, -1e30, -math.inf])
    em1, e = torch.empty(3), torch.empty(3)
    _ext._C._expm1_exp_f32(low, em1, e)
    assert em1.tolist() == [-1.0] * 3 and e.tolist() == [0.0] * 3
    with pytest.raises(TypeError):
        _ext._C._expm1_exp_f32(torch.ones(4, dtype=torch.float64), torch.empty(4), torch.empty(4))  # not fp32
    with pytest.raises(ValueError, match="^em1: expected 4"):
        _ext._C._expm1_exp_f32(torch.ones(4), torch.empty(3), torch.empty(4))
    with pytest.raises(ValueError, match="^e: expected 4"):
        _ext._C._expm1_exp_f32(torch.ones(4), torch.empty(4), torch.empty(3))
    with pytest.raises(ValueError, match="^x: expected a contiguous"):
        _ext._C._expm1_exp_f32(torch.ones(8)[::2], torch.empty(4), torch.empty(4))


def test_exp_f64_within_two_ulp():
    """The kernels' vectorisable fp64 exp (flashuq/cpu_math.h) against numpy's, and its edges."""
    from flashuq import _ext
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.uniform(-746, 710, 200_000), rng.uniform(-1, 1, 100_000) * 10.0 ** rng.integers(-30, 1, 100_000),
                        [0.0, -0.0, 709.78, 709.79, -745.1, -745.2, -708.4, np.inf, -np.inf, np.nan, 1e300, -1e300]])
    got = torch.empty(len(x), dtype=torch.float64)
    _ext._C._exp_f64(torch.from_numpy(x), got)
    with np.errstate(over="ignore"):
        want = np.exp(x)
    got = got.numpy()
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.array_equal(np.isinf(got), np.isinf(want))
    fin = np.isfinite(want)
    ulp = np.spacing(np.abs(want[fin]))
    assert (np.abs(got[fin] - want[fin]) <= 2 * ulp).all()
    with pytest.raises(TypeError):
        _ext._C._exp_f64(torch.ones(4, dtype=torch.float32), torch.empty(4, dtype=torch.float64))  # not fp64
    with pytest.raises(ValueError):
        _ext._C._exp_f64(torch.ones(4, dtype=torch.float64), torch.empty(3, dtype=torch.float64))  # out's size
    with pytest.raises(ValueError):
        _ext._C._exp_f64(torch.ones(8, dtype=torch.float64)[::2], torch.empty(4, dtype=torch.float64))  # strided
