"""Recovered calibration against a simulated bench's hidden truth, for any bench file.

Compares a calibration file written by ``optwin calibrate`` with the truth of the simulated
bench it was measured on, for every quantity of the calibration tolerance table (the one
tests/calibration/test_run.py, test_proc_slm.py and test_auto_exposure.py assert on the
small benches), and prints one JSON object: per quantity the recovered value, its standard
error, the true value, the tolerance and ``ok``; ``all_ok``; and the calibration's per-step
record (frames, bench time, compute time) and wall times from the file's ``run_info``.

    python benchmarks/calibration_scaling.py --bench experiments/benches/sim_64_32_10.toml --cal b64.h5
    python benchmarks/calibration_scaling.py --bench sim --calibrate /tmp/sim_cal.h5    # calibrate first

``--calibrate OUT`` runs ``optwin calibrate --bench BENCH --out OUT --json`` in this process first
(timed) and then compares.  ``--no-isat`` skips the i_sat check (it drives the bench: a few
hundred frames).  Benchmark code, like the tests, reads the truth through
``hwio.sim.testing.truth_of``; calibration code never does.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CAMS = ("cam_z1", "cam_a1", "cam_out", "cam_back")
PANELS = {"slm1": "slm", "slm2": "slm.slm2", "probe_input": "slm.probe_input"}
QUIET = {"truth": {"faults": {"camera_timeout_rate": 0.0, "dropped_frame_rate": 0.0, "stale_frame_rate": 0.0,
                              "slm_write_failure_rate": 0.0}}}


def _row(value, stderr, true, ok, tolerance):
    def num(v):
        return None if v is None or not np.isfinite(v) else float(v)
    return {"value": num(value), "stderr": num(stderr), "true": num(true), "tolerance": tolerance, "ok": bool(ok)}


def _within(q, true, n_sigma=3.0):
    return bool(np.isfinite(q.stderr) and abs(q.value - true) <= n_sigma * q.stderr)


def _true_z1(bench, truth, slm1_levels, fill):
    """Complex hidden-layer field of the simulator (cell units) for a slm1 frame and equal fills."""
    from hwio.encoding import realised_weights
    from hwio.response import PhaseResponse
    from hwio.sim.optics import crosstalk_matrix
    n_in = bench.sizes.n_in
    resp = PhaseResponse(np.asarray(truth.realised["phase_table_rad"]["slm1"]))
    e1 = realised_weights(slm1_levels, bench.layouts["slm1"], resp, 1.0, truth.slms["slm1"].crosstalk_px,
                          complex_field=True)
    e1 = e1 * truth.realised["illumination"]["slm1"][:, :n_in]
    x = np.full(n_in, fill) * truth.realised["illumination"]["input"][0, :n_in]
    c1 = crosstalk_matrix(bench.sizes.n_hidden, truth.optics.output_crosstalk[0])
    return c1 @ (truth.optics.layer_gain[0] * e1 @ x + truth.realised["stray_field"]["layer1"])


def _lo_ratio(bench, truth, cal, cam):
    """Calibrated LO amplitude of every spot over the truth's (at the recorded exposure)."""
    from hwio.sim.camera_physics import psf_matrix
    ct = truth.cameras[cam]
    pos = truth.realised["spot_positions_px"][cam]
    shape = bench.cameras[cam].shape
    psf = psf_matrix(pos, ct.psf_sigma_px, shape).tocsc()
    prnu = truth.realised["prnu_map"][cam].ravel()
    centres = cal.fits["registration"].arrays[f"centers_px.{cam}"]
    ro = cal.fits[f"readout.{cam}"]
    radius = ro.quantities["roi_radius_px"].value
    rr, cc = np.indices(shape)
    frac = np.empty(len(centres))
    for k, (r, c) in enumerate(centres):
        inside = (((rr - r) ** 2 + (cc - c) ** 2) <= radius ** 2).ravel()
        col = psf[:, k].toarray().ravel()
        frac[k] = np.sum(col[inside] * prnu[inside])
    t_exp = float(ro.info.get("exposure_s", bench.cameras[cam].exposure_s))
    adu = truth.optics.power_scale * truth.optics.tap[cam] * t_exp * ct.qe * ct.gain_adu_per_e
    laser = 1.0 + truth.drift.laser_power_per_hour * ro.info.get("t_s", 0.0) / 3600.0
    return ro.arrays["lo_amplitude"] / (np.sqrt(laser * adu * frac) * truth.realised["lo_amplitude"][cam])


