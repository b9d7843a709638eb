"""Shared state and device helpers of the calibration procedures.

A :class:`CalContext` wraps an opened :class:`hwio.bench.Bench`.  It holds the fits made so
far (``ctx.fits``, name -> :class:`~calibration.quantities.Fit`) and gives every procedure
the same fault-tolerant device access:

* ``show`` / ``grab`` follow the bench's device-access policy (:mod:`hwio.device_access`):
  retryable :class:`hwio.devices.DeviceError` s (timeouts, dropped frames, SLM write errors)
  are retried ``retries`` times; stale frames are discarded by :meth:`hwio.devices.Camera.grab`
  (counted in ``info['stale_frames']``);
* frames to put on the panels: ``zero_levels`` (zero-field double-phase checkerboard),
  ``uniform_levels``, ``weight_levels`` through a :class:`hwio.encoding.PhaseEncoder` whose
  LUT is the calibrated one once ``slm`` fits exist (an ideal linear 2 pi response before);
* readout: ``readout(cam)`` is a :class:`hwio.readout.SpotReadout` from the registration's
  spot centres, the readout's ROI radius and the camera's dark map; ``homodyne`` gives the
  contract's signed value ``h = (P0 - Ppi) / (4 lo_amplitude)``; ``field_iq`` the complex
  field from four LO phases (0, pi/2, pi, 3 pi/2).

Power units everywhere: dark-subtracted ADU summed over a spot's ROI (SpotReadout, gain 1).
"""
from __future__ import annotations

import math
import time
from typing import Iterable

import numpy as np

from calibration.deploy import REFERENCE_CAMERA, SLM_FIT_NAMES, camera_fit_name, panel_encoding, phase_encoder
from calibration.quantities import Fit
from hwio.device_access import DEFAULT_RETRIES, DeviceAccess
from hwio.devices import CameraFrame
from hwio.encoding import DMDEncoder, PhaseEncoder
from hwio.readout import SpotReadout
from hwio.response import PhaseResponse

__all__ = ["CalContext", "REFERENCE_CAMERA", "SLM_FIT_NAMES", "PHASE_SLMS", "camera_fit_name"]

PHASE_SLMS = tuple(SLM_FIT_NAMES)
DEFAULT_ROI_RADIUS_PX = 3.0


