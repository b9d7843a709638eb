"""Calibrate a whole bench: run the procedures in order, record raw data, resume after a crash.

:func:`calibrate_bench` runs the parts ``camera -> registration -> readout -> slm ->
absorber -> mvm`` (``only`` picks some; the fits of earlier parts they need are loaded from
an existing output file) on an opened bench through a
:class:`~calibration.procedures.context.CalContext` and writes one
:class:`~calibration.calset.CalibrationSet`.

Operating exposures: the bench file's exposures are a starting point.  The slm part ends by
choosing every camera's operating exposure (:mod:`calibration.procedures.exposure`, fit
``exposure``; the brightest patterns need the calibrated encoders), which re-measures the dark
maps and LO amplitudes there; the absorber and MVM parts measure at it.  A context built from
earlier fits (``--resume``, ``--only``) sets the recorded exposures before it measures.

Files (``out = cal.h5``)
------------------------
``cal.h5``
    the CalibrationSet: every fit, the bench configuration (``bench.config``, never the
    truth of a simulated bench), ``raw/raw_file`` (the name of the raw recording) and
    ``raw/run_info`` (JSON: parts run, wall times, device retries, and per part ``steps``:
    frames, SLM frames shown, bench time (SLM settling + exposures + readouts: what a real
    bench spends, s) and compute time, s).
``cal.h5.raw.h5``
    :class:`hwio.recording.Recorder` file with the raw measurements as they were taken
    (spot powers per frame pair, camera frames of the camera calibration, ...), one stream
    per measurement (``absorber.cam_z1``, ``mvm1.cam_z1``, ...).  A partial run (``only``)
    next to an existing raw file records into ``cal.h5.raw.<parts>.h5`` instead, so the raw
    data of the parts it keeps stay; ``run_info['raw_files']`` lists every raw file the
    calibration's fits came from.
``cal.h5.state.json`` + ``cal.h5.state.h5``
    the resumable state: the parts completed so far (JSON, written atomically after each
    part) and their fits (a CalibrationSet, also atomic).

Resuming (``resume=True``, the CLI's ``--resume``) after an interruption, even ``kill -9``:
completed parts are loaded from the state, not measured again; the raw file is reopened
(:class:`~hwio.recording.Recorder` with ``resume=True`` drops uncommitted frames) and the
steps of the interrupted part that were committed are handed to its procedure
(``ctx.info['recorded']``): the absorber and MVM procedures skip those steps.

The truth of a simulated bench is never read here; the CLI (``optwin calibrate``) may pass
a recovered-vs-true table to the report for display (``report_truth``).
"""
from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import time
import uuid
from pathlib import Path

import numpy as np

from calibration.calset import CalibrationFileError, CalibrationSet
from calibration.deploy import DeployError
from calibration.fingerprint import bench_fingerprint, check_bench
from calibration.procedures.context import CalContext

__all__ = ["PARTS", "calibrate_bench", "parse_only", "part_of", "state_paths", "run_info", "CalibrationRunError"]

#: calibration parts in the order they run
PARTS = ("camera", "registration", "readout", "slm", "absorber", "mvm")
_PROCEDURE = {part: (f"calibration.procedures.{part}", f"measure_{part}") for part in PARTS}
#: steps that end a part: the slm part chooses the operating exposures (they need the calibrated
#: encoders, and the absorber and MVM parts measure at them)
_THEN = {"slm": (("calibration.procedures.exposure", "measure_exposure"),)}
#: parts whose fits a part needs (loaded from the output file when not run now)
REQUIRES = {"camera": (), "registration": (), "readout": ("registration",),
            "slm": ("registration", "readout"), "absorber": ("registration", "readout", "slm"),
            "mvm": ("registration", "readout", "slm", "absorber")}
#: parts whose raw streams support step-wise resume (their procedures use StepStore)
_STEP_RESUME = {"absorber": ("absorber.",), "mvm": ("mvm1.", "mvm2.", "mvm2_backward.")}
STATE_VERSION = 1


