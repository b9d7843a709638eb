"""Absorber procedure: spot-averaged laws, per-neuron alignment, and a pump/probe sweep on the
simulated bench recovered against its hidden truth."""
import math

import numpy as np
import pytest
from scipy.integrate import quad

from calibration.absorber_fit import MODELS
from calibration.absorber_joint_fit import NeuronSweeps, fit_law_jointly, jackknife_steps
from calibration.absorber_spot_fit import (SPOT_SUFFIX, analyse_absorber, neuron_scales, scale_fit,
                                           spot_amplitude_transmission)
from calibration.procedures.absorber import absorber_plan, full_pump_levels, measure_absorber, weak_inputs
from calibration.procedures.steps import homodyne_of, repeated_powers
from calibration.quantities import Fit, Quantity
from hwio.sim.optics import CellModel
from hwio.sim.testing import truth_of
from hwio.sim.truth import AbsorberTruth
from twin.absorber import make_absorber

from prereq_fixtures import context_with_prereqs, true_z1


@pytest.mark.parametrize("model", MODELS)
def test_spot_average_matches_direct_integral(model):
    """2 int_0^1 v tau(z v) dv against scipy.quad of the Gaussian-mode overlap in the radius."""
    law = make_absorber(model, alpha0=4.0, i_sat=1.0)
    for z in (0.0, 0.3, 1.7, 6.0):
        # field r exp(-rho^2) over the plane, projected on the mode exp(-rho^2): both in rho
        num = quad(lambda rho: z * math.exp(-rho ** 2) * float(law.probe(z * math.exp(-rho ** 2)))
                   * math.exp(-rho ** 2) * rho, 0, 12)[0]
        den = quad(lambda rho: math.exp(-2 * rho ** 2) * rho, 0, 12)[0]
        expect = num / den / z if z > 0 else float(law.probe(0.0))
        assert spot_amplitude_transmission(model, z ** 2, 4.0) == pytest.approx(expect, rel=1e-7)


def _sweep_data(rng, truth: AbsorberTruth, z_max, n_steps=30, neurons=(0.8, 0.9, 1.0), scale=30.0, noise=0.03,
                out_scales=None):
    cell = CellModel(truth)
    fills = np.geomspace(0.02, 1.0, n_steps)
    z = (fills[:, None] * np.asarray(neurons)[None, :] * z_max)
    a = cell.pump_transmission(z.ravel(), truth.alpha0).reshape(z.shape) * z
    r = np.ones(len(neurons)) if out_scales is None else np.asarray(out_scales)
    hz = scale * z + noise * rng.standard_normal(z.shape)
    ha = scale * 1.1 * a * r + noise * rng.standard_normal(z.shape)
    return hz ** 2 - noise ** 2, ha ** 2 - noise ** 2, noise


def test_spot_averaged_law_is_recognised_and_recovered():
    """Data from the simulator's own spot-averaging code (an independent implementation)."""
    rng = np.random.default_rng(11)
    truth = AbsorberTruth(model="twolevel", alpha0=3.0, i_sat=1.0, spot_averaging=True)
    p_in, p_out, _ = _sweep_data(rng, truth, 3.2)
    fit = analyse_absorber(p_in.ravel(), p_out.ravel())
    assert fit.info["parametric_model"] == "twolevel" and fit.info["spot_averaged"]
    assert fit.model == "tabulated"                      # the twin carries the spot law as a table
    assert fit.quantities["alpha0"].value == pytest.approx(3.0, rel=0.02)
    assert fit.quantities["alpha0"].within(3.0, 3.0)
    assert fit.quantities["i_sat"].value == pytest.approx(900.0, rel=0.03)     # 30^2 h-units per cell unit
    # the tabulated law reproduces the spot average in twin units
    z = np.linspace(0.1, 3.0, 7)
    tab = make_absorber("tabulated", z_in=fit.arrays["tabulated_z_in"], z_out=fit.arrays["tabulated_z_out"])
    np.testing.assert_allclose(tab.transmit(z), CellModel(truth).pump_transmission(z, 3.0) * z, rtol=0.02)
    # point laws lose by a wide margin
    t = fit.info["table"]
    assert t["twolevel" + SPOT_SUFFIX]["bic"] < min(t[m]["bic"] for m in MODELS) - 10


def test_point_law_is_not_mistaken_for_spot_average():
    rng = np.random.default_rng(12)
    truth = AbsorberTruth(model="thin", alpha0=4.0, i_sat=1.0, spot_averaging=False)
    p_in, p_out, _ = _sweep_data(rng, truth, 4.0)
    fit = analyse_absorber(p_in.ravel(), p_out.ravel())
    assert fit.model == "thin" and not fit.info["spot_averaged"]
    assert fit.quantities["alpha0"].within(4.0, 3.0)


