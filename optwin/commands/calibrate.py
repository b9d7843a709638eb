"""``optwin calibrate``: calibrate a bench, or fit measurement files a lab already has.

Bench mode::

    optwin calibrate --bench CONFIG --out cal.h5 [--only camera,registration,slm,absorber,mvm]
                     [--report DIR] [--resume | --force] [--json]

runs :func:`calibration.run.calibrate_bench` (raw data in ``cal.h5.raw.h5``, resume state in
``cal.h5.state.json``/``.state.h5``); an existing calibration there is replaced only with
``--force`` (``--only`` adding parts the file lacks needs none), checked before the bench is
opened (:func:`_guard_bench_outputs`).  On a simulated bench the report's recovered-vs-true
table is filled from the simulator's truth (:func:`_sim_truth_for_report`): this is the
only place optwin reads a bench's truth outside tests, and only to display it.

File modes (formats in :mod:`calibration.lab_files`)::

    optwin calibrate camera --frames FILE.h5 [--bits N] [--camera CAM]   /points/<name>/{bright,dark}
    optwin calibrate slm --curve FILE.csv [--bits N] [--slm PANEL]       columns level, first_order_power
    optwin calibrate absorber --pump FILE.csv [--probe FILE.csv]
                                         columns input, output  /  pump, probe_transmission
    ... [--out cal.h5 [--replace]]

With ``--out`` the fit is stored in a calibration file (:func:`calibration.calset.write_fit`)
under the name a bench calibration gives it, so ``optwin push`` and the twin read a lab's
own measurement exactly like a bench-measured one: ``slm`` / ``slm.slm2`` /
``slm.probe_input`` for ``--slm slm1`` (default) / ``slm2`` / ``probe_input``; ``camera`` for
``--camera cam_out`` (default) and ``camera.<cam>`` for the others; ``absorber``.  A missing
file is created; an existing calibration file gets the fit added and keeps every other fit
(written to a temporary file beside it, then renamed over it).  A fit of the same name is
only replaced with ``--replace``; a file that is not a calibration file is never touched.
The fit's info records what the lab file carries and no bench does: ``source`` (each input
file's absolute path, sha256 and size), ``fit_date_utc``, the bit depth (``bit_depth``) and
the device (``panel`` / ``camera``).  An SLM fit also records ``encoder_dither = True`` (the
calibrated LUT is used with the dithered encoder, as after a bench calibration); it has no
``amplitude_transfer`` table, which needs the bench's block layout and crosstalk
(``optwin calibrate --bench ... --only slm`` measures those).

``--json`` prints one JSON object: every fitted quantity as ``{"value", "stderr", "units"}``
under its dotted name (``camera.gain_adu_per_e``, ``absorber.alpha0``, ...), every fit's
model as ``<fit>.model`` (``absorber.model``: the law the twin uses), and the phase
response of each panel as a list (``slm.phase_response_rad``, one phase per level).  File
modes add ``fit`` (the fit's name) and, with ``--out``, ``out_file``, ``created``, ``replaced``,
``fits_in_file`` and ``warnings`` (fits of the file measured with a replaced one).
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import numpy as np

from calibration.deploy import READOUT_CAMERAS, SLM_FIT_NAMES, camera_fit_name
from optwin.commands.calibrate_summary import bench_summary_lines
from optwin.errors import UsageError

MODES = ("camera", "slm", "absorber")
#: fits a bench calibration measures through (or derives from) another fit: replacing the
#: latter in a file leaves them describing the old one
_DEPENDENT_FITS = {"absorber": ("scale", "mvm1", "mvm2", "mvm2_backward"), "slm": ("mvm1",),
                   "slm.slm2": ("mvm2", "mvm2_backward"), "slm.probe_input": ("mvm2_backward",)}


def register(sub) -> None:
    """Add the ``calibrate`` command to the CLI's sub-parsers ``sub`` (argparse)."""
    p = sub.add_parser("calibrate", help="calibrate a bench, or fit camera/SLM/absorber measurement files",
                       description="Calibrate a bench (--bench CONFIG --out cal.h5) or fit a measurement file "
                                   "('camera --frames FILE.h5', 'slm --curve FILE.csv', "
                                   "'absorber --pump FILE.csv [--probe FILE.csv]').")
    p.add_argument("mode", nargs="?", choices=MODES, help="fit a measurement file instead of driving a bench")
    p.add_argument("--bench", help="bench config (TOML file or built-in name such as 'sim')")
    p.add_argument("--out", help="calibration file to write (HDF5); file modes: the calibration file to add the "
                                 "fit to (created when absent, other fits kept)")
    p.add_argument("--replace", action="store_true",
                   help="file modes with --out: replace a fit of the same name already in the file")
    p.add_argument("--only", help=f"comma-separated parts to run: {', '.join(('camera', 'registration', 'readout', 'slm', 'absorber', 'mvm'))}")
    p.add_argument("--report", metavar="DIR", help="write the report (PNGs + report.html) into DIR")
    p.add_argument("--resume", action="store_true", help="continue an interrupted calibration with the same --out")
    p.add_argument("--force", action="store_true",
                   help="bench mode: replace an existing calibration (--out, its raw data and resume state, "
                        "the --report folder); the old raw data stay until the new calibration file is complete")
    p.add_argument("--frames", help="camera mode: photon-transfer HDF5 file (/points/<name>/bright, /dark)")
    p.add_argument("--curve", help="slm mode: CSV with columns level, first_order_power")
    p.add_argument("--pump", help="absorber mode: CSV with columns input, output")
    p.add_argument("--probe", help="absorber mode: CSV with columns pump, probe_transmission")
    p.add_argument("--bits", type=int, help="camera/slm mode: bit depth (default: from the data)")
    p.add_argument("--slm", metavar="PANEL", help=f"slm mode: the panel the curve was measured on: "
                                                 f"{', '.join(SLM_FIT_NAMES)} (default slm1, fit 'slm')")
    p.add_argument("--camera", metavar="CAM", help=f"camera mode: the bench camera the frames come from: "
                                                  f"{', '.join(READOUT_CAMERAS)} (default cam_out, fit 'camera')")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------ JSON