class CalibrationRunError(ValueError):
    """A calibration run cannot start or continue (one-line message says why and what to do)."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def part_of(fit_name: str) -> str | None:
    """The part that makes the fit ``fit_name`` ('scale' belongs to absorber and mvm: 'absorber').

    Parameters
    ----------
    fit_name : name of a fit in a calibration set.

    Returns
    -------
    str or None : one of :data:`PARTS`, or None for a fit no part makes.
    """
    if fit_name == "camera" or fit_name.startswith("camera."):
        return "camera"
    if fit_name == "registration":
        return "registration"
    if fit_name.startswith("readout."):
        return "readout"
    if fit_name == "slm" or fit_name.startswith("slm.") or fit_name == "exposure":
        return "slm"
    if fit_name in ("absorber", "scale"):
        return "absorber"
    if fit_name in ("mvm1", "mvm2", "mvm2_backward"):
        return "mvm"
    return None


def parse_only(only) -> tuple[str, ...]:
    """Parts to run from ``None`` (all), a comma-separated string or a sequence.

    'registration' also runs 'readout' (the spot ROIs and the LO amplitudes belong together).

    Parameters
    ----------
    only : None, ``"camera,slm"`` or a sequence of part names.

    Returns
    -------
    tuple of str : the parts, in the order they run.

    Raises
    ------
    CalibrationRunError : an unknown part, or none given.
    """
    if only is None:
        return PARTS
    items = [s.strip() for s in only.split(",")] if isinstance(only, str) else [str(s).strip() for s in only]
    items = [s for s in items if s]
    if not items:
        raise CalibrationRunError("--only names no part; give e.g. 'camera,registration,slm,absorber,mvm'")
    bad = [s for s in items if s not in PARTS]
    if bad:
        raise CalibrationRunError(f"unknown calibration part {bad[0]!r}; choose from {', '.join(PARTS)}")
    chosen = set(items)
    if "registration" in chosen:
        chosen.add("readout")
    return tuple(p for p in PARTS if p in chosen)


def state_paths(out_path) -> dict:
    """Where the files beside a calibration file live.

    Parameters
    ----------
    out_path : the calibration file.

    Returns
    -------
    dict : ``raw`` (raw recording), ``state`` (resume state, JSON) and ``fits`` (resume fits, HDF5) paths.
    """
    out = Path(out_path)
    return {"raw": out.with_name(out.name + ".raw.h5"), "state": out.with_name(out.name + ".state.json"),
            "fits": out.with_name(out.name + ".state.h5")}


def _write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` through a uniquely named temporary file (two writers
    never share one), then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _load_state(paths: dict, bench_name: str) -> tuple[dict, dict]:
    """(state dict, fits dict) of an interrupted run, or empty ones when there is none."""
    if not paths["state"].exists():
        return {}, {}
    try:
        state = json.loads(paths["state"].read_text())
    except (OSError, ValueError) as exc:
        raise CalibrationRunError(f"{paths['state']}: cannot read the resume state ({exc}); delete it and run "
                                  f"without --resume") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise CalibrationRunError(f"{paths['state']}: not a calibration state file of this optwin; delete it and "
                                  f"run without --resume")
    if state.get("bench") != bench_name:
        raise CalibrationRunError(f"{paths['state']}: the interrupted run calibrated bench {state.get('bench')!r}, "
                                  f"not {bench_name!r}; use another --out or run without --resume")
    fits = {}
    if state.get("parts_done"):
        try:
            fits = dict(CalibrationSet.load(paths["fits"]).fits)
        except CalibrationFileError as exc:
            raise CalibrationRunError(f"resume state is damaged ({exc}); run without --resume") from None
    return state, fits


def _recorded_streams(raw_path: Path, prefixes) -> dict:
    """Committed streams of a raw recording whose names start with one of ``prefixes``."""
    from hwio.recording import RecordingError, list_streams, read_stream
    if not prefixes or not raw_path.exists():
        return {}
    try:
        names = list_streams(raw_path)
    except RecordingError:
        return {}
    out = {}
    for name, n in names.items():
        if n > 0 and name.startswith(tuple(prefixes)):
            out[name] = read_stream(raw_path, name)
    return out


def _procedure(part: str):
    module, func = _PROCEDURE[part]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise CalibrationRunError(f"the {part} procedure ({module}) is not installed in this checkout") from None
        raise
    return getattr(mod, func)


def _run_part(part: str, ctx: CalContext, progress: bool) -> list:
    fn = _procedure(part)
    if part in ("absorber", "mvm"):
        return fn(ctx, progress=progress)
    out = list(fn(ctx))
    for module, func in _THEN.get(part, ()):
        ctx.add(*out)
        out += list(getattr(importlib.import_module(module), func)(ctx))
    return out


def _bar(parts, progress: bool):
    if not progress:
        return None
    from hwio.progress import progress as _progress
    return _progress(total=len(parts), desc="calibrate", unit="part")


def calibrate_bench(bench, out_path, only=None, resume: bool = False, report_dir=None, progress: bool = True,
                    report_truth: dict | None = None) -> CalibrationSet:
    """Calibrate ``bench`` and write the CalibrationSet to ``out_path``.

    Long only because of its docstring (one line per argument); the code is about 67 lines,
    one call per calibration step.

    Parameters
    ----------
    bench : an opened :class:`hwio.bench.Bench` (simulated or real).
    out_path : calibration file to write (HDF5).  Beside it: ``<out>.raw.h5`` (raw data),
        ``<out>.state.json`` / ``<out>.state.h5`` (resume state).
    only : parts to run (see :func:`parse_only`); the fits of parts they need and of parts
        not run are taken from an existing ``out_path`` (kept in the new file).
    resume : continue an interrupted run with the same ``out_path``: completed parts are
        loaded, recorded steps of the interrupted part are not measured again.
    report_dir : write the report (PNG per fit and ``report.html``) there.
    progress : show progress on stderr (:mod:`hwio.progress`: a bar on a terminal, log lines otherwise).
    report_truth : optional {'quantity': true value} shown in the report only (the CLI fills it
        for simulated benches; calibration never reads a bench's truth).

    Returns
    -------
    The :class:`CalibrationSet` written to ``out_path``.
    """
    out = Path(out_path)
    if not out.parent.exists():
        raise CalibrationRunError(f"{out}: the directory {out.parent} does not exist; create it or choose another --out")
    parts = parse_only(only)
    paths = state_paths(out)
    fingerprint = bench_fingerprint(bench)
    progress = bool(progress)
    t_start = time.perf_counter()

    # -- what is already known: an existing output file (for --only), an interrupted run
    existing, earlier_raw = _existing_fits(bench, out, parts)
    state, state_fits = _load_state(paths, bench.name) if resume else ({}, {})
    resume = bool(resume and state)          # nothing to resume: a fresh run
    if state and tuple(state.get("parts", ())) != parts:
        raise CalibrationRunError(f"the interrupted run calibrated parts {', '.join(state.get('parts', ()))}, this "
                                  f"one asks for {', '.join(parts)}; repeat the same --only or run without --resume")
    done = [p for p in state.get("parts_done", []) if p in parts]
    fits = {k: v for k, v in existing.items() if part_of(k) not in parts or k == "scale"}
    fits.update(state_fits)
    _check_requirements(parts, done, fits, out)
    if not state:
        state = _new_state(bench, parts, out, paths)
    raw_path, final_raw = _raw_paths(state, out)
    state["resumed_utc"] = _now() if resume and done else None

    settle_report = None
    if not bench.simulated:                 # real devices: do frames after an SLM update show it?
        from hwio.settle_check import SettleTimeError, check_settle
        try:
            settle_report = check_settle(bench)
        except SettleTimeError as exc:
            raise CalibrationRunError(str(exc)) from None

    # -- raw recorder: keep what an interrupted run committed
    prefixes = [p for part in parts if part not in done for p in _STEP_RESUME.get(part, ())]
    recorded = _recorded_streams(raw_path, prefixes) if resume else {}
    recorder = _open_recorder(raw_path, bench, resume)
    ctx = CalContext(bench, recorder=recorder, fits=fits)
    virtual = _virtual_clock(bench)
    ctx.info["settle_check"] = settle_report
    ctx.info["recorded"] = recorded
    _run_parts(ctx, parts, done, state, paths, fingerprint, progress, virtual)

    # -- the calibration file
    warnings = []
    if "absorber" in parts and "mvm" not in parts and any(k in ctx.fits for k in ("mvm1", "mvm2")):
        warnings.append("the MVM fits predate this absorber calibration (their twin units use the old scale); "
                        "re-run --only mvm")
    state["complete"] = True
    state["wall_s"] = round(time.perf_counter() - t_start, 3)
    state["warnings"] = warnings
    summary = {"parts": list(parts), "timings_s": state["timings_s"], "wall_s": state["wall_s"],
               "steps": state.get("steps", {}), "bench_clock": "virtual" if virtual else "real",
               "resumed": bool(resume and done), "parts_loaded_on_resume": done,
               "device_retries": ctx.info.get("retries", 0), "stale_frames": ctx.info.get("stale_frames", 0),
               "frames_grabbed": ctx.n_grabs, "warnings": warnings, "raw_file": final_raw.name,
               "raw_files": [r for r in earlier_raw if r != final_raw.name] + [final_raw.name]}
    cal = CalibrationSet(fits=dict(ctx.fits), bench_name=bench.name, bench_config=bench.config,
                         bench_fingerprint=fingerprint, raw={"raw_file": np.bytes_(final_raw.name.encode()),
                                                             "run_info": np.bytes_(json.dumps(summary).encode())})
    _save_with_raw(cal, out, raw_path, final_raw)
    state.pop("recording", None)
    _write_json_atomic(paths["state"], state)
    if report_dir is not None:
        from calibration.report import write_report
        write_report(cal, report_dir, truth=report_truth, raw_path=final_raw)
    return cal


def _existing_fits(bench, out: Path, parts: tuple) -> tuple[dict, list]:
    """Fits of an existing ``out`` that a partial run keeps, and the raw files they came from.

    Returns ({} , []) for a full run or when ``out`` does not exist; raises
    :class:`CalibrationRunError` when the file is unreadable or belongs to another bench.
    """
    if set(parts) == set(PARTS) or not out.exists():
        return {}, []
    try:
        old = CalibrationSet.load(out)
    except CalibrationFileError as exc:
        raise CalibrationRunError(f"cannot take the other parts from {out}: {exc}") from None
    try:
        check_bench(old, bench, source=str(out))
    except DeployError as exc:
        raise CalibrationRunError(f"cannot take the other parts from {out}: {exc}") from None
    earlier_raw = list(run_info(old).get("raw_files", []))
    if not earlier_raw and "raw_file" in old.raw:
        earlier_raw = [bytes(np.asarray(old.raw["raw_file"]).item()).decode(errors="replace")]
    return dict(old.fits), earlier_raw


def _check_requirements(parts: tuple, done: list, fits: dict, out: Path) -> None:
    """Every part still to run must have the fits it needs: run now or already known."""
    for part in parts:
        if part in done:
            continue
        missing = [r for r in REQUIRES[part] if r not in parts and not any(part_of(k) == r for k in fits)]
        if missing:
            raise CalibrationRunError(f"part '{part}' needs the {missing[0]} calibration, which is neither run now nor "
                                      f"in {out}; add {missing[0]} to --only (or run the full calibration)")


def _new_state(bench, parts: tuple, out: Path, paths: dict) -> dict:
    """The resume state of a fresh run, naming its raw file (and where to record while an older one stays)."""
    raw_path = paths["raw"]
    if set(parts) != set(PARTS) and raw_path.exists():
        # a partial run keeps the raw data the other parts came from: its own file
        raw_path = out.with_name(f"{out.name}.raw.{'-'.join(parts)}.h5")
    state = {"version": STATE_VERSION, "bench": bench.name, "parts": list(parts), "parts_done": [],
             "started_utc": _now(), "timings_s": {}, "out": str(out), "raw_file": raw_path.name}
    if raw_path.exists():
        # an earlier calibration's raw data stay until the new calibration file is complete:
        # record beside them, rename the recording over them at the end
        state["recording"] = f"{raw_path.stem}.new-{uuid.uuid4().hex[:8]}.h5"
    return state


def _raw_paths(state: dict, out: Path) -> tuple[Path, Path]:
    """(file to record into now, the raw file's final name) of a run's state."""
    final_raw = out.with_name(state["raw_file"])
    raw_path = out.with_name(state.get("recording") or state["raw_file"])
    if raw_path != final_raw and not raw_path.exists() and state.get("parts_done"):
        raw_path = final_raw         # renamed already: the run ended between that and its state update
    return raw_path, final_raw


def _open_recorder(raw_path: Path, bench, resume: bool):
    """The raw :class:`~hwio.recording.Recorder`; on resume it keeps what the interrupted run committed."""
    from hwio.recording import Recorder, RecordingError
    try:
        return Recorder(raw_path, resume=resume and raw_path.exists(), overwrite=True,
                        attrs={"bench": bench.name, "purpose": "optwin calibration raw data"})
    except (RecordingError, FileExistsError, OSError) as exc:
        raise CalibrationRunError(f"cannot open the raw recording {raw_path}: {exc}") from None


def _run_parts(ctx: CalContext, parts: tuple, done: list, state: dict, paths: dict, fingerprint, progress: bool,
               virtual: bool) -> None:
    """Run the parts not done yet in order, saving the resume state after each; closes the recorder."""
    bar = _bar(parts, progress)
    # the fits' matrices are small: BLAS threads only cost time (and a shared machine's cores)
    from threadpoolctl import threadpool_limits
    limits = threadpool_limits(limits=1, user_api="blas")
    try:
        _write_json_atomic(paths["state"], state)
        for part in parts:
            if part not in done:
                if bar is not None:
                    bar.set_description(f"calibrate {part}")
                _run_one_part(ctx, part, state, paths, fingerprint, progress, virtual)
            if bar is not None:
                bar.update(1)
    finally:
        limits.restore_original_limits()
        if bar is not None:
            bar.close()
        ctx.recorder.close()


def _run_one_part(ctx: CalContext, part: str, state: dict, paths: dict, fingerprint, progress: bool,
                  virtual: bool) -> None:
    """Run one part, add its fits to ``ctx`` and record its cost, fits and completion in the resume state."""
    bench = ctx.bench
    state["current"] = part
    state["current_started_utc"] = _now()
    _write_json_atomic(paths["state"], state)
    t0 = time.perf_counter()
    before = ctx.counters()
    new = _run_part(part, ctx, progress)
    ctx.add(*new)
    ctx.recorder.flush()
    state["timings_s"][part] = round(time.perf_counter() - t0, 3)
    state.setdefault("steps", {})[part] = _step_record(before, ctx.counters(), state["timings_s"][part], virtual)
    sub = _sub_steps(ctx, part, virtual)
    if sub:
        state["steps"][part]["sub_steps"] = sub
    state["parts_done"].append(part)
    state.setdefault("finished_utc_by_part", {})[part] = _now()
    state["current"] = None
    CalibrationSet(fits=dict(ctx.fits), bench_name=bench.name, bench_config=bench.config,
                   bench_fingerprint=fingerprint).save(paths["fits"])
    _write_json_atomic(paths["state"], state)


def _virtual_clock(bench) -> bool:
    """Whether the bench runs on a virtual clock (a simulated bench: waits cost no wall time).

    A real bench's timeline reads ``time.monotonic``; a virtual clock starts at 0 and moves only
    by the bench time, so it never reads the same."""
    return abs(float(bench.timeline.now()) - time.monotonic()) > 1.0


def _step_record(before: dict, after: dict, wall_s: float, virtual: bool) -> dict:
    """One part's cost: frames and SLM frames shown, the bench time a real bench spends (SLM
    settling before frames, exposures, camera readouts; s) and the compute time (s).

    On a virtual clock (simulated bench) the whole wall time is compute; on a real bench the
    compute time is the wall time less the bench time."""
    d = {k: after[k] - before[k] for k in after}
    bench_s = d["settle_s"] + d["exposure_s"] + d["readout_s"]
    compute_s = wall_s if virtual else max(wall_s - bench_s, 0.0)
    return {"frames": int(d["frames"]), "shows": int(d["shows"]), "bench_s": round(bench_s, 3),
            "settle_s": round(d["settle_s"], 3), "exposure_s": round(d["exposure_s"], 3),
            "readout_s": round(d["readout_s"], 3), "compute_s": round(compute_s, 3), "wall_s": round(wall_s, 3)}


def _sub_steps(ctx: CalContext, part: str, virtual: bool) -> dict:
    """The timed blocks of a part's procedures (``ctx.timed``: e.g. ``slm.slm1``, ``exposure``)
    as step records; taken out of the context once reported."""
    costs = ctx.info.get("costs", {})
    names = [n for n in costs if n == part or n.startswith(part + ".") or (part == "slm" and n == "exposure")]
    out = {}
    for n in names:
        if n == part:                    # the whole part: its record already says it
            costs.pop(n)
            ctx.info["timings_s"].pop(n, None)
            continue
        c = costs.pop(n)
        wall = float(ctx.info["timings_s"].pop(n, 0.0))
        out[n] = _step_record({k: 0 for k in c}, c, round(wall, 3), virtual)
    return out


def _save_with_raw(cal: CalibrationSet, out: Path, recording: Path, final_raw: Path) -> None:
    """Write the calibration file; a recording made beside an earlier calibration's raw data
    replaces them now, together with the file (which names ``final_raw``), never before.
    Recordings of earlier runs that were abandoned (killed, then started afresh) are removed."""
    if recording == final_raw:
        cal.save(out)
    else:
        staged = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.new")
        try:
            cal.save(staged)                 # the slow part first: the renames follow at once
            os.replace(recording, final_raw)
            os.replace(staged, out)
        finally:
            if staged.exists():
                staged.unlink()
    import glob
    for stale in out.parent.glob(f"{glob.escape(final_raw.stem)}.new-*.h5"):
        stale.unlink(missing_ok=True)


def run_info(cal: CalibrationSet) -> dict:
    """The ``run_info`` a :func:`calibrate_bench` file carries (empty dict when absent).

    Parameters
    ----------
    cal : a calibration set.

    Returns
    -------
    dict : parts, timings (s), steps, warnings, raw files, ... as :func:`calibrate_bench` wrote them.
    """
    raw = cal.raw.get("run_info")
    if raw is None:
        return {}
    try:
        return json.loads(bytes(np.asarray(raw).item() if np.ndim(raw) == 0 else raw).decode())
    except (ValueError, TypeError, AttributeError):
        return {}
