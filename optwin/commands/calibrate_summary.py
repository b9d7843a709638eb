"""One-screen summary of a bench calibration, printed by ``optwin calibrate --bench``.

:func:`bench_summary_lines` turns a written calibration set into text lines: the warnings
first, then a table per kind of device (cameras, registration, readout, SLM panels,
absorber, MVMs).  The full list of quantities is in ``--json`` and in the report.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np


def _v(q, fmt: str = ".3g", se: bool = False) -> str:
    """A quantity's value (``-`` when missing or not finite), optionally with its standard error."""
    if q is None or not math.isfinite(q.value):
        return "-"
    text = format(q.value, fmt)
    if se and math.isfinite(q.stderr):
        text += f" +- {format(q.stderr, '.2g')}"
    return text


def _table(title: str, head: list[str], rows: list[list[str]]) -> list[str]:
    """A titled text table, columns right-aligned except the first."""
    if not rows:
        return []
    cells = [head] + rows
    width = [max(len(r[i]) for r in cells) for i in range(len(head))]
    fmt = lambda r: "  " + "  ".join(c.ljust(width[0]) if i == 0 else c.rjust(width[i]) for i, c in enumerate(r))
    return [title, fmt(head)] + [fmt(r) for r in rows]


def bench_summary_lines(cal, info: dict, wall_s: float, out, report=None) -> list[str]:
    """One screen about a bench calibration: warnings first, then a table per kind of device.

    The full list of quantities is in ``--json`` and in the report.

    Parameters
    ----------
    cal : the :class:`~calibration.calset.CalibrationSet` written.
    info : its run information (:func:`calibration.run.run_info`).
    wall_s : wall time of the run (s).
    out : the calibration file.
    report : the report folder, or None.

    Returns
    -------
    list of str : the lines to print.
    """
    fits = cal.fits
    lines = [f"calibrated bench {cal.bench_name} in {wall_s:.1f} s -> {out}"]
    if info.get("resumed"):
        lines.append(f"resumed: parts loaded from the interrupted run: "
                     f"{', '.join(info.get('parts_loaded_on_resume', []))}")
    lines += _warning_lines(fits, info)
    lines += _camera_lines(fits)
    exp = fits.get("exposure")
    if exp is not None and exp.quantities:
        lines.append("operating exposures: " + ", ".join(f"{c} {q.value * 1e3:.3g} ms"
                                                          for c, q in exp.quantities.items()))
    lines += _registration_lines(fits) + _readout_lines(fits) + _slm_lines(fits) + _absorber_lines(fits)
    lines += _mvm_lines(fits)
    timings = info.get("timings_s") or {}
    if timings:
        lines.append("time per part: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    lines.append("all quantities with errors: --json" + (f"; report: {Path(report) / 'report.html'}" if report
                                                          else "; figures and fit statistics: --report DIR"))
    return lines


def _warning_lines(fits: dict, info: dict) -> list[str]:
    """The run's and the fits' warnings (each once), wrapped."""
    warnings = list(info.get("warnings", []) or [])
    for name, fit in sorted(fits.items()):
        warnings += [w if w.startswith(name.split(".")[0]) else f"{name}: {w}"
                     for w in fit.info.get("warnings", []) or []]
    warnings = list(dict.fromkeys(warnings))
    lines = [f"warnings ({len(warnings)}):" if warnings else "warnings: none"]
    for w in warnings:
        lines += textwrap.wrap(w, width=108, initial_indent="  ! ", subsequent_indent="    ")
    return lines


def _camera_lines(fits: dict) -> list[str]:
    """EMVA 1288 table of the cameras (gain DN/e-, noise e-, dark DN and e-/s, saturation e-, PRNU %)."""
    cams = [(f.info.get("camera", n.split(".", 1)[-1] if "." in n else "cam_out"), f)
            for n, f in sorted(fits.items()) if n == "camera" or n.startswith("camera.")]
    return _table("cameras (EMVA 1288; saturation = saturation capacity, not the full well)",
                  ["camera", "gain DN/e-", "read noise e-", "dark DN", "dark e-/s", "saturation e-", "PRNU %",
                   "lin. err %", "hot/dead px"],
                  [[c, _v(q.get("gain_adu_per_e"), ".4g"), _v(q.get("read_noise_e")), _v(q.get("dark_offset_adu"),
                    ".4g"), _v(q.get("dark_current_e_per_s")), _v(q.get("saturation_e"), ".5g"),
                    _v(q.get("prnu_pct")), _v(q.get("linearity_error_pct"), ".2g"),
                    f"{f.info.get('n_hot', '-')}/{f.info.get('n_dead', '-')}"]
                   for c, f in cams for q in [f.quantities]])


