"""``optwin calibrate``: calibrate a bench, or fit measurement files a lab already has.

Bench mode::

    optwin calibrate --bench CONFIG --out cal.h5 [--only camera,registration,slm,absorber,mvm]
                     [--report DIR] [--resume] [--json]

runs :func:`calibration.run.calibrate_bench` (raw data in ``cal.h5.raw.h5``, resume state in
``cal.h5.state.json``/``.state.h5``).  On a simulated bench the report's recovered-vs-true
table is filled from the simulator's truth (:func:`_sim_truth_for_report`): this is the
only place optwin reads a bench's truth outside tests, and only to display it.

File modes (formats in :mod:`calibration.lab_files`)::

    optwin calibrate camera --frames FILE.h5 [--bits N]       /points/<name>/{bright,dark}
    optwin calibrate slm --curve FILE.csv [--bits N]          columns level, first_order_power
    optwin calibrate absorber --pump FILE.csv [--probe FILE.csv]
                                         columns input, output  /  pump, probe_transmission

``--json`` prints one JSON object: every fitted quantity as ``{"value", "stderr", "units"}``
under its dotted name (``camera.gain_adu_per_e``, ``absorber.alpha0``, ...), every fit's
model as ``<fit>.model`` (``absorber.model``: the law the twin uses), and the phase
response of each panel as a list (``slm.phase_response_rad``, one phase per level).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from optwin.errors import UsageError

MODES = ("camera", "slm", "absorber")


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="calibrate a bench, or fit camera/SLM/absorber measurement files",
                       description="Calibrate a bench (--bench CONFIG --out cal.h5) or fit a measurement file "
                                   "('camera --frames FILE.h5', 'slm --curve FILE.csv', "
                                   "'absorber --pump FILE.csv [--probe FILE.csv]').")
    p.add_argument("mode", nargs="?", choices=MODES, help="fit a measurement file instead of driving a bench")
    p.add_argument("--bench", help="bench config (TOML file or built-in name such as 'sim')")
    p.add_argument("--out", help="calibration file to write (HDF5)")
    p.add_argument("--only", help=f"comma-separated parts to run: {', '.join(('camera', 'registration', 'readout', 'slm', 'absorber', 'mvm'))}")
    p.add_argument("--report", metavar="DIR", help="write the report (PNGs + report.html) into DIR")
    p.add_argument("--resume", action="store_true", help="continue an interrupted calibration with the same --out")
    p.add_argument("--frames", help="camera mode: photon-transfer HDF5 file (/points/<name>/bright, /dark)")
    p.add_argument("--curve", help="slm mode: CSV with columns level, first_order_power")
    p.add_argument("--pump", help="absorber mode: CSV with columns input, output")
    p.add_argument("--probe", help="absorber mode: CSV with columns pump, probe_transmission")
    p.add_argument("--bits", type=int, help="camera/slm mode: bit depth (default: from the data)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------ JSON
def _clean(x):
    x = float(x)
    return x if math.isfinite(x) else None


def fits_json(fits) -> dict:
    """Flat JSON of fits: quantities, models, and each panel's phase response as a list."""
    out = {}
    for fit in fits:
        out.update(fit.flat())
        out[f"{fit.name}.model"] = fit.model
        if "phase_response_rad" in fit.arrays:
            out[f"{fit.name}.phase_response_rad"] = [_clean(v) for v in np.asarray(fit.arrays["phase_response_rad"])]
        if fit.name == "absorber":
            out["absorber.parametric_model"] = fit.info.get("parametric_model", fit.model)
            out["absorber.spot_averaged"] = bool(fit.info.get("spot_averaged", False))
            mm = fit.info.get("mismatch")
            if isinstance(mm, dict):
                out["absorber.mismatch_max"] = _clean(mm.get("max_abs", float("nan")))
                out["absorber.mismatch_rms"] = _clean(mm.get("rms", float("nan")))
    return out


def _print_fits(fits, extra_lines=()) -> None:
    lines = list(extra_lines)
    for fit in fits:
        lines.append(f"{fit.name}  (model {fit.model})")
        for k, q in fit.quantities.items():
            se = "" if not math.isfinite(q.stderr) else f" +- {q.stderr:.4g}"
            lines.append(f"  {k:<32} {q.value:.6g}{se} {q.units}".rstrip())
        for w in fit.info.get("warnings", []) or []:
            lines.append(f"  warning: {w}")
    print("\n".join(lines))