def compare(bench_file, cal_path, isat: bool = True) -> dict:
    """Recovered vs true for every tolerance-table quantity: {'quantities': {...}, 'all_ok': bool, ...}."""
    from calibration.calset import CalibrationSet
    from calibration.procedures.context import camera_fit_name
    from hwio.response import InverseLUT, PhaseResponse
    from hwio.sim.testing import open_with, truth_of

    cal = CalibrationSet.load(cal_path)
    bench = open_with(bench_file, QUIET)
    t = truth_of(bench)
    rows = {}
    try:
        fits = cal.fits
        # -- cameras
        for cam in CAMS:
            name = camera_fit_name(cam)
            if name not in fits:
                continue
            ct, q = t.cameras[cam], fits[name].quantities
            if "gain_adu_per_e" in q:
                g = q["gain_adu_per_e"]
                rows[f"{name}.gain_adu_per_e"] = _row(g.value, g.stderr, ct.gain_adu_per_e, abs(
                    g.value / ct.gain_adu_per_e - 1) < 0.02 and _within(g, ct.gain_adu_per_e), "2 % and 3 se")
            if "read_noise_e" in q:
                r = q["read_noise_e"]
                rows[f"{name}.read_noise_e"] = _row(r.value, r.stderr, ct.read_noise_e, abs(
                    r.value / ct.read_noise_e - 1) < 0.05 and _within(r, ct.read_noise_e), "5 % and 3 se")
            if "dark_offset_adu" in q:
                d = q["dark_offset_adu"]
                rows[f"{name}.dark_offset_adu"] = _row(d.value, d.stderr, ct.dark_offset_adu,
                                                       abs(d.value - ct.dark_offset_adu) < 0.5, "0.5 adu")
        # -- registration
        reg = fits["registration"]
        for cam in CAMS:
            q = reg.quantities
            res = q[f"{cam}.residual_px"]
            rows[f"registration.{cam}.residual_px"] = _row(res.value, res.stderr, 0.0, res.value < 0.1, "< 0.1 px")
            for key in ("rotation_deg", "scale"):
                qq = q[f"{cam}.{key}"]
                true = getattr(t.registration[cam], key)
                rows[f"registration.{cam}.{key}"] = _row(qq.value, qq.stderr, true, _within(qq, true), "3 se")
            err = np.abs(reg.arrays[f"centers_px.{cam}"] - np.asarray(t.realised["spot_positions_px"][cam])).max()
            rows[f"registration.{cam}.centre_max_error_px"] = _row(err, None, 0.0, err < 0.1, "< 0.1 px")
        # -- SLM panels
        for panel, name in PANELS.items():
            if name not in fits:
                continue
            f = fits[name]
            table = np.asarray(t.realised["phase_table_rad"][panel])
            table = table - table[0]
            err = f.arrays["phase_response_rad"] - table
            rms = float(np.sqrt(np.mean(err ** 2)))
            rows[f"{name}.phase_response_rms_rad"] = _row(rms, None, 0.0, rms < 0.05 and np.abs(err).max() < 0.1,
                                                          "rms < 0.05 rad, max < 0.1 rad")
            q = f.quantities["phase_range_rad"]
            rows[f"{name}.phase_range_rad"] = _row(q.value, q.stderr, table[-1], _within(q, table[-1]), "3 se")
            g = f.quantities["gamma"]
            rows[f"{name}.gamma"] = _row(g.value, g.stderr, t.slms[panel].gamma,
                                         abs(g.value - t.slms[panel].gamma) < 0.02, "0.02")
            bits = bench.slms[panel].bit_depth
            lut = InverseLUT.from_grid(f.arrays["inverse_lut"], f.arrays["inverse_lut_phase_rad"], bits)
            worst = lut.max_phase_error_rad(PhaseResponse(np.asarray(t.realised["phase_table_rad"][panel])))
            rows[f"{name}.inverse_lut_max_error_rad"] = _row(worst, None, 0.0, worst < 0.05, "< 0.05 rad")
            if "phase_response_diffractive_rad" in f.arrays:
                rd = float(np.sqrt(np.mean((f.arrays["phase_response_diffractive_rad"] - table) ** 2)))
                lim = 0.15 if panel == "probe_input" else 0.05
                rows[f"{name}.diffractive_rms_rad"] = _row(rd, None, 0.0, rd < lim, f"< {lim} rad")
            if "crosstalk_px" in f.quantities:
                x = f.quantities["crosstalk_px"]
                true = t.slms[panel].crosstalk_px
                rel = 0.03 if panel == "probe_input" else 0.01
                rows[f"{name}.crosstalk_px"] = _row(x.value, x.stderr, true, abs(x.value - true) <= rel * true
                                                    and _within(x, true), f"{rel:.0%} and 3 se")
            if "illumination_waist" in f.quantities:
                w = f.quantities["illumination_waist"]
                true = t.slms[panel].illumination_waist
                rows[f"{name}.illumination_waist"] = _row(w.value, w.stderr, true, abs(w.value / true - 1) < 0.1
                                                          and _within(w, true), "10 % and 3 se")
            elif "illumination_map" in f.arrays:
                m = np.asarray(f.arrays["illumination_map"])
                ti = t.realised["illumination"][panel][:, :bench.layouts[panel].n_cols]
                dev = float(np.abs(m / m.max() - ti / ti.max()).max())
                rows[f"{name}.illumination_map_max_error"] = _row(dev, None, 0.0, dev < 0.05, "< 0.05")
        # -- readout at the recorded exposures
        for cam in CAMS:
            if f"readout.{cam}" in fits:
                ratio = _lo_ratio(bench, t, cal, cam)
                dev = float(np.abs(ratio - 1).max())
                rows[f"readout.{cam}.lo_amplitude_max_rel_error"] = _row(dev, None, 0.0, dev < 0.01, "< 1 %")
        # -- absorber
        if "absorber" in fits:
            ab = fits["absorber"]
            alpha_true = t.absorber.alpha0 + t.drift.alpha0_per_hour * ab.info["alpha0_at_s"] / 3600.0
            q = ab.quantities["alpha0"]
            rows["absorber.alpha0"] = _row(q.value, q.stderr, alpha_true, abs(q.value / alpha_true - 1) < 0.05
                                           and _within(q, alpha_true), "5 % and 3 se")
            ok = ab.info.get("parametric_model") == t.absorber.model and bool(
                ab.info.get("spot_averaged")) == bool(t.absorber.spot_averaging)
            rows["absorber.model"] = {"value": f"{ab.info.get('parametric_model')} (spot averaged: "
                                               f"{ab.info.get('spot_averaged')})",
                                      "true": f"{t.absorber.model} (spot averaged: {t.absorber.spot_averaging})",
                                      "tolerance": "same law", "ok": bool(ok)}
            if isat and "scale" in fits:
                rows["absorber.i_sat_relative"] = _isat_row(bench, t, cal)
        # -- matrix-vector multipliers
        for name in ("mvm1", "mvm2", "mvm2_backward"):
            if name in fits:
                q = fits[name].quantities
                s, ideal = q["systematic_nrmse"], q["ideal_systematic_nrmse"]
                rows[f"{name}.systematic_nrmse"] = _row(s.value, s.stderr, None, s.value < 0.1 and
                                                        s.value < 0.5 * ideal.value, "< 0.1 and < half the ideal's")
    finally:
        bench.close()
    from calibration.run import run_info
    info = run_info(cal)
    return {"bench": cal.bench_name, "cal": str(cal_path), "all_ok": all(r["ok"] for r in rows.values()),
            "failed": [k for k, r in rows.items() if not r["ok"]], "quantities": rows,
            "timings_s": info.get("timings_s"), "steps": info.get("steps"), "wall_s": info.get("wall_s")}


