"""Absorber fits: simulate pump and probe sweeps from the twin's laws (in lab units) and recover them."""
import numpy as np
import pytest

from calibration.absorber_fit import (MODELS, absorber_from_fit, fit_absorber, fit_probe_sweep, fit_pump_sweep,
                                      power_to_z)
from calibration.residual_tests import estimate_noise, runs_test_z
from twin.absorber import TabulatedAbsorber, make_absorber

# two lab truths: (alpha0, i_sat in mW, background transmission, probe path scale)
TRUTHS = [(2.5, 3.1, 0.77, 0.31), (6.0, 0.04, 0.52, 1.8)]


def _law(model, alpha0):
    return make_absorber(model, alpha0=alpha0, i_sat=1.0)


def _pump_sweep(rng, model, alpha0, i_sat, bg, n=60, rel=0.01, floor=0.002, top=100.0, distort=0.0):
    """Power in (mW) -> power out: P_out = bg * P_in * T(P_in / i_sat), T from the twin's fields."""
    p_in = np.geomspace(0.02, top, n) * i_sat
    z = np.sqrt(p_in / i_sat)
    clean = bg * i_sat * _law(model, alpha0).transmit(z) ** 2 * (p_in / i_sat) ** distort
    sigma = np.sqrt((rel * clean) ** 2 + (floor * bg * i_sat) ** 2)
    return p_in, clean + sigma * rng.standard_normal(n), sigma


def _probe_sweep(rng, model, alpha0, i_sat, scale, n=40, rel=0.01, top=100.0):
    """Weak backward probe power transmission vs pump power: scale * probe(z)^2."""
    pump = np.geomspace(0.02, top, n) * i_sat
    t = scale * _law(model, alpha0).probe(np.sqrt(pump / i_sat)) ** 2
    return pump, t * (1 + rel * rng.standard_normal(n))


def _check(q, truth, rel):
    assert abs(q.value / truth - 1) < rel, (q, truth)
    assert q.within(truth, 3.0), (q, truth)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("truth", range(len(TRUTHS)))
def test_pump_sweep_recovers_each_model(model, truth):
    alpha0, i_sat, bg, _ = TRUTHS[truth]
    rng = np.random.default_rng(100 + 10 * truth + MODELS.index(model))
    p_in, p_out, _ = _pump_sweep(rng, model, alpha0, i_sat, bg)
    fit = fit_pump_sweep(p_in, p_out)
    assert fit.model == model, fit.info["table"]
    q = fit.quantities
    _check(q["alpha0"], alpha0, 0.05)
    _check(q["i_sat"], i_sat, 0.10)
    assert q["background_transmission"].within(bg, 3.0)
    table = fit.info["table"]
    assert set(table) == set(MODELS)
    assert all({"aic", "bic"} <= set(row) for row in table.values())
    assert min(table, key=lambda m: table[m]["bic"]) == model


@pytest.mark.parametrize("model, alpha0, expected_max", [
    ("thin", 3.0, 3.0 / 4),          # physics.md: max g'/t = 1 + alpha0/4 at z = 1
    ("twolevel", 3.0, 2.05 - 1),     # physics.md table: max (1 + I_in)/(1 + I_out) = 2.05
    ("doppler", 3.0, 1.74 - 1),      # physics.md table: Doppler max R = 1.74
])
def test_joint_pump_probe_fit_and_mismatch(model, alpha0, expected_max):
    i_sat, bg, scale = 0.9, 0.6, 0.25
    rng = np.random.default_rng(7)
    p_in, p_out, _ = _pump_sweep(rng, model, alpha0, i_sat, bg)
    pump, t = _probe_sweep(rng, model, alpha0, i_sat, scale)
    fit = fit_absorber(p_in, p_out, pump, t)
    assert fit.name == "absorber" and fit.model == model and fit.info["shared_fit"]
    q = fit.quantities
    _check(q["alpha0"], alpha0, 0.05)
    _check(q["i_sat"], i_sat, 0.10)
    assert q["probe_background_transmission"].within(scale, 3.0)
    mm = fit.info["mismatch"]
    assert mm["max"] == pytest.approx(expected_max, rel=0.03)
    assert 0 < mm["rms"] < mm["max_abs"]
    assert mm["z_range"][1] == pytest.approx(np.sqrt(p_in.max() / q["i_sat"].value))


def test_probe_only_fit():
    rng = np.random.default_rng(3)
    pump, t = _probe_sweep(rng, "twolevel", 4.0, 2.0, 0.4, n=60)
    fit = fit_probe_sweep(pump, t)
    assert fit.name == "absorber.probe" and fit.model == "twolevel"
    _check(fit.quantities["alpha0"], 4.0, 0.05)
    _check(fit.quantities["i_sat"], 2.0, 0.10)
    assert fit.quantities["background_transmission"].within(0.4, 3)


