"""Bench files (TOML): the schema, its parsing and validation into a :class:`BenchConfig`.

:func:`hwio.bench.open_bench` builds the devices and the geometry from it.

A bench file has these tables (see ``hwio/benches/sim.toml``)::

    [bench]                 name, n_in, n_hidden, n_out (network sizes), description
    [devices.<name>]        backend ("sim" or a real driver: "window", "pylon", "genicam",
                            "opencv"), shape = [rows, cols], bit_depth, and per kind
                            SLM:    pixel_pitch_m, settle_time_s  (lo also: channels = [cameras])
                            camera: exposure_s, timeout_s, readout_s, max_stale_retries
                            real backends only: [devices.<name>.options] (driver keyword arguments)
    [layout.<slm>]          BlockLayout: block_px, pitch_px, origin_px, guard_px, reference_col
                            (n_rows, n_cols follow from the sizes; given, they are checked)
    [spots.<camera>]        SpotLayout: pitch_px, origin_px, grid (n follows from the sizes)
    [truth] / [truth.*]     ground truth of a simulated bench (only with ``sim`` devices)

Device names are fixed by the optical design (``docs/dev/sim-bench-design.md``): SLMs
``input`` (DMD), ``slm1``, ``slm2``, ``probe_input``, ``lo``, ``flat_source``; cameras
``cam_z1``, ``cam_a1``, ``cam_out``, ``cam_back``.  A real bench may add devices of its
own when it names their ``kind``.  ``flat_source`` is optional (without it the camera
calibration uses the laser, :mod:`calibration.procedures.camera`).

Topology as data: a physical device may hold several logical ones as regions
(:mod:`hwio.regions`).  Declare the physical device under a name of its own with its
``kind`` (``slm`` or ``camera``) and backend, and each logical device as a region of it::

    [devices.cam]              # one camera imaging all four planes
    kind = "camera"
    backend = "sim"
    shape = [160, 160]
    bit_depth = 12
    exposure_s = 1e-3

    [devices.cam_z1]
    region_of = "cam"
    region_px = [0, 0]         # [row0, col0] of the region on the physical device
    shape = [80, 80]           # the region's size; [spots.cam_z1] positions are region pixels
    exposure_s = 1e-3          # cameras only: the region's own exposure (default: the camera's)

A region takes backend, bit depth, pixel pitch and settle time (SLMs) or grab timeout,
readout time and stale-frame retries (cameras) from its physical device; it must fit
inside it and regions of one device may not overlap.  Only standard devices can be
regions, and regions cannot hold regions.  ``lo`` is required, as its own phase stepper
(``shape = [1, n_channels]``) or, where a lab has no LO stepper, as a region of a phase
panel (the homodyne reference comes from the panel: the region is split into one block
of columns per channel, ``shape = [rows, k * n_channels]``, and the LO phase follows the
panel's calibrated phase response).  On a simulated bench the physical devices use the
``sim`` backend and ``[truth.camera.<physical camera>]`` describes the sensor.

Every problem in a file is reported as a one-line ``ValueError`` naming the file and
the key, e.g. ``sim.toml: [devices.slm1].bit_depth must be an integer, got 'eight'``.
Real drivers are imported only when a bench that uses them is opened.  A simulated backend
registers itself (:func:`register_backend`: its ``[truth]`` parser and engine factory); this
module loads it by name through :mod:`hwio.backends` and never imports it itself.
"""
from __future__ import annotations

import copy
import importlib
import tomllib
from pathlib import Path
from typing import Any, Callable, NamedTuple

from hwio.backends import BACKEND_MODULES
from hwio.layout import BlockLayout, SpotLayout
from hwio.toml_table import _MISSING, TableReader, _show

__all__ = ["load_bench_config", "read_bench_document", "config_from_document", "BenchConfig", "BenchSizes",
           "TableReader", "BENCH_DIR", "SLM_NAMES", "CAMERA_NAMES", "REAL_BACKENDS", "SimulatedBackend",
           "register_backend", "simulated_backend"]

