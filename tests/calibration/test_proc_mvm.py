"""MVM procedure: the alternating least-squares model fit, and MVM-1/MVM-2/backward probes on the
simulated bench checked against its hidden truth (unit-free quantities)."""
import numpy as np
import pytest

from calibration.procedures.absorber import absorber_plan, measure_absorber
from calibration.mvm_fit import fit_mvm_model, fit_mvm_selected, predict_mvm
from calibration.procedures.mvm import measure_mvm, mvm_plans
from hwio.encoding import realised_weights
from hwio.recording import Recorder, list_streams, read_stream
from hwio.response import PhaseResponse
from hwio.sim.optics import crosstalk_matrix
from hwio.sim.testing import truth_of

from prereq_fixtures import QUIET, context_with_prereqs


@pytest.mark.parametrize("side,shape", [("output", (6, 2)), ("input", (5, 3))])
def test_alternating_fit_recovers_gain_crosstalk_stray(side, shape):
    rng = np.random.default_rng(5)
    n_out, n_in = shape
    gain = rng.uniform(0.6, 1.0, shape) * 1.7
    n = n_out if side == "output" else n_in
    mix = crosstalk_matrix(n, 0.04)
    stray = rng.normal(0, 0.02, n_out)
    plan = mvm_plans((n_in, n_out, 2))["mvm1"]          # one-hot + random settings of an (n_out, n_in) layer
    amps = np.stack([st["A1"] for st in plan])
    x = np.stack([st["x"] for st in plan])
    factor = rng.uniform(0.5, 1.0, (len(x), n_out)) if side == "input" else None
    y = predict_mvm(x, amps, gain, mix, stray, side=side, factor=factor)
    y_noisy = y + 0.002 * rng.standard_normal(y.shape)
    f = fit_mvm_model(x, amps, y_noisy, side=side, factor=factor)
    assert np.all(np.abs(f["gain"] - gain) < 4 * f["gain_stderr"] + 1e-4)
    off = ~np.eye(n, dtype=bool)
    assert np.all(np.abs(f["crosstalk"][off] - mix[off]) < 4 * f["crosstalk_stderr"][off] + 1e-4)
    assert np.all(np.abs(f["stray"] - stray) < 4 * f["stray_stderr"] + 1e-4)
    assert f["residual_rms"] == pytest.approx(0.002, rel=0.3)
    exact = fit_mvm_model(x, amps, y, side=side, factor=factor)
    np.testing.assert_allclose(exact["gain"], gain, rtol=1e-6)


def test_crosstalk_band_is_chosen_by_cross_validation():
    """Neighbour-only mixing: the band-1 model predicts left-out probes better than the full matrix
    (which fits noise into far elements) and far better than no crosstalk; far mixing needs 'full'."""
    rng = np.random.default_rng(9)
    n_out, n_in = 12, 2
    gain = rng.uniform(0.6, 1.0, (n_out, n_in))
    plan = mvm_plans((n_in, n_out, 2), n_groups=6, per_group=5)["mvm1"]
    amps = np.stack([st["A1"] for st in plan])
    x = np.stack([st["x"] for st in plan])
    stray = rng.normal(0, 0.02, n_out)
    near = crosstalk_matrix(n_out, 0.05)
    y = predict_mvm(x, amps, gain, near, stray) + 0.01 * rng.standard_normal((len(x), n_out))
    f = fit_mvm_selected(x, amps, y)
    assert f["band"] == 1, f["band_cv_rms"]
    assert f["band_cv_rms"]["1"] < f["band_cv_rms"]["full"] and f["band_cv_rms"]["1"] < 0.5 * f["band_cv_rms"]["0"]
    assert np.all(f["crosstalk"][np.abs(np.subtract.outer(range(n_out), range(n_out))) > 1] == 0)
    far = near.copy()
    far[0, n_out - 1] = far[n_out - 1, 0] = 0.08         # e.g. a ghost reflection between the end rows
    y_far = predict_mvm(x, amps, gain, far, stray) + 0.01 * rng.standard_normal((len(x), n_out))
    assert fit_mvm_selected(x, amps, y_far)["band"] is None


def test_fit_refuses_too_few_probes():
    with pytest.raises(ValueError, match="measure more probes"):
        fit_mvm_model(np.ones((2, 2)), np.ones((2, 3, 2)), np.ones((2, 3)))


PROBE_WAIST = 0.55          # non-uniform probe-panel illumination: the backward gains must show it


@pytest.fixture(scope="module")
def sim_mvm(tmp_path_factory):
    overrides = {"truth": {**QUIET["truth"], "slm": {"probe_input": {"illumination_waist": PROBE_WAIST}}}}
    path = tmp_path_factory.mktemp("mvm") / "raw.h5"
    rec = Recorder(path)
    bench, ctx = context_with_prereqs("sim", overrides=overrides, recorder=rec)
    measure_absorber(ctx, absorber_plan(bench, n_geometric=6, n_linear=8, repeats=16, probe_repeats=8))
    fits = measure_mvm(ctx)
    rec.close()
    return bench, ctx, {f.name: f for f in fits}, path


def _true_elements(bench, ctx, slm):
    """Complex element fields of a full-amplitude frame (truth), times the panel illumination."""
    t = truth_of(bench)
    lay = bench.layouts[slm]
    frame = ctx.weight_levels(slm, np.ones((lay.n_rows, lay.n_cols)), 1.0)
    resp = PhaseResponse(np.asarray(t.realised["phase_table_rad"][slm]))
    e = realised_weights(frame, lay, resp, 1.0, t.slms[slm].crosstalk_px, complex_field=True)
    return e * t.realised["illumination"][slm][:, :lay.n_cols]


