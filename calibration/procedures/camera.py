"""Camera calibration through the bench: flat lamp + exposure series -> EMVA 1288 fits.

The bench's ``flat_source`` is a flip-in lamp: showing level L > 0 puts a uniform light of
flux proportional to L in front of every camera (and blocks the laser), level 0 gives dark
frames, and showing a frame on any laser-path panel flips the lamp out again.

Procedure (all cameras at once, each at its own exposures):

1. range finding: a few frames at the operating exposure with a probe lamp level give each
   camera's response (ADU per level-second) and dark level;
2. one lamp level is chosen so that the least sensitive camera reaches its ADC range at
   about twice its operating exposure; each camera then gets ``n_points`` exposures whose
   expected signal runs from 2 % to 60 % of its ADC range (three quarters of the points:
   the linear range that gives the gain) and on to 130 % (past saturation, so the variance
   maximum of the photon-transfer curve is seen);
3. at every exposure ``n_frames`` bright and ``n_frames`` dark frames (lamp level 0);
4. a flat field of ``n_flat`` frames near 45 % of the range (and a quarter as many dark
   frames) gives a low-noise PRNU map (``prnu_map``, used to flat-field spot images);
5. ``n_dark_map`` dark frames at the operating exposure give the offset map used by the
   readout (``offset_map_adu`` of every camera fit is that mean dark frame at the operating
   exposure, the exposure the readout runs at);
6. :func:`calibration.camera_fit.fit_camera` per camera -> ``Fit('camera')`` for the
   reference camera (``cam_out``) and ``Fit('camera.<cam>')`` for the others (full EMVA
   fits too; their ``offset_map_adu`` is what the readout needs).

Operating exposures are restored and the lamp is flipped out at the end.

Without a flat lamp (no ``flat_source``: :func:`measure_camera_laser`)
---------------------------------------------------------------------
The laser itself lights the cameras through the bench: input DMD on, every phase panel
uniform at level 0 (every element at full amplitude) and the LO at phase 0, so each
camera sees its spots (signal plus LO), their PSF wings and the background light.  The
illumination is far from uniform, so the photon transfer uses per-pixel temporal
statistics instead of the EMVA spatial means (steps 2-4:
:mod:`calibration.camera_pixel_fit`):

1. per camera, the input fill fraction (halved in steps of 4 down to the signal blocked,
   LO and stray light only) and an exposure that keep the brightest pixel below the ADC
   top; then an exposure series from the shortest useful exposure to 60 % of the one that
   takes the brightest pixel to the ADC top (three quarters of the points, geometric) and
   on to 130 % (the rest: saturation), ``n_frames`` frames per point;
2. per pixel a straight line ``mean(t) = offset + rate t`` over the points below half the
   ADC range; the intercept is the pixel's offset (``offset_map_adu``), its median the
   ``dark_offset_adu``;
3. photon transfer on every (pixel, exposure) pair of temporal variance and signal
   ``s = mean - offset``: ``var = K s + var_0 + J^2 s^2`` (weighted least squares over the
   unclipped pairs from 2 % to 60 % of the saturation signal, where the signal's own noise
   does not flatten the slope).  The slope K is the gain whatever each pixel's light;
   ``var_0``, the mean of ``var - K s - J^2 s^2`` over the pairs below 0.5 % of saturation
   (dark pixels), gives the read noise ``sqrt(var_0 - 1/12) / K``; the
   quadratic term takes the laser-power jitter J, common to all pixels of a frame (the EMVA
   removes it by subtracting each frame's mean, which a non-uniform scene does not allow);
4. saturation: the variance maximum of the pairs sorted by signal (chunks of 30, smoothed).

What this cannot give, and what is used instead: no dark frames (the laser cannot be
blocked without a lamp or shutter), so no dark current, no hot-pixel map and an offset map
without the (tiny) dark signal at the operating exposure; no PRNU map over the sensor (a
pixel's response and its illumination are degenerate under a fixed light pattern).  No
``prnu_map`` in the fit means :meth:`CalContext.flat_map` gives None and spot images are
not flat-fielded; each spot's pixel response (its ROI's mean PRNU) is absorbed where the
readout is calibrated per spot: the per-spot LO amplitude (readout part) and the per-element
gains of the MVM fits, so the twin sees it as part of those.

An LO that is a region of a phase panel (no LO stepper) also gets its phase steps measured
here, first thing after the camera fits (:func:`calibration.lo_region.measure_lo_phase`,
fit ``camera.lo_phase``), because registration, readout and slm all step the LO.
"""
from __future__ import annotations

import numpy as np

