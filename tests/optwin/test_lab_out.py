"""``optwin calibrate slm|camera|absorber ... --out cal.h5``: lab measurement files become calibration
fits under the names a bench calibration uses, merged into an existing file, read by push and the twin.

The lab files are written here in the documented formats from independent physics with known
parameters (the repository ships no measured example files): a first-order diffraction curve
``A sin^2(phi/2) + B``, a photon-transfer series of a linear sensor, and a two-level rubidium-cell
pump/probe sweep from the closed form ``I_out = W0(I_in exp(I_in - alpha0))``.
"""
import datetime as dt
import hashlib
import json
import math
import os

import h5py
import numpy as np
import pytest
from scipy.special import lambertw

from calibration.absorber_fit import absorber_from_fit
from calibration.calset import CalibrationSet
from calibration.quantities import Fit, Quantity
from optwin.cli import main
from optwin.workflows.from_calibration import ideal_twin

PHASE_RANGE, GAMMA = 6.9, 1.25                   # SLM truth of the synthetic curve (rad, exponent)
K, READ_E, OFFSET, FULL_E, QE = 0.3, 3.0, 100.0, 10000.0, 0.5     # camera truth (DN/e-, e-, DN, e-, -)
ALPHA0, I_SAT = 3.0, 2.5                         # cell truth: optical depth, saturation power (mW)


# ------------------------------------------------------------------------------------ lab files
def slm_curve(path, phase_rad, seed=0, amplitude=3.0, background=0.2, noise=0.01):
    """First-order power of a binary grating 0/L: A sin^2(phi(L)/2) + B, one row per level."""
    rng = np.random.default_rng(seed)
    power = amplitude * np.sin(phase_rad / 2) ** 2 + background + noise * rng.standard_normal(phase_rad.size)
    path.write_text("# grating 0/L, first order, uW\nlevel, first_order_power (uW)\n"
                    + "".join(f"{lv},{p:.7f}\n" for lv, p in enumerate(power)))
    return path


def true_phase(levels=np.arange(256)):
    return PHASE_RANGE * (levels / 255.0) ** GAMMA


def camera_frames(path, seed=1):
    """Photon-transfer series of a linear sensor: photons -> Poisson e- (QE, full well) -> DN."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        for i, t in enumerate(np.linspace(0.05, 1.3, 10) * 1e-3):
            photons = t / 1e-3 * FULL_E / QE
            g = f.create_group(f"points/p{i:02d}")
            g.attrs["exposure_s"] = t
            g.attrs["photons_per_pixel"] = photons
            for kind, ph in (("bright", photons), ("dark", 0.0)):
                e = np.minimum(rng.poisson(QE * ph, (4, 24, 24)), FULL_E) + READ_E * rng.standard_normal((4, 24, 24))
                g.create_dataset(kind, data=np.clip(np.rint(K * e + OFFSET), 0, 4095).astype(np.uint16))
    return path


def two_level_transmission(p_mw):
    """Intensity transmission of a homogeneously broadened two-level cell (closed form, Lambert W)."""
    s = np.asarray(p_mw, float) / I_SAT
    return np.real(lambertw(s * np.exp(s - ALPHA0))) / s


def cell_sweeps(tmp_path, seed=3):
    """Pump sweep (0.8 collection) and weak-probe sweep; in the two-level cell the probe's power
    transmission equals the pump's, T(P), because d ln I_probe/dx = -alpha(x) = d ln I_pump/dx."""
    rng = np.random.default_rng(seed)
    p_in = np.geomspace(0.05, 60.0, 48) * I_SAT
    t = two_level_transmission(p_in)
    pump = tmp_path / "pump.csv"
    pump.write_text("input (mW),output (mW)\n" + "".join(
        f"{a:.8g},{b:.8g}\n" for a, b in zip(p_in, 0.8 * p_in * t * (1 + 0.004 * rng.standard_normal(t.size)))))
    probe = tmp_path / "probe.csv"
    probe.write_text("pump\tprobe_transmission\n" + "".join(
        f"{a:.8g}\t{b:.8g}\n" for a, b in zip(p_in, 0.4 * t * (1 + 0.004 * rng.standard_normal(t.size)))))
    return pump, probe, p_in


