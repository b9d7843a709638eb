"""Whole calibration of the reduced simulated bench (experiments/benches/sim_reduced.toml): one
camera for all four planes, one phase panel for slm1 | slm2 | probe_input | lo (no LO stepper),
no flat lamp.  Recovered quantities against the hidden truth, with the tolerances of
tests/calibration/test_run.py and the procedure tests."""
import math
from pathlib import Path

import numpy as np
import pytest

from calibration.run import calibrate_bench
from hwio.bench import open_bench
from hwio.sim.testing import truth_of

from test_run import REQUIRED, _check_absorber

REDUCED = Path(__file__).resolve().parents[2] / "experiments" / "benches" / "sim_reduced.toml"


@pytest.fixture(scope="module")
def reduced_cal(tmp_path_factory):
    out = tmp_path_factory.mktemp("reduced") / "cal.h5"
    with open_bench(REDUCED) as bench:
        cal = calibrate_bench(bench, out, progress=False)
        truth = truth_of(bench)
    return cal, truth


def test_every_required_quantity(reduced_cal):
    cal, _ = reduced_cal
    flat = {}
    for fit in cal.fits.values():
        flat.update(fit.flat())
    for key in REQUIRED:
        assert math.isfinite(flat[key]["value"]) and math.isfinite(flat[key]["stderr"]), key
    for name in ("mvm1", "mvm2", "mvm2_backward"):
        assert cal.fits[name].quantities["systematic_nrmse"].value < 0.1, name
    assert cal.bench_config["devices"]["cam_z1"]["region_of"] == "cam"


def test_cameras_without_a_flat_lamp(reduced_cal):
    """Photon transfer from the laser: gain, read noise, offset and saturation of the one sensor, per plane."""
    cal, truth = reduced_cal
    ct = truth.sensors["cam"]
    for cam in ("cam_z1", "cam_a1", "cam_out", "cam_back"):
        fit = cal.fits["camera" if cam == "cam_out" else f"camera.{cam}"]
        q = fit.quantities
        assert fit.model == "ptc-per-pixel" and "prnu_map" not in fit.arrays
        assert abs(q["gain_adu_per_e"].value / ct.gain_adu_per_e - 1) < 0.02, (cam, q["gain_adu_per_e"])
        assert abs(q["read_noise_e"].value / ct.read_noise_e - 1) < 0.05, (cam, q["read_noise_e"])
        assert abs(q["dark_offset_adu"].value - ct.dark_offset_adu) < 0.5, cam
        assert 0.8 * ct.full_well_e < q["saturation_e"].value < 1.02 * ct.full_well_e, (cam, q["saturation_e"])
        off = fit.arrays["offset_map_adu"]
        assert off.shape == (80, 80) and np.median(np.abs(off - ct.dark_offset_adu)) < 0.5, cam


def test_lo_region_phase_and_panel_response(reduced_cal):
    """The LO region's intensity-only phase steps, then the panel's interferometric response."""
    cal, truth = reduced_cal
    true = np.asarray(truth.lo_phase_table_rad)
    lo = cal.fits["camera.lo_phase"].arrays["phase_response_rad"]
    assert np.sqrt(np.mean((lo - true) ** 2)) < 0.015
    for panel, name in (("slm1", "slm"), ("slm2", "slm.slm2"), ("probe_input", "slm.probe_input")):
        f = cal.fits[name]
        err = f.arrays["phase_response_rad"] - truth.realised["phase_table_rad"][panel]
        assert np.sqrt(np.mean(err ** 2)) < 0.05, (panel, err)
        assert f.quantities["gamma"].value == pytest.approx(truth.slms[panel].gamma, abs=0.02), panel
        tol = 0.03 if panel == "probe_input" else 0.01
        assert f.quantities["crosstalk_px"].value == pytest.approx(truth.slms[panel].crosstalk_px, rel=tol), panel


def test_registration_per_plane(reduced_cal):
    cal, truth = reduced_cal
    reg = cal.fits["registration"]
    assert reg.quantities["rotation_deg"].value == pytest.approx(truth.registration["cam_z1"].rotation_deg, abs=0.05)
    assert reg.quantities["scale"].value == pytest.approx(truth.registration["cam_z1"].scale, abs=0.002)
    for cam in ("cam_z1", "cam_a1", "cam_out", "cam_back"):
        c = np.asarray(reg.arrays[f"centers_px.{cam}"])
        assert np.abs(c - truth.realised["spot_positions_px"][cam]).max() < 0.1, cam


def test_absorber(reduced_cal):
    cal, _ = reduced_cal
    _check_absorber(cal, REDUCED)