def test_separate_probe_law_gives_measured_mismatch():
    """Pump through a two-level cell, probe reading a thin-law transmission: the mismatch uses the
    probe's own fit, g'_twolevel / t_thin - 1."""
    alpha0, i_sat = 3.0, 1.5
    rng = np.random.default_rng(9)
    p_in, p_out, _ = _pump_sweep(rng, "twolevel", alpha0, i_sat, 0.8)
    pump, t = _probe_sweep(rng, "thin", alpha0, i_sat, 0.3, n=60)
    fit = fit_absorber(p_in, p_out, pump, t, shared=False)
    assert fit.model == "twolevel" and fit.info["probe_model"] == "thin"
    z = np.linspace(0, np.sqrt(p_in.max() / i_sat), 2001)
    r = _law("twolevel", alpha0).derivative(z) / _law("thin", alpha0).probe(z) - 1
    mm = fit.info["mismatch"]
    assert mm["max"] == pytest.approx(r.max(), rel=0.05)
    assert mm["rms"] == pytest.approx(np.sqrt(np.mean(r ** 2)), rel=0.05)


def test_curve_from_no_model_falls_back_to_table():
    alpha0, i_sat, bg = 3.0, 1.0, 0.9
    rng = np.random.default_rng(12)
    p_in, p_out, sigma = _pump_sweep(rng, "thin", alpha0, i_sat, bg, distort=0.04)
    pump, t = _probe_sweep(rng, "thin", alpha0, i_sat, 0.5)
    fit = fit_absorber(p_in, p_out, pump, t)
    assert fit.model == "tabulated"
    assert not any(row["adequate"] for row in fit.info["table"].values())
    assert any("tabulated" in w for w in fit.info["warnings"])
    ab = absorber_from_fit(fit)
    assert isinstance(ab, TabulatedAbsorber)
    # the table reproduces the measured curve within the noise (in the fit's normalisation)
    i_fit, c_fit = fit.quantities["i_sat"].value, fit.quantities["background_transmission"].value
    pred = c_fit * i_fit * ab.transmit(power_to_z(p_in, i_fit)) ** 2
    assert np.sqrt(np.mean(((pred - p_out) / sigma) ** 2)) < 2.0
    assert np.all(np.diff(ab.transmit(np.linspace(0, 5, 200))) > 0)
    assert np.isfinite(fit.info["mismatch"]["rms"])


def test_given_stderr_and_absorber_from_fit():
    rng = np.random.default_rng(4)
    p_in, p_out, sigma = _pump_sweep(rng, "doppler", 4.0, 2.2, 0.7)
    fit = fit_pump_sweep(p_in, p_out, stderr=sigma)
    assert fit.model == "doppler"
    assert fit.info["noise_estimated"] is False
    _check(fit.quantities["alpha0"], 4.0, 0.05)
    ab = absorber_from_fit(fit)
    assert ab.name == "doppler" and ab.i_sat == 1.0
    z = power_to_z(p_in, fit.quantities["i_sat"].value)
    np.testing.assert_allclose(fit.quantities["background_transmission"].value * fit.quantities["i_sat"].value
                               * ab.transmit(z) ** 2, fit.y_fit, rtol=1e-9)


def test_estimate_noise_and_runs_test():
    rng = np.random.default_rng(0)
    x = np.geomspace(0.01, 100, 80)
    y = x * np.exp(-3 / (1 + x))
    s, dof = estimate_noise(x, y * (1 + 0.02 * rng.standard_normal(x.size)))
    assert np.median(s / (0.02 * y)) == pytest.approx(1.0, abs=0.25)
    assert dof > 50
    s_abs, _ = estimate_noise(x, y + 0.05 * rng.standard_normal(x.size))
    assert np.median(s_abs) == pytest.approx(0.05, rel=0.25)
    assert abs(runs_test_z(rng.standard_normal(200))) < 3.5
    assert runs_test_z(np.sin(np.linspace(0, 6, 200))) < -10


@pytest.mark.parametrize("call, message", [
    (lambda: fit_pump_sweep([1, 2, np.nan] + list(range(3, 10)), np.ones(10)), "NaN"),
    (lambda: fit_pump_sweep(np.arange(1, 11), np.ones(9)), "one output per input"),
    (lambda: fit_pump_sweep(np.arange(1, 6), np.ones(5)), "at least 8"),
    (lambda: fit_pump_sweep(-np.arange(1, 11), np.ones(10)), ">= 0"),
    (lambda: fit_pump_sweep(np.arange(1, 11), np.zeros(10)), "no transmitted power"),
    (lambda: fit_absorber(np.arange(1, 11), np.arange(1, 11), np.arange(1, 11), None), "both pump"),
    (lambda: fit_pump_sweep(np.arange(1, 11), np.arange(1, 11), models=("lorentz",)), "unknown absorber"),
    (lambda: fit_absorber(None, None), "pump sweep, a probe sweep"),
    (lambda: fit_probe_sweep(np.arange(1, 11), np.arange(1, 11), probe_quantity="field"), "probe_quantity"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message) as err:
        call()
    assert "\n" not in str(err.value)