def _isat_row(bench, t, cal):
    """i_sat in the cell's units: the twin field from the calibrated homodyne against the truth's."""
    from calibration.procedures.absorber import full_pump_levels
    from calibration.procedures.steps import homodyne_of, repeated_powers, saturated
    from calibration.procedures.context import CalContext
    ctx = CalContext(bench, fits=dict(cal.fits))
    frame = full_pump_levels(ctx)
    ctx.blank_all()
    ctx.show("slm1", frame)
    ratios = []
    n_in = bench.sizes.n_in
    pixel = 1.0 / ctx.dmd.n_active
    fill = 0.7                    # the largest fill (halved) that cam_z1 reads unclipped at its exposure
    while fill / 2 >= pixel:
        ctx.show_inputs(np.full(n_in, fill))
        peaks = {}
        repeated_powers(ctx, ("cam_z1",), 2, peaks)
        if not saturated(ctx, peaks):
            break
        fill /= 2
    fills = [fill, fill / 2] if fill / 2 >= pixel else [fill]
    for fill in fills:
        ctx.show_inputs(np.full(n_in, fill))
        realised = float(ctx.dmd.fill_fractions(np.full((1, n_in), fill))[0, 0])
        h = homodyne_of(repeated_powers(ctx, ("cam_z1",), 24)["cam_z1"], ctx.lo_amplitude("cam_z1")).mean(0)
        z_twin = h * cal.quantity("scale.z1_per_h").value
        ratios.append(z_twin / (_true_z1(bench, t, frame, realised).real / math.sqrt(t.absorber.i_sat)))
    rel = float(np.exp(np.mean(np.log(ratios)))) ** -2
    i_se = cal.fits["absorber"].quantities["i_sat"].stderr / cal.fits["absorber"].quantities["i_sat"].value
    row = _row(rel, i_se, 1.0, abs(rel - 1) < 0.10, "i_sat(fit) / i_sat(true) within 10 %")
    row["fills"] = fills
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, help="bench name or TOML path (a simulated bench)")
    ap.add_argument("--cal", help="calibration file to compare (written by optwin calibrate)")
    ap.add_argument("--calibrate", metavar="OUT", help="calibrate the bench into OUT first (timed), then compare")
    ap.add_argument("--no-isat", action="store_true", help="skip the i_sat check (it drives the bench)")
    args = ap.parse_args(argv)
    if not args.cal and not args.calibrate:
        ap.error("give --cal FILE or --calibrate OUT")
    cal_path = args.cal
    extra = {}
    if args.calibrate:
        from optwin.cli import main as cli
        t0 = time.perf_counter()
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = cli(["calibrate", "--bench", args.bench, "--out", args.calibrate, "--json", "--no-progress",
                      "--force"])
        if rc != 0:
            print(buf.getvalue()[-2000:], file=sys.stderr)
            return rc
        extra["calibrate_wall_s"] = round(time.perf_counter() - t0, 2)
        cal_path = args.calibrate
    out = compare(args.bench, Path(cal_path), isat=not args.no_isat)
    out.update(extra)
    print(json.dumps(out, indent=1))
    return 0 if out["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
