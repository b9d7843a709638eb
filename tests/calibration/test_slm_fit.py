"""SLM response, illumination and crosstalk fits against synthetic data with known truth."""
import math
from pathlib import Path

import numpy as np
import pytest

from calibration.crosstalk_fit import fit_crosstalk, grating_first_order
from calibration.illumination_fit import fit_illumination
from calibration.interference_fit import fringe_phases
from calibration.slm_fit import combine_slm
from calibration.slm_phase_fit import fit_diffractive_response, fit_phase_response, fit_regions, inverse_lut, power_law_phase

BITS = 8
LEVELS = np.arange(2 ** BITS)
U = LEVELS / (2 ** BITS - 1)
POWER_LAW = 2.2 * np.pi * U ** 1.3
# a tabulated, non-power-law response: S-shaped, saturating at 5.5 rad
S_CURVE = 5.5 * (np.tanh(3 * (U - 0.4)) - np.tanh(-1.2)) / (np.tanh(1.8) - np.tanh(-1.2))
# a tabulated response spanning almost 2 turns with a wiggle
WIGGLE = 3.7 * np.pi * (U + 0.12 * np.sin(2 * np.pi * U))


def _rms(a, b):
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def _grating_power(phi, order, rng, amp=2.0, bg=0.1, noise=0.01):
    clean = amp * (np.sin(phi / 2) ** 2 if order == "first" else np.cos(phi / 2) ** 2) + bg
    return clean + noise * amp * rng.standard_normal(phi.shape)


@pytest.mark.parametrize("truth, order, seed, model", [
    ("power", "first", 1, "gamma"),
    ("power", "zero", 2, "gamma"),
    ("scurve", "first", 3, "spline"),
    ("scurve", "zero", 4, "spline"),
    ("wiggle", "first", 5, "spline"),
])
def test_diffractive_recovers_phase_response(truth, order, seed, model):
    phi = {"power": POWER_LAW, "scurve": S_CURVE, "wiggle": WIGGLE}[truth]
    rng = np.random.default_rng(seed)
    fit = fit_diffractive_response(LEVELS, _grating_power(phi, order, rng), bits=BITS, order=order)
    assert fit.name == "slm"
    assert fit.model == model
    resp = fit.arrays["phase_response_rad"]
    assert resp.shape == (2 ** BITS,)
    assert np.all(np.diff(resp) >= -1e-12)
    assert _rms(resp, phi) < 0.05
    q = fit.quantities["phase_range_rad"]
    assert q.within(phi[-1], 3.0), (q, phi[-1])
    if truth == "power":
        assert fit.quantities["gamma"].within(1.3, 3.0)
    # the error estimate per level is honest on average
    se = fit.arrays["phase_response_stderr_rad"]
    assert se[0] == 0 and np.all(se[1:] > 0)          # level 0 is the reference, phase 0 by definition
    z = (resp - phi)[1:] / se[1:]
    assert np.sqrt(np.mean(z ** 2)) < 3.0


def test_sparse_10bit_levels_and_known_noise():
    bits = 10
    all_levels = np.arange(2 ** bits)
    phi_all = 3.3 * np.pi * (all_levels / 1023) ** 0.85
    levels = all_levels[::8]
    rng = np.random.default_rng(7)
    power = _grating_power(phi_all[levels], "first", rng, noise=0.01)
    fit = fit_diffractive_response(levels, power, bits=bits, power_stderr=0.02)
    assert fit.model == "gamma"
    assert _rms(fit.arrays["phase_response_rad"], phi_all) < 0.05
    assert fit.quantities["phase_range_rad"].within(phi_all[-1], 3)
    assert fit.arrays["inverse_lut"].shape == (1024,)


def _fringes(phi, rng, drift, n_x=160, period=13.7):
    x = np.arange(n_x)
    prof = 80 + 50 * np.cos(2 * np.pi * x / period - phi[:, None] + 0.7 + drift[:, None])
    ref = 80 + 45 * np.cos(2 * np.pi * x / period + 1.9 + drift[:, None])
    return (prof + 2.0 * rng.standard_normal(prof.shape), ref + 2.0 * rng.standard_normal(ref.shape))