BENCH_DIR = Path(__file__).resolve().parent / "benches"

SLM_NAMES = ("input", "slm1", "slm2", "probe_input", "lo", "flat_source")
CAMERA_NAMES = ("cam_z1", "cam_a1", "cam_out", "cam_back")
LO_CAMERAS_DEFAULT = CAMERA_NAMES

#: backend name -> (kind, "module:Class"); modules are imported only when used.
REAL_BACKENDS: dict[str, tuple[str, str]] = {
    "window": ("slm", "hwio.drivers.window_slm:WindowSLM"),
    "pylon": ("camera", "hwio.drivers.pylon_camera:PylonCamera"),
    "genicam": ("camera", "hwio.drivers.genicam_camera:GenICamCamera"),
    "opencv": ("camera", "hwio.drivers.opencv_camera:OpenCVCamera"),
    "pylon_emulator": ("camera", "hwio.emulator.camera:EmulatedPylonCamera"),   # optwin emulate (docs/emulator.md)
}


class SimulatedBackend(NamedTuple):
    """What a backend that simulates its devices in-process supplies (see :func:`register_backend`)."""

    #: (truth table, file label, BenchConfig) -> the parsed ground truth; raises ValueError
    parse_truth: Callable[[dict, str, Any], Any]
    #: (BenchConfig) -> (engine, hwio.devices.Timeline); the engine builds the devices
    open_engine: Callable[[Any], tuple[Any, Any]]


_SIMULATED: dict[str, SimulatedBackend] = {}


def register_backend(name: str, *, parse_truth: Callable, open_engine: Callable) -> None:
    """Register a simulated backend under its ``backend`` name (called by the backend's package).

    Parameters
    ----------
    name : the backend name bench files use (``"sim"``).
    parse_truth : ``(table, label, cfg) -> truth``: parses and checks the ``[truth]`` tables.
    open_engine : ``(cfg) -> (engine, timeline)``: the engine behind the devices of an opened
        bench (``engine.make_device(name, settings)``, ``engine.attach(slms, cameras, physical)``).
    """
    _SIMULATED[name] = SimulatedBackend(parse_truth, open_engine)


def simulated_backend(name: str) -> SimulatedBackend:
    """The hooks of the simulated backend ``name``, importing its package (:mod:`hwio.backends`) when needed.

    Parameters
    ----------
    name : the backend name (``"sim"``).

    Returns
    -------
    SimulatedBackend : its ``parse_truth`` and ``open_engine``.

    Raises
    ------
    ValueError : no simulated backend has that name.
    """
    if name not in _SIMULATED:
        if name not in BACKEND_MODULES:
            raise ValueError(f"no simulated backend {name!r}; known: {', '.join(map(repr, BACKEND_MODULES))}")
        importlib.import_module(BACKEND_MODULES[name])
        if name not in _SIMULATED:
            raise ImportError(f"importing {BACKEND_MODULES[name]} did not register the backend {name!r}")
    return _SIMULATED[name]


_TOP_TABLES = ("bench", "devices", "layout", "spots", "truth")
_COMMON_KEYS = ("backend", "kind", "shape", "bit_depth", "options")
_REGION_KEYS = ("region_of", "region_px")
#: settings a region takes from its physical device (per kind)
_INHERITED = {"slm": ("backend", "bit_depth", "pixel_pitch_m", "settle_time_s"),
              "camera": ("backend", "bit_depth", "timeout_s", "readout_s", "max_stale_retries")}
OPTIONAL_NAMES = ("flat_source",)
_SLM_KEYS = ("pixel_pitch_m", "settle_time_s", "channels")
_CAMERA_KEYS = ("exposure_s", "timeout_s", "readout_s", "max_stale_retries")


class BenchSizes(NamedTuple):
    """Network sizes of a bench: inputs, hidden neurons, outputs."""

    n_in: int
    n_hidden: int
    n_out: int