def _clean(x):
    x = float(x)
    return x if math.isfinite(x) else None


def fits_json(fits) -> dict:
    """Flat JSON of fits: quantities, models, and each panel's phase response as a list.

    Parameters
    ----------
    fits : {name: Fit}.

    Returns
    -------
    dict : ``<fit>.<quantity>`` -> {value, stderr, units}, ``<fit>.model``, ... (non-finite numbers as null).
    """
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
    """Run ``optwin calibrate``: bench mode without a positional mode, else a file mode.

    Parameters
    ----------
    args : the parsed command line.

    Returns
    -------
    int : the exit code (0); bad combinations of flags raise :class:`optwin.errors.UsageError`.
    """
    if args.mode is None:
        for flag, mode in (("slm", "slm"), ("camera", "camera"), ("replace", "slm")):
            if getattr(args, flag):
                raise UsageError(f"--{flag} belongs to a file mode, e.g. 'optwin calibrate {mode} ... --out cal.h5'")
        return _run_bench(args)
    for flag in ("bench", "only", "report", "resume", "force"):
        if getattr(args, flag):
            hint = " (--replace replaces a fit of the same name in --out)" if flag == "force" else ""
            raise UsageError(f"--{flag} belongs to bench calibration; 'optwin calibrate {args.mode}' fits a file{hint}")
    for flag in ("slm", "camera"):
        if getattr(args, flag) is not None and args.mode != flag:
            raise UsageError(f"--{flag} belongs to 'optwin calibrate {flag}', not to '{args.mode}'")
    if args.replace and not args.out:
        raise UsageError("--replace needs --out cal.h5, the calibration file whose fit it replaces")
    fit_file = {"camera": _run_camera, "slm": _run_slm, "absorber": _run_absorber}[args.mode]
    if args.out and Path(args.out).parent.is_dir():
        from optwin.outputs import output_lock
        with output_lock(args.out):        # two fits merged into one file at once would lose one
            return fit_file(args)
    return fit_file(args)


def _need(args, flag, what):
    value = getattr(args, flag)
    if not value:
        raise UsageError(f"'optwin calibrate {args.mode}' needs --{flag} {what}")
    return value


def _provenance(path) -> dict:
    from calibration.lab_files import file_provenance
    try:
        return file_provenance(path)
    except ValueError as exc:
        raise UsageError(_one_line(exc)) from None


