"""Ground truth of a simulated bench: the ``[truth.*]`` tables of a bench file, parsed and checked.

Units: fields are normalised amplitudes at the vapour cell (z**2 = I / I_sat of the
cell; a weight-panel element of full amplitude times a full input gives field
``layer_gain``); photon fluxes in photons/s; charges in electrons (e-); pixel values
in ADU; angles in degrees where the key says ``_deg``, phases in rad.

Tables (all keys optional; an omitted key takes the ideal default below)::

    [truth]               seed (int, 0)
    [truth.camera]        qe (0.6), gain_adu_per_e (0.25), read_noise_e (2.0), dark_offset_adu (100),
                          dark_current_e_per_s (0), bits (= the camera's bit_depth), full_well_e (20000),
                          prnu (0; relative rms of the per-pixel response), hot_pixel_fraction (0),
                          hot_pixel_dark_e_per_s (0), background_photons_per_s (0, per pixel),
                          psf_sigma_px (1.5), flat_photons_per_s_per_level (300, per pixel)
                          [truth.camera.<camera>] overrides any of these for one camera; where
                          planes are regions of one physical camera, the sensor is described per
                          physical camera ([truth.camera.<physical>]) and every region uses it
    [truth.registration]  rotation_deg (0), scale (1), offset_px ([0, 0]);
                          [truth.registration.<camera>] overrides
    [truth.slm]           phase_range_rad (7.0) and gamma (1.0), or phase_table_rad (2**bit_depth
                          entries); crosstalk_px (0; Gaussian sigma of the complex-field blur);
                          illumination_waist (inf; Gaussian 1/e field radius as a fraction of the
                          layout extent);  [truth.slm.<slm>] overrides (input: illumination_waist only);
                          phase SLMs that are regions of one panel share its liquid crystal, so
                          their phase laws must agree; an ``lo`` region takes its panel's law
    [truth.absorber]      model ('thin'), alpha0 (3), i_sat (1) -- or, for 'tabulated', pump_table =
                          {z_in, z_out} and optional probe_table = {z, t}; spot_averaging (false),
                          probe_saturation (1.0), pump_leak (0)
    [truth.optics]        layer_gain (1 or [k1, k2]), probe_gain (0.3), output_crosstalk (0 or [c1, c2]),
                          stray_field (0 or [s1, s2], rms), power_scale (5e6 photons/s per unit |E|^2),
                          tap = {camera = factor} (1 each)
    [truth.lo]            amplitude (1.0, field units), spread (0, relative rms per spot);
                          [truth.lo.<camera>] overrides
    [truth.drift]         laser_power_per_hour (0, relative), alpha0_per_hour (0), power_jitter (0, rms)
    [truth.faults]        camera_timeout_rate, dropped_frame_rate, stale_frame_rate,
                          slm_write_failure_rate (0 each; probability per grab / per show)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np

from hwio.config import CAMERA_NAMES
from hwio.toml_table import TableReader

__all__ = ["CameraTruth", "RegistrationTruth", "SLMTruth", "AbsorberTruth", "OpticsTruth", "LOTruth",
           "DriftTruth", "FaultTruth", "Truth", "parse_truth", "PHASE_SLMS", "ABSORBER_MODELS"]

PHASE_SLMS = ("slm1", "slm2", "probe_input")
ILLUMINATED_SLMS = ("input",) + PHASE_SLMS
ABSORBER_MODELS = ("thin", "twolevel", "doppler", "tabulated")


@dataclass(frozen=True)
class CameraTruth:
    """Sensor of one camera (emva1288-style linear model)."""

    qe: float = 0.6
    gain_adu_per_e: float = 0.25
    read_noise_e: float = 2.0
    dark_offset_adu: float = 100.0
    dark_current_e_per_s: float = 0.0
    bits: int = 12
    full_well_e: float = 20000.0
    prnu: float = 0.0
    hot_pixel_fraction: float = 0.0
    hot_pixel_dark_e_per_s: float = 0.0
    background_photons_per_s: float = 0.0
    psf_sigma_px: float = 1.5
    flat_photons_per_s_per_level: float = 300.0


@dataclass(frozen=True)
class RegistrationTruth:
    """Layout frame -> camera pixels: ``cam = scale * R(rotation) @ p + offset`` on (row, col).

    ``R = [[cos, -sin], [sin, cos]]``: a positive angle turns the row axis towards +col.
    """

    rotation_deg: float = 0.0
    scale: float = 1.0
    offset_px: tuple[float, float] = (0.0, 0.0)

    def apply(self, positions_px) -> np.ndarray:
        """Camera (row, col) of layout-frame points ``positions_px`` (n, 2)."""
        p = np.asarray(positions_px, dtype=float)
        a = math.radians(self.rotation_deg)
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        return self.scale * p @ rot.T + np.asarray(self.offset_px, dtype=float)


@dataclass(frozen=True)
class SLMTruth:
    """Pixel physics of one panel."""

    phase_range_rad: float = 7.0
    gamma: float = 1.0
    phase_table_rad: tuple | None = None
    crosstalk_px: float = 0.0
    illumination_waist: float = math.inf

    def phase_table(self, bit_depth: int) -> np.ndarray:
        """Phase (rad) of every level 0 .. 2**bit_depth - 1."""
        if self.phase_table_rad is not None:
            return np.asarray(self.phase_table_rad, dtype=float)
        levels = np.arange(2 ** bit_depth, dtype=float)
        return self.phase_range_rad * (levels / levels[-1]) ** self.gamma


@dataclass(frozen=True)
class AbsorberTruth:
    """The vapour cell; ``make(alpha0)`` builds the law with twin.absorber.make_absorber."""

    model: str = "thin"
    alpha0: float = 3.0
    i_sat: float = 1.0
    pump_table: dict | None = None
    probe_table: dict | None = None
    spot_averaging: bool = False
    probe_saturation: float = 1.0
    pump_leak: float = 0.0

    def make(self, alpha0: float | None = None):
        from twin.absorber import make_absorber
        if self.model == "tabulated":
            kw = {"z_in": self.pump_table["z_in"], "z_out": self.pump_table["z_out"]}
            if self.probe_table is not None:
                kw.update(probe_z=self.probe_table["z"], probe_t=self.probe_table["t"])
            return make_absorber("tabulated", **kw)
        return make_absorber(self.model, alpha0=self.alpha0 if alpha0 is None else alpha0, i_sat=self.i_sat)


@dataclass(frozen=True)
class OpticsTruth:
    """Summing optics and light levels."""

    layer_gain: tuple[float, float] = (1.0, 1.0)
    probe_gain: float = 0.3
    output_crosstalk: tuple[float, float] = (0.0, 0.0)
    stray_field: tuple[float, float] = (0.0, 0.0)
    power_scale: float = 5e6
    tap: dict = field(default_factory=lambda: {c: 1.0 for c in CAMERA_NAMES})


@dataclass(frozen=True)
class LOTruth:
    """Homodyne local oscillator of one camera: amplitude (field units) and per-spot spread."""

    amplitude: float = 1.0
    spread: float = 0.0


@dataclass(frozen=True)
class DriftTruth:
    laser_power_per_hour: float = 0.0
    alpha0_per_hour: float = 0.0
    power_jitter: float = 0.0


@dataclass(frozen=True)
class FaultTruth:
    camera_timeout_rate: float = 0.0
    dropped_frame_rate: float = 0.0
    stale_frame_rate: float = 0.0
    slm_write_failure_rate: float = 0.0


@dataclass
class Truth:
    """Everything the simulated bench hides.  ``realised`` holds the seeded random draws
    (filled when the bench opens): ``stray_field`` {layer1, layer2} complex arrays,
    ``lo_amplitude`` {camera: (n_spots,)}, ``spot_positions_px`` {camera: (n, 2)} in camera pixels,
    ``illumination`` {slm: (n_rows, n_block_cols)}, ``phase_table_rad`` {slm: (levels,)},
    ``prnu_map`` and ``dark_current_map`` {camera: image-shaped}."""

    seed: int
    cameras: dict
    registration: dict
    slms: dict
    absorber: AbsorberTruth
    optics: OpticsTruth
    lo: dict
    drift: DriftTruth
    faults: FaultTruth
    realised: dict = field(default_factory=dict)
    #: sensor truth per physical camera (a standard camera of its own, or a camera holding regions)
    sensors: dict = field(default_factory=dict)
    #: true phase (rad) per level of the panel an ``lo`` region lies on (None: an LO stepper)
    lo_phase_table_rad: tuple | None = None


# ------------------------------------------------------------------------------------------ parsing
def _read_camera(r: TableReader, base: CameraTruth) -> CameraTruth:
    kw = {}
    pos = dict(lo=0, lo_open=True)
    for key, opts in (("qe", dict(lo=0, lo_open=True, hi=1)), ("gain_adu_per_e", pos), ("read_noise_e", dict(lo=0)),
                      ("dark_offset_adu", dict(lo=0)), ("dark_current_e_per_s", dict(lo=0)),
                      ("full_well_e", pos), ("prnu", dict(lo=0, hi=0.5)), ("hot_pixel_fraction", dict(lo=0, hi=1)),
                      ("hot_pixel_dark_e_per_s", dict(lo=0)), ("background_photons_per_s", dict(lo=0)),
                      ("psf_sigma_px", dict(lo=0.3)), ("flat_photons_per_s_per_level", dict(lo=0))):
        kw[key] = r.float(key, getattr(base, key), **opts)
    kw["bits"] = r.int("bits", base.bits, lo=1, hi=16)
    return CameraTruth(**kw)


def _read_registration(r: TableReader, base: RegistrationTruth) -> RegistrationTruth:
    return RegistrationTruth(rotation_deg=r.float("rotation_deg", base.rotation_deg, lo=-180, hi=180),
                             scale=r.float("scale", base.scale, lo=0, lo_open=True),
                             offset_px=tuple(r.numbers("offset_px", list(base.offset_px), length=2)))


def _read_slm(r: TableReader, base: SLMTruth) -> SLMTruth:
    kw = {"crosstalk_px": r.float("crosstalk_px", base.crosstalk_px, lo=0, hi=8),
          "illumination_waist": r.float("illumination_waist", base.illumination_waist, lo=0, lo_open=True,
                                        allow_inf=True)}
    gives_law = r.has("phase_range_rad") or r.has("gamma")
    if gives_law and r.has("phase_table_rad"):
        raise r.error("phase_table_rad", "cannot be combined with phase_range_rad/gamma; give one or the other")
    kw["phase_range_rad"] = r.float("phase_range_rad", base.phase_range_rad, lo=0, lo_open=True)
    kw["gamma"] = r.float("gamma", base.gamma, lo=0, lo_open=True)
    if r.has("phase_table_rad"):
        table = r.numbers("phase_table_rad")
        if len(table) < 2:
            raise r.error("phase_table_rad", "needs one phase per level (2**bit_depth entries)")
        kw["phase_table_rad"] = tuple(table)
    else:
        kw["phase_table_rad"] = None if gives_law else base.phase_table_rad
    return SLMTruth(**kw)


def _read_absorber(r: TableReader) -> AbsorberTruth:
    model = r.str("model", "thin", choices=ABSORBER_MODELS)
    kw: dict = {"model": model}
    if model == "tabulated":
        for key in ("alpha0", "i_sat"):
            if r.has(key):
                raise r.error(key, "does not apply to model 'tabulated' (the tables define the law)")
        pump = r.sub("pump_table", required=True)
        kw["pump_table"] = {"z_in": pump.numbers("z_in", lo=0), "z_out": pump.numbers("z_out")}
        pump.finish()
        probe = r.sub("probe_table")
        if probe is not None:
            kw["probe_table"] = {"z": probe.numbers("z", lo=0), "t": probe.numbers("t", lo=0)}
            probe.finish()
    else:
        for key in ("pump_table", "probe_table"):
            if r.has(key):
                raise r.error(key, f"is only for model 'tabulated' (model is {model!r})")
        kw["alpha0"] = r.float("alpha0", 3.0, lo=0)
        kw["i_sat"] = r.float("i_sat", 1.0, lo=0, lo_open=True)
    kw["spot_averaging"] = r.bool("spot_averaging", False)
    kw["probe_saturation"] = r.float("probe_saturation", 1.0, lo=0)
    kw["pump_leak"] = r.float("pump_leak", 0.0, lo=0)
    truth = AbsorberTruth(**kw)
    try:
        truth.make()
    except (ValueError, TypeError) as exc:
        raise r.error(None, f"does not define a valid absorber: {exc}") from None
    return truth


def _read_optics(r: TableReader) -> OpticsTruth:
    kw = {"layer_gain": r.number_or_pair("layer_gain", (1.0, 1.0), lo=0),
          "probe_gain": r.float("probe_gain", 0.3, lo=0),
          "output_crosstalk": r.number_or_pair("output_crosstalk", (0.0, 0.0), lo=0),
          "stray_field": r.number_or_pair("stray_field", (0.0, 0.0), lo=0),
          "power_scale": r.float("power_scale", 5e6, lo=0, lo_open=True)}
    tap = {c: 1.0 for c in CAMERA_NAMES}
    t = r.sub("tap")
    if t is not None:
        for cam in t.table:
            if cam not in CAMERA_NAMES:
                raise t.error(cam, f"is not a camera ({', '.join(CAMERA_NAMES)})")
            tap[cam] = t.float(cam, lo=0)
        t.finish()
    kw["tap"] = tap
    for key in ("layer_gain", "output_crosstalk", "stray_field"):
        if any(v < 0 for v in kw[key]):
            raise r.error(key, f"must be >= 0, got {list(kw[key])}")
    return OpticsTruth(**kw)


def _per_device(r: TableReader | None, names, reader, base, label_kind: str):
    """Defaults from ``r`` itself, then one sub-table per device overriding them."""
    if r is None:
        return {n: base for n in names}, base
    subs = r.subtables()
    for s in subs:
        if s not in names:
            raise r.error(s, f"is not a {label_kind} this table can describe ({', '.join(names)})")
    default = reader(r, base)
    r.finish()
    out = {}
    for n in names:
        if n in subs:
            sr = TableReader(r.label, f"{r.path}.{n}", r.table[n])
            out[n] = reader(sr, default)
            sr.finish()
        else:
            out[n] = default
    return out, default


def parse_truth(table: dict, label: str, cfg) -> Truth:
    """Parse and check the ``[truth]`` table of a bench file (see the module docstring).

    Parameters
    ----------
    table : the ``truth`` table (may be empty: an ideal bench).
    label : file name for messages.
    cfg : the :class:`hwio.config.BenchConfig` being built (device shapes, spots).

    Returns
    -------
    Truth : the bench's ground truth (hidden from calibration; tests read it with
        :func:`hwio.sim.testing.truth_of`).

    Raises
    ------
    ValueError : a table or key is unknown or out of range, or the truth contradicts the devices
        (ADC bits above the bit depth, a phase table of the wrong length, a spot off its camera).
    """
    top = TableReader(label, "truth", table)
    seed = top.int("seed", 0, lo=0)
    known = ("camera", "registration", "slm", "absorber", "optics", "lo", "drift", "faults")
    for key in top.table:
        if key not in known and key != "seed":
            raise top.error(key, f"is not a known truth table (known: seed, {', '.join(known)})")
    devs = cfg.devices
    sensors, cams = _parse_sensors(top, label, devs)
    reg, _ = _per_device(top.sub("registration"), CAMERA_NAMES, _read_registration, RegistrationTruth(),
                         "camera")
    slms, lo_table = _parse_slms(top, label, devs)
    ab_r = top.sub("absorber")
    absorber = _read_absorber(ab_r) if ab_r is not None else AbsorberTruth()
    if ab_r is not None:
        ab_r.finish()
    op_r = top.sub("optics")
    optics = _read_optics(op_r) if op_r is not None else OpticsTruth()
    if op_r is not None:
        op_r.finish()
    lo, _ = _per_device(top.sub("lo"), CAMERA_NAMES, _read_lo, LOTruth(), "camera")
    drift, faults = _parse_drift_faults(top, absorber)
    _check_spots_on_cameras(label, cfg, reg, cams)
    return Truth(seed=seed, cameras=cams, registration=reg, slms=slms, absorber=absorber, optics=optics,
                 lo=lo, drift=drift, faults=faults, sensors=sensors, lo_phase_table_rad=lo_table)


def _parse_sensors(top: TableReader, label: str, devs: dict) -> tuple[dict, dict]:
    """``[truth.camera]``: one sensor per physical camera (bits default to its bit_depth).

    Returns ({physical camera: CameraTruth}, {logical camera: CameraTruth of its sensor}).
    """
    cam_r = top.sub("camera")
    sensor_names = [c for c in CAMERA_NAMES if "region_of" not in devs[c]] + \
        [n for n, d in devs.items() if d["kind"] == "camera" and n not in CAMERA_NAMES and "region_of" not in d]
    if cam_r is not None:
        for c in cam_r.table:
            if isinstance(cam_r.table[c], dict) and c in devs and "region_of" in devs[c]:
                raise cam_r.error(c, f"describes a region of {devs[c]['region_of']!r}; the sensor belongs to the "
                                     f"physical camera: use [truth.camera.{devs[c]['region_of']}]")
    cam_tabs, _ = _per_device(cam_r, tuple(sensor_names), _read_camera, CameraTruth(bits=None), "camera")
    sensors = {}
    for c in sensor_names:
        bd = devs[c]["bit_depth"] or 16
        t = cam_tabs[c]
        sensors[c] = replace(t, bits=bd if t.bits is None else t.bits)
        if sensors[c].bits > bd:
            where = f"truth.camera.{c}" if cam_r is not None and c in cam_r.table else "truth.camera"
            raise ValueError(f"{label}: [{where}].bits is {sensors[c].bits} but {c} delivers {bd} bit "
                             f"(its bit_depth); the ADC cannot exceed the container, lower bits")
    return sensors, {c: sensors[devs[c].get("region_of", c)] for c in CAMERA_NAMES}


def _parse_slms(top: TableReader, label: str, devs: dict) -> tuple[dict, tuple | None]:
    """``[truth.slm]``: the panels' pixel physics, checked against the devices.

    Returns ({panel: SLMTruth}, the LO's phase table in rad when ``lo`` is a region of a phase
    panel, else None).
    """
    slm_r = top.sub("slm")
    slms, default_slm = _per_device(slm_r, ILLUMINATED_SLMS, _read_slm, SLMTruth(), "weight/input panel")
    if slm_r is not None and "input" in slm_r.table:
        bad = [k for k in slm_r.table["input"] if k != "illumination_waist"]
        if bad:
            raise ValueError(f"{label}: [truth.slm.input].{bad[0]} does not apply: the input DMD is a binary "
                             f"amplitude modulator (only illumination_waist)")

    def where(s):
        return f"truth.slm.{s}" if slm_r is not None and s in slm_r.table else "truth.slm"
    for s in PHASE_SLMS:
        t = slms[s]
        if t.phase_table_rad is not None:
            n = 2 ** devs[s]["bit_depth"]
            if len(t.phase_table_rad) != n:
                raise ValueError(f"{label}: [{where(s)}].phase_table_rad has {len(t.phase_table_rad)} entries but "
                                 f"{s} has {n} levels ({devs[s]['bit_depth']} bit)")
    # phase SLMs on one panel share its liquid crystal: one phase law per panel
    for s in PHASE_SLMS:
        panel = devs[s].get("region_of")
        for o in PHASE_SLMS[PHASE_SLMS.index(s) + 1:]:
            if panel is not None and devs[o].get("region_of") == panel and \
                    not np.array_equal(slms[s].phase_table(devs[s]["bit_depth"]),
                                       slms[o].phase_table(devs[o]["bit_depth"])):
                raise ValueError(f"{label}: [{where(o)}] gives {o} another phase law than {s}, but both are regions "
                                 f"of the panel {panel!r} (one liquid crystal); give phase_range_rad, gamma or "
                                 f"phase_table_rad once for the panel")
    lo_table = None
    lo_panel = devs["lo"].get("region_of")
    if lo_panel is not None:
        mates = [s for s in PHASE_SLMS if devs[s].get("region_of") == lo_panel]
        law = slms[mates[0]] if mates else default_slm
        lo_table = tuple(float(v) for v in law.phase_table(devs["lo"]["bit_depth"]))
    return slms, lo_table


def _read_lo(r: TableReader, b: LOTruth) -> LOTruth:
    """One camera's ``[truth.lo]`` entry: LO amplitude (sqrt(photons/s)) and its spread between spots."""
    return LOTruth(amplitude=r.float("amplitude", b.amplitude, lo=0, lo_open=True),
                   spread=r.float("spread", b.spread, lo=0, hi=0.5))