# ---------------------------------------------------------------------------------------------
# Config parsing
# ---------------------------------------------------------------------------------------------
class BenchConfig:
    """A validated bench file: sizes, device settings, layouts, spots (and raw truth tables).

    Build with :func:`load_bench_config`.  ``config`` holds no truth.
    """

    def __init__(self, *, name, path, label, sizes, devices, layouts, spots, truth_table, raw):
        self.name = name
        self.path = path
        self.label = label
        self.sizes = sizes
        self.devices = devices          # name -> dict of normalised settings
        self.layouts = layouts          # slm name -> BlockLayout
        self.spots = spots              # camera name -> SpotLayout
        self._truth_table = truth_table
        self._truth = None
        self._raw = raw

    @property
    def simulated(self) -> bool:
        """Whether any device uses the ``sim`` backend."""
        return any(d["backend"] == "sim" for d in self.devices.values())

    @property
    def config(self) -> dict:
        """The normalised configuration as plain data (no truth tables)."""
        return {
            "bench": {"name": self.name, "n_in": self.sizes.n_in, "n_hidden": self.sizes.n_hidden,
                      "n_out": self.sizes.n_out,
                      **({"description": self._raw["description"]} if "description" in self._raw else {})},
            "devices": copy.deepcopy(self.devices),
            "layout": {k: v.to_dict() for k, v in self.layouts.items()},
            "spots": {k: v.to_dict() for k, v in self.spots.items()},
        }


def _resolve(path_or_name) -> tuple[Path, str]:
    p = Path(path_or_name)
    if p.is_file():
        return p, (p.name if p.parent.resolve() == BENCH_DIR else str(path_or_name))
    name = str(path_or_name)
    if "/" not in name and "\\" not in name:
        stem = name[:-5] if name.endswith(".toml") else name
        cand = BENCH_DIR / f"{stem}.toml"
        if cand.is_file():
            return cand, cand.name
    known = sorted(f.stem for f in BENCH_DIR.glob("*.toml")) if BENCH_DIR.is_dir() else []
    raise ValueError(f"bench config {str(path_or_name)!r} not found: give a path to a .toml file or one "
                     f"of the built-in names ({', '.join(known) or 'none installed'})")


def _read_toml(path: Path, label: str) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{label}: not valid TOML ({exc}); fix the syntax") from None
    except UnicodeDecodeError:
        raise ValueError(f"{label}: not UTF-8 text; a bench file is TOML (save it as UTF-8)") from None
    except OSError as exc:
        raise ValueError(f"{label}: cannot read the bench file ({exc.strerror})") from None