def _registration_lines(fits: dict) -> list[str]:
    """Registration table: model, rotation (deg), scale, offset (px), rms residual (px), PSF sigma (px)."""
    reg = fits.get("registration")
    if reg is None:
        return []
    models = reg.info.get("models", {})
    rows = []
    for cam in models:
        q = reg.quantities
        red = reg.info.get(f"{cam}.redchi")
        rows.append([cam, models[cam], _v(q.get(f"{cam}.rotation_deg"), ".3f"), _v(q.get(f"{cam}.scale"), ".4f"),
                     f"{_v(q.get(f'{cam}.offset_row_px'), '.2f')}, {_v(q.get(f'{cam}.offset_col_px'), '.2f')}",
                     _v(q.get(f"{cam}.residual_px"), ".2g"), "-" if red is None or not math.isfinite(red)
                     else f"{red:.2f}", _v(q.get(f"{cam}.psf_sigma_px"), ".3f")])
    return _table("registration (layout -> camera)", ["camera", "model", "rotation deg", "scale",
                  "offset row, col px", "rms residual px", "chi2/dof", "PSF sigma px"], rows)


def _readout_lines(fits: dict) -> list[str]:
    """Readout table: LO amplitude per camera (sqrt ADU over the ROI), its spread (%), ROI and background."""
    rows = []
    for n, f in sorted(fits.items()):
        if n.startswith("readout."):
            lo = np.asarray(f.arrays.get("lo_amplitude", []), float)
            rows.append([n.split(".", 1)[1], f.model, str(lo.size), f"{lo.mean():.4g}" if lo.size else "-",
                         f"{100 * lo.std() / lo.mean():.1f}" if lo.size > 1 and lo.mean() else "-",
                         _v(f.quantities.get("roi_radius_px")), _v(f.quantities.get("background_adu_per_px")),
                         _v(f.quantities.get("residual_field_ratio"), ".2g")])
    return _table("readout (homodyne with the LO; amplitude in sqrt(ADU summed over the ROI))",
                  ["camera", "method", "spots", "LO amplitude", "spread %", "ROI radius px", "background ADU/px",
                   "residual |E|/|LO|"], rows)


def _slm_lines(fits: dict) -> list[str]:
    """Phase-panel table: law, phase range (rad), gamma, crosstalk (px), dithered encoder."""
    rows = []
    for n, f in sorted(fits.items()):
        if n == "slm" or n.startswith("slm."):
            q = f.quantities
            rows.append([f.info.get("panel", n), f.model, _v(q.get("phase_range_rad"), ".4f", se=True),
                         _v(q.get("gamma"), ".4f"), _v(q.get("crosstalk_px"), ".3f"),
                         "yes" if f.info.get("encoder_dither") else "no"])
    return _table("phase panels (SLM)", ["panel", "law", "phase range rad", "gamma", "crosstalk px", "dithered"],
                  rows)


def _absorber_lines(fits: dict) -> list[str]:
    """The absorber's law, alpha0, i_sat (homodyne units^2), drift (1/h) and the tap ratios."""
    ab = fits.get("absorber")
    if ab is None:
        return []
    q = ab.quantities
    law = ab.info.get("parametric_model", ab.model) + (" averaged over the spot" if ab.info.get("spot_averaged")
                                                       else "")
    lines = [f"absorber (saturable): law {law}" + (f"; the twin uses its {ab.model} curve"
                                                   if ab.model != ab.info.get("parametric_model", ab.model)
                                                   else "")]
    units = q["i_sat"].units if "i_sat" in q else ""
    lines.append(f"  alpha0 {_v(q.get('alpha0'), '.5g', True)}   i_sat {_v(q.get('i_sat'), '.5g', True)} {units}"
                 f"   drift {_v(q.get('alpha0_drift_per_hour'), '.2g', True)} 1/h")
    lines.append(f"  background transmission (camera tap ratio, not a loss): pump "
                 f"{_v(q.get('background_transmission'), '.3f')}, probe "
                 f"{_v(q.get('probe_background_transmission'), '.3f')}")
    return lines


def _mvm_lines(fits: dict) -> list[str]:
    """MVM table: nrmse of the held-out probes (total, systematic, shot-to-shot, noise floor, vs ideal)."""
    rows = []
    for n in ("mvm1", "mvm2", "mvm2_backward"):
        f = fits.get(n)
        if f is None:
            continue
        q = f.quantities
        floor = f.info.get("stats_vs_model", {}).get("noise_floor_nrmse")
        rows.append([n, _v(q.get("total_nrmse"), ".3g"), _v(q.get("systematic_nrmse"), ".3g"),
                     _v(q.get("shot_to_shot_nrmse"), ".3g"), "-" if floor is None else f"{floor:.3g}",
                     _v(q.get("ideal_systematic_nrmse"), ".3g"), _v(q.get("w_max"), ".4g")])
    return _table("matrix-vector multiplications (held-out probes, nrmse)",
                  ["MVM", "total", "systematic", "shot-to-shot", "noise floor", "vs ideal W x", "w_max"], rows)