class CalContext:
    """A bench plus the calibration state that procedures share.

    Parameters
    ----------
    bench : an opened :class:`hwio.bench.Bench` (simulated or real).
    recorder : optional :class:`hwio.recording.Recorder`; ``record`` appends raw data to it.
    retries : default number of retries of a retryable device error (attempts = retries + 1).
    fits : optional fits already made (e.g. loaded from a calibration file).

    Attributes
    ----------
    fits : dict name -> Fit of every fit made so far (procedures add theirs with ``add``).
    info : free-form facts procedures leave for the orchestrator (timings, fault counts).
    """

    def __init__(self, bench, recorder=None, retries: int = DEFAULT_RETRIES, fits: dict | None = None):
        if not hasattr(bench, "slms") or not hasattr(bench, "cameras"):
            raise TypeError(f"CalContext needs an opened hwio Bench, got {type(bench).__name__}")
        self.bench = bench
        self.recorder = recorder
        self.retries = int(retries)
        self._policy = DeviceAccess(retries=self.retries)
        self.fits: dict[str, Fit] = dict(fits or {})
        self.info: dict = {"retries": 0, "stale_frames": 0, "timings_s": {}}
        self._enc_cache: dict = {}
        self._ro_cache: dict = {}
        self._dmd = None
        self.n_grabs = 0
        self.n_shows = 0
        #: bench time a real bench would spend (s): SLM settling before a frame, exposures, readouts
        self.bench_time_s = {"settle": 0.0, "exposure": 0.0, "readout": 0.0}
        self._pending_settle_s = 0.0
        self.peak_adu: dict[str, float] = {}
        self.apply_exposures()

    # ------------------------------------------------------------------ fits
    def apply_exposures(self) -> dict:
        """Set the cameras to the operating exposures of the 'exposure' fit, if there is one.

        Readout scales, LO amplitudes and dark maps hold at the exposure they were measured at,
        so a context that starts from earlier fits (``--resume``, ``--only``) measures there.
        Called by ``__init__`` and by ``add`` when an 'exposure' fit arrives.  Returns camera ->
        exposure set (s); empty without the fit.
        """
        if "exposure" not in self.fits:
            return {}
        from calibration.deploy import apply_exposures
        return apply_exposures(self.bench, self.fits)

    def add(self, *fits: Fit) -> None:
        """Register fits (a later fit of the same name replaces the earlier one)."""
        for f in fits:
            if isinstance(f, (list, tuple)):
                self.add(*f)
                continue
            if not isinstance(f, Fit):
                raise TypeError(f"CalContext.add takes Fit objects, got {type(f).__name__}")
            self.fits[f.name] = f
            if f.name == "exposure":
                self.apply_exposures()

    def need(self, name: str, procedure: str) -> Fit:
        """The fit ``name``; a ValueError naming the procedure to run first when it is missing."""
        fit = self.fits.get(name)
        if fit is None:
            raise ValueError(f"this step needs the '{name}' calibration; run the {procedure} procedure first")
        return fit

    @property
    def cameras(self) -> list[str]:
        return list(self.bench.cameras)

    # ------------------------------------------------------------------ devices
    def _access(self, retries: int | None) -> DeviceAccess:
        """The device-access policy of one call: the context's, or ``retries`` for this call."""
        n = self.retries if retries is None else int(retries)
        if self._policy.retries != n:
            return DeviceAccess(retries=n)
        return self._policy

    def _count_retry(self, exc) -> None:
        self.info["retries"] += 1

    def show(self, slm_name: str, levels, retries: int | None = None):
        """Show an integer level frame on ``slm_name``, retrying write failures; returns the ShowToken."""
        slm = self.bench.slms[slm_name]
        levels = np.asarray(levels)
        self.n_shows += 1
        token = self._access(retries).show(slm, levels, name=slm_name, on_retry=self._count_retry)
        self._pending_settle_s = max(self._pending_settle_s, float(getattr(slm, "settle_time_s", 0.0) or 0.0))
        return token

    def grab_frame(self, cam: str, retries: int | None = None) -> CameraFrame:
        """One fresh :class:`CameraFrame` of ``cam`` (retries faults; the camera discards stale frames)."""
        camera = self.bench.cameras[cam]
        stale_before = _stale_count(camera)
        try:
            frame = self._access(retries).grab(camera, name=cam, on_retry=self._count_retry)
        finally:
            self.info["stale_frames"] += _stale_count(camera) - stale_before
        self.n_grabs += 1
        # panels shown since the last frame settle together before it
        bt = self.bench_time_s
        bt["settle"] += self._pending_settle_s
        self._pending_settle_s = 0.0
        bt["exposure"] += float(frame.exposure_s)
        bt["readout"] += float(getattr(camera, "readout_s", 0.0) or 0.0)
        return frame

    def counters(self) -> dict:
        """Snapshot of the device counters: frames, shows and the bench time so far (s) by kind."""
        return {"frames": self.n_grabs, "shows": self.n_shows, **{f"{k}_s": v for k, v in self.bench_time_s.items()}}

    def grab(self, cam: str, retries: int | None = None) -> np.ndarray:
        """The image (rows, cols) of one fresh frame of ``cam``."""
        return self.grab_frame(cam, retries).image

    def grab_stack(self, cam: str, n: int) -> np.ndarray:
        """``n`` fresh frames of ``cam`` as an (n, rows, cols) array (camera dtype)."""
        n = int(n)
        if n < 1:
            raise ValueError(f"grab_stack needs n >= 1 frames, got {n}")
        first = self.grab(cam)
        out = np.empty((n,) + first.shape, dtype=first.dtype)
        out[0] = first
        for k in range(1, n):
            out[k] = self.grab(cam)
        return out

    def grab_mean(self, cam: str, n: int) -> np.ndarray:
        """Mean of ``n`` fresh frames of ``cam`` (float64, ADU)."""
        return self.grab_stack(cam, n).mean(axis=0, dtype=np.float64)

    def set_exposure(self, cam: str, exposure_s: float) -> float:
        """Set a camera's exposure, clamped into the range the camera can be set to.

        Parameters
        ----------
        cam : camera name.
        exposure_s : wanted exposure (s).

        Returns
        -------
        float
            The exposure the camera uses (s): shorter or longer than wanted at the camera's
            limits, so a caller that shortens until the value stops falling ends there.
        """
        camera = self.bench.cameras[cam]
        lo, hi = camera.exposure_range_s
        camera.exposure_s = min(max(float(exposure_s), lo), hi)
        return camera.exposure_s

    # ------------------------------------------------------------------ panel frames
    def response(self, slm_name: str) -> PhaseResponse:
        """Fitted phase response of a phase panel, or an ideal linear 0..2 pi one before calibration."""
        slm = self.bench.slms[slm_name]
        fit = self.fits.get(SLM_FIT_NAMES.get(slm_name, ""))
        if fit is not None and "phase_response_rad" in fit.arrays:
            table = np.asarray(fit.arrays["phase_response_rad"], dtype=float)
            if table.size == 2 ** slm.bit_depth:
                return PhaseResponse(np.maximum.accumulate(table), name=slm_name)
        return PhaseResponse.linear(slm.bit_depth, 2 * math.pi, name=slm_name)

    def encoder(self, slm_name: str) -> PhaseEncoder:
        """PhaseEncoder of a phase panel with the current best LUT (calibrated when available)."""
        if slm_name not in SLM_FIT_NAMES:
            raise ValueError(f"{slm_name!r} is not a phase panel ({', '.join(SLM_FIT_NAMES)})")
        fit = self.fits.get(SLM_FIT_NAMES[slm_name])
        hit = self._enc_cache.get(slm_name)
        enc = hit[1] if hit is not None and hit[0] is fit else None
        if enc is None:
            # the deploy module builds every encoder from the fits (push and training do the
            # same); before the SLM calibration the nominal response encodes plain
            enc, _ = phase_encoder(self.fits, self.bench, slm_name, fallback_lut=self.response(slm_name).inverse())
            self._enc_cache[slm_name] = (fit, enc)      # keeps the fit alive: identity stays meaningful
        return enc

    def weight_levels(self, slm_name: str, weights, w_max: float = 1.0) -> np.ndarray:
        """Double-phase level frame showing ``weights`` (amplitude fraction w / w_max per element)."""
        return self.encoder(slm_name).encode(np.asarray(weights, dtype=float), w_max=w_max)

    def zero_levels(self, slm_name: str) -> np.ndarray:
        """Zero-field frame: the +-pi/2 checkerboard of the encoder (exact once the LUT is calibrated)."""
        lay = self.bench.layouts[slm_name]
        return self.weight_levels(slm_name, np.zeros((lay.n_rows, lay.n_cols)), 1.0)

    def uniform_levels(self, slm_name: str, level: int) -> np.ndarray:
        """Every pixel of the panel at ``level``; on a first-order (blazed) panel its counterpart,
        the full-depth grating over the whole panel at the level's phase (``BlazedEncoder.uniform_frame``)."""
        slm = self.bench.slms[slm_name]
        level = int(level)
        if not 0 <= level <= slm.max_level:
            raise ValueError(f"{slm_name}: level {level} outside 0..{slm.max_level}")
        if slm_name in SLM_FIT_NAMES and panel_encoding(self.bench, slm_name)["encoding"] == "blazed":
            return self.encoder(slm_name).uniform_frame(float(self.response(slm_name).phase(np.array([level]))[0]))
        return np.full(slm.shape, level, dtype=slm.level_dtype)

    @property
    def dmd(self) -> DMDEncoder:
        """Encoder of the input DMD (fill fraction per input block)."""
        if self._dmd is None:
            slm = self.bench.slms["input"]
            self._dmd = DMDEncoder(self.bench.layouts["input"], slm.shape, on_level=slm.max_level,
                                   name="input")
        return self._dmd

    def realised_amplitudes(self, slm_name: str, amps) -> np.ndarray:
        """Amplitude fractions a phase panel realises for programmed ones (the SLM fit's
        transfer table when calibrated; the programmed values before)."""
        from calibration.slm_fit import realise_amplitudes, transfer_table
        return realise_amplitudes(transfer_table(self.fits.get(SLM_FIT_NAMES[slm_name])), amps)

    def realised_inputs(self, x) -> np.ndarray:
        """Input values as the DMD realises them (fill fractions)."""
        return self.dmd.realised_values(x)

    def show_inputs(self, x) -> None:
        """Show input values x in [0, 1] (n_in,) on the DMD."""
        x = np.asarray(x, dtype=float).reshape(1, -1)
        self.show("input", self.dmd.encode(x))

    def blank_all(self) -> None:
        """No signal light: zero-field frames on slm1, slm2 and probe_input, the input DMD all off."""
        for name in PHASE_SLMS:
            if name in self.bench.slms:
                self.show(name, self.zero_levels(name))
        dmd = self.bench.slms["input"]
        self.show("input", np.zeros(dmd.shape, dtype=dmd.level_dtype))

    # ------------------------------------------------------------------ local oscillator
    def lo_level(self, phase_rad: float) -> int:
        """``lo`` level of an LO phase (rad).

        An LO phase stepper: phase = 2 pi level / 2**bits.  An LO that is a region of a phase
        panel (:mod:`calibration.lo_region`): the level whose calibrated phase (relative to
        level 0) is nearest to ``phase_rad`` on the circle -- the panel's SLM fit (slm1's when
        the panel holds slm1), else the camera part's ``camera.lo_phase``; before either
        exists, the linear law above.
        """
        from calibration.lo_region import lo_phase_table
        n = 2 ** self.bench.slms["lo"].bit_depth
        table = lo_phase_table(self.bench, self.fits)
        if table is None:
            return int(round(float(phase_rad) / (2 * math.pi) * n)) % n
        return int(np.argmin(np.abs(np.angle(np.exp(1j * (table - float(phase_rad)))))))

    def set_lo(self, phase_rad: float) -> None:
        """Put every LO channel at ``phase_rad``."""
        lo = self.bench.slms["lo"]
        self.show("lo", np.full(lo.shape, self.lo_level(phase_rad), dtype=lo.level_dtype))

    def lo_cameras(self) -> list[str]:
        return [c for c in self.bench.lo_channels if c in self.bench.cameras]

    # ------------------------------------------------------------------ readout
    def centers_px(self, cam: str) -> np.ndarray:
        reg = self.need("registration", "registration")
        key = f"centers_px.{cam}"
        if key not in reg.arrays:
            raise ValueError(f"registration has no spot centres for {cam}; re-run the registration procedure")
        return np.asarray(reg.arrays[key], dtype=float)

    def roi_radius_px(self, cam: str) -> float:
        """ROI radius: the readout fit's, else 3 x the registration's PSF sigma, else 3 px."""
        ro = self.fits.get(f"readout.{cam}")
        if ro is not None and "roi_radius_px" in ro.quantities:
            return float(ro.quantities["roi_radius_px"].value)
        reg = self.fits.get("registration")
        if reg is not None:
            q = reg.quantities.get(f"{cam}.roi_radius_px")
            if q is not None:
                return float(q.value)
        return DEFAULT_ROI_RADIUS_PX

    def saturation_adu(self, cam: str, margin: float = 0.9) -> float:
        """Pixel value above which ``cam`` is no longer linear: ``margin`` of the EMVA saturation
        (full well) once the camera is calibrated, else ``margin`` of the ADC range."""
        camera = self.bench.cameras[cam]
        fit = self.fits.get(camera_fit_name(cam))
        if fit is not None and "saturation_e" in fit.quantities and "gain_adu_per_e" in fit.quantities:
            off = fit.quantities.get("dark_offset_adu")
            off = float(off.value) if off is not None else 0.0
            sat = off + margin * float(fit.quantities["saturation_e"].value * fit.quantities["gain_adu_per_e"].value)
            return min(sat, margin * camera.max_adu)
        return margin * camera.max_adu

    def flat_map(self, cam: str):
        """Relative pixel response (PRNU map, mean 1) of ``cam`` from its camera fit, or None."""
        fit = self.fits.get(camera_fit_name(cam))
        if fit is None or "prnu_map" not in fit.arrays:
            return None
        m = np.asarray(fit.arrays["prnu_map"], dtype=float)
        if m.shape != tuple(self.bench.cameras[cam].shape) or not np.all(np.isfinite(m)):
            return None
        return np.clip(m, 0.5, 1.5)

    def dark_map(self, cam: str):
        """Dark (offset) map of ``cam`` from the camera fits, or 0 before camera calibration."""
        fit = self.fits.get(camera_fit_name(cam))
        if fit is not None and "offset_map_adu" in fit.arrays:
            return np.asarray(fit.arrays["offset_map_adu"], dtype=float)
        return 0.0

    def readout(self, cam: str, radius_px: float | None = None) -> SpotReadout:
        """SpotReadout of ``cam`` (registration centres, ROI radius, camera dark map; gain 1 = ADU)."""
        radius = self.roi_radius_px(cam) if radius_px is None else float(radius_px)
        deps = (radius, self.fits.get("registration"), self.fits.get(camera_fit_name(cam)))
        hit = self._ro_cache.get(cam)
        if hit is not None and hit[0][0] == deps[0] and hit[0][1] is deps[1] and hit[0][2] is deps[2]:
            return hit[1]
        camera = self.bench.cameras[cam]
        ro = SpotReadout(self.centers_px(cam), camera.shape, radius_px=radius, dark_adu=self.dark_map(cam),
                         name=cam)
        self._ro_cache[cam] = (deps, ro)            # keeps the fits alive: identity stays meaningful
        return ro

    def lo_amplitude(self, cam: str) -> np.ndarray:
        """|LO| per spot of ``cam`` from its readout fit (power units of ``readout(cam)``)."""
        fit = self.need(f"readout.{cam}", "readout")
        return np.asarray(fit.arrays["lo_amplitude"], dtype=float)

    def spot_powers(self, cams: Iterable[str], phases_rad: Iterable[float], n_avg: int = 1) -> dict:
        """Mean spot powers at each LO phase: cam -> (n_phases, n_spots) (dark-subtracted ADU sums).

        The panels keep their frames; only the LO moves.  Frames are averaged per phase.  The
        largest pixel value seen per camera is left in ``peak_adu`` (saturation checks).
        """
        cams = list(cams)
        phases = list(phases_rad)
        out = {c: np.empty((len(phases), self.readout(c).n_spots)) for c in cams}
        for c in cams:
            self.peak_adu[c] = 0.0
        for i, ph in enumerate(phases):
            self.set_lo(ph)
            for c in cams:
                stack = self.grab_stack(c, n_avg)
                self.peak_adu[c] = max(self.peak_adu[c], float(stack.max()))
                out[c][i] = self.readout(c).power(stack).mean(axis=0)
        return out

    def homodyne_many(self, cams: Iterable[str], n_avg: int = 1) -> dict:
        """Signed homodyne values ``(P0 - Ppi) / (4 lo)`` per spot, cam -> (n_spots,)."""
        cams = list(cams)
        p = self.spot_powers(cams, (0.0, math.pi), n_avg)
        return {c: (p[c][0] - p[c][1]) / (4.0 * self.lo_amplitude(c)) for c in cams}

    def homodyne(self, cam: str, n_avg: int = 1) -> np.ndarray:
        """Signed homodyne value of every spot of ``cam`` (the contract's h), (n_spots,)."""
        return self.homodyne_many([cam], n_avg)[cam]

    def field_iq(self, cams: Iterable[str], n_avg: int = 1, return_powers: bool = False):
        """Complex spot fields from LO phases 0, pi/2, pi, 3 pi/2: cam -> (n_spots,) complex.

        ``E = ((P0 - Ppi) + i (P_pi/2 - P_3pi/2)) / (4 lo)``; the real part is the homodyne value.
        With ``return_powers`` also the (4, n_spots) powers per camera.
        """
        cams = list(cams)
        p = self.spot_powers(cams, (0.0, 0.5 * math.pi, math.pi, 1.5 * math.pi), n_avg)
        out = {c: ((p[c][0] - p[c][2]) + 1j * (p[c][1] - p[c][3])) / (4.0 * self.lo_amplitude(c)) for c in cams}
        return (out, p) if return_powers else out

    # ------------------------------------------------------------------ recording
    def record(self, stream: str, array, **meta) -> None:
        """Append raw data (an array) to the recorder's ``stream`` (no-op without a recorder)."""
        if self.recorder is None:
            return
        self.recorder.append(stream, np.asarray(array), **meta)

    def timed(self, name: str):
        """Context manager adding the wall time of a block to ``info['timings_s'][name]`` and its
        frames and bench time (:meth:`counters`) to ``info['costs'][name]``."""
        ctx = self

        class _T:
            def __enter__(self):
                self.t = time.perf_counter()
                self.c = ctx.counters()

            def __exit__(self, *exc):
                ctx.info["timings_s"][name] = ctx.info["timings_s"].get(name, 0.0) + time.perf_counter() - self.t
                cost = ctx.info.setdefault("costs", {}).setdefault(name, {})
                for k, v in ctx.counters().items():
                    cost[k] = cost.get(k, 0) + v - self.c[k]
        return _T()

    def __repr__(self):
        return f"CalContext(bench={self.bench.name!r}, fits={sorted(self.fits)})"


def _stale_count(camera) -> int:
    """Stale frames the physical camera behind ``camera`` discarded so far (a region's is its camera's)."""
    from hwio.regions import RegionCamera
    physical = camera.camera if isinstance(camera, RegionCamera) else camera
    return int(getattr(physical, "stale_frames", 0))
