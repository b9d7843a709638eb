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
"""
from __future__ import annotations


import numpy as np

from calibration.camera_fit import CameraPoint, fit_camera
from calibration.procedures.context import CalContext, camera_fit_name
from calibration.quantities import Fit

__all__ = ["measure_camera"]


def _lamp(ctx: CalContext, level: int) -> None:
    src = ctx.bench.slms["flat_source"]
    ctx.show("flat_source", np.full(src.shape, int(level), dtype=src.level_dtype))


def _lamp_out(ctx: CalContext) -> None:
    """Flip the lamp out: re-show what the LO panel shows (a laser-path panel)."""
    lo = ctx.bench.slms["lo"]
    levels = lo.last_levels if lo.last_levels is not None else np.zeros(lo.shape, dtype=lo.level_dtype)
    ctx.show("lo", levels)


def _max_exposure_s(camera) -> float:
    readout = float(getattr(camera, "readout_s", 0.0))
    return 0.8 * (camera.timeout_s - readout)


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
    :func:`calibration.camera_fit.fit_camera` with ``offset_map_adu`` replaced by the mean
    dark frame at the camera's operating exposure and ``info`` extended with the lamp level,
    the exposures and the operating exposure (``operating_exposure_s``).
    """
    bench = ctx.bench
    cams = list(bench.cameras) if cameras is None else list(cameras)
    for c in cams:
        if c not in bench.cameras:
            raise ValueError(f"no camera {c!r} on bench {bench.name!r} (cameras: {', '.join(bench.cameras)})")
    if "flat_source" not in bench.slms:
        raise ValueError(f"bench {bench.name!r} has no flat_source lamp; record flat and dark frames by hand "
                         f"and use 'optwin calibrate camera --frames FILE.h5'")
    if int(n_points) < 6 or int(n_frames) < 2 or int(n_dark_map) < 2:
        raise ValueError(f"camera calibration needs n_points >= 6, n_frames >= 2 and n_dark_map >= 2, "
                         f"got {n_points}, {n_frames}, {n_dark_map}")
    src = bench.slms["flat_source"]
    op_exposure = {c: bench.cameras[c].exposure_s for c in cams}
    fits: list[Fit] = []
    try:
        with ctx.timed("camera"):
            # ---- 1. range finding at the operating exposure
            _lamp(ctx, 0)
            dark0 = {c: ctx.grab_mean(c, 2) for c in cams}
            level = max(1, src.max_level // 64)
            rate = {}
            for _ in range(12):
                _lamp(ctx, level)
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
            # ---- 2. lamp level and exposures
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
                tmax = _max_exposure_s(bench.cameras[c])
                if t[-1] > tmax:
                    raise ValueError(f"{c}: reaching saturation needs {t[-1]:.3g} s exposure at the brightest lamp, "
                                     f"more than the grab timeout allows ({tmax:.3g} s); raise timeout_s")
                exposures[c] = t
            # ---- 3. photon-transfer series
            bright = {c: [] for c in cams}
            dark = {c: [] for c in cams}
            used_t = {c: [] for c in cams}
            for k in range(int(n_points)):
                for c in cams:
                    used_t[c].append(ctx.set_exposure(c, exposures[c][k]))
                _lamp(ctx, lamp_level)
                for c in cams:
                    stack = ctx.grab_stack(c, n_frames)
                    bright[c].append(stack)
                    for f in stack:
                        ctx.record(f"camera.{c}", f, units="adu", exposure_s=used_t[c][-1], lamp_level=lamp_level,
                                   point=k)
                _lamp(ctx, 0)
                for c in cams:
                    stack = ctx.grab_stack(c, n_frames)
                    dark[c].append(stack)
                    for f in stack:
                        ctx.record(f"camera.{c}", f, units="adu", exposure_s=used_t[c][-1], lamp_level=0, point=k)
            # ---- 4. flat field near half of the range (many frames: a low-noise PRNU map for
            #         flat-field correction of spot images), then dark frames at the same exposure
            flat_b, flat_d = {}, {}
            if int(n_flat) >= 2:
                for c in cams:
                    ctx.set_exposure(c, 0.45 * span[c] / (rate[c] * lamp_level))
                _lamp(ctx, lamp_level)
                for c in cams:
                    flat_b[c] = ctx.grab_stack(c, n_flat)
                _lamp(ctx, 0)
                for c in cams:
                    flat_d[c] = ctx.grab_stack(c, max(2, int(n_flat) // 4))
            # ---- 5. offset maps at the operating exposure (lamp still at 0)
            offset_map = {}
            for c in cams:
                ctx.set_exposure(c, op_exposure[c])
                stack = ctx.grab_stack(c, n_dark_map)
                offset_map[c] = stack.mean(axis=0, dtype=np.float64)
                for f in stack:
                    ctx.record(f"camera.{c}", f, units="adu", exposure_s=op_exposure[c], lamp_level=0, point=-1)
            # ---- 6. fits
            for c in cams:
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
        for c in cams:
            try:
                bench.cameras[c].exposure_s = op_exposure[c]
            except Exception:   # noqa: BLE001 - restoring is best effort; the original error matters
                pass
        try:
            _lamp_out(ctx)
        except Exception:       # noqa: BLE001
            pass
    ctx.add(*fits)
    return fits