def _finish_lab_fit(args, fit, sources: dict, extra: dict, lines: list) -> int:
    """Record where the fit came from, write it into ``--out`` when given, print it."""
    import datetime as _dt
    fit.info["source"] = {k: _provenance(v) for k, v in sources.items() if v}
    fit.info["fit_date_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    extra["fit"] = fit.name
    if args.out:
        written = _write_out(args, fit)
        extra.update(out_file=str(args.out), created=written["created"], replaced=written["replaced"],
                     fits_in_file=written["fits"])
        others = [n for n in written["fits"] if n != fit.name]
        if written["created"]:
            how = "a new calibration file"
        else:
            how = (f"replaced its previous '{fit.name}'" if written["replaced"] else "added") + \
                  (f"; kept {len(others)} other fit(s): {', '.join(others)}" if others else "")
        lines.append(f"wrote fit '{fit.name}' to {args.out} ({how})")
        stale = [n for n in _DEPENDENT_FITS.get(fit.name, ()) if n in others] if written["replaced"] else []
        if stale:
            note = (f"{', '.join(stale)} in {args.out} were measured with the replaced '{fit.name}'; re-run "
                    f"'optwin calibrate --bench ... --only ...' if they must match it")
            lines.append(f"  warning: {note}")
            extra["warnings"] = [note]
    return _emit(args, [fit], extra, lines)


def _check_out(args, name: str) -> None:
    """Before fitting: refuse an ``--out`` that the fit ``name`` could not be written to."""
    from calibration.calset import check_fit_target
    if args.out:
        with _out_errors(args.out):
            check_fit_target(args.out, name, replace=args.replace)


def _write_out(args, fit) -> dict:
    """Store ``fit`` in ``--out`` (:func:`calibration.calset.write_fit`)."""
    from calibration.calset import write_fit
    with _out_errors(args.out):
        return write_fit(args.out, fit, replace=args.replace)


@contextlib.contextmanager
def _out_errors(out):
    """Problems with the ``--out`` file as one-line UsageErrors."""
    from calibration.calset import CalibrationFileError, FitExistsError
    try:
        yield
    except FitExistsError as exc:
        raise UsageError(f"{exc.path} already holds a fit '{exc.fit_name}'; add --replace to overwrite it "
                         f"(the other fits are kept), or give another --out file") from None
    except CalibrationFileError as exc:
        raise UsageError(_one_line(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {_one_line(exc)}") from None


def _emit(args, fits, extra=None, lines=()) -> int:
    if args.json:
        from optwin.outputs import print_json
        data = fits_json(fits)
        data.update(extra or {})
        print_json(data)
    else:
        _print_fits(fits, lines)
    return 0


def _run_camera(args) -> int:
    from calibration.camera_fit import fit_camera
    from calibration.lab_files import read_camera_h5
    path = _need(args, "frames", "FILE.h5 (photon-transfer frames)")
    cam = args.camera or "cam_out"
    if cam not in READOUT_CAMERAS:
        raise UsageError(f"--camera {cam}: not a bench camera; choose one of {', '.join(READOUT_CAMERAS)}")
    name = camera_fit_name(cam)
    _check_out(args, name)
    try:
        points = read_camera_h5(path)
        fit = fit_camera(points, bit_depth=args.bits)
    except ValueError as exc:
        raise UsageError(_one_line(exc)) from None
    fit.name = name
    fit.info.update(camera=cam, bit_depth=args.bits)
    return _finish_lab_fit(args, fit, {"frames": path}, {"file": str(path)},
                           [f"camera calibration of {cam} from {path} ({len(points)} points)"])


def _run_slm(args) -> int:
    from calibration.lab_files import read_slm_csv
    from calibration.slm_phase_fit import fit_diffractive_response
    path = _need(args, "curve", "FILE.csv (columns level, first_order_power)")
    panel = args.slm or "slm1"
    if panel not in SLM_FIT_NAMES:
        raise UsageError(f"--slm {panel}: not a phase panel; choose one of {', '.join(SLM_FIT_NAMES)}")
    _check_out(args, SLM_FIT_NAMES[panel])
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
    fit.name = SLM_FIT_NAMES[panel]
    # the dithered encoder, as a bench calibration records it for a calibrated LUT
    fit.info.update(panel=panel, bit_depth=bits, encoder_dither=True)
    return _finish_lab_fit(args, fit, {"curve": path}, {"file": str(path), "bits": bits},
                           [f"SLM response of {panel} from {path} ({len(levels)} points, {bits} bit)"])


def _run_absorber(args) -> int:
    from calibration.lab_files import read_absorber_probe_csv, read_absorber_pump_csv
    from calibration.absorber_spot_fit import analyse_absorber
    pump = _need(args, "pump", "FILE.csv (columns input, output)")
    _check_out(args, "absorber")
    try:
        p_in, p_out = read_absorber_pump_csv(pump)
        probe = read_absorber_probe_csv(args.probe) if args.probe else (None, None)
        fit = analyse_absorber(p_in, p_out, *probe)
    except ValueError as exc:
        raise UsageError(_one_line(exc)) from None
    fit.info["power_units"] = "the pump file's input column (i_sat is in these units)"
    return _finish_lab_fit(args, fit, {"pump": pump, "probe": args.probe},
                           {"file": str(pump), "probe_file": args.probe},
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
    from calibration.run import CalibrationRunError, parse_only
    try:
        parts = parse_only(args.only)
    except CalibrationRunError as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out)
    _guard_bench_outputs(args, parts)
    from optwin.outputs import output_lock
    with output_lock(out):
        return _calibrate_bench(args, out)


def _guard_bench_outputs(args, parts) -> None:
    """Before the bench is opened: refuse an ``--out`` (and the files beside it) or a
    ``--report`` folder that this calibration must not replace (:mod:`optwin.outputs`).

    A full calibration replaces an existing calibration file only with ``--force`` or
    ``--resume``; a partial one (``--only``) re-measures its parts into the file and keeps the
    others, so it needs ``--force`` only when the file holds fits of those parts already.  The
    resume state of an interrupted run is replaced only with ``--force`` (``--resume`` continues
    it); that of a finished one is nothing to lose.
    """
    from calibration.calset import CalibrationSet
    from calibration.run import PARTS, part_of, state_paths
    from optwin.outputs import (CALIBRATION, CALIBRATION_REPORT, CALIBRATION_STATE, RECORDING, OutputError,
                                calibration_state_complete, file_kind, guard_folder, guard_output)
    out = Path(args.out)
    paths = state_paths(out)
    allowed = bool(args.force or args.resume)
    partial = set(parts) != set(PARTS)
    adds_parts = False
    finished = calibration_state_complete(paths["state"])
    if partial and not allowed and file_kind(out) == CALIBRATION:
        with _out_errors(out):
            fits = CalibrationSet.load(out).fits
        again = [p for p in parts if any(part_of(name) == p for name in fits)]
        if again:
            interrupted = file_kind(paths["state"]) == CALIBRATION_STATE and not finished
            raise OutputError(f"--out {out} already holds the {', '.join(again)} calibration; add --force to "
                              f"measure it again (the file's other fits are kept)"
                              f"{', --resume to continue the interrupted run' if interrupted else ''}, or choose "
                              f"another --out")
        adds_parts = True
    siblings = [(paths["raw"], RECORDING, True if partial else allowed),     # a partial run records beside it
                (paths["state"], CALIBRATION_STATE, allowed or finished),
                (paths["fits"], CALIBRATION, allowed or finished)]
    if partial:
        siblings.append((out.with_name(f"{out.name}.raw.{'-'.join(parts)}.h5"), RECORDING, allowed))
    guard_output(out, CALIBRATION, force=args.force or adds_parts, resume=args.resume, flag="--out",
                 siblings=siblings, resumable=True)
    if args.report:
        guard_folder(args.report, CALIBRATION_REPORT, writes=("report.html", "*.png"),
                     markers=(("report.html", CALIBRATION_REPORT),), force=args.force or adds_parts,
                     resume=args.resume, flag="--report", resumable=True, create=False)


def _calibrate_bench(args, out: Path) -> int:
    """The bench calibration itself (``--out`` checked and locked)."""
    from calibration.calset import CalibrationFileError
    from calibration.run import CalibrationRunError, calibrate_bench, run_info
    from hwio.bench import open_bench
    from hwio.recording import RecordingError
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
                raw = run_info(cal).get("raw_file")
                write_report(cal, args.report, truth=_sim_truth_for_report(bench, cal),
                             raw_path=out.with_name(raw) if raw else None)
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
             "parts": info.get("parts"), "timings_s": info.get("timings_s"), "steps": info.get("steps", {}),
             "resumed": info.get("resumed", False), "warnings": info.get("warnings", [])}
    if args.json:
        return _emit(args, fits, extra)
    print("\n".join(bench_summary_lines(cal, info, wall, out, args.report)))
    return 0