# ------------------------------------------------------------------------------------ truth (display only)
def _sim_truth_for_report(bench, cal=None) -> dict | None:
    """Recovered-vs-true table of a simulated bench, for the report only.

    The one place outside tests where the simulator's truth is read (through
    :func:`hwio.sim.testing.truth_of`); the values are shown beside the recovered ones and
    never feed a fit.  The cell's optical depth drifts: with ``cal`` its true value is taken at
    the time of the absorber sweep.  Returns None for a real bench.
    """
    if not getattr(bench, "simulated", False):
        return None
    from hwio.sim.testing import truth_of
    try:
        t = truth_of(bench)
    except TypeError:
        return None
    out = {}
    for cam, ct in t.cameras.items():
        name = "camera" if cam == "cam_out" else f"camera.{cam}"
        out[f"{name}.gain_adu_per_e"] = ct.gain_adu_per_e
        out[f"{name}.read_noise_e"] = ct.read_noise_e
        out[f"{name}.dark_offset_adu"] = ct.dark_offset_adu
        out[f"{name}.saturation_e"] = min(ct.full_well_e, (2 ** ct.bits - 1 - ct.dark_offset_adu) / ct.gain_adu_per_e)
        out[f"{name}.quantum_efficiency"] = ct.qe
        out[f"{name}.dark_current_e_per_s"] = ct.dark_current_e_per_s
        out[f"{name}.prnu_pct"] = 100.0 * ct.prnu
    for cam, rt in t.registration.items():
        out[f"registration.{cam}.rotation_deg"] = rt.rotation_deg
        out[f"registration.{cam}.scale"] = rt.scale
    ref = t.registration.get("cam_z1")
    if ref is not None:
        out["registration.rotation_deg"] = ref.rotation_deg
        out["registration.scale"] = ref.scale
    for panel, name in (("slm1", "slm"), ("slm2", "slm.slm2"), ("probe_input", "slm.probe_input")):
        st = t.slms.get(panel)
        if st is None:
            continue
        if st.phase_table_rad is None:
            out[f"{name}.phase_range_rad"] = st.phase_range_rad
            out[f"{name}.gamma"] = st.gamma
        out[f"{name}.crosstalk_px"] = st.crosstalk_px
        if math.isfinite(st.illumination_waist):
            out[f"{name}.illumination_waist"] = st.illumination_waist
    if t.absorber.model != "tabulated":
        at_s = 0.0
        if cal is not None and "absorber" in cal.fits:
            at_s = float(cal.fits["absorber"].info.get("alpha0_at_s", 0.0) or 0.0)
        out["absorber.alpha0"] = max(0.0, t.absorber.alpha0 + t.drift.alpha0_per_hour * at_s / 3600.0)
    return out


# ------------------------------------------------------------------------------------ modes
def run(args) -> int:
    if args.mode is None:
        return _run_bench(args)
    for flag in ("bench", "out", "only", "report", "resume"):
        if getattr(args, flag):
            raise UsageError(f"--{flag} belongs to bench calibration; 'optwin calibrate {args.mode}' fits a file")
    return {"camera": _run_camera, "slm": _run_slm, "absorber": _run_absorber}[args.mode](args)


def _need(args, flag, what):
    value = getattr(args, flag)
    if not value:
        raise UsageError(f"'optwin calibrate {args.mode}' needs --{flag} {what}")
    return value


def _emit(args, fits, extra=None, lines=()) -> int:
    if args.json:
        data = fits_json(fits)
        data.update(extra or {})
        print(json.dumps(data))
    else:
        _print_fits(fits, lines)
    return 0


def _run_camera(args) -> int:
    from calibration.camera_fit import fit_camera
    from calibration.lab_files import read_camera_h5
    path = _need(args, "frames", "FILE.h5 (photon-transfer frames)")
    try:
        points = read_camera_h5(path)
        fit = fit_camera(points, bit_depth=args.bits)
    except ValueError as exc:
        raise UsageError(_one_line(exc)) from None
    return _emit(args, [fit], {"file": str(path)}, [f"camera calibration from {path} ({len(points)} points)"])