# ------------------------------------------------------------------------------------ helpers
def calibrate(capsys, *argv):
    rc = main(["calibrate", *map(str, argv)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def calibrate_json(capsys, *argv):
    rc, out, err = calibrate(capsys, *argv, "--json")
    assert rc == 0, err
    return json.loads(out)


def assert_refused(rc, out, err, *fragments):
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("optwin calibrate: error:"), err
    for frag in fragments:
        assert frag in lines[0], lines[0]


def quantities_json(data, fit_name):
    prefix = fit_name + "."
    return {k[len(prefix):]: v for k, v in data.items()
            if k.startswith(prefix) and "." not in k[len(prefix):] and isinstance(v, dict) and "value" in v}


def assert_fit_equals_json(fit, data):
    """Every quantity in the file equals the one the run without --out printed (same number, not close)."""
    expected = quantities_json(data, fit.name)
    assert expected and set(expected) == set(fit.quantities)
    for q, v in expected.items():
        assert fit.quantities[q].value == v["value"] and fit.quantities[q].units == v["units"], q
        if v["stderr"] is None:
            assert not math.isfinite(fit.quantities[q].stderr)
        else:
            assert fit.quantities[q].stderr == v["stderr"], q
    assert fit.model == data[f"{fit.name}.model"]


def assert_source(info, key, path):
    src = info["source"][key]
    assert src["path"] == os.path.abspath(path)
    assert src["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert src["size_bytes"] == path.stat().st_size
    when = dt.datetime.fromisoformat(info["fit_date_utc"])
    assert abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) < 600


def snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# ------------------------------------------------------------------------------------ SLM
def test_slm_curve_out_stores_the_bench_names_and_an_inverse_of_the_true_response(tmp_path, capsys):
    curve = slm_curve(tmp_path / "slm1.csv", true_phase())
    plain = calibrate_json(capsys, "slm", "--curve", curve)
    cal = tmp_path / "lab.h5"
    wrote = calibrate_json(capsys, "slm", "--curve", curve, "--out", cal)
    assert wrote["fit"] == "slm" and wrote["created"] is True and wrote["fits_in_file"] == ["slm"]
    cs = CalibrationSet.load(cal)
    assert sorted(cs.fits) == ["slm"] and cs.bench_name == "" and not cs.bench_fingerprint
    fit = cs.fits["slm"]
    assert_fit_equals_json(fit, plain)
    np.testing.assert_array_equal(fit.arrays["phase_response_rad"], plain["slm.phase_response_rad"])
    # the recovered response is the true one, and the stored LUT inverts it over one full turn
    assert fit.quantities["phase_range_rad"].value == pytest.approx(PHASE_RANGE, rel=0.005)
    resp = fit.arrays["phase_response_rad"]
    assert np.sqrt(np.mean((resp - true_phase()) ** 2)) < 0.01
    lut, grid = fit.arrays["inverse_lut"], fit.arrays["inverse_lut_phase_rad"]
    assert lut.shape == grid.shape == (256,) and lut.dtype.kind == "i" and lut.min() >= 0 and lut.max() <= 255
    np.testing.assert_allclose(np.diff(grid), 2 * np.pi / 256, rtol=1e-12)
    miss = (true_phase()[lut] - grid + np.pi) % (2 * np.pi) - np.pi
    assert np.abs(miss).max() < 0.5 * np.diff(true_phase()).max() + 0.005      # half a level step
    info = fit.info
    assert info["panel"] == "slm1" and info["bit_depth"] == 8 and info["bits"] == 8
    assert info["encoder_dither"] is True and "amplitude_transfer" not in fit.arrays
    assert_source(info, "curve", curve)
    # a second panel goes into the same file under the bench's name for it; the first is kept
    curve2 = slm_curve(tmp_path / "slm2.csv", true_phase(), seed=5)
    wrote = calibrate_json(capsys, "slm", "--curve", curve2, "--slm", "slm2", "--out", cal)
    assert wrote["created"] is False and wrote["replaced"] is False and wrote["fits_in_file"] == ["slm", "slm.slm2"]
    back = CalibrationSet.load(cal)
    np.testing.assert_array_equal(back.fits["slm"].arrays["inverse_lut"], lut)
    assert back.fits["slm"].info == info
    assert back.fits["slm.slm2"].info["panel"] == "slm2"
    assert_source(back.fits["slm.slm2"].info, "curve", curve2)


def test_slm_range_below_a_turn_is_written_with_a_warning(tmp_path, capsys):
    curve = slm_curve(tmp_path / "short.csv", 5.0 * (np.arange(256) / 255.0) ** GAMMA)
    rc, out, err = calibrate(capsys, "slm", "--curve", curve, "--slm", "probe_input", "--out", tmp_path / "c.h5")
    assert rc == 0, err
    assert "is below 2 pi" in out
    fit = CalibrationSet.load(tmp_path / "c.h5").fits["slm.probe_input"]
    grid = fit.arrays["inverse_lut_phase_rad"]
    # one uniform turn (targets in the unreachable gap go to the nearer end level) ...
    np.testing.assert_allclose(np.diff(grid), 2 * np.pi / grid.size, rtol=1e-9)
    # ... and the largest amplitude double-phase reaches with a 5 rad range: cos(gap / 2)
    assert fit.quantities["amplitude_max"].value == pytest.approx(np.cos((2 * np.pi - 5.0) / 2), abs=0.01)
    assert sum("below 2 pi" in w for w in fit.info["warnings"]) == 1


def test_slm_flags_are_checked_before_fitting(tmp_path, capsys):
    curve = slm_curve(tmp_path / "c.csv", true_phase())
    assert_refused(*calibrate(capsys, "slm", "--curve", curve, "--slm", "slm3", "--out", tmp_path / "a.h5"),
                   "--slm slm3", "slm1, slm2, probe_input")
    assert_refused(*calibrate(capsys, "slm", "--curve", curve, "--replace"), "--replace needs --out")
    assert_refused(*calibrate(capsys, "camera", "--frames", curve, "--slm", "slm1"), "--slm belongs to")
    assert_refused(*calibrate(capsys, "slm", "--curve", curve, "--camera", "cam_z1"), "--camera belongs to")
    assert_refused(*calibrate(capsys, "--bench", "sim", "--out", tmp_path / "b.h5", "--slm", "slm2"),
                   "--slm belongs to a file mode")
    assert_refused(*calibrate(capsys, "slm", "--curve", curve, "--out", tmp_path / "missing" / "c.h5"),
                   "does not exist")
    assert not (tmp_path / "a.h5").exists() and not (tmp_path / "b.h5").exists()


# ------------------------------------------------------------------------------------ camera
def test_camera_frames_out_per_camera(tmp_path, capsys):
    frames = camera_frames(tmp_path / "ptc.h5")
    cal = tmp_path / "cal.h5"
    plain = calibrate_json(capsys, "camera", "--frames", frames, "--bits", 12, "--camera", "cam_z1")
    wrote = calibrate_json(capsys, "camera", "--frames", frames, "--bits", 12, "--camera", "cam_z1", "--out", cal)
    assert wrote["fit"] == "camera.cam_z1"
    fit = CalibrationSet.load(cal).fits["camera.cam_z1"]
    assert_fit_equals_json(fit, plain)
    assert fit.quantities["gain_adu_per_e"].value == pytest.approx(K, rel=0.03)
    assert fit.quantities["dark_offset_adu"].value == pytest.approx(OFFSET, abs=0.5)
    assert fit.arrays["offset_map_adu"].shape == (24, 24)
    assert np.abs(fit.arrays["offset_map_adu"].mean() - OFFSET) < 0.5
    assert fit.info["camera"] == "cam_z1" and fit.info["bit_depth"] == 12
    assert_source(fit.info, "frames", frames)
    # the default camera is the reference camera, fit 'camera', as the bench names it
    wrote = calibrate_json(capsys, "camera", "--frames", frames, "--out", cal)
    assert wrote["fit"] == "camera" and wrote["fits_in_file"] == ["camera", "camera.cam_z1"]
    back = CalibrationSet.load(cal)
    assert back.fits["camera"].info["camera"] == "cam_out" and back.fits["camera"].info["bit_depth"] is None
    assert back.fits["camera.cam_z1"].quantities == fit.quantities
    assert_refused(*calibrate(capsys, "camera", "--frames", frames, "--camera", "cam_9", "--out", cal),
                   "--camera cam_9", "cam_z1, cam_a1, cam_out, cam_back")


# ------------------------------------------------------------------------------------ absorber
def test_absorber_out_loads_into_the_twin_with_the_cell_transmission(tmp_path, capsys):
    pump, probe, p_in = cell_sweeps(tmp_path)
    plain = calibrate_json(capsys, "absorber", "--pump", pump, "--probe", probe)
    cal = tmp_path / "cal.h5"
    wrote = calibrate_json(capsys, "absorber", "--pump", pump, "--probe", probe, "--out", cal)
    assert wrote["fit"] == "absorber"
    cs = CalibrationSet.load(cal)
    fit = cs.fits["absorber"]
    assert_fit_equals_json(fit, plain)
    assert_source(fit.info, "pump", pump)
    assert_source(fit.info, "probe", probe)
    assert fit.model == "twolevel"
    assert fit.quantities["alpha0"].value == pytest.approx(ALPHA0, rel=0.02)
    assert fit.quantities["i_sat"].value == pytest.approx(I_SAT, rel=0.02)
    # the twin's cell law from the file reproduces the cell's known transmission over the sweep
    law = absorber_from_fit(fit)
    z = np.sqrt(p_in / fit.quantities["i_sat"].value)
    t_true = two_level_transmission(p_in)
    np.testing.assert_allclose((law.transmit(z) / z) ** 2, t_true, rtol=0.01)
    np.testing.assert_allclose(law.probe(z) ** 2, t_true, rtol=0.01)
    # ... and it is the law the twin workflow builds (optwin.workflows.from_calibration)
    net = ideal_twin(cs, [2, 16, 2], absorber="calibrated")
    np.testing.assert_allclose(net.absorber.transmit(z), law.transmit(z), rtol=1e-12)
    assert (net.absorber.transmit(1e-4) / 1e-4) ** 2 == pytest.approx(math.exp(-ALPHA0), rel=0.02)


# ------------------------------------------------------------------------------------ merging
def bench_like_file(path):
    """A calibration file as a bench run leaves it: bench identity, raw data, fits the lab file
    must keep (including an 'absorber' and 'scale' derived from it)."""
    cs = CalibrationSet(bench_name="labbench", bench_config={"bench": {"name": "labbench"}},
                        bench_fingerprint={"devices": {"slm1": {"bit_depth": 8}}, "config_sha256": "ab" * 32})
    cs.add(Fit("mvm1", "gain-map", {"w_max": Quantity(2.7, 0.01, "")},
               arrays={"gain": np.linspace(0.5, 1.5, 32).reshape(16, 2)}, info={"repeats": 3}))
    cs.add(Fit("scale", "from-absorber", {"z1_per_h": Quantity(0.61, 0.002, "1/h")}))
    cs.add(Fit("absorber", "twolevel", {"alpha0": Quantity(4.1, 0.05, ""), "i_sat": Quantity(1.7, 0.02, "h^2")},
               x=np.linspace(0, 1, 9), y=np.linspace(0, 2, 9), y_fit=np.linspace(0, 2, 9) + 0.01))
    cs.add(Fit("registration", "affine", {"rotation_deg": Quantity(0.3, 0.01, "deg")},
               arrays={"centers_px.cam_z1": np.arange(32.0).reshape(16, 2)}))
    cs.raw["camera/cam_z1/dark"] = np.arange(60, dtype=np.uint16).reshape(3, 4, 5)
    cs.raw["absorber/steps"] = np.linspace(0, 1, 7)
    return cs.save(path), cs


def assert_same_fit(a, b):
    assert (a.name, a.model, a.quantities, a.info) == (b.name, b.model, b.quantities, b.info)
    assert sorted(a.arrays) == sorted(b.arrays)
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k])
    for k in ("x", "y", "y_fit"):
        va, vb = getattr(a, k), getattr(b, k)
        assert (va is None) == (vb is None)
        if va is not None:
            np.testing.assert_array_equal(va, vb)