def _parse_device(label: str, name: str, table, base_dir=None) -> dict:
    r = TableReader(label, f"devices.{name}", table)
    backend = r.str("backend", hint="'sim' or a driver: " + ", ".join(REAL_BACKENDS))
    if backend != "sim" and backend not in REAL_BACKENDS:
        raise r.error("backend", f"must be 'sim' or one of {', '.join(map(repr, REAL_BACKENDS))}, "
                                 f"got {backend!r}")
    fixed = "slm" if name in SLM_NAMES else "camera" if name in CAMERA_NAMES else None
    if backend == "sim" and not fixed and not r.has("kind"):
        raise r.error(None, f"the simulated bench has no device {name!r}; its devices are "
                            f"{', '.join(SLM_NAMES + CAMERA_NAMES)} (a physical device holding some of them "
                            f"as regions needs kind = 'slm' or 'camera')")
    kind = r.str("kind", fixed if fixed else _MISSING, choices=("slm", "camera"),
                 hint="'slm' or 'camera'; devices outside the standard set must say which")
    if fixed and kind != fixed:
        raise r.error("kind", f"must be {fixed!r} for the standard device {name!r}, got {kind!r}")
    if backend != "sim" and REAL_BACKENDS[backend][0] != kind:
        raise r.error("backend", f"{backend!r} drives a {REAL_BACKENDS[backend][0]}, but {name!r} is a {kind}")
    sim = backend == "sim"
    dev: dict[str, Any] = {"backend": backend, "kind": kind}
    shape = r.numbers("shape", _MISSING if sim else None, length=2, integer=True, lo=1,
                      hint="[rows, cols] in pixels")
    dev["shape"] = shape
    dev["bit_depth"] = r.int("bit_depth", (8 if kind == "slm" else 12) if sim else None, lo=1, hi=16)
    if kind == "slm":
        dev["pixel_pitch_m"] = r.float("pixel_pitch_m", 8e-6, lo=0, lo_open=True)
        dev["settle_time_s"] = r.float("settle_time_s", 0.0, lo=0)
        if name == "lo" or r.has("channels"):
            dev["channels"] = _parse_channels(r)
        if r.has("wavefront_map"):   # flatness map (hwio.wavefront), path relative to the bench file
            from hwio.wavefront import parse_wavefront_entry
            entry, _ = r._get("wavefront_map", None)
            dev["wavefront_map"] = parse_wavefront_entry(entry, base_dir, r.where("wavefront_map"))
        dev.update(_parse_encoding(r, name))
    else:
        dev["exposure_s"] = r.float("exposure_s", 1e-3, lo=0, lo_open=True)
        dev["timeout_s"] = r.float("timeout_s", 2.0, lo=0, lo_open=True)
        dev["readout_s"] = r.float("readout_s", 1e-3, lo=0)
        dev["max_stale_retries"] = r.int("max_stale_retries", 5, lo=0)
    if r.has("options"):
        if sim:
            raise r.error("options", "is only for real backends (driver keyword arguments); "
                                     "remove it for backend 'sim'")
        opts = r.sub("options")
        dev["options"] = copy.deepcopy(opts.table)
    r.finish()
    if name == "lo" and dev["shape"] is not None and dev["shape"] != [1, len(dev["channels"])]:
        raise r.error("shape", f"must be [1, {len(dev['channels'])}] (one LO phase per channel "
                               f"{dev['channels']}), got {dev['shape']}")
    if name == "flat_source" and dev["shape"] is not None and dev["shape"] != [1, 1]:
        raise r.error("shape", f"must be [1, 1] for the flat lamp, got {dev['shape']}")
    return dev


def _parse_encoding(r: TableReader, name: str) -> dict:
    """``encoding`` ('double_phase' or 'blazed', docs/encodings.md) and ``grating_period_px``; {} when unset."""
    if not (r.has("encoding") or r.has("grating_period_px")):
        return {}
    if name not in ("slm1", "slm2", "probe_input"):
        raise r.error("encoding" if r.has("encoding") else "grating_period_px",
                      "is only for the weight panels slm1, slm2 and probe_input; remove it")
    enc = r.str("encoding", "double_phase", choices=("double_phase", "blazed"))
    if enc != "blazed":
        if r.has("grating_period_px"):
            raise r.error("grating_period_px", "is only for encoding = 'blazed'; remove it or set the encoding")
        return {"encoding": enc}
    return {"encoding": enc, "grating_period_px": r.int("grating_period_px", 10, lo=3)}


def _parse_channels(r: TableReader) -> list:
    channels = r.strings("channels", list(LO_CAMERAS_DEFAULT))
    for c in channels:
        if c not in CAMERA_NAMES:
            raise r.error("channels", f"names unknown camera {c!r}; LO channels are cameras "
                                      f"({', '.join(CAMERA_NAMES)})")
    if len(set(channels)) != len(channels):
        raise r.error("channels", f"lists a camera twice: {channels}")
    return channels


