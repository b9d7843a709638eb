"""SLM calibration through the simulated benches (camera -> registration -> readout -> slm, faults on):
phase response by two methods, inverse LUT, pixel crosstalk and illumination against the truth."""
from __future__ import annotations


import numpy as np
import pytest

from calibration.interference_fit import circle_phases, fit_circle
from calibration.procedures import CalContext
from calibration.procedures.camera import measure_camera
from calibration.procedures.readout import measure_readout
from calibration.procedures.registration import measure_registration
from calibration.procedures.slm import measure_slm
from hwio.response import InverseLUT, PhaseResponse
from hwio.sim.testing import open_with, truth_of

PANELS = {"slm1": "slm", "slm2": "slm.slm2", "probe_input": "slm.probe_input"}


@pytest.fixture(scope="module", params=("sim", "sim_alt"))
def calibrated(request):
    bench = open_with(request.param, {})
    ctx = CalContext(bench)
    measure_camera(ctx, n_points=12, n_frames=2, n_flat=16)
    measure_registration(ctx)
    measure_readout(ctx)
    fits = {f.name: f for f in measure_slm(ctx)}
    return bench, ctx, fits


def _true_table(bench, panel):
    table = np.asarray(truth_of(bench).realised["phase_table_rad"][panel])
    return table - table[0]


def test_fit_names_and_contract_arrays(calibrated):
    bench, ctx, fits = calibrated
    assert set(fits) == set(PANELS.values())
    for panel, name in PANELS.items():
        f = fits[name]
        n = 2 ** bench.slms[panel].bit_depth
        assert f.arrays["phase_response_rad"].shape == (n,)
        for q in ("phase_range_rad", "gamma", "crosstalk_px"):
            assert q in f.quantities, (name, q)
        assert f.arrays["inverse_lut"].dtype.kind in "iu"
        assert ctx.fits[name] is f
    assert "illumination_waist" in fits["slm"].quantities and "illumination_waist" in fits["slm.slm2"].quantities


def test_phase_response_within_0p05_rad_rms(calibrated):
    bench, ctx, fits = calibrated
    for panel, name in PANELS.items():
        f = fits[name]
        err = f.arrays["phase_response_rad"] - _true_table(bench, panel)
        rms = float(np.sqrt(np.mean(err ** 2)))
        assert rms < 0.05, (panel, rms)
        assert np.abs(err).max() < 0.1, panel
        true_range = _true_table(bench, panel)[-1]
        q = f.quantities["phase_range_rad"]
        assert q.within(true_range, 3.0), (panel, q, true_range)
        assert f.quantities["gamma"].value == pytest.approx(truth_of(bench).slms[panel].gamma, abs=0.02)


def test_inverse_lut_reaches_every_phase(calibrated):
    """The calibrated LUT, judged with the TRUE response: worst phase error of any target."""
    bench, ctx, fits = calibrated
    for panel, name in PANELS.items():
        f = fits[name]
        bits = bench.slms[panel].bit_depth
        lut = InverseLUT.from_grid(f.arrays["inverse_lut"], f.arrays["inverse_lut_phase_rad"], bits)
        true = PhaseResponse(np.asarray(truth_of(bench).realised["phase_table_rad"][panel]))
        assert lut.max_phase_error_rad(true) < 0.05, panel


def test_diffractive_method_agrees(calibrated):
    bench, ctx, fits = calibrated
    for panel, name in PANELS.items():
        f = fits[name]
        rd = f.arrays["phase_response_diffractive_rad"]
        rms = float(np.sqrt(np.mean((rd - _true_table(bench, panel)) ** 2)))
        # the backward probe is weak: its grating power (|E|^2 next to the LO's) is the noisiest
        assert rms < (0.15 if panel == "probe_input" else 0.05), (panel, rms)
        assert f.info["diffractive_vs_interferometric_rms_rad"] == pytest.approx(
            float(np.sqrt(np.mean((rd - f.arrays["phase_response_rad"]) ** 2))))


def test_crosstalk_recovered(calibrated):
    bench, ctx, fits = calibrated
    for panel, name in PANELS.items():
        q = fits[name].quantities["crosstalk_px"]
        true = truth_of(bench).slms[panel].crosstalk_px
        # the backward probe is weak: its ratios are the noisiest (the stderr says so)
        assert q.value == pytest.approx(true, rel=0.03 if panel == "probe_input" else 0.01), (panel, q)
        assert q.within(true, 3.0), (panel, q, true)


def test_illumination_recovered(calibrated):
    bench, ctx, fits = calibrated
    truth = truth_of(bench)
    for panel in ("slm1", "slm2"):
        q = fits[PANELS[panel]].quantities["illumination_waist"]
        true = truth.slms[panel].illumination_waist
        assert q.value == pytest.approx(true, rel=0.1), (panel, q)
        assert q.within(true, 3.0), (panel, q, true)
    m = fits["slm.probe_input"].arrays["illumination_map"]
    ti = truth.realised["illumination"]["probe_input"][:, :bench.layouts["probe_input"].n_cols]
    assert np.allclose(m / m.max(), ti / ti.max(), atol=0.05)


def test_circle_phases_on_synthetic_fields():
    rng = np.random.default_rng(0)
    levels = np.arange(0, 256, 4)
    phi = 7.0 * (levels / 255) ** 1.3
    fields = np.stack([a * np.exp(1j * (phi + off)) + b for a, off, b in
                       ((3.0, 0.4, 0.2 - 0.1j), (2.0, -1.0, -0.3j))], axis=1)
    fields += rng.normal(0, 0.003, fields.shape) + 1j * rng.normal(0, 0.003, fields.shape)
    phase, se, info = circle_phases(fields, levels)
    assert np.abs(phase - phi).max() < 0.01
    assert np.all(se > 0) and np.all(se < 0.01)
    c, r, _ = fit_circle(fields[:, 0])
    assert abs(c - (0.2 - 0.1j)) < 0.01 and r == pytest.approx(3.0, abs=0.01)
    with pytest.raises(ValueError, match="at least 3 points"):
        fit_circle([1, 2])


def test_unknown_panel_is_refused():
    ctx = CalContext(open_with("sim", {}))
    with pytest.raises(ValueError, match="unknown phase panel 'slm9'"):
        measure_slm(ctx, panels=("slm9",))
    with pytest.raises(ValueError, match="run the readout procedure first"):
        measure_slm(ctx, panels=("slm1",))


def test_encoder_follows_the_fits_encoding(calibrated):
    """The SLM fit records that its staircase is the dithered encoder's, and later procedures
    encode that way; a fit from before dithering (no ``encoder_dither``) is encoded plain, and
    so is a panel not calibrated yet (nominal LUT: its levels' phases are unknown)."""
    import copy
    from hwio.encoding import amplitude_transfer
    bench, ctx, fits = calibrated
    assert not any(CalContext(bench).encoder(panel).dither for panel in PANELS)
    for panel, name in PANELS.items():
        fit = fits[name]
        enc = ctx.encoder(panel)
        assert fit.info["encoder_dither"] is True and enc.dither and enc.dither_ranks > 1
        np.testing.assert_array_equal(amplitude_transfer(enc, ctx.response(panel))[0],
                                      fit.arrays["amplitude_transfer_edges"])
        old = copy.copy(fit)
        old.info = {k: v for k, v in fit.info.items() if k != "encoder_dither"}
        try:
            ctx.add(old)
            assert not ctx.encoder(panel).dither
        finally:
            ctx.add(fit)
        assert ctx.encoder(panel).dither