def _parse_drift_faults(top: TableReader, absorber: AbsorberTruth) -> tuple[DriftTruth, FaultTruth]:
    """``[truth.drift]`` (per-hour drifts, laser-power jitter) and ``[truth.faults]`` (fault rates)."""
    dr = top.sub("drift")
    drift = DriftTruth()
    if dr is not None:
        drift = DriftTruth(laser_power_per_hour=dr.float("laser_power_per_hour", 0.0),
                           alpha0_per_hour=dr.float("alpha0_per_hour", 0.0),
                           power_jitter=dr.float("power_jitter", 0.0, lo=0, hi=0.5))
        if drift.alpha0_per_hour != 0 and absorber.model == "tabulated":
            raise dr.error("alpha0_per_hour", "needs a parametric absorber (model 'tabulated' has no alpha0)")
        dr.finish()
    fr = top.sub("faults")
    faults = FaultTruth()
    if fr is not None:
        faults = FaultTruth(**{f.name: fr.float(f.name, 0.0, lo=0, hi=0.5) for f in fields(FaultTruth)})
        fr.finish()
    return drift, faults


def _check_spots_on_cameras(label: str, cfg, reg: dict, cams: dict) -> None:
    """Every spot must land on its camera with a 3-sigma PSF margin (ValueError otherwise)."""
    devs = cfg.devices
    for c in CAMERA_NAMES:
        shape = devs[c]["shape"]
        if shape is None or c not in cfg.spots:
            continue
        pos = reg[c].apply(cfg.spots[c].positions_px)
        m = 3.0 * cams[c].psf_sigma_px
        bad = np.flatnonzero((pos[:, 0] < m) | (pos[:, 1] < m) | (pos[:, 0] > shape[0] - 1 - m)
                             | (pos[:, 1] > shape[1] - 1 - m))
        if bad.size:
            k = int(bad[0])
            raise ValueError(f"{label}: [truth.registration] puts spot {k} of {c} at "
                             f"({pos[k, 0]:.1f}, {pos[k, 1]:.1f}) px, outside the {shape[0]}x{shape[1]} camera "
                             f"(keeping a 3-sigma PSF margin); change offset_px or the camera shape")