def _parse_region(label: str, name: str, table) -> dict:
    """A standard device declared as a region of a physical device (settings it may set itself)."""
    r = TableReader(label, f"devices.{name}", table)
    fixed = "slm" if name in SLM_NAMES else "camera" if name in CAMERA_NAMES else None
    if fixed is None:
        raise r.error("region_of", f"is only for the standard devices ({', '.join(SLM_NAMES + CAMERA_NAMES)}); "
                                   f"{name!r} is not one of them")
    if name == "flat_source":
        raise r.error("region_of", "is not allowed: the flat lamp is a light source, not a panel region")
    parent = r.str("region_of", hint="name of the physical device")
    origin = r.numbers("region_px", length=2, integer=True, lo=0,
                       hint="[row0, col0] of the region's top-left pixel on the physical device")
    shape = r.numbers("shape", length=2, integer=True, lo=1, hint="[rows, cols] of the region in pixels")
    kind = r.str("kind", fixed, choices=("slm", "camera"))
    if kind != fixed:
        raise r.error("kind", f"must be {fixed!r} for the standard device {name!r}, got {kind!r}")
    for key in _INHERITED[kind] + ("options",):
        if r.has(key):
            raise r.error(key, f"is set by the physical device [devices.{parent}]; remove it here")
    dev: dict[str, Any] = {"kind": kind, "region_of": parent, "region_px": origin, "shape": shape}
    if kind == "slm":
        if name == "lo" or r.has("channels"):
            dev["channels"] = _parse_channels(r)
        dev.update(_parse_encoding(r, name))
    else:
        dev["exposure_s"] = r.float("exposure_s", None, lo=0, lo_open=True)
    r.finish()
    if name == "lo" and shape[1] % len(dev["channels"]):
        raise r.error("shape", f"has {shape[1]} columns, which do not split into one block per LO channel "
                               f"({len(dev['channels'])}: {dev['channels']}); use a multiple of "
                               f"{len(dev['channels'])}")
    return dev


def _resolve_regions(label: str, devices: dict) -> None:
    """Fill every region's inherited settings from its physical device; check fit and overlaps."""
    from hwio.regions import check_region, regions_overlap
    standard = SLM_NAMES + CAMERA_NAMES
    held: dict[str, list] = {}
    for name, d in devices.items():
        if "region_of" not in d:
            continue
        parent = d["region_of"]
        where = f"{label}: [devices.{name}].region_of"
        if parent not in devices:
            raise ValueError(f"{where} names no device {parent!r} of this bench; declare [devices.{parent}] "
                             f"with kind, backend and shape")
        pd = devices[parent]
        if "region_of" in pd:
            raise ValueError(f"{where} names {parent!r}, which is itself a region; regions cannot hold regions")
        if parent in standard:
            raise ValueError(f"{where} names the standard device {parent!r}; declare the physical device under "
                             f"a name of its own (e.g. [devices.panel] kind = '{pd['kind']}') and make "
                             f"{parent} a region of it too")
        if pd["kind"] != d["kind"]:
            raise ValueError(f"{where} names {parent!r}, a {pd['kind']}, but {name} is a {d['kind']}")
        for key in _INHERITED[d["kind"]]:
            d[key] = pd.get(key)
        if d["kind"] == "camera" and d["exposure_s"] is None:
            d["exposure_s"] = pd["exposure_s"]
        if pd["shape"] is not None:
            problem = check_region(d["region_px"], d["shape"], pd["shape"])
            if problem:
                raise ValueError(f"{label}: [devices.{name}].region_px: the region {problem} "
                                 f"[devices.{parent}]; move it or fix its shape")
        for other, o_origin, o_shape in held.get(parent, []):
            if regions_overlap(o_origin, o_shape, d["region_px"], d["shape"]):
                raise ValueError(f"{label}: [devices.{name}].region_px: the region overlaps {other} on {parent} "
                                 f"({other} at {o_origin} size {o_shape}, {name} at {d['region_px']} size "
                                 f"{d['shape']}); regions of one device may not overlap")
        held.setdefault(parent, []).append((name, d["region_px"], d["shape"]))
    for name, d in devices.items():
        if name not in standard and "region_of" not in d and d["backend"] == "sim" and name not in held:
            raise ValueError(f"{label}: [devices.{name}] is a simulated {d['kind']} that holds no region; make "
                             f"standard devices regions of it (region_of = {name!r}) or remove it")


def _layout_sizes(sizes: BenchSizes) -> dict[str, tuple[int, int]]:
    return {"input": (1, sizes.n_in), "slm1": (sizes.n_hidden, sizes.n_in),
            "slm2": (sizes.n_out, sizes.n_hidden), "probe_input": (1, sizes.n_out)}


