"""Opened benches: :func:`open_bench` builds the devices and the geometry of a bench file.

The file's schema and its validation are in :mod:`hwio.config`; this module opens the devices
(simulated or real drivers, imported only when a bench that uses them is opened), resolves
regions of physical devices and describes a bench.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from hwio.devices import Camera, SLM, Timeline
from hwio.config import (BENCH_DIR, CAMERA_NAMES, REAL_BACKENDS, SLM_NAMES, BenchConfig, BenchSizes,  # noqa: F401
                         TableReader, load_bench_config, simulated_backend)

__all__ = ["open_bench", "open_config", "load_bench_config", "describe_bench", "Bench", "BenchSizes", "BenchConfig",
           "TableReader", "BENCH_DIR", "SLM_NAMES", "CAMERA_NAMES", "REAL_BACKENDS"]

# ---------------------------------------------------------------------------------------------
# The bench
# ---------------------------------------------------------------------------------------------
class Bench:
    """An opened bench: devices by kind, geometry, network sizes and the shared timeline.

    Attributes
    ----------
    name : bench name.
    path : the TOML file it came from.
    sizes : :class:`BenchSizes` (n_in, n_hidden, n_out).
    slms, cameras : dicts name -> device (:class:`hwio.devices.SLM` / :class:`~hwio.devices.Camera`);
        the logical devices (a region of a physical device is a :class:`hwio.regions.RegionSLM` /
        :class:`~hwio.regions.RegionCamera`).
    physical : dict name -> the physical devices that hold regions (not in ``slms``/``cameras``).
    layouts : dict SLM name -> :class:`hwio.layout.BlockLayout`.
    spots : dict camera name -> :class:`hwio.layout.SpotLayout`.
    timeline : the devices' shared :class:`hwio.devices.Timeline` (virtual clock on simulated benches).
    config : normalised configuration (plain data, no truth).
    simulated : whether any device is simulated.
    """

    def __init__(self, cfg: BenchConfig, slms: dict, cameras: dict, timeline: Timeline, sim=None,
                 physical: dict | None = None):
        self.name = cfg.name
        self.path = cfg.path
        self.sizes = cfg.sizes
        self.layouts = dict(cfg.layouts)
        self.spots = dict(cfg.spots)
        self.slms = slms
        self.cameras = cameras
        self.physical = dict(physical or {})
        self.timeline = timeline
        self.simulated = cfg.simulated
        self._cfg = cfg
        self._sim = sim
        self._closed = False

    @property
    def config(self) -> dict:
        return self._cfg.config

    @property
    def lo_channels(self) -> list[str]:
        """Cameras in the order of the ``lo`` device's columns (column blocks for an LO region)."""
        return list(self._cfg.devices["lo"]["channels"])

    def region_of(self, name: str) -> str | None:
        """The physical device that holds device ``name`` as a region (None for a device of its own)."""
        return self._cfg.devices.get(name, {}).get("region_of")

    def sharing(self, name: str) -> list[str]:
        """The other logical devices that are regions of the same physical device as ``name``."""
        parent = self.region_of(name)
        if parent is None:
            return []
        return [n for n, d in self._cfg.devices.items() if n != name and d.get("region_of") == parent]

    def describe(self) -> dict:
        """Plain-data summary (devices with their actual shapes, layouts, spots, sizes); no truth."""
        info = describe_config(self._cfg)
        for d in info["devices"]:
            dev = self.slms.get(d["name"]) or self.cameras.get(d["name"]) or self.physical.get(d["name"])
            d["shape"] = list(dev.shape)
            d["bit_depth"] = dev.bit_depth
        return info

    def close(self) -> None:
        """Close every device (idempotent)."""
        if self._closed:
            return
        self._closed = True
        errors = []
        for dev in list(self.cameras.values()) + list(self.slms.values()) + list(self.physical.values()):
            try:
                dev.close()
            except Exception as exc:  # close everything, report the first failure
                errors.append(f"{dev.name}: {exc}")
        if errors:
            raise RuntimeError(f"bench {self.name}: closing failed for {'; '.join(errors)}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        kind = "simulated" if self.simulated else "real"
        return (f"Bench({self.name!r}, {kind}, sizes={tuple(self.sizes)}, slms={list(self.slms)}, "
                f"cameras={list(self.cameras)})")


def _driver_class(cfg: BenchConfig, name: str, backend: str):
    module, cls = REAL_BACKENDS[backend][1].split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise ImportError(f"{cfg.label}: [devices.{name}].backend {backend!r} needs the driver module "
                              f"{module}, which is not installed in this checkout") from None
        raise
    return getattr(mod, cls)


def _real_plan(cfg: BenchConfig, name: str, dev: dict, timeline: Timeline):
    """Driver class and keyword arguments of a real device (validated, nothing opened yet)."""
    cls = _driver_class(cfg, name, dev["backend"])
    params = inspect.signature(cls.__init__).parameters
    accepted = {p for p in params if p != "self"}
    kwargs: dict[str, Any] = {}
    if "name" in accepted:
        kwargs["name"] = name
    if "timeline" in accepted:
        kwargs["timeline"] = timeline
    keys = ("shape", "bit_depth", "pixel_pitch_m", "settle_time_s") if dev["kind"] == "slm" else \
        ("exposure_s", "timeout_s", "max_stale_retries")
    for key in keys:
        if dev.get(key) is not None and key in accepted:
            kwargs[key] = tuple(dev[key]) if key == "shape" else dev[key]
    for key, value in dev.get("options", {}).items():
        if key not in accepted or key in ("name", "timeline"):
            raise ValueError(f"{cfg.label}: [devices.{name}.options].{key} is not a parameter of "
                             f"{cls.__name__} (accepted: {', '.join(sorted(accepted - {'name', 'timeline'}))})")
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    return cls, kwargs


def _open_real(cfg: BenchConfig, name: str, dev: dict, cls, kwargs: dict):
    device = cls(**kwargs)
    device.name = name
    if dev["kind"] == "camera" and dev.get("exposure_s") is not None and "exposure_s" not in kwargs:
        device.exposure_s = dev["exposure_s"]
    for key in ("shape", "bit_depth"):
        want = dev.get(key)
        have = list(device.shape) if key == "shape" else device.bit_depth
        if want is not None and want != have:
            device.close()
            raise ValueError(f"{cfg.label}: [devices.{name}].{key} is {want} but the {cls.__name__} "
                             f"reports {have}; fix the file or the device settings")
    return device


def open_bench(path_or_name) -> Bench:
    """Open a bench described by a TOML file.

    Parameters
    ----------
    path_or_name : a path to a ``.toml`` file, or the name of a built-in bench in
        ``hwio/benches`` (``"sim"`` is the embedded simulated bench).

    Returns
    -------
    Bench : use it as a context manager (or call ``close()``).

    Raises
    ------
    ValueError : the file is malformed (message names file and key).
    ImportError : a real driver or its vendor library is missing.
    """
    return open_config(load_bench_config(path_or_name))


def open_config(cfg: BenchConfig) -> Bench:
    """Open the devices of a validated bench configuration (see :func:`open_bench`).

    Parameters
    ----------
    cfg : from :func:`hwio.config.load_bench_config` or :func:`hwio.config.config_from_document`.

    Returns
    -------
    Bench : use it as a context manager (or call ``close()``).
    """
    sim = None
    if cfg.simulated:     # the simulated backend's engine builds its devices (hwio.backends)
        sim, timeline = simulated_backend("sim").open_engine(cfg)
    else:
        timeline = Timeline()
    plans = {name: _real_plan(cfg, name, dev, timeline)
             for name, dev in cfg.devices.items() if dev["backend"] != "sim" and "region_of" not in dev}
    holders = {dev["region_of"] for dev in cfg.devices.values() if "region_of" in dev}
    slms: dict[str, SLM] = {}
    cameras: dict[str, Camera] = {}
    physical: dict = {}
    opened = []
    try:
        for name, dev in cfg.devices.items():
            if "region_of" in dev:
                continue
            if dev["backend"] == "sim":
                device = sim.make_device(name, dev)
            else:
                device = _open_real(cfg, name, dev, *plans[name])
            opened.append(device)
            if name in holders:
                physical[name] = device
            else:
                (slms if dev["kind"] == "slm" else cameras)[name] = device
        regions = {}
        for name, dev in cfg.devices.items():
            if "region_of" in dev:
                regions[name] = _open_region(cfg, name, dev, physical[dev["region_of"]])
        # logical devices in the order of the file
        for name, dev in cfg.devices.items():
            if name in regions:
                (slms if dev["kind"] == "slm" else cameras)[name] = regions[name]
        slms = {n: slms[n] for n in cfg.devices if n in slms}
        cameras = {n: cameras[n] for n in cfg.devices if n in cameras}
    except BaseException:
        for d in opened:
            try:
                d.close()
            except Exception:
                pass
        raise
    if sim is not None:
        sim.attach(slms, cameras, physical)
    return Bench(cfg, slms, cameras, timeline, sim, physical)


def _open_region(cfg: BenchConfig, name: str, dev: dict, parent):
    """The region device ``name`` of the opened physical device ``parent``."""
    from hwio.regions import RegionCamera, RegionSLM, check_region
    problem = check_region(dev["region_px"], dev["shape"], parent.shape)
    if problem:
        raise ValueError(f"{cfg.label}: [devices.{name}].region_px: the region {problem} "
                         f"[devices.{dev['region_of']}] as the device reports it; move it or fix its shape")
    if dev["kind"] == "slm":
        return RegionSLM(name, parent, dev["region_px"], dev["shape"])
    return RegionCamera(name, parent, dev["region_px"], dev["shape"], exposure_s=dev.get("exposure_s"))


def describe_config(cfg: BenchConfig) -> dict:
    """Plain-data summary of a validated bench file (no devices opened, no truth).

    Parameters
    ----------
    cfg : a validated bench configuration.

    Returns
    -------
    dict : bench name, path, simulated, sizes, devices (shapes in px, times in s), layouts, spots
        (positions in px) and the LO channels.
    """
    devices = []
    for name, d in cfg.devices.items():
        entry = {"name": name, "kind": d["kind"], "backend": d["backend"],
                 "shape": d["shape"], "bit_depth": d["bit_depth"]}
        for key in ("settle_time_s", "pixel_pitch_m", "exposure_s", "timeout_s", "channels", "region_of",
                    "region_px"):
            if key in d:
                entry[key] = d[key]
        devices.append(entry)
    layouts = {}
    for k, v in cfg.layouts.items():
        layouts[k] = {**v.to_dict(), "extent_px": list(v.extent_px)}
    spots = {}
    for k, v in cfg.spots.items():
        spots[k] = {**v.to_dict(), "positions_px": v.positions_px.tolist()}
    return {"bench": cfg.name, "path": str(cfg.path), "simulated": cfg.simulated,
            "sizes": cfg.sizes._asdict(), "devices": devices, "layouts": layouts, "spots": spots,
            "lo_channels": list(cfg.devices["lo"]["channels"])}


def describe_bench(path_or_name) -> dict:
    """Summary of a bench file for ``optwin bench info`` (devices, backends, shapes, layouts; no truth).

    Parameters
    ----------
    path_or_name : a bench TOML file or a built-in bench name.

    Returns
    -------
    dict : as :func:`describe_config`.
    """
    return describe_config(load_bench_config(path_or_name))
