"""Registration: sub-pixel spot fits and transform fits on synthetic data, and the procedure on the
simulated benches against their truth (spot positions, rotation, scale, offset)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf

from calibration.procedures import CalContext
from calibration.procedures.camera import measure_camera
from calibration.procedures.registration import measure_registration
from calibration.registration_fit import (apply_transform, decompose, fit_affine, fit_homography, fit_similarity,
                                          fit_transform)
from calibration.spot_fit import centroid, find_spot
from hwio.sim.testing import open_with, truth_of
from hwio.sim.truth import RegistrationTruth


def _spot_image(shape, center, sigma, flux, background, rng):
    """Pixel-integrated Gaussian spot with Poisson noise (independent of the code under test)."""
    def prof(n, c):
        e = (np.arange(n + 1) - 0.5 - c) / (math.sqrt(2) * sigma)
        return 0.5 * np.diff(erf(e))
    mean = flux * np.outer(prof(shape[0], center[0]), prof(shape[1], center[1])) + background
    return rng.poisson(mean).astype(float)


# ----------------------------------------------------------------------------------- spots
def test_find_spot_recovers_subpixel_centres_within_their_errors():
    rng = np.random.default_rng(3)
    z = []
    for _ in range(40):
        c = rng.uniform(12, 20, size=2)
        img = _spot_image((32, 32), c, 1.6, 20000.0, 30.0, rng)
        s = find_spot(img, sigma_px=1.5)
        z.extend((s.center_px - c) / s.stderr_px)
        assert np.all(np.abs(s.center_px - c) < 0.05)
        assert abs(s.sigma_px - 1.6) < 0.05
    z = np.asarray(z)
    assert abs(z.mean()) < 0.5 and 0.6 < z.std() < 1.4, (z.mean(), z.std())


def test_find_spot_with_variance_map_and_centroid():
    rng = np.random.default_rng(5)
    c = np.array([15.3, 9.8])
    img = _spot_image((30, 24), c, 2.0, 50000.0, 10.0, rng)
    var = img.clip(1.0)                              # Poisson: variance = mean ~ counts
    s = find_spot(img, variance=var)
    assert np.all(np.abs(s.center_px - c) < 4 * s.stderr_px + 1e-3)
    assert np.all(np.abs(centroid(img[8:23, 3:17]) + [8, 3] - c) < 0.2)


def test_find_spot_refuses_pure_noise():
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="no spot stands out"):
        find_spot(rng.normal(100, 3, size=(30, 30)))
    with pytest.raises(ValueError, match="2-D image"):
        find_spot(np.zeros(10))


# ----------------------------------------------------------------------------------- transforms
def _grid(rows, cols, pitch=12.0):
    k = np.arange(rows * cols)
    return np.stack([(k // cols) * pitch, (k % cols) * pitch], axis=1).astype(float)


def test_decompose_matches_the_sim_truth_convention():
    rt = RegistrationTruth(rotation_deg=2.4, scale=1.03, offset_px=(30.6, 31.1))
    src = _grid(2, 3)
    m = fit_affine(src, rt.apply(src)).matrix
    rot, scale, off = decompose(m)
    assert rot == pytest.approx(2.4, abs=1e-9)
    assert scale == pytest.approx(1.03, abs=1e-12)
    assert off == pytest.approx([30.6, 31.1], abs=1e-9)


@pytest.mark.parametrize("model", ["similarity", "affine", "homography"])
def test_transform_fits_recover_parameters_within_errors(model):
    rng = np.random.default_rng(11)
    rt = RegistrationTruth(rotation_deg=-3.2, scale=1.06, offset_px=(28.4, 33.7))
    src = _grid(3, 4)
    sig = 0.02
    zs = {"rotation_deg": [], "scale": []}
    for _ in range(30):
        dst = rt.apply(src) + rng.normal(0, sig, src.shape)
        fit = {"similarity": fit_similarity, "affine": fit_affine, "homography": fit_homography}[model](
            src, dst, np.full(len(src), sig))
        zs["rotation_deg"].append((fit.rotation_deg - rt.rotation_deg) / fit.stderr["rotation_deg"])
        zs["scale"].append((fit.scale - rt.scale) / fit.stderr["scale"])
        assert fit.residual_px < 3 * sig
    for k, z in zs.items():
        z = np.asarray(z)
        assert abs(z.mean()) < 0.6 and z.std() < 1.5, (model, k, z.mean(), z.std())


def test_homography_recovered_and_preferred_when_significant():
    h = np.array([[1.02, 0.03, 20.0], [-0.02, 0.99, 25.0], [4e-4, -3e-4, 1.0]])
    src = _grid(4, 4, 15.0)
    dst = apply_transform(h, src) + np.random.default_rng(2).normal(0, 0.01, src.shape)
    fit = fit_transform(src, dst, 0.01)
    assert fit.model == "homography"
    assert fit.residual_px < 0.03
    assert fit.info["homography_f_test_p"] < 1e-6
    # an affine truth stays affine
    a = np.array([[1.01, 0.02, 5.0], [-0.03, 0.97, 7.0]])
    fit2 = fit_transform(src, apply_transform(a, src) + np.random.default_rng(4).normal(0, 0.01, src.shape), 0.01)
    assert fit2.model == "affine"


def test_ransac_rejects_an_outlier_spot():
    rt = RegistrationTruth(rotation_deg=1.7, scale=1.0, offset_px=(24.3, 27.6))
    src = _grid(2, 4)
    dst = rt.apply(src) + np.random.default_rng(7).normal(0, 0.01, src.shape)
    dst[5] += [3.0, -2.0]
    fit = fit_transform(src, dst, 0.01, outlier_px=0.5)
    assert fit.inliers.tolist() == [True] * 5 + [False] + [True] * 2
    assert fit.rotation_deg == pytest.approx(1.7, abs=0.05)
    assert fit.residual_px < 0.05
    assert np.hypot(*fit.residuals_px[5]) > 3.0


def test_few_or_collinear_spots_use_a_similarity():
    rt = RegistrationTruth(rotation_deg=4.5, scale=0.95, offset_px=(30.2, 38.9))
    two = np.array([[0.0, 0.0], [0.0, 16.0]])
    fit = fit_transform(two, rt.apply(two), 0.01)
    assert fit.model == "similarity" and fit.dof == 0
    assert fit.rotation_deg == pytest.approx(4.5, abs=1e-9) and fit.scale == pytest.approx(0.95, abs=1e-12)
    line = np.array([[0.0, 0.0], [0.0, 10.0], [0.0, 20.0]])
    assert fit_transform(line, rt.apply(line), 0.01).model == "similarity"
    with pytest.raises(ValueError, match="non-collinear"):
        fit_affine(line, rt.apply(line))
    with pytest.raises(ValueError, match="at least 2 spots"):
        fit_transform(two[:1], two[:1])


# ----------------------------------------------------------------------------------- procedure
@pytest.fixture(scope="module", params=("sim", "sim_alt"))
def registered(request):
    bench = open_with(request.param, {})          # faults on, as in the TOML
    ctx = CalContext(bench)
    measure_camera(ctx, n_points=12, n_frames=2)  # dark/flat maps for the flat-field correction
    fit, = measure_registration(ctx)
    return bench, ctx, fit


def test_registration_recovers_every_camera(registered):
    bench, ctx, fit = registered
    truth = truth_of(bench)
    q = fit.quantities
    for cam in bench.cameras:
        rt = truth.registration[cam]
        assert q[f"{cam}.residual_px"].value < 0.1, cam
        for name, value in (("rotation_deg", rt.rotation_deg), ("scale", rt.scale),
                            ("offset_row_px", rt.offset_px[0]), ("offset_col_px", rt.offset_px[1])):
            got = q[f"{cam}.{name}"]
            assert got.within(value, 3.0), f"{cam}.{name}: {got} vs truth {value}"
        centres = fit.arrays[f"centers_px.{cam}"]
        assert centres.shape == (bench.spots[cam].n, 2)
        err = np.hypot(*(centres - truth.realised["spot_positions_px"][cam]).T)
        assert err.max() < 0.1, (cam, err)
        assert q[f"{cam}.psf_sigma_px"].value == pytest.approx(truth.cameras[cam].psf_sigma_px, rel=0.03)
        assert fit.arrays[f"transform.{cam}"].shape in ((2, 3), (3, 3))
        assert np.allclose(apply_transform(fit.arrays[f"transform.{cam}"], bench.spots[cam].positions_px),
                           centres, atol=0.1)


def test_registration_reference_quantities(registered):
    bench, ctx, fit = registered
    assert fit.info["reference_camera"] == "cam_z1"
    for k in ("rotation_deg", "scale", "residual_px"):
        assert fit.quantities[k] == fit.quantities[f"cam_z1.{k}"]
    assert fit.quantities["residual_px"].value < 0.1
    assert ctx.fits["registration"] is fit
    # the ROI radius is 3 PSF sigmas and ROIs do not overlap
    for cam in bench.cameras:
        r = fit.quantities[f"{cam}.roi_radius_px"].value
        c = fit.arrays[f"centers_px.{cam}"]
        d = np.hypot(*(c[:, None] - c[None]).transpose(2, 0, 1))[np.triu_indices(len(c), 1)]
        assert r < d.min() / 2


def test_registration_needs_no_prior_calibration():
    """On a bench without camera fits (no flat field) the spots are still found to < 0.1 px."""
    bench = open_with("sim", {})
    fit, = measure_registration(CalContext(bench))
    truth = truth_of(bench)
    for cam in bench.cameras:
        assert fit.quantities[f"{cam}.residual_px"].value < 0.1
        err = np.hypot(*(fit.arrays[f"centers_px.{cam}"] - truth.realised["spot_positions_px"][cam]).T)
        assert err.max() < 0.1, (cam, err)