def test_neuron_scales_recover_spot_to_spot_differences():
    rng = np.random.default_rng(3)
    truth = AbsorberTruth(model="doppler", alpha0=4.0, i_sat=1.0)
    r_true = np.array([0.95, 1.0, 1.06])
    r_true = r_true / np.exp(np.log(r_true).mean())
    p_in, p_out, noise = _sweep_data(rng, truth, 3.0, out_scales=r_true, noise=0.005)
    sig = 2 * np.sqrt(np.abs(p_out)) * noise + noise ** 2
    r, q = neuron_scales(p_in, p_out, sig, np.ones_like(p_in, bool), shift=False)
    np.testing.assert_allclose(r, r_true ** 2 / np.exp(np.log(r_true ** 2).mean()), rtol=3e-3)  # power scales
    np.testing.assert_allclose(q, 1.0)


def test_step_jackknife_covers_errors_common_to_a_step():
    """Each step's points share one error (its frames' laser power) that the per-point variances
    do not show: the covariance understates the scatter of i_sat between independent sweeps,
    the step jackknife does not."""
    i_true, n_k, n_steps = 2.0, 4, 30
    x_step = np.geomspace(0.05, 60.0, n_steps)
    devs, se_cov, se_step = [], [], []
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        common = 1.0 + 0.02 * rng.standard_normal(n_steps)            # per step, every neuron
        k = np.repeat(np.arange(n_k)[None, :], n_steps, 0).ravel()
        step = np.repeat(np.arange(n_steps), n_k)
        x = np.repeat(x_step, n_k)
        y = 0.3 * x * make_absorber("twolevel", alpha0=3.0, i_sat=i_true).probe(np.sqrt(x)) ** 2 * common[step]
        var_out = (1e-3 * y) ** 2
        y = y + np.sqrt(var_out) * rng.standard_normal(y.size)
        t_h = rng.permutation(np.linspace(-0.05, 0.05, n_steps))[step]      # shuffled sweep order (hours)
        data = NeuronSweeps(p_in=x, p_out=y, var_in=(1e-4 * x) ** 2, var_out=var_out, neuron=k,
                            t_h=t_h, n_neurons=n_k, step=step)
        full = fit_law_jointly("twolevel", False, data, (3.0, i_true))
        jack = jackknife_steps("twolevel", False, data, full)
        devs.append(full["params"]["i_sat"] - i_true)
        se_cov.append(full["stderr"]["i_sat"])
        se_step.append(jack["i_sat"])

    def rms(v):
        return float(np.sqrt(np.mean(np.square(v))))
    # scatter of i_sat over the 8 sweeps against the typical stated error
    assert rms(devs) / rms(se_cov) > 2.0, (devs, se_cov)          # the covariance alone is too small
    assert rms(devs) / rms(se_step) < 1.6, (devs, se_step)
    assert jackknife_steps("twolevel", False, NeuronSweeps(**{**data.__dict__, "step": None}), full) == {}


def test_scale_fit_converts_to_twin_units():
    ab = Fit("absorber", "thin", quantities={"i_sat": Quantity(400.0, 4.0), "background_transmission":
                                             Quantity(0.25, 0.0025), "alpha0": Quantity(3.0, 0.1)})
    prev = Fit("scale", "x", quantities={"z2_per_h": Quantity(0.5, 0.01)})
    s = scale_fit(ab, prev)
    assert s.quantities["z1_per_h"].value == pytest.approx(1 / 20)
    assert s.quantities["a1_per_h"].value == pytest.approx(1 / 10)
    assert s.quantities["z1_per_h"].stderr == pytest.approx(0.5 * 0.05 * 0.01)
    assert s.quantities["z2_per_h"].value == 0.5          # kept from the MVM calibration
    with pytest.raises(ValueError, match="must be > 0"):
        scale_fit(Fit("absorber", "thin", quantities={"i_sat": Quantity(-1.0), "background_transmission":
                                                      Quantity(1.0)}))


@pytest.fixture(scope="module")
def sim_absorber():
    bench, ctx = context_with_prereqs("sim")
    plan = absorber_plan(bench, n_geometric=8, n_linear=16, repeats=48, probe_repeats=24)
    fit, scale = measure_absorber(ctx, plan)
    return bench, ctx, fit, scale


def test_sweep_on_the_simulated_bench_recovers_the_cell(sim_absorber):
    bench, ctx, fit, scale = sim_absorber
    t = truth_of(bench)
    # sim.toml: a two-level cell lit by Gaussian spots -> the spot-averaged two-level law
    assert t.absorber.model == "twolevel" and t.absorber.spot_averaging
    assert fit.info["parametric_model"] == "twolevel" and fit.info["spot_averaged"] is True
    alpha_true = t.absorber.alpha0 + t.drift.alpha0_per_hour * fit.info["alpha0_at_s"] / 3600.0
    q = fit.quantities["alpha0"]
    assert abs(q.value / alpha_true - 1) < 0.05 and q.within(alpha_true, 3.0), (q, alpha_true)
    plan = absorber_plan(bench, n_geometric=8, n_linear=16)
    # the plan's steps, then the weak end below one pixel per block (here: one pixel on one input)
    assert fit.info["weak_end_inputs_on"] == weak_inputs(bench.sizes.n_in, plan.n_weak) == [1]
    assert fit.info["steps_measured"] == len(plan.counts) + 1
    assert fit.info["probe_points"] > 20 and np.isfinite(fit.info["mismatch"]["max_abs"])