def _spot_counts(sizes: BenchSizes) -> dict[str, int]:
    return {"cam_z1": sizes.n_hidden, "cam_a1": sizes.n_hidden, "cam_out": sizes.n_out,
            "cam_back": sizes.n_hidden}


def _parse_layout(label, name, table, expected, device) -> BlockLayout:
    r = TableReader(label, f"layout.{name}", table)
    n_rows = r.int("n_rows", expected[0] if expected else _MISSING, lo=1)
    n_cols = r.int("n_cols", expected[1] if expected else _MISSING, lo=1)
    if expected and (n_rows, n_cols) != tuple(expected):
        raise r.error("n_rows" if n_rows != expected[0] else "n_cols",
                      f"gives a {n_rows}x{n_cols} layout but the bench sizes need {expected[0]}x{expected[1]}; "
                      f"drop n_rows/n_cols or fix [bench]")
    kw = dict(block_px=tuple(r.numbers("block_px", length=2, integer=True, lo=1, hint="[rows, cols]")),
              pitch_px=tuple(r.numbers("pitch_px", length=2, integer=True, lo=1, hint="[rows, cols]")),
              origin_px=tuple(r.numbers("origin_px", [0, 0], length=2, integer=True, lo=0)),
              guard_px=r.int("guard_px", 0, lo=0),
              reference_col=r.bool("reference_col", False))
    r.finish()
    try:
        layout = BlockLayout(n_rows, n_cols, **kw)
        if device is not None and device["shape"] is not None:
            layout.check_fits(tuple(device["shape"]), name)
    except ValueError as exc:
        raise ValueError(f"{r.where()} {exc}") from None
    return layout


def _parse_spots(label, name, table, expected_n) -> SpotLayout:
    r = TableReader(label, f"spots.{name}", table)
    n = r.int("n", expected_n if expected_n else _MISSING, lo=1)
    if expected_n and n != expected_n:
        raise r.error("n", f"is {n} but the bench sizes give {name} {expected_n} spots")
    pitch = r.float("pitch_px", lo=0, lo_open=True, hint="spot spacing in layout pixels")
    origin = tuple(r.numbers("origin_px", [0.0, 0.0], length=2))
    grid = r.numbers("grid", None, length=2, integer=True, lo=1)
    r.finish()
    try:
        if grid is None:
            return SpotLayout.square(n, pitch_px=pitch, origin_px=origin)
        return SpotLayout(n=n, grid=tuple(grid), pitch_px=pitch, origin_px=origin)
    except ValueError as exc:
        raise ValueError(f"{r.where()} {exc}") from None


