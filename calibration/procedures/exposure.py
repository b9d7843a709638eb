"""Operating exposures: chosen from each camera's saturation and the brightest pattern it will see.

The exposures in a bench file are a starting point.  After the SLM calibration (the weight
patterns below need the calibrated encoders) :func:`measure_exposure` sets every camera to
the exposure at which the brightest pattern it will see fills ``fill_target`` of the room
below saturation, records the choice (``Fit('exposure')``) and re-measures what depends on
the exposure: the dark maps (``offset_map_adu`` of the camera fits) and the LO amplitudes
(the ``readout.<cam>`` fits).  The absorber and MVM parts, and every later use of the
calibration (:func:`calibration.deploy.apply_exposures`), run the cameras there.

Room and brightness
-------------------
The room of a camera is its saturation level above the dark level: the EMVA saturation
capacity ``saturation_e * gain_adu_per_e`` of its camera fit, or the ADC range above the
dark level when that is smaller or the camera is not calibrated.  Brightness is the largest
dark-subtracted pixel of a frame, the most over the LO phases the procedures use (0, pi/2,
pi, 3 pi/2), measured at an exposure where it is not clipped and divided by that exposure
(ADU per second): cameras are linear, so the operating exposure is
``fill_target * room / peak rate``.  Clipped frames (a pixel at 90 % of the room or more)
are measured again at a quarter of the exposure first (:func:`find_exposure`, the range
finder the absorber sweeps use too).

Which pattern is the brightest
------------------------------
* the strongest drive: every input on, every element of the panels upstream of the camera
  at full amplitude (uniform frames at the level of phase 0): slm1 for ``cam_z1`` and
  ``cam_a1``; slm1 and slm2 for ``cam_out``; slm1, slm2 and ``probe_input`` (the probe on
  every output) for ``cam_back``.  No forward or backward pass of the network puts more
  light on the camera.  ``cam_back`` sees the backward pump instead of every input: the
  strongest pump ``cam_z1`` reads unclipped at its operating exposure (every input on
  unless a wide input layer drives the cell far beyond the forward probes; recorded as
  ``info['backward_pump_fill']``, the MVM-2 backward calibration pumps there), because the
  bleached cell leaks pump light into ``cam_back`` whose shot noise would bury the probe.
* the MVM calibration's random probes (signed weights over the full range, random inputs:
  what training shows): MVM-1 for ``cam_z1``, MVM-2 for ``cam_a1`` and ``cam_out``, MVM-2
  backward (pump at full drive) for ``cam_back`` (:func:`calibration.procedures.mvm.mvm_plans`).

When the strongest drive is at most ``max_headroom`` times as bright as the brightest probe,
the exposure keeps the strongest drive unclipped (rule ``'strongest drive'``).  When it is
brighter still -- a wide layer sums many elements, e.g. 64 inputs, or ``cam_out`` summing
every hidden neuron -- it is a pattern operation does not reach and exposing for it would
leave the probes' signal in the noise: the exposure is set by the brightest probe instead
(rule ``'probes'``).  Calibration steps brighter than the operating exposure allows (the
absorber's strongest pumps, single MVM elements at full pump) find their own shorter
exposure (:func:`calibration.procedures.absorber.boost_exposures`, the MVM's clipped-step
handling) and divide the readings back to operating-exposure units.

Recorded: ``Fit('exposure')``, model ``'auto'``, one quantity per camera (its operating
exposure, s), ``info[<cam>]`` with the rule, the pattern, the measured peak fraction of the
room at the operating exposure, the room and the starting exposure, ``info['source']`` and
``info['backward_pump_fill']`` (mean input fill of the backward pump, see above).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

from calibration.procedures.context import CalContext
from calibration.procedures.dark_maps import remeasure_dark_maps
from calibration.quantities import Fit, Quantity

__all__ = ["EXPOSURE_FIT", "LO_PHASES", "saturation_room", "frame_peaks", "find_exposure", "exposure_limits",
           "kept_exposures", "input_fills", "min_input", "backward_pump_fill", "measure_exposure"]

EXPOSURE_FIT = "exposure"
#: LO phases the procedures read at (homodyne 0 / pi, field 0, pi/2, pi, 3 pi/2)
LO_PHASES = (0.0, 0.5 * math.pi, math.pi, 1.5 * math.pi)
#: a frame whose largest dark-subtracted pixel reaches this fraction of the room counts as clipped
CLIP_FRACTION = 0.9
_CAMERAS = ("cam_z1", "cam_a1", "cam_out", "cam_back")
#: the panels whose elements reach each camera (the strongest drive puts them all at full amplitude)
UPSTREAM = {"cam_z1": ("slm1",), "cam_a1": ("slm1",), "cam_out": ("slm1", "slm2"),
            "cam_back": ("slm1", "slm2", "probe_input")}


def saturation_room(ctx: CalContext, cam: str) -> tuple[float, float]:
    """(room, dark level) of ``cam`` in ADU: saturation level above the dark level, and that level.

    The saturation level is :meth:`CalContext.saturation_adu` without margin (the camera fit's
    saturation capacity, at most the ADC top); the dark level the median of the dark map.

    Parameters
    ----------
    ctx : calibration context (camera fits and dark maps where measured).
    cam : camera name.

    Returns
    -------
    (float, float) : the room (ADU, at least 1) and the dark level (ADU).
    """
    dark = ctx.dark_map(cam)
    level = float(np.median(dark)) if np.ndim(dark) else float(dark)
    return max(ctx.saturation_adu(cam, margin=1.0) - level, 1.0), level


def frame_peaks(ctx: CalContext, cams, phases=LO_PHASES, n_frames: int = 1) -> dict:
    """Largest dark-subtracted pixel per camera (ADU), the most over the LO ``phases``.

    Cameras without an LO channel are read once.  ``n_frames`` frames are averaged per phase.

    Parameters
    ----------
    ctx : calibration context; the panels already show the pattern.
    cams : camera names.
    phases : LO phases (rad) to read the cameras with an LO channel at.
    n_frames : frames averaged per phase.

    Returns
    -------
    dict : camera -> largest dark-subtracted pixel value (ADU).
    """
    cams = list(cams)
    lo_cams = set(ctx.lo_cameras()) if "lo" in ctx.bench.slms else set()
    steps = phases if lo_cams & set(cams) else (None,)
    out = {c: -np.inf for c in cams}
    for ph in steps:
        if ph is not None:
            ctx.set_lo(ph)
        for c in cams:
            if ph is not None and ph != steps[0] and c not in lo_cams:
                continue
            img = ctx.grab_mean(c, n_frames) if n_frames > 1 else ctx.grab(c).astype(np.float64)
            out[c] = max(out[c], float(np.max(img - ctx.dark_map(c))))
    return out


def exposure_limits(camera) -> tuple[float, float]:
    """(shortest, longest) exposure to try on ``camera`` (s): the camera's settable range
    (``exposure_range_s``; 1 ns where it names no minimum), the longest also within 0.8 of the
    grab timeout left after the readout.

    Parameters
    ----------
    camera : an opened camera (``timeout_s``, ``readout_s`` in s).

    Returns
    -------
    (float, float) : shortest and longest exposure (s).
    """
    lo, hi = camera.exposure_range_s
    readout = float(getattr(camera, "readout_s", 0.0) or 0.0)
    return (float(lo) if lo > 0 else 1e-9), min(float(hi), 0.8 * max(float(camera.timeout_s) - readout, 1e-6))


def min_input(ctx: CalContext) -> float:
    """Smallest mean input fill :func:`input_fills` realises: one DMD pixel on one input block.

    Parameters
    ----------
    ctx : calibration context (the DMD's active pixels per block, the bench sizes).

    Returns
    -------
    float : the mean input fill (fraction of the DMD pixels of all input blocks).
    """
    return 1.0 / (ctx.dmd.n_active * ctx.bench.sizes.n_in)


def input_fills(ctx: CalContext, x: float) -> np.ndarray:
    """DMD fills (n_in,) that carry a mean input fill ``x`` (the light range finding turns down).

    Down to one pixel per block every input shows ``x``; below that one pixel on the
    ``round(n_in x / x_pixel)`` inputs nearest the middle of the input layout (at least one),
    so a wide layer's summed field keeps falling until a single pixel is left.

    Parameters
    ----------
    ctx : calibration context.
    x : mean input fill in (0, 1].

    Returns
    -------
    ndarray (n_in,) : fill of each input block (fraction of its DMD pixels).
    """
    n_in = ctx.bench.sizes.n_in
    x_pixel = 1.0 / ctx.dmd.n_active
    x = float(x)
    if x >= x_pixel * (1 - 1e-9):
        return np.full(n_in, min(x, 1.0))
    m = int(min(max(round(n_in * x / x_pixel), 1), n_in))
    order = np.argsort(np.abs(np.arange(n_in) - 0.5 * (n_in - 1)), kind="stable")
    out = np.zeros(n_in)
    out[order[:m]] = x_pixel
    return out


@contextlib.contextmanager
def kept_exposures(ctx: CalContext, cams=None):
    """Context manager: the cameras' exposures on entry (camera -> s) are restored on exit.

    For range finding that shortens an exposure for one measurement (registration, SLM
    sweeps): the operating exposures the readout scales hold at stay in force afterwards.

    Parameters
    ----------
    ctx : calibration context.
    cams : camera names (default every camera of the bench).

    Yields
    ------
    dict : camera -> exposure on entry (s).
    """
    bench = ctx.bench
    saved = {c: float(bench.cameras[c].exposure_s) for c in (bench.cameras if cams is None else cams)}
    try:
        yield saved
    finally:
        for c, t in saved.items():
            if float(bench.cameras[c].exposure_s) != t:
                ctx.set_exposure(c, t)


def find_exposure(ctx: CalContext, cam: str, peak, *, fill: float = 0.7, t_min: float | None = None,
                  t_max: float | None = None, max_iter: int = 12, tol: float = 0.05) -> tuple[float, float, bool]:
    """Range finding: set ``cam``'s exposure so that ``peak()`` reads ``fill`` of the room.

    Parameters
    ----------
    ctx : calibration context.
    cam : camera name.
    peak : callable, no arguments, returning the brightest dark-subtracted pixel (ADU) of the
        pattern(s) on show at the camera's current exposure.
    fill : target peak as a fraction of the room (:func:`saturation_room`).
    t_min, t_max : exposure limits (s); default :func:`exposure_limits`.
    max_iter, tol : iterations at most; stop when the next step changes the exposure by less
        than ``tol`` (relative).

    Returns
    -------
    (exposure set (s), the peak read there (ADU), whether that peak is clipped).  A clipped
    peak (at least :data:`CLIP_FRACTION` of the room) underestimates the light: the exposure
    goes to a quarter and the pattern is read again.  The exposure stays at the limits when
    the target lies beyond them (the camera may clamp further; its reported value is used).
    """
    camera = ctx.bench.cameras[cam]
    lo, hi = exposure_limits(camera)
    lo = lo if t_min is None else max(lo, float(t_min))
    hi = hi if t_max is None else min(hi, float(t_max))
    room, _ = saturation_room(ctx, cam)
    t = float(camera.exposure_s)
    if t < lo or t > hi:
        t = ctx.set_exposure(cam, min(max(t, lo), hi))
    p = float(peak())
    for _ in range(int(max_iter)):
        clipped = p >= CLIP_FRACTION * room
        if clipped:
            want = 0.25 * t
        elif p <= 0:
            want = hi
        else:
            want = t * fill * room / p
        want = min(max(want, lo), hi)
        if abs(want / t - 1.0) < tol:
            break
        got = ctx.set_exposure(cam, want)
        if abs(got / t - 1.0) < 1e-9:           # the camera cannot go further
            break
        t = got
        p = float(peak())
    return t, p, bool(p >= CLIP_FRACTION * room)


# ---------------------------------------------------------------------------------- patterns
def _full(ctx: CalContext, name: str) -> np.ndarray:
    from calibration.procedures.absorber import full_pump_levels
    return full_pump_levels(ctx, name)


def backward_pump_fill(ctx: CalContext) -> float:
    """Mean input fill of the pump the MVM-2 backward calibration (and training's backward pass
    probe) uses: the exposure fit's ``info['backward_pump_fill']``, else 1 (every input on).

    Parameters
    ----------
    ctx : calibration context.

    Returns
    -------
    float : mean input fill in (0, 1].
    """
    fit = ctx.fits.get(EXPOSURE_FIT)
    return float(fit.info.get("backward_pump_fill", 1.0)) if fit is not None else 1.0


def _pump_fill(ctx: CalContext) -> float:
    """Largest mean input fill (1, 1/2, ...; :func:`input_fills`) at which the strongest pump does
    not clip ``cam_z1`` at its current exposure: the backward measurements pump the cell there.

    The pump leaks into ``cam_back`` (incoherent light from the bleached cell), whose shot noise
    buries the weak backward probe when a wide input layer drives the cell far beyond what
    the forward probes reach; a pump ``cam_z1`` can read also gives the probe law its ``z1``.
    """
    from calibration.procedures.absorber import full_pump_levels
    room, _ = saturation_room(ctx, "cam_z1")
    ctx.blank_all()
    ctx.show("slm1", full_pump_levels(ctx))
    x, x_min = 1.0, min_input(ctx)
    while True:
        ctx.show_inputs(input_fills(ctx, x))
        if frame_peaks(ctx, ["cam_z1"])["cam_z1"] < CLIP_FRACTION * room or 0.5 * x < x_min * (1 - 1e-9):
            return x
        x *= 0.5


def _show_drive(ctx: CalContext, cam: str, panels, inputs=None) -> None:
    """The strongest drive of ``cam``: every input on (or ``inputs``), the panels upstream of it at
    full amplitude."""
    n_in = ctx.bench.sizes.n_in
    ctx.blank_all()
    ctx.show_inputs(np.ones(n_in) if inputs is None else inputs)
    for name in UPSTREAM[cam]:
        if name in ctx.bench.slms:
            panels.frame(name, _full(ctx, name), "full")


def _probe_setups(ctx: CalContext, cam: str, panels, plans, pump=None) -> list:
    """Callables that show the MVM calibration's random probes read on ``cam`` (``pump``: the
    backward probes' input fills, default every input on)."""
    n_in = ctx.bench.sizes.n_in
    pump = np.ones(n_in) if pump is None else pump
    if cam == "cam_z1":
        def make(st):
            def show():
                panels.weights("slm1", st["A1"])
                panels.inputs(st["x"])
            return show
        steps = plans["mvm1"]
    elif cam in ("cam_a1", "cam_out"):
        def make(st):
            def show():
                panels.weights("slm1", st["A1"])
                panels.inputs(st["x"])
                panels.weights("slm2", st["A2"])
            return show
        steps = plans["mvm2"]
    else:
        def make(st):
            def show():
                panels.frame("slm1", _full(ctx, "slm1"), "full")
                panels.inputs(pump)
                panels.weights("slm2", st["A2"])
                u = np.asarray(st["u"], float)
                panels.frame("probe_input", ctx.weight_levels("probe_input", u[None, :], 1.0), ("u", u.tobytes()))
            return show
        steps = plans["mvm2_backward"]
    return [make(st) for st in steps if st["kind"] in ("fit", "test")]


def _probe_peaks(ctx: CalContext, cam: str, setups) -> np.ndarray:
    out = np.empty(len(setups))
    for i, show in enumerate(setups):
        show()
        out[i] = frame_peaks(ctx, [cam])[cam]
    return out


# ---------------------------------------------------------------------------------- the procedure
def measure_exposure(ctx: CalContext, cameras=None, *, fill_target: float = 0.7, max_headroom: float = 10.0,
                     n_dark: int = 16, readout: bool = True, mvm_seed: int = 2308,
                     n_groups: int = 8, per_group: int = 5) -> list[Fit]:
    """Choose, set and record every camera's operating exposure (see the module docstring).

    Parameters
    ----------
    ctx : calibration context with the registration, readout and SLM fits (camera fits give
        the saturation; without them the ADC range is the room).
    cameras : cameras to set (default: those of cam_z1, cam_a1, cam_out, cam_back on the bench).
    fill_target : peak of the brightest pattern at the operating exposure, as a fraction of
        the room (below the 0.9 at which calibration counts a frame as clipped: margin for
        drift and for patterns a little brighter than those measured).
    max_headroom : largest ratio (peak power) of the strongest drive to the brightest MVM probe
        for which the exposure keeps the strongest drive unclipped.
    n_dark : frames per re-measured dark map, at least (:func:`calibration.procedures.dark_maps.dark_frames_needed`).
    readout : re-measure the LO amplitudes (``readout.<cam>`` fits) at the new exposures (with
        as many frames as a weak LO needs, :func:`calibration.procedures.readout.measure_readout`).
    mvm_seed, n_groups, per_group : the MVM plan whose random probes are measured (those of
        :func:`calibration.procedures.mvm.measure_mvm`).

    Returns
    -------
    ``[Fit('exposure'), re-measured camera fits..., readout fits...]`` (also added to ``ctx``).
    """
    from calibration.procedures.mvm import _Panels, mvm_plans
    bench = ctx.bench
    cams = _exposure_cameras(bench, cameras)
    if not 0.05 <= float(fill_target) < CLIP_FRACTION:
        raise ValueError(f"fill_target must lie in [0.05, {CLIP_FRACTION}), got {fill_target}")
    if float(max_headroom) < 1.0:
        raise ValueError(f"max_headroom must be >= 1, got {max_headroom}")
    plans = mvm_plans(tuple(bench.sizes), mvm_seed, n_groups, per_group)
    start = {c: float(bench.cameras[c].exposure_s) for c in cams}
    chosen, details = {}, {}
    pump_fill = backward_pump_fill(ctx)
    with ctx.timed("exposure"):
        for cam in cams:
            chosen[cam], details[cam] = _choose_exposure(ctx, cam, _Panels(ctx), plans, pump_fill, fill_target,
                                                         max_headroom, start[cam])
            if cam == "cam_z1":         # the backward measurements' pump: one cam_z1 can read
                pump_fill = _pump_fill(ctx)
        ctx.blank_all()
        for cam, t in chosen.items():
            ctx.set_exposure(cam, t)
        dark_fits, notes = remeasure_dark_maps(ctx, cams, n_dark)
        ctx.add(*dark_fits)
        readout_fits = []
        if readout and "registration" in ctx.fits:
            from calibration.procedures.readout import measure_readout
            readout_fits = measure_readout(ctx, cams, stream="exposure.readout")
    warnings = list(notes) + _exposure_warnings(chosen, details, fill_target)
    fit = Fit(name=EXPOSURE_FIT, model="auto",
              quantities={c: Quantity(float(chosen[c]), 0.0, "s") for c in cams},
              x=np.arange(len(cams), dtype=float), y=np.array([details[c]["peak_fraction"] for c in cams]),
              y_fit=np.full(len(cams), float(fill_target)),
              info={"source": "auto: each camera's exposure puts the brightest pattern it will see at fill_target "
                              "of the room below saturation (measured peak fraction per camera)",
                    "fill_target": float(fill_target), "max_headroom": float(max_headroom),
                    "clip_fraction": CLIP_FRACTION, "cameras": list(cams), **details,
                    "backward_pump_fill": pump_fill,
                    "dark_maps_remeasured": [f.name for f in dark_fits],
                    "readout_remeasured": [f.name for f in readout_fits], "warnings": warnings,
                    "x_label": "camera (" + ", ".join(cams) + ")", "y_label": "peak / room at the operating exposure"})
    ctx.add(fit)
    return [fit, *dark_fits, *readout_fits]


def _exposure_cameras(bench, cameras) -> list[str]:
    """The cameras to set: ``cameras`` checked, or every standard camera of the bench."""
    cams = [c for c in _CAMERAS if c in bench.cameras] if cameras is None else list(cameras)
    for c in cams:
        if c not in _CAMERAS:
            raise ValueError(f"measure_exposure knows the patterns of {', '.join(_CAMERAS)}, not {c!r}")
        if c not in bench.cameras:
            raise ValueError(f"no camera {c!r} on bench {bench.name!r} (cameras: {', '.join(bench.cameras)})")
    return cams


def _choose_exposure(ctx: CalContext, cam: str, panels, plans, pump_fill: float, fill_target: float,
                     max_headroom: float, start_s: float) -> tuple[float, dict]:
    """Measure the strongest drive and the MVM probes on ``cam`` and set its operating exposure.

    Returns
    -------
    (float, dict) : the exposure set (s) and what decided it (rule, pattern, peak fraction,
        peak and room in ADU, clipped, the starting exposure ``start_s`` in s, peak rates of drive
        and probes in ADU/s).
    """
    bench = ctx.bench
    room, dark_level = saturation_room(ctx, cam)
    pump = input_fills(ctx, pump_fill) if cam == "cam_back" else None
    # ---- the strongest drive
    _show_drive(ctx, cam, panels, pump)
    t_d, p_d, clip_d = find_exposure(ctx, cam, lambda: frame_peaks(ctx, [cam])[cam], fill=fill_target)
    rate_d = p_d / t_d if p_d > 0 else 0.0
    # ---- the MVM probes, read where the strongest drive would be max_headroom over the target
    setups = _probe_setups(ctx, cam, panels, plans, pump)
    lo, hi = exposure_limits(bench.cameras[cam])
    t_probe = ctx.set_exposure(cam, min(max(t_d * float(max_headroom), lo), hi))
    peaks = _probe_peaks(ctx, cam, setups)
    if peaks.max() >= CLIP_FRACTION * room and t_probe > t_d:
        # within max_headroom of the drive: read them again where the drive is at the target
        t_probe = ctx.set_exposure(cam, t_d)
        peaks = _probe_peaks(ctx, cam, setups)
    best = int(np.argmax(peaks))
    rate_p = peaks[best] / t_probe if peaks[best] > 0 else 0.0
    ratio = rate_d / rate_p if rate_p > 0 else float("inf")
    if clip_d or ratio > float(max_headroom):
        rule = "probes"
        setups[best]()
        ctx.set_exposure(cam, min(max(fill_target * room / rate_p, lo), hi) if rate_p > 0 else t_probe)
        t, p, clipped = find_exposure(ctx, cam, lambda: frame_peaks(ctx, [cam])[cam], fill=fill_target)
        pattern = (f"MVM random probe {best} of {len(setups)} (the brightest; strongest drive "
                   f"{'clipped at the shortest exposure' if clip_d else f'{ratio:.3g} x as bright'})")
    else:
        rule = "strongest drive"
        t = ctx.set_exposure(cam, t_d)
        p, clipped = p_d, clip_d
        inputs = ("every input on" if pump is None or pump_fill == 1.0
                  else f"the backward pump (mean input fill {pump_fill:.3g})")
        pattern = (f"{inputs}, {', '.join(UPSTREAM[cam])} at full amplitude"
                   + (f" ({ratio:.3g} x the brightest MVM probe)" if math.isfinite(ratio) else ""))
    return t, {"rule": rule, "pattern": pattern, "peak_fraction": p / room, "peak_adu": p,
               "room_adu": room, "dark_level_adu": dark_level, "clipped": clipped, "start_exposure_s": start_s,
               # a drive clipped at the shortest exposure has no measured rate (only a bound)
               "drive_peak_rate_adu_per_s": None if clip_d else rate_d,
               "probe_peak_rate_adu_per_s": rate_p,
               "drive_to_probe_ratio": None if clip_d or not math.isfinite(ratio) else ratio}


def _exposure_warnings(chosen: dict, details: dict, fill_target: float) -> list[str]:
    """Cameras whose brightest pattern clips at the shortest exposure or stays dim at the longest."""
    warnings = []
    for cam, d in details.items():
        if d["clipped"]:
            warnings.append(f"{cam}: the brightest pattern clips even at the shortest exposure "
                            f"({chosen[cam]:.3g} s); lower the laser power")
        elif d["peak_fraction"] < 0.5 * fill_target:
            warnings.append(f"{cam}: the brightest pattern fills only {d['peak_fraction']:.0%} of the range at the "
                            f"longest exposure ({chosen[cam]:.3g} s); raise timeout_s or the laser power")
    return warnings
