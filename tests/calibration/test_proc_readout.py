"""Readout calibration (LO amplitude per spot) on the simulated benches, and the homodyne values the
CalContext computes with it, against fields and sensor numbers computed from the truth."""
from __future__ import annotations

import numpy as np
import pytest

from calibration.procedures import CalContext
from calibration.procedures.camera import measure_camera
from calibration.procedures.readout import measure_readout
from calibration.readout_fit import spot_backgrounds
from calibration.procedures.registration import measure_registration
from hwio.sim.camera_physics import psf_matrix
from hwio.sim.optics import crosstalk_matrix
from hwio.sim.testing import open_with, truth_of


@pytest.fixture(scope="module", params=("sim", "sim_alt"))
def calibrated(request):
    bench = open_with(request.param, {})           # faults on, as in the TOML
    ctx = CalContext(bench)
    measure_camera(ctx, n_points=12, n_frames=2, n_flat=16)
    measure_registration(ctx)
    fits = {f.name: f for f in measure_readout(ctx)}
    return bench, ctx, fits


def _roi_gain(bench, ctx, cam):
    """ADU per unit |field|^2 of each spot inside its ROI (truth sensor, PSF and PRNU)."""
    truth = truth_of(bench)
    ct = truth.cameras[cam]
    pos = truth.realised["spot_positions_px"][cam]
    psf = psf_matrix(pos, ct.psf_sigma_px, bench.cameras[cam].shape).toarray()      # (pixels, spots)
    prnu = truth.realised["prnu_map"][cam].ravel()
    centres = ctx.fits["registration"].arrays[f"centers_px.{cam}"]
    radius = ctx.fits[f"readout.{cam}"].quantities["roi_radius_px"].value
    rr, cc = np.indices(bench.cameras[cam].shape)
    frac = np.empty(len(pos))
    for k, (r, c) in enumerate(centres):
        inside = ((rr - r) ** 2 + (cc - c) ** 2 <= radius ** 2).ravel()
        frac[k] = np.sum(psf[inside, k] * prnu[inside])
    conv = truth.optics.power_scale * truth.optics.tap[cam] * bench.cameras[cam].exposure_s * ct.qe * \
        ct.gain_adu_per_e
    return conv * frac


def test_lo_amplitudes_match_the_truth(calibrated):
    bench, ctx, fits = calibrated
    truth = truth_of(bench)
    for cam in bench.cameras:
        fit = fits[f"readout.{cam}"]
        lo = fit.arrays["lo_amplitude"]
        assert lo.shape == (bench.spots[cam].n,)
        expect = np.sqrt(_roi_gain(bench, ctx, cam)) * truth.realised["lo_amplitude"][cam]
        ratio = lo / expect
        assert np.all(np.abs(ratio - 1) < 0.01), (cam, ratio)
        assert np.all(fit.arrays["lo_amplitude_stderr"] > 0)
        assert fit.quantities["roi_radius_px"].value == pytest.approx(
            3 * truth.cameras[cam].psf_sigma_px, rel=0.05)


def test_background_light_is_measured(calibrated):
    bench, ctx, fits = calibrated
    truth = truth_of(bench)
    for cam in bench.cameras:
        ct = truth.cameras[cam]
        bg = ct.background_photons_per_s * bench.cameras[cam].exposure_s * ct.qe * ct.gain_adu_per_e
        got = fits[f"readout.{cam}"].quantities["background_adu_per_px"].value
        assert got == pytest.approx(bg, rel=0.05), cam


def test_homodyne_values_are_the_spot_fields(calibrated):
    """h of cam_z1 for a known frame: slm1 uniform (every element phase 0), inputs at 0.5."""
    bench, ctx, fits = calibrated
    truth = truth_of(bench)
    sz = bench.sizes
    ctx.blank_all()
    ctx.show("slm1", ctx.uniform_levels("slm1", 0))
    x = np.full(sz.n_in, 0.5)
    ctx.show_inputs(x)
    h = ctx.homodyne("cam_z1", n_avg=8)
    e = ctx.field_iq(["cam_z1"], n_avg=8)["cam_z1"]
    ctx.blank_all()
    fill = ctx.dmd.fill_fractions(x[None, :])[0, :sz.n_in]
    illum_in = truth.realised["illumination"]["input"][0, :sz.n_in]
    illum1 = truth.realised["illumination"]["slm1"][:, :sz.n_in]
    k1 = truth.optics.layer_gain[0]
    z1 = crosstalk_matrix(sz.n_hidden, truth.optics.output_crosstalk[0]) @ (
        k1 * illum1 @ (illum_in * fill) + truth.realised["stray_field"]["layer1"])
    scale = np.sqrt(_roi_gain(bench, ctx, "cam_z1"))
    assert np.allclose(h, scale * z1.real, rtol=0.01, atol=0.01 * np.abs(scale * z1).max())
    assert np.allclose(e, scale * z1, rtol=0.01, atol=0.01 * np.abs(scale * z1).max())
    assert np.allclose(e.real, h, rtol=0.01, atol=0.01 * np.abs(h).max())


def test_readout_needs_registration():
    ctx = CalContext(open_with("sim", {}))
    with pytest.raises(ValueError, match="run the registration procedure first"):
        measure_readout(ctx)


def test_spot_backgrounds_on_a_synthetic_frame():
    img = np.full((40, 40), 7.0)
    yy, xx = np.indices(img.shape)
    centres = np.array([[10.0, 10.0], [10.0, 25.0], [28.0, 18.0]])
    for r, c in centres:
        img += 500 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 1.5 ** 2))
    bg = spot_backgrounds(img + 100.0, centres, 4.5, dark_adu=100.0)
    assert np.allclose(bg, 7.0, atol=0.05)