def _parse(doc: dict, path: Path, label: str) -> BenchConfig:
    for key in doc:
        if key not in _TOP_TABLES:
            raise ValueError(f"{label}: unknown table [{key}] (known: {', '.join(_TOP_TABLES)}); check the spelling")
        if not isinstance(doc[key], dict):
            raise ValueError(f"{label}: {key} must be a table [{key}], got {_show(doc[key])}")
    if "bench" not in doc:
        _fail_missing(label, "bench")
    b = TableReader(label, "bench", doc["bench"])
    name = b.str("name", path.stem)
    sizes = BenchSizes(b.int("n_in", lo=1, hint="number of network inputs"),
                       b.int("n_hidden", lo=1, hint="number of hidden neurons"),
                       b.int("n_out", lo=1, hint="number of outputs"))
    description = b.str("description", None)
    b.finish()

    if "devices" not in doc:
        _fail_missing(label, "devices")
    dr = TableReader(label, "devices", doc["devices"])
    devices = {}
    for dname in dr.table:
        tab = dr.table[dname]
        region = isinstance(tab, dict) and "region_of" in tab
        devices[dname] = _parse_region(label, dname, tab) if region else _parse_device(label, dname, tab, path.parent)
    for dname in SLM_NAMES + CAMERA_NAMES:
        if dname not in devices and dname not in OPTIONAL_NAMES:
            need = [n for n in SLM_NAMES if n not in OPTIONAL_NAMES]
            hint = ("; a lab without an LO stepper declares lo as a region of a phase panel "
                    "(region_of, region_px, shape)") if dname == "lo" else ""
            raise ValueError(f"{label}: missing device [devices.{dname}]; a bench needs "
                             f"{', '.join(need)} (SLMs) and {', '.join(CAMERA_NAMES)} (cameras), each its own "
                             f"device or a region of one{hint}")
    _resolve_regions(label, devices)

    need = _layout_sizes(sizes)
    lt = TableReader(label, "layout", doc.get("layout", {}))
    layouts = {}
    for sname, tab in lt.table.items():
        if sname not in devices or devices[sname]["kind"] != "slm":
            raise ValueError(f"{label}: [layout.{sname}] names no SLM of this bench "
                             f"(SLMs: {', '.join(n for n, d in devices.items() if d['kind'] == 'slm')})")
        if sname in ("lo", "flat_source"):
            raise ValueError(f"{label}: [layout.{sname}] is not allowed: {sname} has one pixel per channel")
        layouts[sname] = _parse_layout(label, sname, tab, need.get(sname), devices[sname])
    for sname in need:
        if sname not in layouts:
            raise ValueError(f"{label}: missing table [layout.{sname}] (block_px, pitch_px, origin_px, guard_px)")

    counts = _spot_counts(sizes)
    st = TableReader(label, "spots", doc.get("spots", {}))
    spots = {}
    for cname, tab in st.table.items():
        if cname not in devices or devices[cname]["kind"] != "camera":
            raise ValueError(f"{label}: [spots.{cname}] names no camera of this bench")
        spots[cname] = _parse_spots(label, cname, tab, counts.get(cname))
    for cname in counts:
        if cname not in spots:
            raise ValueError(f"{label}: missing table [spots.{cname}] (pitch_px, origin_px, grid)")

    truth = doc.get("truth")
    sim = any(d["backend"] == "sim" for d in devices.values())
    if truth is not None and not sim:
        raise ValueError(f"{label}: [truth] tables are only for benches with 'sim' devices; remove them")
    if sim:
        for dname, d in devices.items():
            for key in ("shape", "bit_depth"):
                if d[key] is None:
                    raise ValueError(f"{label}: [devices.{dname}].{key} is missing; a bench with simulated "
                                     f"devices needs the shape and bit depth of every device")
    raw = {"description": description} if description is not None else {}
    cfg = BenchConfig(name=name, path=path, label=label, sizes=sizes, devices=devices, layouts=layouts,
                      spots=spots, truth_table=truth if truth is not None else ({} if sim else None), raw=raw)
    if sim:
        cfg._truth = simulated_backend("sim").parse_truth(cfg._truth_table, label, cfg)
    return cfg


def _fail_missing(label, table):
    raise ValueError(f"{label}: missing table [{table}]")


def load_bench_config(path_or_name) -> BenchConfig:
    """Read and validate a bench file without opening any device.

    Parameters
    ----------
    path_or_name : path of a TOML file, or the name of a file in ``hwio/benches``
        (``"sim"`` -> ``hwio/benches/sim.toml``).

    Returns
    -------
    BenchConfig : the validated configuration.
    """
    return config_from_document(*read_bench_document(path_or_name))


def read_bench_document(path_or_name) -> tuple[dict, Path, str]:
    """The parsed TOML of a bench file, unchecked, with its path and the label messages use.

    Parameters
    ----------
    path_or_name : as for :func:`load_bench_config`.

    Returns
    -------
    (dict, Path, str) : the document, the file and its label (e.g. ``"sim.toml"``).
    """
    path, label = _resolve(path_or_name)
    return _read_toml(path, label), path, label


def config_from_document(doc: dict, path: Path, label: str) -> BenchConfig:
    """Validate a bench document (as :func:`read_bench_document` returns it, possibly edited).

    Parameters
    ----------
    doc : the TOML tables as a dict.
    path : the file it came from (relative paths in it are resolved against its folder).
    label : the name used in error messages.

    Returns
    -------
    BenchConfig : the validated configuration.
    """
    return _parse(doc, path, label)