from calibration.camera_fit import CameraPoint, fit_camera
from calibration.camera_pixel_fit import fit_ptc_per_pixel, ptc_pairs
from calibration.procedures.context import PHASE_SLMS, CalContext, camera_fit_name
from calibration.procedures.dark_maps import show_lamp
from calibration.procedures.exposure import exposure_limits
from calibration.quantities import Fit

__all__ = ["measure_camera", "measure_camera_laser"]


def _lamp_out(ctx: CalContext) -> None:
    """Flip the lamp out: re-show what the LO panel shows (a laser-path panel)."""
    lo = ctx.bench.slms["lo"]
    levels = lo.last_levels if lo.last_levels is not None else np.zeros(lo.shape, dtype=lo.level_dtype)
    ctx.show("lo", levels)


def measure_camera(ctx: CalContext, cameras=None, *, n_points: int = 32, n_frames: int = 4,
                   n_dark_map: int = 16, n_flat: int = 48, hot_sigma: float = 6.0,
                   dead_sigma: float = 6.0) -> list[Fit]:
    """EMVA 1288 calibration of the bench cameras with the flat lamp.

    Parameters
    ----------
    ctx : calibration context of the bench.
    cameras : camera names (default: all of the bench's cameras).
    n_points : exposures in the photon-transfer series (>= 6).
    n_frames : bright and dark frames per exposure (>= 2).
    n_dark_map : dark frames at the operating exposure for the offset map (>= 2).
    n_flat : frames of the flat field near 45 % of the range (PRNU map; 0 uses the series
        point nearest 50 % of saturation instead).
    hot_sigma, dead_sigma : defect thresholds passed to ``fit_camera``.

    Returns
    -------
    list of Fit: 'camera' (reference camera) and 'camera.<cam>' for the others, each from
    :func:`calibration.camera_fit.fit_camera` (``gain_adu_per_e`` DN/e-, ``read_noise_e`` e-,
    ``dark_offset_adu`` DN, ``saturation_e`` e-, ``prnu_pct`` %, ... with standard errors)
    with ``offset_map_adu`` (DN) replaced by the mean dark frame at the camera's operating
    exposure and ``info`` extended with the lamp level, the exposures (s) and the operating
    exposure (``operating_exposure_s``); then ``camera.lo_phase`` where the LO is a panel region.
    """
    bench = ctx.bench
    cams = list(bench.cameras) if cameras is None else list(cameras)
    for c in cams:
        if c not in bench.cameras:
            raise ValueError(f"no camera {c!r} on bench {bench.name!r} (cameras: {', '.join(bench.cameras)})")
    if int(n_points) < 6 or int(n_frames) < 2 or int(n_dark_map) < 2:
        raise ValueError(f"camera calibration needs n_points >= 6, n_frames >= 2 and n_dark_map >= 2, "
                         f"got {n_points}, {n_frames}, {n_dark_map}")
    if "flat_source" not in bench.slms:
        fits = measure_camera_laser(ctx, cams)
        return fits + _lo_phase(ctx)
    op_exposure = {c: bench.cameras[c].exposure_s for c in cams}
    fits: list[Fit] = []
    try:
        with ctx.timed("camera"):
            dark0, rate = _lamp_response(ctx, cams, op_exposure)                         # 1.
            span, lamp_level, exposures = _lamp_plan(ctx, cams, dark0, rate, op_exposure, n_points)   # 2.
            bright, dark, used_t = _lamp_series(ctx, cams, exposures, lamp_level, n_points, n_frames)   # 3.
            flat_b, flat_d = _lamp_flat(ctx, cams, span, rate, lamp_level, n_flat)        # 4.
            offset_map = _offset_maps(ctx, cams, op_exposure, n_dark_map)                 # 5.
            for c in cams:                                                                # 6.
                points = [CameraPoint(bright[c][k], dark[c][k], used_t[c][k], name=f"t={used_t[c][k]:.6g}s")
                          for k in range(int(n_points))]
                fit = fit_camera(points, bit_depth=bench.cameras[c].bit_depth, hot_sigma=hot_sigma,
                                 dead_sigma=dead_sigma, flat=(flat_b[c], flat_d[c]) if c in flat_b else None)
                fit.name = camera_fit_name(c)
                fit.arrays["offset_map_adu"] = offset_map[c]
                fit.info.update(camera=c, lamp_level=lamp_level, exposures_s=[float(t) for t in used_t[c]],
                                operating_exposure_s=op_exposure[c], frames_per_point=int(n_frames),
                                dark_map_frames=int(n_dark_map),
                                offset_map="mean dark frame at the operating exposure")
                fits.append(fit)
    finally:
        _restore_exposures(bench, cams, op_exposure)
        try:
            _lamp_out(ctx)
        except Exception:       # noqa: BLE001
            pass
    ctx.add(*fits)
    return fits + _lo_phase(ctx)


