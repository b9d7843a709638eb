"""The simulated bench: SLM level frames in, camera images out (see docs/dev/sim-bench-design.md).

On every grab the engine reads the frames the panels show (``slm.last_levels``; element
fields are recomputed only when a frame changed), propagates the network at the current
virtual time (laser-power and alpha0 drift), adds the homodyne local oscillator of the
camera, renders the spots and digitises them with the camera's sensor model.

Light at camera c, spot k (photons/s, spread by the PSF):

    power_scale * tap[c] * ( |E_k + sqrt(P) LO_k exp(i theta_c)|^2 + leak_k ) + background per pixel

with E the camera's field (z1, a1, z2 or d1), LO_k = lo.amplitude * (1 + spread N_k) (real,
positive, fixed per spot), theta_c = 2 pi level / 2**bit_depth of column c of the ``lo``
device (columns in the order of ``[devices.lo].channels``), leak_k = pump_leak |a1_k|^2 on
cam_back only.

Flat lamp (``flat_source``, camera calibration): a flip mirror.  Showing a frame on
``flat_source`` flips the lamp in front of every camera and blocks the laser; the cameras
then see a uniform ``flat_photons_per_s_per_level * level`` photons/s per pixel (level 0:
dark frames).  Showing a frame on any laser-path panel (input, slm1, slm2, probe_input, lo)
flips it out again.
"""
from __future__ import annotations

import numpy as np

from hwio.bench import CAMERA_NAMES
from hwio.devices import DeviceTimeout
from hwio.sim.camera_physics import Sensor, psf_matrix
from hwio.sim.devices import SimCamera, SimSLM
from hwio.sim.faults import Drift, FaultInjector
from hwio.sim.optics import NetworkOptics
from hwio.sim.slm_physics import AmplitudePanel, PhasePanel, gaussian_illumination
from hwio.sim.truth import PHASE_SLMS, Truth

__all__ = ["SimEngine"]

LASER_SLMS = ("input", "slm1", "slm2", "probe_input", "lo")
_PURPOSE = {"stray": 1, "lo": 2, "sensor": 3, "noise": 4, "faults": 5}
_DEVICE_INDEX = {n: i for i, n in enumerate(("input", "slm1", "slm2", "probe_input", "lo", "flat_source")
                                             + CAMERA_NAMES)}


class _CameraState:
    def __init__(self, positions, psf, sensor, lo_amplitude, tap, lo_column, noise_rng):
        self.positions = positions
        self.psf = psf
        self.sensor = sensor
        self.lo_amplitude = lo_amplitude
        self.tap = tap
        self.lo_column = lo_column
        self.noise_rng = noise_rng
        self.last = None      # (image, timestamp) of the last delivered frame