@pytest.mark.parametrize("phi, model", [(POWER_LAW, "gamma"), (S_CURVE, "spline")])
def test_interferometric_recovers_phase_response(phi, model):
    rng = np.random.default_rng(11)
    drift = 0.4 * np.sin(LEVELS / 40.0)                     # common-path drift, cancelled by the reference
    prof, ref = _fringes(phi, rng, drift)
    fp = fringe_phases(prof, reference=ref)
    assert fp.period_px == pytest.approx(13.7, rel=1e-3)
    assert _rms(fp.phase_rad, phi - phi[0]) < 0.03
    pull = (fp.phase_rad - (phi - phi[0])) / fp.stderr_rad
    assert 0.5 < np.std(pull) < 2.0                          # per-profile errors are realistic
    fit = fit_phase_response(LEVELS, fp.phase_rad, bits=BITS, phase_stderr_rad=fp.stderr_rad)
    assert fit.model == model
    assert _rms(fit.arrays["phase_response_rad"], phi) < 0.05
    assert fit.quantities["phase_range_rad"].within(phi[-1], 3)


def test_fringe_phase_sign_follows_increasing_phase():
    rng = np.random.default_rng(2)
    x = np.arange(100)
    phi = np.linspace(0, 5, 30)
    prof = 10 + 5 * np.cos(2 * np.pi * x / 9.0 + phi[:, None]) + 0.05 * rng.standard_normal((30, 100))
    fp = fringe_phases(prof)
    np.testing.assert_allclose(fp.phase_rad, phi, atol=0.02)


def test_inverse_lut_round_trip():
    resp = power_law_phase(LEVELS, 2.5 * np.pi, 1.2, 255)
    targets = np.linspace(0, 2 * np.pi, 97, endpoint=False)
    lv = inverse_lut(resp, targets)
    assert lv.dtype == np.int64
    err = (resp[lv] - targets + np.pi) % (2 * np.pi) - np.pi
    step = np.max(np.diff(resp))
    assert np.max(np.abs(err)) <= step / 2 + 1e-12
    # without wrapping, a phase beyond the range maps to the last level
    assert inverse_lut(resp, [100.0], wrap=False)[0] == 255
    # a short range (< 2 pi): a target in the gap goes to the nearer end on the circle
    short = power_law_phase(LEVELS, 4.0, 1.0, 255)
    assert inverse_lut(short, [4.2])[0] == 255
    assert inverse_lut(short, [2 * np.pi - 0.1])[0] == 0
    lut = fit_diffractive_response(LEVELS, _grating_power(POWER_LAW, "first", np.random.default_rng(0)),
                                   bits=BITS)
    grid, table = lut.arrays["inverse_lut_phase_rad"], lut.arrays["inverse_lut"]
    assert grid.shape == table.shape == (256,)
    err = (POWER_LAW[table] - grid + np.pi) % (2 * np.pi) - np.pi
    assert np.sqrt(np.mean(err ** 2)) < 0.05


def test_regions_and_combined_fit():
    rng = np.random.default_rng(21)
    truths = {"left": 2.0 * np.pi * U ** 1.1, "right": 2.4 * np.pi * U ** 1.25}
    data = {k: (LEVELS, _grating_power(v, "first", rng)) for k, v in truths.items()}
    fits = fit_regions(data, bits=BITS)
    for name, phi in truths.items():
        assert fits[name].name == f"slm.region.{name}"
        assert _rms(fits[name].arrays["phase_response_rad"], phi) < 0.05
        assert fits[name].quantities["phase_range_rad"].within(phi[-1], 3)
    ill = fit_illumination(_gauss_grid(rng, waist=0.55))
    xt = fit_crosstalk(*_crosstalk_data(0.7, rng))
    slm = combine_slm(fits["left"], illumination=ill, crosstalk=xt, regions=fits)
    assert slm.name == "slm"
    assert set(slm.quantities) >= {"phase_range_rad", "gamma", "crosstalk_px", "illumination_waist"}
    assert slm.arrays["region_phase_response_rad"].shape == (2, 256)
    assert slm.info["regions"] == ["left", "right"]
    assert "slm.phase_range_rad" in slm.flat()