def test_merge_adds_or_replaces_one_fit_and_keeps_everything_else(tmp_path, capsys):
    cal, before = bench_like_file(tmp_path / "cal.h5")
    curve = slm_curve(tmp_path / "slm1.csv", true_phase())
    rc, out, err = calibrate(capsys, "slm", "--curve", curve, "--out", cal)
    assert rc == 0, err
    assert "wrote fit 'slm' to" in out and "kept 4 other fit(s): absorber, mvm1, registration, scale" in out
    after = CalibrationSet.load(cal)
    assert sorted(after.fits) == ["absorber", "mvm1", "registration", "scale", "slm"]
    for name, fit in before.fits.items():
        assert_same_fit(after.fits[name], fit)
    assert (after.bench_name, after.bench_config, after.bench_fingerprint, after.created_utc) == \
        (before.bench_name, before.bench_config, before.bench_fingerprint, before.created_utc)
    assert sorted(after.raw) == sorted(before.raw)
    for k in before.raw:
        np.testing.assert_array_equal(after.raw[k], before.raw[k])
    # the lab absorber replaces the bench's only with --replace, and says which fits it leaves stale
    pump, probe, _ = cell_sweeps(tmp_path)
    frozen = cal.read_bytes()
    assert_refused(*calibrate(capsys, "absorber", "--pump", pump, "--out", cal),
                   "already holds a fit 'absorber'", "--replace")
    assert cal.read_bytes() == frozen
    data = calibrate_json(capsys, "absorber", "--pump", pump, "--probe", probe, "--out", cal, "--replace")
    assert data["replaced"] is True and data["fits_in_file"] == ["absorber", "mvm1", "registration", "scale", "slm"]
    assert len(data["warnings"]) == 1 and "scale, mvm1" in data["warnings"][0]
    final = CalibrationSet.load(cal)
    assert final.fits["absorber"].quantities["alpha0"].value == data["absorber.alpha0"]["value"]
    assert final.fits["absorber"].quantities["alpha0"].value == pytest.approx(ALPHA0, rel=0.02)
    for name in ("mvm1", "scale", "registration"):
        assert_same_fit(final.fits[name], before.fits[name])
    assert_same_fit(final.fits["slm"], after.fits["slm"])
    assert final.bench_fingerprint == before.bench_fingerprint
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_refusals_leave_every_file_untouched(tmp_path, capsys):
    curve = slm_curve(tmp_path / "curve.csv", true_phase())
    run = tmp_path / "run.h5"
    assert main(["train", "--system", "twin", "--task", "moons", "--layers", "2,16,2", "--epochs", "1",
                 "--no-progress", "--json", "--out", str(run)]) == 0
    frames = camera_frames(tmp_path / "ptc.h5")
    cal, _ = bench_like_file(tmp_path / "cal.h5")
    newer = tmp_path / "newer.h5"
    newer.write_bytes(cal.read_bytes())
    with h5py.File(newer, "a") as f:
        f.attrs["schema_version"] = 99
    cut = tmp_path / "cut.h5"
    cut.write_bytes(cal.read_bytes()[: cal.stat().st_size // 2])
    (tmp_path / "adir").mkdir()
    capsys.readouterr()
    before = snapshot(tmp_path)
    cases = [(run, "kind='optwin-run'"), (curve, "not an HDF5 calibration file"),
             (tmp_path / "adir", "is a directory"), (frames, "not an optwin calibration file"),
             (newer, "newer than this optwin reads"), (cut, "truncated or corrupt"),
             (cal, "already holds a fit 'absorber'")]
    pump, _, _ = cell_sweeps(tmp_path / "adir")
    for target, fragment in cases:
        assert_refused(*calibrate(capsys, "absorber", "--pump", pump, "--out", target), fragment)
    for target in (run, curve, frames):        # --replace never makes another kind of file writable
        assert_refused(*calibrate(capsys, "slm", "--curve", curve, "--out", target, "--replace"))
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in (tmp_path / "adir").iterdir()) == ["probe.csv", "pump.csv"]


# ------------------------------------------------------------------------------------ push
def test_push_shows_the_lab_lut_on_the_sim_panels(tmp_path, capsys, monkeypatch):
    """A lab-measured LUT written with --out drives push: the frames it shows on the simulated
    panels realise the run's weights through the panels' true response."""
    import hwio.bench
    from hwio.encoding import realised_weights
    from hwio.response import PhaseResponse
    from hwio.sim.testing import truth_of
    from optwin.runfile import load_run

    run = tmp_path / "run.h5"
    assert main(["train", "--system", "twin", "--task", "moons", "--layers", "2,16,2", "--epochs", "2",
                 "--no-progress", "--json", "--out", str(run)]) == 0
    with hwio.bench.open_bench("sim") as bench:
        tables = {name: truth_of(bench).realised["phase_table_rad"][name] for name in ("slm1", "slm2")}
    cal = tmp_path / "lab.h5"
    for k, name in enumerate(("slm1", "slm2")):       # the lab measures each panel's diffraction curve
        curve = slm_curve(tmp_path / f"{name}.csv", tables[name], seed=10 + k, amplitude=2.0, noise=0.005)
        assert calibrate(capsys, "slm", "--curve", curve, "--slm", name, "--out", cal)[0] == 0
    opened = []
    real_open = hwio.bench.open_bench

    def recording_open(*args, **kwargs):
        b = real_open(*args, **kwargs)
        opened.append(b)
        return b
    monkeypatch.setattr(hwio.bench, "open_bench", recording_open)
    weights = load_run(run)["weights"]

    def pushed_error(*cal_args):
        opened.clear()
        rc = main(["push", "--bench", "sim", "--weights", str(run), "--json", *cal_args])
        out, err = capsys.readouterr()
        assert rc == 0, err
        result = json.loads(out)
        errors = []
        for k, (name, rep) in enumerate(zip(("slm1", "slm2"), result["slms"])):
            bench = opened[-1]
            field = realised_weights(bench.slms[name].last_levels, bench.layouts[name],
                                     PhaseResponse(tables[name], name=name))
            w_max = rep["w_max"]
            errors.append(float(np.abs(field - np.clip(weights[k], -w_max, w_max) / w_max).max()))
        return result, errors

    result, errors = pushed_error("--cal", str(cal))
    assert result["cal"] == str(cal)
    assert all(str(cal) in r["lut"] for r in result["slms"])
    assert max(errors) < 0.02, errors
    _, ideal = pushed_error()                  # the same push without a calibration misencodes
    assert min(ideal) > 0.1, ideal