class SimEngine:
    """Physics and bookkeeping behind the simulated devices of one bench.

    Parameters
    ----------
    cfg : validated :class:`hwio.bench.BenchConfig`.
    truth : its parsed :class:`hwio.sim.truth.Truth` (kept private).
    timeline : the bench's timeline (virtual clock unless real devices are mixed in).
    """

    def __init__(self, cfg, truth: Truth, timeline):
        self._truth = truth
        self._timeline = timeline
        self._devices = cfg.devices
        self._sizes = cfg.sizes
        seed = truth.seed

        def rng(purpose, index=0):
            return np.random.default_rng([seed, _PURPOSE[purpose], index])

        realised = truth.realised
        realised.update(illumination={}, phase_table_rad={}, lo_amplitude={}, spot_positions_px={},
                        prnu_map={}, dark_current_map={})
        # panels
        self._panels = {}
        for name in ("input",) + PHASE_SLMS:
            dev, layout, st = cfg.devices[name], cfg.layouts[name], truth.slms[name]
            illum = gaussian_illumination(layout, st.illumination_waist)
            realised["illumination"][name] = illum
            if name == "input":
                self._panels[name] = AmplitudePanel(name, dev["shape"], 2 ** dev["bit_depth"] - 1, layout, illum)
            else:
                table = st.phase_table(dev["bit_depth"])
                realised["phase_table_rad"][name] = table
                self._panels[name] = PhasePanel(name, dev["shape"], table, st.crosstalk_px, layout, illum)
        # network
        self._optics = NetworkOptics(truth.optics, truth.absorber, cfg.sizes.n_hidden, cfg.sizes.n_out,
                                     rng("stray"))
        realised["stray_field"] = {"layer1": self._optics.stray1.copy(), "layer2": self._optics.stray2.copy()}
        # cameras
        channels = cfg.devices["lo"]["channels"]
        self._cams = {}
        for i, cam in enumerate(CAMERA_NAMES):
            dev, ct = cfg.devices[cam], truth.cameras[cam]
            if dev["backend"] != "sim":
                continue
            pos = truth.registration[cam].apply(cfg.spots[cam].positions_px)
            n = len(pos)
            lo_t = truth.lo[cam]
            lo_amp = lo_t.amplitude * (1.0 + lo_t.spread * rng("lo", i).standard_normal(n))
            lo_amp = np.maximum(lo_amp, 0.0)
            if cam not in channels:
                lo_amp = np.zeros(n)
            sensor = Sensor(ct, dev["shape"], dev["bit_depth"], rng("sensor", i))
            self._cams[cam] = _CameraState(pos, psf_matrix(pos, ct.psf_sigma_px, dev["shape"]), sensor, lo_amp,
                                           truth.optics.tap[cam], channels.index(cam) if cam in channels else None,
                                           rng("noise", i))
            realised["spot_positions_px"][cam] = pos
            realised["lo_amplitude"][cam] = lo_amp
            realised["prnu_map"][cam] = sensor.prnu_map
            realised["dark_current_map"][cam] = sensor.dark_current_map
        self._faults = FaultInjector(truth.faults, {n: rng("faults", i) for n, i in _DEVICE_INDEX.items()})
        alpha0 = truth.absorber.alpha0 if truth.absorber.model != "tabulated" else 0.0
        self._drift = Drift(truth.drift, alpha0, timeline.now())
        self._slms = {}
        self._cache = {}
        self._zeros = {}
        self._seq = 0
        self._last_show = {}

    # ------------------------------------------------------------------ devices
    def make_device(self, name: str, dev: dict):
        """Build the simulated device ``name`` from its normalised settings."""
        if dev["kind"] == "slm":
            return SimSLM(name, dev["shape"], dev["bit_depth"], dev["pixel_pitch_m"], dev["settle_time_s"],
                          self._timeline, self)
        return SimCamera(name, dev["shape"], dev["bit_depth"], dev["exposure_s"], dev["timeout_s"],
                         dev["readout_s"], dev["max_stale_retries"], self._timeline, self)

    def attach(self, slms: dict, cameras: dict) -> None:
        """Give the engine the bench's SLM objects (it reads their ``last_levels``)."""
        self._slms = dict(slms)
        for name, slm in self._slms.items():
            self._zeros[name] = np.zeros(slm.shape, dtype=slm.level_dtype)

    def on_show(self, name: str) -> None:
        """Hook of SimSLM.show: may fail; records the show order (flat-lamp mirror)."""
        self._faults.check_show(name)
        self._seq += 1
        self._last_show[name] = self._seq

    # ------------------------------------------------------------------ physics
    def _levels(self, name: str) -> np.ndarray:
        lv = self._slms[name].last_levels
        return self._zeros[name] if lv is None else lv

    def _elements(self, name: str) -> np.ndarray:
        lv = self._levels(name)
        hit = self._cache.get(name)
        if hit is not None and hit[0] is lv:
            return hit[1]
        fields = self._panels[name].element_fields(lv)
        self._cache[name] = (lv, fields)
        return fields

    def _lamp_in(self) -> bool:
        flat = self._last_show.get("flat_source", 0)
        return flat > 0 and flat > max((self._last_show.get(n, 0) for n in LASER_SLMS), default=0)

    def _spot_flux(self, cam: str, st: _CameraState, t_s: float) -> np.ndarray:
        """Photons/s of every spot of camera ``cam`` at time ``t_s``."""
        power = self._drift.power(t_s, st.noise_rng)
        x = self._elements("input")[0, :self._sizes.n_in].real
        f = self._optics.run(x, self._elements("slm1"), self._elements("slm2"),
                             self._elements("probe_input")[0, :self._sizes.n_out], power,
                             self._drift.alpha0_at(t_s))
        field = {"cam_z1": f.z1, "cam_a1": f.a1, "cam_out": f.z2, "cam_back": f.d1}[cam]
        if st.lo_column is not None:
            lo_lv = self._levels("lo")
            theta = 2.0 * np.pi * float(lo_lv[0, st.lo_column]) / 2 ** self._slms["lo"].bit_depth
            field = field + np.sqrt(power) * st.lo_amplitude * np.exp(1j * theta)
        intensity = np.abs(field) ** 2
        if cam == "cam_back":
            intensity = intensity + f.leak
        return self._truth.optics.power_scale * st.tap * intensity

    def _photon_flux(self, cam: str, st: _CameraState, t_s: float) -> np.ndarray:
        ct = st.sensor.truth
        shape = st.sensor.shape
        if self._lamp_in():
            level = float(self._levels("flat_source")[0, 0])
            return np.full(shape, ct.flat_photons_per_s_per_level * level)
        flux = st.psf @ self._spot_flux(cam, st, t_s)
        flux = flux.reshape(shape)
        if ct.background_photons_per_s:
            flux = flux + ct.background_photons_per_s
        return flux

    # ------------------------------------------------------------------ camera hook
    def grab(self, cam: str, exposure_s: float, readout_s: float, timeout_s: float):
        """Hook of SimCamera: one frame (image, timestamp) or a simulated fault."""
        st = self._cams[cam]
        tl = self._timeline
        fault = self._faults.draw_grab(cam)
        if exposure_s + readout_s > timeout_s:
            tl.sleep(timeout_s)
            raise DeviceTimeout(
                f"{cam}: exposure {exposure_s:g} s + readout {readout_s:g} s exceed the grab timeout "
                f"{timeout_s:g} s; shorten the exposure or pass a longer timeout_s")
        if fault == "timeout":
            tl.sleep(timeout_s)
            raise FaultInjector.timeout_error(cam, timeout_s)
        if fault == "stale" and st.last is not None:
            tl.sleep(readout_s)
            return st.last
        t0 = tl.now()
        image = st.sensor.expose(self._photon_flux(cam, st, t0 + 0.5 * exposure_s), exposure_s, st.noise_rng)
        tl.sleep(exposure_s + readout_s)
        if fault == "dropped":
            raise FaultInjector.dropped_error(cam)
        st.last = (image, t0)
        return image, t0