def _gauss_grid(rng, waist, x0=0.46, y0=0.57, amp=1.7, shape=(8, 12), noise=0.01):
    rows, cols = shape
    yy, xx = np.meshgrid((np.arange(rows) + 0.5) / rows, (np.arange(cols) + 0.5) / cols, indexing="ij")
    a = amp * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / waist ** 2)
    return a + noise * amp * rng.standard_normal(a.shape)


@pytest.mark.parametrize("waist", [0.4, 0.9])
def test_illumination_gaussian(waist):
    rng = np.random.default_rng(int(waist * 10))
    fit = fit_illumination(_gauss_grid(rng, waist))
    q = fit.quantities
    for name, truth in (("waist", waist), ("x0", 0.46), ("y0", 0.57), ("amplitude", 1.7)):
        assert q[name].within(truth, 3), (name, q[name], truth)
    assert abs(q["waist"].value / waist - 1) < 0.03
    assert fit.arrays["illumination_map"].max() <= 1.0 + 1e-9


def _numeric_first_order(period, sigma, dphi, oversample=64):
    """Independent forward model: sample the pixelated grating finely, blur with a Gaussian by FFT,
    take the first Fourier coefficient of the complex field."""
    n = period * oversample
    x = (np.arange(n) + 0.5) / oversample
    field = np.exp(1j * dphi * ((np.floor(x).astype(int) % period) < period // 2))
    k = np.fft.fftfreq(n, d=1.0 / oversample)
    blurred = np.fft.ifft(np.fft.fft(field) * np.exp(-2 * np.pi ** 2 * sigma ** 2 * k ** 2))
    return abs(np.mean(blurred * np.exp(-2j * np.pi * x / period))) ** 2


def _crosstalk_data(sigma, rng, dphi=2.6):
    periods = np.array([2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32])
    p1 = 3.2 * np.array([_numeric_first_order(p, sigma, dphi) for p in periods])
    return periods, p1 * (1 + 0.01 * rng.standard_normal(p1.size))


def test_grating_model_matches_numeric_forward_model():
    for p in (2, 3, 4, 7, 12):
        for s in (0.0, 0.5, 1.2):
            assert grating_first_order(p, s, 2.0) == pytest.approx(_numeric_first_order(p, s, 2.0), rel=2e-3, abs=1e-9)


@pytest.mark.parametrize("sigma", [0.35, 0.8, 1.6])
def test_crosstalk_sigma_recovered(sigma):
    rng = np.random.default_rng(int(sigma * 100))
    periods, p1 = _crosstalk_data(sigma, rng)
    fit = fit_crosstalk(periods, p1)
    q = fit.quantities["crosstalk_px"]
    assert abs(q.value / sigma - 1) < 0.03 and q.within(sigma, 3), q
    amp = fit_crosstalk(periods, np.sqrt(p1), observable="amplitude").quantities["crosstalk_px"]
    assert abs(amp.value / sigma - 1) < 0.03


@pytest.mark.parametrize("call, message", [
    (lambda: fit_diffractive_response(LEVELS, np.full(256, np.nan), bits=8), "NaN"),
    (lambda: fit_diffractive_response(LEVELS, np.ones(255), bits=8), "differ in length"),
    (lambda: fit_diffractive_response(LEVELS[:5], np.ones(5), bits=8), "distinct levels"),
    (lambda: fit_diffractive_response(LEVELS * 2, np.ones(256), bits=8), "integers 0..255"),
    (lambda: fit_diffractive_response(LEVELS, np.ones(256), bits=8), "does not change"),
    (lambda: fit_diffractive_response(LEVELS, np.sin(LEVELS), bits=3.5), "bit depth"),
    (lambda: fit_diffractive_response(LEVELS, np.sin(LEVELS), bits=8, order="second"), "order"),
    (lambda: fringe_phases(np.ones((1, 50))), "n_levels>=2"),
    (lambda: fit_crosstalk([2, 4], [1.0, 2.0]), "at least 3"),
    (lambda: fit_illumination(np.full((3, 3), np.nan)), "NaN"),
    (lambda: fit_regions({}, bits=8), "non-empty"),
])
def test_bad_input(call, message):
    with pytest.raises((ValueError, TypeError), match=message) as err:
        call()
    assert "\n" not in str(err.value)


def test_short_range_is_flagged():
    phi = 0.8 * math.pi * U
    fit = fit_diffractive_response(LEVELS, _grating_power(phi, "first", np.random.default_rng(5)), bits=8,
                                   amplitude=2.0)
    assert _rms(fit.arrays["phase_response_rad"], phi) < 0.05
    assert any("below pi" in w for w in fit.info["warnings"])


# ----------------------------------------------------------------------------- short phase range, end to end
SHORT_BENCH = Path(__file__).resolve().parents[2] / "experiments" / "benches" / "sim_short_range.toml"


@pytest.fixture(scope="module")
def short_range_slm1():
    """slm1 of the 0.93 x 2 pi bench calibrated through the bench (camera, registration, readout,
    then the SLM procedure: interferometric response and crosstalk only, to stay quick)."""
    from calibration.procedures import CalContext
    from calibration.procedures.camera import measure_camera
    from calibration.procedures.readout import measure_readout
    from calibration.procedures.registration import measure_registration
    from calibration.procedures.slm import measure_slm
    from hwio.sim.testing import open_with
    bench = open_with(SHORT_BENCH, {"truth": {"faults": {"camera_timeout_rate": 0.0, "dropped_frame_rate": 0.0,
                                                         "stale_frame_rate": 0.0, "slm_write_failure_rate": 0.0}}})
    ctx = CalContext(bench)
    measure_camera(ctx, n_points=12, n_frames=2, n_flat=16)
    measure_registration(ctx)
    measure_readout(ctx)
    (fit,) = measure_slm(ctx, panels=("slm1",), diffractive=False, illumination=False)
    return bench, ctx, fit


def test_short_range_bench_calibration_reports_the_reduced_amplitude(short_range_slm1):
    from hwio.encoding import realised_weights
    from hwio.response import PhaseResponse
    from hwio.sim.testing import truth_of
    bench, ctx, fit = short_range_slm1
    true_table = np.asarray(truth_of(bench).realised["phase_table_rad"]["slm1"])
    true_amax = np.cos((2 * np.pi - (true_table[-1] - true_table[0])) / 2)          # cos(0.07 pi)
    q = fit.quantities["amplitude_max"]
    assert abs(q.value - true_amax) < max(4 * q.stderr, 3e-4), (q, true_amax)
    assert fit.info["double_phase"]["amplitude_max"] == pytest.approx(q.value, abs=1e-3)
    assert sum("below 2 pi" in w for w in fit.info["warnings"]) == 1              # warned once
    # the encoder calibration deploys shows w_max at A_max around the recorded offset phase
    enc = ctx.encoder("slm1")
    assert enc.amplitude_max == pytest.approx(fit.info["double_phase"]["amplitude_max"])
    lay = bench.layouts["slm1"]
    w = np.random.default_rng(1).uniform(-1, 1, (lay.n_rows, lay.n_cols))
    w[0, 0] = 1.0
    z = realised_weights(enc.encode(w, w_max=1.0).astype(np.int64), lay, PhaseResponse(true_table), 1.0,
                         complex_field=True) * np.exp(-1j * enc.phase_offset_rad)
    assert np.abs(z.real - true_amax * w).max() < 0.01
    # the stored transfer table (what the encoder realises) ends at +-A_max times the fringing loss
    # of a full-amplitude block, which a full-range panel with the same crosstalk shows alone
    from hwio.encoding import PhaseEncoder, amplitude_transfer
    sigma = fit.quantities["crosstalk_px"].value
    full = PhaseResponse.linear(8)
    _, v_full = amplitude_transfer(PhaseEncoder(lay, bench.slms["slm1"].shape, full.inverse()), full, sigma)
    values = fit.arrays["amplitude_transfer"]
    assert values[-1] == pytest.approx(true_amax * v_full[-1], abs=0.005)
    assert values[0] == pytest.approx(-true_amax * v_full[-1], abs=0.005)
