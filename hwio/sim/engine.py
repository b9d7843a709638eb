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

LO as a region of a phase panel (no LO stepper): the LO beam of channel c reflects off
column block c of the ``lo`` region; the camera sees its zero order, so ``exp(i theta_c)``
above becomes ``mean over the block's pixels of exp(i phi(level))`` with phi the panel's
TRUE phase law (the law of the phase SLMs that share the panel, else ``[truth.slm]``).  A
uniform block gives ``exp(i phi(level))``.

Physical devices holding regions (:mod:`hwio.regions`, ``region_of`` in the bench file):

* a logical SLM that is a region reads its levels from its panel's current frame
  (``panel.last_levels``) cropped to the region;
* a physical camera renders one frame for all of its regions: every plane (cam_z1, ...)
  places its spots, in its own region coordinates and registration, into its rectangle of
  the frame (photon flux per pixel); background light covers the whole frame; one sensor
  model (``[truth.camera.<physical>]``: gain, noise, PRNU, hot pixels, ...) digitises it.
  The laser-power jitter is drawn once per physical exposure, so all planes of one frame
  see the same laser power.

Flat lamp (``flat_source``, camera calibration; optional): a flip mirror.  Showing a frame on
``flat_source`` flips the lamp in front of every camera and blocks the laser; the cameras
then see a uniform ``flat_photons_per_s_per_level * level`` photons/s per pixel (level 0:
dark frames).  Showing a frame on any laser-path panel (input, slm1, slm2, probe_input, lo,
or a physical panel holding them) flips it out again.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

from hwio.config import CAMERA_NAMES
from hwio.devices import DeviceTimeout, Timeline
from hwio.sim.clock import VirtualClock
from hwio.sim.camera_physics import Sensor, psf_matrix
from hwio.sim.devices import SimCamera, SimSLM
from hwio.sim.faults import Drift, FaultInjector
from hwio.sim.first_order import panel_for
from hwio.sim.optics import NetworkOptics
from hwio.sim.slm_physics import AmplitudePanel, gaussian_illumination
from hwio.sim.truth import PHASE_SLMS, Truth

__all__ = ["SimEngine", "open_engine"]

LASER_SLMS = ("input", "slm1", "slm2", "probe_input", "lo")
#: the field each imaged plane shows
_PLANE_FIELD = {"cam_z1": "z1", "cam_a1": "a1", "cam_out": "z2", "cam_back": "d1"}
_PURPOSE = {"stray": 1, "lo": 2, "sensor": 3, "noise": 4, "faults": 5}
_DEVICE_INDEX = {n: i for i, n in enumerate(("input", "slm1", "slm2", "probe_input", "lo", "flat_source")
                                             + CAMERA_NAMES)}


class _CameraState:
    """One imaged plane (a logical camera): spots, PSF patches (region pixels), LO, tap."""

    def __init__(self, positions, psf, sensor, lo_amplitude, tap, lo_column, noise_rng):
        self.positions = positions
        self.psf = psf
        self.sensor = sensor
        self.lo_amplitude = lo_amplitude
        self.tap = tap
        self.lo_column = lo_column
        self.noise_rng = noise_rng
        self.last = None      # (image, timestamp) of the last delivered frame