def test_twin_field_units_match_the_cell(sim_absorber):
    """z1_twin = h_z1 / sqrt(i_sat) must equal the cell's field / sqrt(I_sat) (i_sat within 10 %)."""
    bench, ctx, fit, scale = sim_absorber
    t = truth_of(bench)
    frame = full_pump_levels(ctx)
    ctx.blank_all()
    ctx.show("slm1", frame)
    ratios = []
    for fill in (0.3, 0.6):
        ctx.show_inputs(np.full(bench.sizes.n_in, fill))
        h = homodyne_of(repeated_powers(ctx, ("cam_z1",), 24)["cam_z1"], ctx.lo_amplitude("cam_z1")).mean(0)
        z_twin = h * scale.quantities["z1_per_h"].value
        realised = float(ctx.dmd.fill_fractions(np.full((1, bench.sizes.n_in), fill))[0, 0])   # whole pixels
        z_true = true_z1(bench, frame, realised).real / math.sqrt(t.absorber.i_sat)
        ratios.append(z_twin / z_true)
    ratio = float(np.exp(np.mean(np.log(ratios))))      # geometric mean over neurons, as the fit's i_sat
    # i_sat_fit / i_sat_true (consistent units) = ratio^-2
    i_rel = ratio ** -2
    i_rel_se = fit.quantities["i_sat"].stderr / fit.quantities["i_sat"].value
    assert abs(i_rel - 1) < 0.10, i_rel
    assert abs(i_rel - 1) < 3 * math.hypot(i_rel_se, 2 * np.std(np.log(ratios)) / math.sqrt(np.size(ratios))), \
        (i_rel, i_rel_se)


def test_sweep_exposure_shortens_when_the_strongest_pump_would_saturate(sim_absorber):
    """A drive that clips the spots at the operating exposure: the sweep runs shorter (k < 1)."""
    from calibration.procedures.absorber import boost_exposures
    from calibration.procedures.steps import saturated
    bench, ctx, _, _ = sim_absorber
    cam = "cam_z1"
    nominal = bench.cameras[cam].exposure_s
    probe_off = ctx.zero_levels("probe_input")
    try:
        ctx.blank_all()
        ctx.show("slm1", full_pump_levels(ctx))
        ctx.set_exposure(cam, 16 * nominal)          # now the strongest pump saturates the camera
        ctx.show_inputs(np.ones(bench.sizes.n_in))
        peaks = {}
        repeated_powers(ctx, (cam,), 2, peaks)
        assert saturated(ctx, peaks)
        k = boost_exposures(ctx, (cam,), probe_off, k_max=4.0)[cam]
        assert k < 1.0
        ctx.show_inputs(np.ones(bench.sizes.n_in))
        peaks = {}
        repeated_powers(ctx, (cam,), 4, peaks)
        assert not saturated(ctx, peaks), (peaks, ctx.saturation_adu(cam))
    finally:
        ctx.set_exposure(cam, nominal)
        ctx.blank_all()


def test_steps_flagged_saturated_leave_the_fit():
    """Clipped readings at the strongest pumps bias the law; flagged, they are left out."""
    from calibration.absorber_sweep_fit import reduce_absorber
    rng = np.random.default_rng(5)
    truth = AbsorberTruth(model="doppler", alpha0=4.0, i_sat=1.0)
    cell = CellModel(truth)
    counts = np.concatenate([[0], np.rint(np.geomspace(1, 100, 24)).astype(int), [0]])
    fills = counts / 100.0
    gains = np.array([0.9, 1.0, 1.1, 0.95])
    z = 8.0 * fills[:, None] * gains[None, :]
    a = cell.pump_transmission(z.ravel(), 4.0).reshape(z.shape) * z
    clip = fills >= 0.75                              # these steps saturate cam_z1: z1 reads low
    noise = 0.004

    def rows(values, squash=None):
        out = []
        for i, v in enumerate(values):
            v = 30.0 * v * (0.9 if squash is not None and squash[i] else 1.0)
            out.append(v[None, :] + noise * rng.standard_normal((16, v.size)))
        return out

    back = [0.01 * rng.standard_normal((8, gains.size)) for _ in counts]
    h = {"cam_z1": rows(z, clip), "cam_a1": rows(a), "back_off": back, "back_on": back}
    flags = np.zeros((counts.size, 2), bool)
    flags[:, 0] = clip
    good = reduce_absorber(h, counts, spot_models=False, saturated=flags)
    bad = reduce_absorber(h, counts, spot_models=False)
    assert good.info["parametric_model"] == "doppler" and good.quantities["alpha0"].within(4.0, 3.0)
    assert any("saturated" in w for w in good.info["warnings"])
    assert not bad.quantities["alpha0"].within(4.0, 3.0) or bad.info["parametric_model"] != "doppler"