def _check_pattern(gain, stderr, truth):
    """gain = c * truth up to the noise (c: the units, fixed by the w_max convention)."""
    c = float(np.sum(gain * truth) / np.sum(truth * truth))
    # the stderr comes from the linear solve at fixed crosstalk; with a full crosstalk matrix (chosen by
    # cross-validation on this quiet bench) gains and crosstalk are correlated: 0.4 % absolute slack
    assert np.all(np.abs(gain - c * truth) < 3 * stderr + 0.004), (gain, c * truth)
    assert np.abs(gain).max() == pytest.approx(1.0)          # w_max convention: max |gain| = 1


def test_mvm1_matches_the_optics(sim_mvm):
    bench, ctx, fits, _ = sim_mvm
    t = truth_of(bench)
    f = fits["mvm1"]
    n_h = bench.sizes.n_hidden
    c = f.arrays["crosstalk"]
    se = f.arrays["crosstalk_stderr"]
    truth_c = crosstalk_matrix(n_h, t.optics.output_crosstalk[0])
    off = ~np.eye(n_h, dtype=bool)
    assert np.all(np.abs(c[off] - truth_c[off]) < 3 * se[off] + 0.004), c
    # per-element gain pattern: slm1 illumination x input illumination (x the same edge loss)
    e = _true_elements(bench, ctx, "slm1").real * t.realised["illumination"]["input"][0, :bench.sizes.n_in]
    _check_pattern(f.arrays["gain"], f.arrays["gain_stderr"], e)
    # stray field relative to full scale (unit free); the fitted stray is the effective offset, which
    # also holds the encoder's level-quantisation error of near-zero elements (< 0.6 % of full scale)
    k1 = t.optics.layer_gain[0]
    stray_rel = (truth_c @ t.realised["stray_field"]["layer1"]).real / (k1 * np.abs(e).max())
    w = f.quantities["w_max"].value
    assert np.all(np.abs(f.arrays["stray"] / w - stray_rel) < 3 * f.arrays["stray_stderr"] / w + 0.006)
    assert np.corrcoef(f.arrays["stray"], stray_rel)[0, 1] > 0.9
    # calibration removes most of the error of the uncorrected model
    assert f.quantities["systematic_nrmse"].value < 0.04
    assert f.quantities["systematic_nrmse"].value < 0.5 * f.quantities["ideal_systematic_nrmse"].value
    assert f.arrays["readout_noise"].ravel()[0] > 0


def test_mvm2_forward_and_backward(sim_mvm):
    bench, ctx, fits, _ = sim_mvm
    t = truth_of(bench)
    n_out = bench.sizes.n_out
    f2, fb = fits["mvm2"], fits["mvm2_backward"]
    off = ~np.eye(n_out, dtype=bool)
    for f in (f2, fb):          # reciprocity: the backward light sees the same output crosstalk
        assert np.all(np.abs(f.arrays["crosstalk"][off] - t.optics.output_crosstalk[1])
                      < 3 * f.arrays["crosstalk_stderr"][off] + 0.004)
    e2 = _true_elements(bench, ctx, "slm2").real
    _check_pattern(f2.arrays["gain"], f2.arrays["gain_stderr"], e2)
    assert f2.quantities["w_max"].value == 1.0
    # backward gain / forward gain = the probe panel's illumination per output (up to the scale)
    ratio = fb.arrays["gain"] / f2.arrays["gain"]
    probe_ill = _true_elements(bench, ctx, "probe_input").real[0, :n_out]
    row = ratio.mean(axis=1)
    np.testing.assert_allclose(row / row.max(), probe_ill / probe_ill.max(), atol=0.02)
    assert np.all(ratio.std(axis=1) < 0.03)             # each output's row is one factor
    assert f2.quantities["systematic_nrmse"].value < 0.5 * f2.quantities["ideal_systematic_nrmse"].value
    scale = ctx.fits["scale"]
    for q in ("z1_per_h", "a1_per_h", "z2_per_h", "delta1_per_h"):
        assert scale.quantities[q].value > 0 and np.isfinite(scale.quantities[q].stderr)


def test_recorded_steps_are_not_measured_again(sim_mvm):
    bench, ctx, fits, path = sim_mvm
    streams = list_streams(path)
    assert streams["mvm1.cam_z1"] == len(mvm_plans(bench.sizes)["mvm1"])
    ctx.info["recorded"] = {name: read_stream(path, name) for name in streams if name.startswith("mvm")}
    ctx.recorder = None
    before = ctx.n_grabs
    again = {f.name: f for f in measure_mvm(ctx)}
    assert ctx.n_grabs == before                          # nothing measured
    for name in ("mvm1", "mvm2", "mvm2_backward"):
        assert again[name].info["steps_measured"] == 0 and again[name].info["steps_reused"] > 0
        np.testing.assert_allclose(again[name].arrays["gain"], fits[name].arrays["gain"], rtol=1e-12)


def test_saturated_steps_leave_the_mvm_fit_with_a_note():
    import numpy as np
    import pytest
    from calibration.procedures.mvm import _unsaturated
    plan = [{"i": i} for i in range(6)]
    rows = [f"row{i}" for i in range(6)]
    notes = []
    keep = np.array([True, False, True, True, False, True])
    p, r = _unsaturated(plan, rows, keep, "mvm2", notes)
    assert [st["i"] for st in p] == [0, 2, 3, 5] and r == ["row0", "row2", "row3", "row5"]
    assert notes and notes[0].startswith("mvm2: 2 of 6 steps saturated")
    assert _unsaturated(plan, rows, np.ones(6, bool), "mvm1", notes) == (plan, rows) and len(notes) == 1
    with pytest.raises(ValueError, match="even at its shortest exposure; lower the laser power"):
        _unsaturated(plan, rows, np.array([True] + [False] * 5), "mvm1", notes)