class _PhysicalCamera:
    """A sensor holding several planes: (logical name, (row0, col0), (rows, cols)) each."""

    def __init__(self, sensor, noise_rng, planes):
        self.sensor = sensor
        self.noise_rng = noise_rng
        self.planes = planes
        self.last = None


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
        # the simulated hardware: every truth table but drift and faults, which describe how it
        # behaves over time, not which hardware it is
        hardware = {k: v for k, v in (getattr(cfg, "_truth_table", None) or {}).items() if k not in ("drift", "faults")}
        self._hardware_id = hashlib.sha256(json.dumps(hardware, sort_keys=True, default=str).encode()).hexdigest()
        self._devices = cfg.devices
        self._sizes = cfg.sizes
        self._seed = truth.seed
        realised = truth.realised
        realised.update(illumination={}, phase_table_rad={}, lo_amplitude={}, spot_positions_px={},
                        prnu_map={}, dark_current_map={})
        self._panels = self._build_panels(cfg, truth)
        self._optics = NetworkOptics(truth.optics, truth.absorber, cfg.sizes.n_hidden, cfg.sizes.n_out,
                                     self._rng("stray"))
        realised["stray_field"] = {"layer1": self._optics.stray1.copy(), "layer2": self._optics.stray2.copy()}
        # physical devices holding regions (after the standard ones in the random-stream indices)
        holders = [n for n in cfg.devices if any(d.get("region_of") == n for d in cfg.devices.values())]
        index = dict(_DEVICE_INDEX)
        index.update({n: len(_DEVICE_INDEX) + k for k, n in enumerate(holders)})
        # LO from a region of a phase panel: the panel's true phase law
        lo_dev = cfg.devices["lo"]
        self._lo_table = None
        if "region_of" in lo_dev:
            self._lo_table = np.asarray(truth.lo_phase_table_rad, dtype=float)
            self._lo_block = lo_dev["shape"][1] // len(lo_dev["channels"])
            realised["phase_table_rad"]["lo"] = self._lo_table
        self._cams = {}
        self._physical_cams = {}
        self._build_cameras(cfg, truth)
        self._build_region_cameras(cfg, truth, holders, index)
        self._faults = FaultInjector(truth.faults, {n: self._rng("faults", i) for n, i in index.items()})
        alpha0 = truth.absorber.alpha0 if truth.absorber.model != "tabulated" else 0.0
        self._drift = Drift(truth.drift, alpha0, timeline.now())
        self._slms = {}
        self._cache = {}
        self._zeros = {}
        self._seq = 0
        self._last_show = {}

    @property
    def truth(self) -> Truth:
        """The bench's ground truth (tests only: read it through :func:`hwio.sim.testing.truth_of`)."""
        return self._truth

    def _rng(self, purpose: str, index: int = 0) -> np.random.Generator:
        """The random stream of one purpose (stray, lo, sensor, noise, faults) and device index."""
        return np.random.default_rng([self._seed, _PURPOSE[purpose], index])

    def _build_panels(self, cfg, truth: Truth) -> dict:
        """The input DMD and the phase panels with their true illumination and phase laws."""
        realised = truth.realised
        panels = {}
        for name in ("input",) + PHASE_SLMS:
            dev, layout, st = cfg.devices[name], cfg.layouts[name], truth.slms[name]
            illum = gaussian_illumination(layout, st.illumination_waist)
            realised["illumination"][name] = illum
            if name == "input":
                panels[name] = AmplitudePanel(name, dev["shape"], 2 ** dev["bit_depth"] - 1, layout, illum)
            else:
                table = st.phase_table(dev["bit_depth"])
                realised["phase_table_rad"][name] = table
                panels[name] = panel_for(dev, name, dev["shape"], table, st.crosstalk_px, layout, illum)
        return panels

    def _lo_amplitudes(self, cfg, truth: Truth, cam: str, index: int, n: int) -> np.ndarray:
        """The LO amplitude of each of the ``n`` spots of ``cam`` (zero when no LO channel reaches it)."""
        lo_t = truth.lo[cam]
        lo_amp = lo_t.amplitude * (1.0 + lo_t.spread * self._rng("lo", index).standard_normal(n))
        lo_amp = np.maximum(lo_amp, 0.0)
        if cam not in cfg.devices["lo"]["channels"]:
            lo_amp = np.zeros(n)
        return lo_amp

    def _build_cameras(self, cfg, truth: Truth) -> None:
        """One imaged plane per simulated camera; a camera that is no region gets its own sensor."""
        realised = truth.realised
        channels = cfg.devices["lo"]["channels"]
        for i, cam in enumerate(CAMERA_NAMES):
            dev, ct = cfg.devices[cam], truth.cameras[cam]
            if dev["backend"] != "sim":
                continue
            pos = truth.registration[cam].apply(cfg.spots[cam].positions_px)
            lo_amp = self._lo_amplitudes(cfg, truth, cam, i, len(pos))
            column = channels.index(cam) if cam in channels else None
            psf = psf_matrix(pos, ct.psf_sigma_px, dev["shape"])
            realised["spot_positions_px"][cam] = pos
            realised["lo_amplitude"][cam] = lo_amp
            if "region_of" in dev:     # the sensor belongs to the physical camera
                self._cams[cam] = _CameraState(pos, psf, None, lo_amp, truth.optics.tap[cam], column, None)
                continue
            sensor = Sensor(ct, dev["shape"], dev["bit_depth"], self._rng("sensor", i))
            self._cams[cam] = _CameraState(pos, psf, sensor, lo_amp, truth.optics.tap[cam], column,
                                           self._rng("noise", i))
            realised["prnu_map"][cam] = sensor.prnu_map
            realised["dark_current_map"][cam] = sensor.dark_current_map
            self._physical_cams[cam] = _PhysicalCamera(sensor, self._cams[cam].noise_rng,
                                                       [(cam, (0, 0), tuple(dev["shape"]))])

    def _build_region_cameras(self, cfg, truth: Truth, holders: list, index: dict) -> None:
        """The sensor of every simulated physical camera that holds planes as regions."""
        realised = truth.realised
        for name in holders:
            dev = cfg.devices[name]
            if dev["kind"] != "camera" or dev["backend"] != "sim":
                continue
            sensor = Sensor(truth.sensors[name], dev["shape"], dev["bit_depth"], self._rng("sensor", index[name]))
            planes = [(c, tuple(cfg.devices[c]["region_px"]), tuple(cfg.devices[c]["shape"]))
                      for c in CAMERA_NAMES if cfg.devices[c].get("region_of") == name]
            self._physical_cams[name] = _PhysicalCamera(sensor, self._rng("noise", index[name]), planes)
            realised["prnu_map"][name] = sensor.prnu_map
            realised["dark_current_map"][name] = sensor.dark_current_map
            for c, (r0, c0), (nr, nc) in planes:
                realised["prnu_map"][c] = sensor.prnu_map[r0:r0 + nr, c0:c0 + nc]
                realised["dark_current_map"][c] = sensor.dark_current_map[r0:r0 + nr, c0:c0 + nc]

    # ------------------------------------------------------------------ devices
    def make_device(self, name: str, dev: dict):
        """Build the simulated device ``name`` from its normalised settings."""
        if dev["kind"] == "slm":
            device = SimSLM(name, dev["shape"], dev["bit_depth"], dev["pixel_pitch_m"], dev["settle_time_s"],
                            self._timeline, self)
        else:
            device = SimCamera(name, dev["shape"], dev["bit_depth"], dev["exposure_s"], dev["timeout_s"],
                               dev["readout_s"], dev["max_stale_retries"], self._timeline, self)
        # a serial number, as real drivers report one: the same simulated hardware (truth)
        # gives the same number, other hardware another (the truth itself stays hidden)
        device.serial = "sim-" + hashlib.sha256(f"{self._hardware_id}/{name}".encode()).hexdigest()[:12]
        return device

    def attach(self, slms: dict, cameras: dict, physical: dict | None = None) -> None:
        """Give the engine the bench's SLM objects (it reads their ``last_levels``; a region's
        levels are its panel's frame cropped to the region)."""
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
        slm = self._slms[name]
        panel = getattr(slm, "panel", None)
        if panel is not None:                     # a region: the panel's frame, cropped
            lv = panel.last_levels
            return self._zeros[name] if lv is None else slm.crop(lv)
        lv = slm.last_levels
        return self._zeros[name] if lv is None else lv

    def _elements(self, name: str) -> np.ndarray:
        lv = self._levels(name)
        hit = self._cache.get(name)
        region = getattr(self._slms[name], "panel", None) is not None
        if hit is not None and (hit[0] is lv or (region and np.array_equal(hit[0], lv))):
            return hit[1]
        fields = self._panels[name].element_fields(lv)
        self._cache[name] = (lv.copy() if region else lv, fields)
        return fields

    def _lamp_in(self) -> bool:
        flat = self._last_show.get("flat_source", 0)
        return flat > 0 and flat > max((v for n, v in self._last_show.items() if n != "flat_source"), default=0)

    def _fields(self, power: float, t_s: float, need: str = "all"):
        """The network's fields (z1, a1, z2, d1, leak) at relative laser power ``power`` and time
        ``t_s``; ``need`` names the one field a camera images (the others may be None)."""
        x = self._elements("input")[0, :self._sizes.n_in].real
        return self._optics.run(x, self._elements("slm1"), self._elements("slm2"),
                                self._elements("probe_input")[0, :self._sizes.n_out], power,
                                self._drift.alpha0_at(t_s), need=need)

    def _lo_factor(self, column: int) -> complex:
        """Zero order of LO channel ``column`` (unit modulus for a uniform block)."""
        lo_lv = self._levels("lo")
        if self._lo_table is None:
            theta = 2.0 * np.pi * float(lo_lv[0, column]) / 2 ** self._slms["lo"].bit_depth
            return np.exp(1j * theta)
        block = lo_lv[:, column * self._lo_block:(column + 1) * self._lo_block]
        return complex(np.mean(np.exp(1j * self._lo_table[block])))

    def _plane_flux(self, cam: str, st: _CameraState, f, power: float) -> np.ndarray:
        """Photons/s of every spot of plane ``cam`` for the fields ``f``."""
        field = getattr(f, _PLANE_FIELD[cam])
        if st.lo_column is not None:
            field = field + np.sqrt(power) * st.lo_amplitude * self._lo_factor(st.lo_column)
        intensity = np.abs(field) ** 2
        if cam == "cam_back":
            intensity = intensity + f.leak
        return self._truth.optics.power_scale * st.tap * intensity

    def _spot_flux(self, cam: str, st: _CameraState, t_s: float) -> np.ndarray:
        """Photons/s of every spot of camera ``cam`` at time ``t_s``."""
        power = self._drift.power(t_s, st.noise_rng)
        return self._plane_flux(cam, st, self._fields(power, t_s, _PLANE_FIELD[cam]), power)

    def _photon_flux(self, cam: str, pc: _PhysicalCamera, t_s: float) -> np.ndarray:
        ct = pc.sensor.truth
        shape = pc.sensor.shape
        if self._lamp_in():
            level = float(self._levels("flat_source")[0, 0])
            return np.full(shape, ct.flat_photons_per_s_per_level * level)
        if cam in self._cams:                                  # a camera of its own
            st = self._cams[cam]
            flux = st.psf @ self._spot_flux(cam, st, t_s)
            flux = flux.reshape(shape)
        else:                                                  # planes as regions of one sensor
            power = self._drift.power(t_s, pc.noise_rng)
            f = self._fields(power, t_s)
            flux = np.zeros(shape)
            for plane, (r0, c0), (nr, nc) in pc.planes:
                st = self._cams[plane]
                flux[r0:r0 + nr, c0:c0 + nc] = (st.psf @ self._plane_flux(plane, st, f, power)).reshape(nr, nc)
        if ct.background_photons_per_s:
            flux = flux + ct.background_photons_per_s
        return flux

    # ------------------------------------------------------------------ camera hook
    def grab(self, cam: str, exposure_s: float, readout_s: float, timeout_s: float):
        """Hook of SimCamera: one frame (image, timestamp) or a simulated fault."""
        st = self._physical_cams[cam]
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


def open_engine(cfg) -> tuple[SimEngine, Timeline]:
    """The engine and the device timeline of a bench with simulated devices.

    Parameters
    ----------
    cfg : the validated :class:`hwio.config.BenchConfig` (its truth parsed by
        :func:`hwio.sim.truth.parse_truth`).

    Returns
    -------
    (SimEngine, Timeline) : the timeline runs on a virtual clock (s) when every device is
        simulated, on the wall clock when real devices are mixed in.
    """
    if any(d["backend"] != "sim" for d in cfg.devices.values()):
        timeline = Timeline()
    else:
        clock = VirtualClock()
        timeline = Timeline(clock=clock.now, sleep=clock.advance)
    return SimEngine(cfg, cfg._truth, timeline), timeline