def _restore_exposures(bench, cams, op_exposure: dict) -> None:
    """Put every camera back at its operating exposure (best effort: the original error matters)."""
    for c in cams:
        try:
            bench.cameras[c].exposure_s = op_exposure[c]
        except Exception:   # noqa: BLE001 - restoring is best effort; the original error matters
            pass


def _lamp_response(ctx: CalContext, cams, op_exposure: dict) -> tuple[dict, dict]:
    """Range finding at the operating exposures: a probe lamp level (x8 or /8 steps) that every
    camera sees above 2 % of its range without any saturating.

    Returns (dark mean frames at level 0 (DN), response rate per camera (ADU per level-second)).
    """
    bench = ctx.bench
    src = bench.slms["flat_source"]
    show_lamp(ctx, 0)
    dark0 = {c: ctx.grab_mean(c, 2) for c in cams}
    level = max(1, src.max_level // 64)
    rate = {}
    for _ in range(12):
        show_lamp(ctx, level)
        means = {c: ctx.grab_mean(c, 2) for c in cams}
        sig = {c: float(np.median(means[c] - dark0[c])) for c in cams}
        full = {c: bench.cameras[c].max_adu - float(np.median(dark0[c])) for c in cams}
        if any(means[c].mean() > 0.9 * bench.cameras[c].max_adu for c in cams) and level > 1:
            level = max(1, level // 8)
            continue
        if min(sig[c] / full[c] for c in cams) < 0.02 and level < src.max_level:
            level = min(src.max_level, level * 8)
            continue
        break
    for c in cams:
        if sig[c] <= 0:
            raise ValueError(f"{c}: the flat lamp gives no signal (check flat_source and the camera)")
        rate[c] = sig[c] / (level * op_exposure[c])              # ADU per level-second
    return dark0, rate


def _lamp_plan(ctx: CalContext, cams, dark0: dict, rate: dict, op_exposure: dict,
               n_points: int) -> tuple[dict, int, dict]:
    """One lamp level that takes the least sensitive camera to its ADC range at about twice its
    operating exposure, and per camera the exposures (s) from 2 % to 60 % of its range (three
    quarters of the points) and on to 130 %.

    Returns (ADC span above dark per camera (DN), lamp level, exposures per camera (s)).
    """
    bench = ctx.bench
    src = bench.slms["flat_source"]
    span = {c: bench.cameras[c].max_adu - float(np.median(dark0[c])) for c in cams}
    want = max(span[c] / (rate[c] * 2.0 * op_exposure[c]) for c in cams)
    lamp_level = int(np.clip(round(want), 1, src.max_level))
    # most points in the linear range (the gain), the rest up to past saturation
    n_sat = max(3, int(n_points) // 4)
    fractions = np.r_[np.linspace(0.02, 0.6, int(n_points) - n_sat), np.linspace(0.72, 1.3, n_sat)]
    exposures = {}
    for c in cams:
        t_full = span[c] / (rate[c] * lamp_level)
        t = fractions * t_full
        tmax = exposure_limits(bench.cameras[c])[1]
        if t[-1] > tmax:
            raise ValueError(f"{c}: reaching saturation needs {t[-1]:.3g} s exposure at the brightest lamp, "
                             f"more than the grab timeout allows ({tmax:.3g} s); raise timeout_s")
        exposures[c] = t
    return span, lamp_level, exposures


def _lamp_series(ctx: CalContext, cams, exposures: dict, lamp_level: int, n_points: int, n_frames: int):
    """The photon-transfer series: at every exposure ``n_frames`` bright frames (lamp on) and
    ``n_frames`` dark frames (lamp at 0), recorded.

    Returns (bright stacks, dark stacks, exposures realised (s)), each a dict camera -> list.
    """
    bright = {c: [] for c in cams}
    dark = {c: [] for c in cams}
    used_t = {c: [] for c in cams}
    for k in range(int(n_points)):
        for c in cams:
            used_t[c].append(ctx.set_exposure(c, exposures[c][k]))
        show_lamp(ctx, lamp_level)
        for c in cams:
            stack = ctx.grab_stack(c, n_frames)
            bright[c].append(stack)
            for f in stack:
                ctx.record(f"camera.{c}", f, units="adu", exposure_s=used_t[c][-1], lamp_level=lamp_level,
                           point=k)
        show_lamp(ctx, 0)
        for c in cams:
            stack = ctx.grab_stack(c, n_frames)
            dark[c].append(stack)
            for f in stack:
                ctx.record(f"camera.{c}", f, units="adu", exposure_s=used_t[c][-1], lamp_level=0, point=k)
    return bright, dark, used_t


def _lamp_flat(ctx: CalContext, cams, span: dict, rate: dict, lamp_level: int, n_flat: int) -> tuple[dict, dict]:
    """Flat field near 45 % of the range (many frames: a low-noise PRNU map for flat-field
    correction of spot images), then a quarter as many dark frames at the same exposure.

    Returns (bright stacks, dark stacks) per camera (DN); empty when ``n_flat < 2``.
    """
    flat_b, flat_d = {}, {}
    if int(n_flat) >= 2:
        for c in cams:
            ctx.set_exposure(c, 0.45 * span[c] / (rate[c] * lamp_level))
        show_lamp(ctx, lamp_level)
        for c in cams:
            flat_b[c] = ctx.grab_stack(c, n_flat)
        show_lamp(ctx, 0)
        for c in cams:
            flat_d[c] = ctx.grab_stack(c, max(2, int(n_flat) // 4))
    return flat_b, flat_d


def _offset_maps(ctx: CalContext, cams, op_exposure: dict, n_dark_map: int) -> dict:
    """Mean dark frame (DN) of every camera at its operating exposure (lamp at 0), recorded."""
    offset_map = {}
    for c in cams:
        ctx.set_exposure(c, op_exposure[c])
        stack = ctx.grab_stack(c, n_dark_map)
        offset_map[c] = stack.mean(axis=0, dtype=np.float64)
        for f in stack:
            ctx.record(f"camera.{c}", f, units="adu", exposure_s=op_exposure[c], lamp_level=0, point=-1)
    return offset_map


def _lo_phase(ctx: CalContext) -> list[Fit]:
    """The LO region's phase steps (``camera.lo_phase``) when ``lo`` is a panel region, else nothing."""
    region_of = getattr(ctx.bench, "region_of", None)
    if region_of is None or region_of("lo") is None:
        return []
    from calibration.lo_region import measure_lo_phase
    with ctx.timed("camera.lo_phase"):
        fit = measure_lo_phase(ctx)
    ctx.add(fit)
    return [fit]


def _min_exposure_s(camera) -> float:
    """Shortest exposure the camera can be set to (s); 1 % of the current one where it names no limit."""
    lo = float(camera.exposure_range_s[0])
    return lo if lo > 0 else camera.exposure_s * 1e-2


def measure_camera_laser(ctx: CalContext, cameras=None, *, n_points: int = 20, n_frames: int = 32,
                         linear_fraction: float = 0.6) -> list[Fit]:
    """Photon-transfer calibration of the cameras with the laser through the bench (no flat lamp).

    See the module docstring for the method and what it cannot measure.

    Parameters
    ----------
    ctx : calibration context of the bench.
    cameras : camera names (default: all of the bench's cameras).
    n_points : exposures in the series (>= 6).
    n_frames : frames per exposure (>= 4: per-pixel temporal variances).
    linear_fraction : upper end of the photon-transfer fit, as a fraction of the saturation signal.

    Returns
    -------
    list of Fit ('camera' for the reference camera, 'camera.<cam>' for the others) from
    :func:`calibration.camera_pixel_fit.fit_ptc_per_pixel`, model 'ptc-per-pixel': quantities
    ``gain_adu_per_e`` (DN/e-), ``read_noise_e`` (e-), ``dark_offset_adu`` (DN),
    ``dark_noise_adu`` (DN), ``saturation_e`` (e-) with standard errors; arrays
    ``offset_map_adu`` (per-pixel offset, DN), ``ptc_mean_adu``/``ptc_var_adu2`` (binned
    curve); ``info`` with the exposures, ``operating_exposure_s`` and ``light``
    ('laser through the bench').  No ``prnu_map``, ``prnu_pct``, dark current or defect map.
    """
    bench = ctx.bench
    cams = list(bench.cameras) if cameras is None else list(cameras)
    if int(n_points) < 6 or int(n_frames) < 4:
        raise ValueError(f"laser camera calibration needs n_points >= 6 and n_frames >= 4, got {n_points}, {n_frames}")
    op_exposure = {c: bench.cameras[c].exposure_s for c in cams}
    fits: list[Fit] = []
    try:
        with ctx.timed("camera"):
            # ---- the light: every element of every phase panel at full amplitude, LO at phase 0, the
            #      input DMD at a fill fraction x chosen per camera (x = 0: LO and stray light only)
            for name in PHASE_SLMS:
                if name in bench.slms:
                    ctx.show(name, ctx.uniform_levels(name, 0))
            ctx.set_lo(0.0)
            fill, stacks, used_t = {}, {}, {}
            for c in cams:
                fill[c], exposures = _laser_exposures(ctx, c, op_exposure[c], n_points)     # 1.
                used_t[c], stacks[c] = _laser_series(ctx, c, exposures, n_frames, fill[c])   # 2.
            # ---- 3. fits (one joint fit: the light jitter is the laser's, common to every camera)
            pairs = [ptc_pairs(np.asarray(used_t[c]), stacks[c], bench.cameras[c].max_adu) for c in cams]
            for c, fit in zip(cams, fit_ptc_per_pixel(pairs, linear_fraction=linear_fraction)):
                fit.name = camera_fit_name(c)
                fit.info.update(camera=c, exposures_s=[float(t) for t in used_t[c]],
                                operating_exposure_s=op_exposure[c], frames_per_point=int(n_frames),
                                light="laser through the bench (panels at full amplitude)", input_fill=fill[c],
                                offset_map="per-pixel zero-exposure intercept (no dark frames without a lamp)")
                fits.append(fit)
    finally:
        _restore_exposures(bench, cams, op_exposure)
    ctx.add(*fits)
    return fits


def _laser_exposures(ctx: CalContext, c: str, op_exposure_s: float, n_points: int) -> tuple[float, np.ndarray]:
    """Input fill and exposure series of camera ``c`` under the laser.

    The fill (1, then quartered down to 0: LO and stray light only) and an exposure keep the
    brightest pixel below 90 % of the ADC top; the exposure that takes it to the top,
    ``t_full``, is extrapolated from there.  Three quarters of the points run geometrically
    from the shortest useful exposure to 60 % of ``t_full``, the rest from 75 % to 130 %.

    Returns (input fill fraction, exposures (s)).
    """
    camera = ctx.bench.cameras[c]
    n_in = ctx.bench.sizes.n_in
    t_min = _min_exposure_s(camera)
    t_max = exposure_limits(camera)[1]
    x, t = 1.0, op_exposure_s
    for _ in range(40):
        ctx.show_inputs(np.full(n_in, x))
        t = ctx.set_exposure(c, t)
        img = ctx.grab_mean(c, 2)
        base, peak = float(np.median(img)), float(img.max())
        if peak > 0.9 * camera.max_adu:
            if t / 4.0 >= 20.0 * t_min:
                t /= 4.0
            elif x > 0:
                x = x / 4.0 if x / 4.0 >= 1.0 / 64 else 0.0
            else:
                raise ValueError(f"{c}: saturates at {t:.3g} s even with the signal blocked; "
                                 f"attenuate the LO or the background light")
            continue
        if peak - base < 0.05 * camera.max_adu and 4.0 * t <= t_max / 1.3:
            t *= 4.0
            continue
        break
    if peak - base <= 0:
        raise ValueError(f"{c}: the laser gives no light on the camera; check the light path")
    t_full = (camera.max_adu - base) / (peak - base) * t
    if 1.3 * t_full > t_max:
        raise ValueError(f"{c}: reaching saturation needs {1.3 * t_full:.3g} s exposure, more than the "
                         f"grab timeout allows ({t_max:.3g} s); raise timeout_s")
    # most points below 60 % of the brightest pixel's range (the gain), the rest past saturation
    n_sat = max(3, int(n_points) // 4)
    t_lo = max(t_min, t_full / 300.0)
    exposures = np.r_[np.geomspace(t_lo, 0.6 * t_full, int(n_points) - n_sat), np.linspace(0.75, 1.3, n_sat) * t_full]
    return x, exposures


def _laser_series(ctx: CalContext, c: str, exposures, n_frames: int, fill: float) -> tuple[list, list]:
    """``n_frames`` frames of camera ``c`` at every exposure (mean frames recorded).

    Returns (exposures realised (s), frame stacks (DN)).
    """
    used_t, stacks = [], []
    for k in range(len(exposures)):
        used_t.append(ctx.set_exposure(c, exposures[k]))
        st = ctx.grab_stack(c, n_frames)
        stacks.append(st)
        ctx.record(f"camera.{c}", st.mean(axis=0, dtype=np.float64), units="adu (mean frame)",
                   exposure_s=used_t[-1], point=k, input_fill=fill)
    return used_t, stacks