def _run_slm(args) -> int:
    from calibration.lab_files import read_slm_csv
    from calibration.slm_fit import fit_diffractive_response
    path = _need(args, "curve", "FILE.csv (columns level, first_order_power)")
    try:
        levels, power = read_slm_csv(path)
        bits = args.bits
        if bits is None:
            bits = max(1, int(math.ceil(math.log2(int(levels.max()) + 1)))) if levels.size else 8
        elif not 1 <= bits <= 16:
            raise ValueError(f"--bits must be 1..16, got {bits}")
        if levels.size and levels.max() > 2 ** bits - 1:
            raise ValueError(f"{path}: level {int(levels.max())} does not fit {bits} bit; give the panel's --bits")
        fit = fit_diffractive_response(levels, power, bits=bits)
    except ValueError as exc:
        raise UsageError(_one_line(exc)) from None
    return _emit(args, [fit], {"file": str(path), "bits": bits},
                 [f"SLM response from {path} ({len(levels)} points, {bits} bit)"])


def _run_absorber(args) -> int:
    from calibration.lab_files import read_absorber_probe_csv, read_absorber_pump_csv
    from calibration.procedures.absorber import analyse_absorber
    pump = _need(args, "pump", "FILE.csv (columns input, output)")
    try:
        p_in, p_out = read_absorber_pump_csv(pump)
        probe = read_absorber_probe_csv(args.probe) if args.probe else (None, None)
        fit = analyse_absorber(p_in, p_out, *probe)
    except ValueError as exc:
        raise UsageError(_one_line(exc)) from None
    return _emit(args, [fit], {"file": str(pump), "probe_file": args.probe},
                 [f"absorber from {pump}" + (f" and {args.probe}" if args.probe else "")])


def _one_line(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _run_bench(args) -> int:
    if not args.bench or not args.out:
        raise UsageError("give --bench CONFIG and --out cal.h5 (or a file mode: camera, slm, absorber)")
    for flag in ("frames", "curve", "pump", "probe", "bits"):
        if getattr(args, flag) is not None:
            raise UsageError(f"--{flag} belongs to a file mode, e.g. 'optwin calibrate "
                             f"{ {'frames': 'camera', 'curve': 'slm', 'bits': 'slm'}.get(flag, 'absorber')} ...'")
    from calibration.calset import CalibrationFileError
    from calibration.run import CalibrationRunError, calibrate_bench, parse_only, run_info
    from hwio.bench import open_bench
    from hwio.recording import RecordingError
    try:
        parse_only(args.only)
    except CalibrationRunError as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out)
    try:
        bench = open_bench(args.bench)
    except (ValueError, ImportError) as exc:
        raise UsageError(_one_line(exc)) from None
    t0 = time.perf_counter()
    try:
        with bench:
            cal = calibrate_bench(bench, out, only=args.only, resume=args.resume, progress=not args.no_progress)
            if args.report:
                from calibration.report import write_report
                write_report(cal, args.report, truth=_sim_truth_for_report(bench, cal))
    except (CalibrationRunError, CalibrationFileError, RecordingError) as exc:
        raise UsageError(_one_line(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write the calibration files: {_one_line(exc)}") from None
    except ValueError as exc:
        # a procedure could not make sense of the bench (no light, spots missing, ...)
        raise UsageError(f"calibration failed: {_one_line(exc)}") from None
    wall = time.perf_counter() - t0
    info = run_info(cal)
    fits = [cal.fits[k] for k in cal.fits]
    extra = {"out_file": str(out), "report_dir": args.report, "bench": cal.bench_name, "wall_s": round(wall, 3),
             "parts": info.get("parts"), "timings_s": info.get("timings_s"),
             "resumed": info.get("resumed", False), "warnings": info.get("warnings", [])}
    lines = [f"calibrated bench {cal.bench_name} in {wall:.1f} s -> {out}"
             + (f" (report: {Path(args.report) / 'report.html'})" if args.report else "")]
    if info.get("resumed"):
        lines.append(f"resumed: parts loaded from the interrupted run: {', '.join(info.get('parts_loaded_on_resume', []))}")
    return _emit(args, fits, extra, lines)
