"""Dark maps at the operating exposure: the flat lamp flipped in dark blocks the laser.

:func:`remeasure_dark_maps` re-takes a camera's offset map once the exposure is chosen, with
as many frames as :func:`dark_frames_needed` asks for; :func:`show_lamp` drives the lamp for
this and for the camera procedure.
"""
from __future__ import annotations

import math

import numpy as np

from calibration.procedures.context import CalContext, camera_fit_name
from calibration.quantities import Fit

__all__ = ["show_lamp", "dark_frames_needed", "remeasure_dark_maps"]


def show_lamp(ctx: CalContext, level: int) -> None:
    """Show the flat lamp (``flat_source``) at ``level``; level 0 flips it in dark, blocking the laser."""
    src = ctx.bench.slms["flat_source"]
    ctx.show("flat_source", np.full(src.shape, int(level), dtype=src.level_dtype))


def dark_frames_needed(ctx: CalContext, cam: str, n_min: int = 16, n_max: int = 4096,
                       rel: float = 1e-3) -> int:
    """Dark frames for a map whose noise, summed over a spot's ROI, is ``rel`` of the LO power there.

    The map is subtracted from every frame, so its noise is a fixed offset of each ROI sum:
    it cancels in homodyne differences but not in the LO power the readout calibrates (a
    short exposure on a high-gain camera leaves few electrons of LO).  Temporal dark noise per
    pixel: the camera fit's read noise times its gain, plus the ADC's 1/12 ADU^2; the LO power
    per ROI: the readout fit's weakest spot scaled to the current exposure.  Without those
    fits: ``n_min``.

    Parameters
    ----------
    ctx : calibration context.
    cam : camera name.
    n_min, n_max : fewest and most frames.
    rel : dark-map noise per ROI sum relative to the weakest spot's LO power.

    Returns
    -------
    int : frames to average, in [n_min, n_max].
    """
    cf = ctx.fits.get(camera_fit_name(cam))
    ro = ctx.fits.get(f"readout.{cam}")
    if cf is None or ro is None or "lo_amplitude" not in ro.arrays or not ro.info.get("exposure_s"):
        return int(n_min)
    q = cf.quantities
    if "read_noise_e" not in q or "gain_adu_per_e" not in q:
        return int(n_min)
    sigma = math.sqrt((q["read_noise_e"].value * q["gain_adu_per_e"].value) ** 2 + 1.0 / 12.0)
    k = float(ctx.bench.cameras[cam].exposure_s) / float(ro.info["exposure_s"])
    p_lo = k * float(np.min(np.asarray(ro.arrays["lo_amplitude"], float) ** 2))
    n_px = float(np.max(ctx.readout(cam).n_pixels))
    if not (p_lo > 0 and math.isfinite(sigma)):
        return int(n_max)
    n = math.ceil(n_px * sigma ** 2 / (rel * p_lo) ** 2)
    return int(min(max(n, n_min), n_max))


def remeasure_dark_maps(ctx: CalContext, cams, n_frames: int = 16) -> tuple[list[Fit], list[str]]:
    """Dark maps at the cameras' current exposures, as new camera fits.

    With the flat lamp flipped in at level 0 (it blocks the laser) frames of every camera are
    averaged into the ``offset_map_adu`` of a copy of the camera's fit (``camera`` /
    ``camera.<cam>``; ``info['operating_exposure_s']``, ``info['offset_map_exposure_s']`` and
    ``info['offset_map_frames']`` updated): ``n_frames`` at least, more where the LO is weak
    (:func:`dark_frames_needed`).  The lamp is flipped out again by re-showing a laser-path
    panel.  Cameras whose map was already taken at the current exposure, or whose fit has no
    map, are left alone.  Without a lamp the laser cannot be blocked: the maps are
    kept (a laser-calibrated map is the offset intercept, independent of the exposure) and
    the second return value names them.

    Returns (new camera fits, notes).

    Parameters
    ----------
    ctx : calibration context with the camera fits.
    cams : camera names.
    n_frames : fewest dark frames per map.

    Returns
    -------
    (list of Fit, list of str) : the new camera fits and notes about maps that were kept.
    """
    bench = ctx.bench
    todo = []
    for c in cams:
        fit = ctx.fits.get(camera_fit_name(c))
        if fit is None or "offset_map_adu" not in fit.arrays:
            continue
        t_map = fit.info.get("offset_map_exposure_s", fit.info.get("operating_exposure_s"))
        t_now = float(bench.cameras[c].exposure_s)
        if t_map is not None and math.isclose(float(t_map), t_now, rel_tol=1e-6):
            continue
        todo.append(c)
    if not todo:
        return [], []
    if "flat_source" not in bench.slms:
        return [], [f"{c}: no flat lamp to block the laser; its offset map (exposure-independent) is kept"
                    for c in todo]
    # a laser-path panel shown after the lamp flips it out again (the LO stepper, else a weight panel)
    path_panel = next((n for n in ("lo", "slm1", "slm2", "probe_input") if n in bench.slms), None)
    out = []
    try:
        show_lamp(ctx, 0)
        for c in todo:
            fit = ctx.fits[camera_fit_name(c)]
            n = dark_frames_needed(ctx, c, n_min=int(n_frames))
            mean = np.zeros(bench.cameras[c].shape)
            t = float(bench.cameras[c].exposure_s)
            for _ in range(n):
                f = ctx.grab(c)
                mean += f
                ctx.record(f"exposure.dark.{c}", f, units="adu", exposure_s=t)
            new = Fit(name=fit.name, model=fit.model, quantities=dict(fit.quantities), arrays=dict(fit.arrays),
                      x=fit.x, y=fit.y, y_fit=fit.y_fit, info=dict(fit.info))
            new.arrays["offset_map_adu"] = mean / n
            new.info["operating_exposure_s"] = t
            new.info["offset_map_exposure_s"] = t
            new.info["offset_map_frames"] = n
            new.info["offset_map"] = (f"mean of {n} dark frames at the operating exposure "
                                      f"(re-measured when the exposure was chosen)")
            out.append(new)
    finally:
        if path_panel is not None:
            slm = bench.slms[path_panel]
            levels = slm.last_levels if slm.last_levels is not None else np.zeros(slm.shape, dtype=slm.level_dtype)
            ctx.show(path_panel, levels)
    return out, []
