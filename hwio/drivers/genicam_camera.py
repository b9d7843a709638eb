"""Any GenICam/GenTL camera through harvesters (``pip install optwin[hardware]``).

The camera is reached through a GenTL producer (a ``.cti`` file from the camera
vendor).  Cameras opened with the same producer files share one Harvester (a producer
can be opened once per process); the device list is read when the first of them opens.  Linear radiometry settings are applied where the camera has the node:
ExposureAuto/GainAuto/BalanceWhiteAuto/BlackLevelAuto off, BlackLevel fixed, gamma 1,
LUT off.  Nodes the camera lacks are skipped: the simulated producer ``viky.cti``
shipped in the ``genicam`` wheel, for example, has no exposure or trigger nodes.

A producer is a shared library that runs in this process: its path comes from trusted
configuration (the bench file's ``cti`` option, or ``GENICAM_GENTL64_PATH``), must name an
existing regular file ending in ``.cti`` (:func:`check_producer`; ValueError otherwise,
before harvesters is asked to load anything) and is logged (logger
``hwio.drivers.genicam_camera``, level INFO) before it is loaded.

Trigger modes (``trigger``)
---------------------------
``"auto"`` (default)
    ``"software"`` when the camera offers a software FrameStart trigger, else ``"free"``.
``"software"``
    Each grab flushes queued buffers, executes TriggerSoftware and waits for that frame
    (timestamp = trigger time).
``"free"``
    Free-running acquisition: queued buffers are flushed and the next one returned with
    timestamp = arrival - exposure - frame period, so
    :meth:`hwio.devices.Camera.grab` can reject a frame that began before the SLM settled.
``"Line1"``, ...
    Hardware trigger on that input, timestamped like ``"free"``.
"""
from __future__ import annotations

import glob
import logging
import os
import re
import stat
import threading
import time

import numpy as np

from hwio.devices import Camera, DeviceError, DeviceTimeout, FrameError, Timeline
from hwio.drivers import one_line, require

__all__ = ["GenICamCamera", "mono_bits", "pick_mono_format", "snap_to_increment", "find_producers",
           "check_producer"]

_MONO = re.compile(r"^Mono(\d+)$")
_log = logging.getLogger(__name__)


def mono_bits(pixel_format: str) -> int:
    """Bits per pixel of a GenICam ``MonoN`` pixel format (``"Mono12p"`` -> 12)."""
    match = re.match(r"^Mono(\d+)", str(pixel_format))
    if not match:
        raise ValueError(f"pixel format {pixel_format!r} is not monochrome (MonoN)")
    return int(match.group(1))


def pick_mono_format(available: list[str], requested: str | None, name: str) -> str:
    """Choose the pixel format: ``requested`` if offered, else the deepest unpacked MonoN."""
    if requested is not None:
        if requested not in available:
            raise ValueError(f"{name}: pixel format {requested!r} not offered; choose one of "
                             + ", ".join(available))
        mono_bits(requested)
        return requested
    mono = [f for f in available if _MONO.match(f)]
    if not mono:
        raise DeviceError(f"{name}: camera offers no unpacked monochrome pixel format "
                          f"(offered: {', '.join(available) or 'none'}); pass pixel_format=")
    return max(mono, key=mono_bits)


def snap_to_increment(value: float, lo: float, hi: float, inc: float | None) -> float:
    """Clip ``value`` to [lo, hi] and round it to the node's grid ``lo + k * inc``."""
    value = min(max(float(value), lo), hi)
    if inc:
        value = lo + round((value - lo) / inc) * inc
        if value > hi:
            value -= inc
    return float(value)


# One Harvester per set of producer files, shared by the cameras of this process: a GenTL
# producer opens its system module once, so a second Harvester on the same .cti sees no
# devices.  Entries: key -> [harvester, number of open cameras].
_HARVESTERS: dict[tuple[str, ...], list] = {}
_HARVESTERS_LOCK = threading.Lock()


def _acquire_harvester(core, producers: list[str]):
    key = tuple(sorted(os.path.realpath(p) for p in producers))
    with _HARVESTERS_LOCK:
        entry = _HARVESTERS.get(key)
        if entry is None:
            h = core.Harvester()
            try:
                for f in producers:
                    _log.info("loading GenTL producer %s (native code named by the bench configuration)", f)
                    h.add_file(f, check_existence=True)
                h.update()
            except Exception:
                h.reset()
                raise
            entry = _HARVESTERS[key] = [h, 0]
        entry[1] += 1
        return key, entry[0]


def _release_harvester(key) -> None:
    with _HARVESTERS_LOCK:
        entry = _HARVESTERS.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _HARVESTERS[key]
            try:
                entry[0].reset()
            except Exception:
                pass


def check_producer(path) -> str:
    """The absolute path of a GenTL producer file, checked before anything loads it.

    A producer is a shared library: loading it runs its code in this process, so only a
    path that exists, is a regular file (a symbolic link to one is followed) and ends in
    ``.cti`` is accepted.  Which producer to load is the bench file's choice: bench files
    are trusted configuration.

    Raises
    ------
    ValueError : one line naming the path and what is wrong with it.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"GenICamCamera: cti must be the path of a GenTL producer file (.cti), got {path!r}")
    text = os.fspath(path)
    full = os.path.abspath(os.path.expanduser(text))
    if not text.lower().endswith(".cti"):
        raise ValueError(f"GenICamCamera: GenTL producer {text!r} does not end in .cti; give the vendor's "
                         f".cti file (a producer is a shared library; nothing else is loaded)")
    if not os.path.exists(full):
        raise ValueError(f"GenICamCamera: GenTL producer file not found: {full}; install the camera vendor's "
                         f"GenTL producer or fix cti in the bench file")
    mode = os.stat(full).st_mode
    if not stat.S_ISREG(mode):
        raise ValueError(f"GenICamCamera: GenTL producer {full} is not a regular file; give the vendor's .cti file")
    return full


def find_producers(cti: str | os.PathLike | list | None = None) -> list[str]:
    """GenTL producer files: ``cti`` (file or list) or all ``*.cti`` on GENICAM_GENTL64_PATH,
    each checked by :func:`check_producer` (ValueError when one is missing or not a ``.cti``
    file; DeviceError when none is given and none is on the path)."""
    if cti is None:
        dirs = os.environ.get("GENICAM_GENTL64_PATH", "") or os.environ.get("GENICAM_GENTL32_PATH", "")
        files = sorted(f for d in dirs.split(os.pathsep) if d for f in glob.glob(os.path.join(d, "*.cti")))
        if not files:
            raise DeviceError("GenICamCamera: no GenTL producer given and none on GENICAM_GENTL64_PATH; "
                              "pass cti='/path/to/vendor.cti'")
    else:
        files = [cti] if isinstance(cti, (str, os.PathLike)) else list(cti) if isinstance(cti, (list, tuple)) \
            else [cti]
        if not files:
            raise ValueError("GenICamCamera: cti is an empty list; give the path of a GenTL producer file (.cti)")
    return [check_producer(f) for f in files]


class GenICamCamera(Camera):
    """A GenICam camera opened through harvesters.

    Parameters
    ----------
    cti : GenTL producer file(s) (``.cti``, checked by :func:`check_producer`); default every
        ``*.cti`` on GENICAM_GENTL64_PATH.
    serial : serial number of the camera; default the ``index``-th device found.
    index : position in the device list when ``serial`` is not given.
    name : device name (default ``"genicam-<serial>"``).
    exposure_s : initial exposure in seconds; None keeps the camera's (NaN if unknown).
    timeout_s : default grab timeout in seconds.
    pixel_format : e.g. ``"Mono12"``; default the deepest unpacked MonoN format.
    black_level : BlackLevel value (camera units) to fix; None fixes the present one.
    gain : Gain value (camera units, usually dB); None keeps the present one.
    roi : (row0, col0, rows, cols) sensor window; None keeps the camera's.
    trigger : ``"auto"``, ``"software"``, ``"free"`` or a line name (module docstring).
    num_buffers : buffers announced to the producer.
    timeline, max_stale_retries : see :class:`hwio.devices.Camera`.
    """

    def __init__(self, cti: str | list | None = None, *, serial: str | None = None, index: int = 0,
                 name: str | None = None, exposure_s: float | None = None, timeout_s: float = 2.0,
                 pixel_format: str | None = None, black_level: float | None = None,
                 gain: float | None = None, roi: tuple[int, int, int, int] | None = None,
                 trigger: str = "auto", num_buffers: int = 4,
                 timeline: Timeline | None = None, max_stale_retries: int = 5):
        core = require("harvesters.core", "GenICamCamera")
        self._genapi = require("genicam.genapi", "GenICamCamera")
        if not isinstance(trigger, str) or not trigger:
            raise ValueError(f"trigger must be 'auto', 'software', 'free' or a line name, got {trigger!r}")
        producers = find_producers(cti)
        self._harvester_key = None
        self._ia = None
        self._harvester_key, h = _acquire_harvester(core, producers)
        try:
            infos = list(h.device_info_list)
            if not infos:
                raise DeviceError(f"GenICamCamera: no camera found through {', '.join(producers)}; "
                                  f"check cable/power and the producer")
            if serial is not None:
                serials = [str(i.serial_number) for i in infos]
                if str(serial) not in serials:
                    raise DeviceError(f"GenICamCamera: no camera with serial {serial!r}; "
                                      f"found {', '.join(serials)}")
                pos = serials.index(str(serial))
            else:
                if not 0 <= int(index) < len(infos):
                    raise DeviceError(f"GenICamCamera: camera index {index} out of range; "
                                      f"{len(infos)} camera(s) found")
                pos = int(index)
            info = infos[pos]
            name = name or f"genicam-{info.serial_number}"
            try:
                self._ia = h.create(pos)
            except Exception as exc:
                raise DeviceError(f"{name}: cannot open {info.display_name} (in use?): "
                                  f"{one_line(exc)}") from None
            self._nm = self._ia.remote_device.node_map
            fmt = self._configure(name, pixel_format, black_level, gain, roi, trigger)
            shape = (int(self._nm.Height.value), int(self._nm.Width.value))
            super().__init__(name, shape, bit_depth=mono_bits(fmt), exposure_s=float("nan"),
                             timeout_s=timeout_s, timeline=timeline, max_stale_retries=max_stale_retries)
            self.pixel_format = fmt
            self.serial = str(info.serial_number)
            self.model = str(info.model)
            self.last_frame_id: int | None = None
            if exposure_s is None:
                node = self._exposure_node()
                self._exposure_s = float(node.value) * 1e-6 if node is not None else float("nan")
            else:
                self.exposure_s = exposure_s
            self._ia.num_buffers = max(int(num_buffers), int(self._ia.min_num_buffers))
            self._ia.start()
        except BaseException:
            self.close()
            raise

    # -- node helpers ------------------------------------------------------------------------
    def _node(self, name: str):
        try:
            node = getattr(self._nm, name)
        except Exception:
            return None
        try:
            return node if self._genapi.is_available(node) else None
        except Exception:
            return None

    def _writable(self, name: str):
        node = self._node(name)
        return node if node is not None and self._genapi.is_writable(node) else None

    def _set(self, name: str, value) -> bool:
        node = self._writable(name)
        if node is None:
            return False
        node.value = value
        return True

    def _entries(self, name: str) -> list[str]:
        node = self._node(name)
        return list(node.symbolics) if node is not None else []

    @property
    def handle(self):
        """The underlying ``harvesters.core.ImageAcquirer`` (for vendor-specific settings)."""
        return self._ia

    def _configure(self, name, pixel_format, black_level, gain, roi, trigger) -> str:
        fmt = pick_mono_format(self._entries("PixelFormat"), pixel_format, name)
        self._set("PixelFormat", fmt)
        if roi is not None:
            try:
                row0, col0, rows, cols = (int(v) for v in roi)
                self._set("OffsetX", 0)
                self._set("OffsetY", 0)
                self._set("Width", cols)
                self._set("Height", rows)
                self._set("OffsetX", col0)
                self._set("OffsetY", row0)
            except (TypeError, ValueError):
                raise ValueError(f"{name}: roi must be (row0, col0, rows, cols), got {roi!r}") from None
            except Exception as exc:
                raise ValueError(f"{name}: roi {roi} rejected by the camera: "
                                 f"{one_line(exc)}") from None
        for auto in ("ExposureAuto", "GainAuto", "BalanceWhiteAuto", "BlackLevelAuto"):
            if "Off" in self._entries(auto):
                self._set(auto, "Off")
        if "All" in self._entries("BlackLevelSelector"):
            self._set("BlackLevelSelector", "All")
        node = self._writable("BlackLevel")
        if node is not None:
            node.value = node.value if black_level is None else black_level
        if gain is not None and not self._set("Gain", float(gain)):
            raise ValueError(f"{name}: this camera has no writable Gain node; leave gain=None")
        self._set("GammaEnable", False)
        if self._writable("Gamma") is not None:
            self._set("Gamma", 1.0)
        self._set("LUTEnable", False)
        if "Timed" in self._entries("ExposureMode"):
            self._set("ExposureMode", "Timed")
        if "Continuous" in self._entries("AcquisitionMode"):
            self._set("AcquisitionMode", "Continuous")
        selectors = self._entries("TriggerSelector")
        sources = self._entries("TriggerSource")
        if trigger == "auto":
            has_sw = ("FrameStart" in selectors and "Software" in sources
                      and self._node("TriggerSoftware") is not None)
            trigger = "software" if has_sw else "free"
        self.trigger = trigger
        for sel in selectors:
            self._set("TriggerSelector", sel)
            self._set("TriggerMode", "Off")
        if trigger != "free":
            source = "Software" if trigger == "software" else trigger
            if "FrameStart" not in selectors or source not in sources:
                raise ValueError(f"{name}: trigger {trigger!r} not offered (sources: "
                                 f"{', '.join(sources) or 'none'}); use trigger='free'")
            self._set("TriggerSelector", "FrameStart")
            self._set("TriggerMode", "On")
            self._set("TriggerSource", source)
        return fmt

    def _exposure_node(self):
        for node_name in ("ExposureTime", "ExposureTimeAbs"):
            node = self._node(node_name)
            if node is not None:
                return node
        return None

    # -- Camera hooks -------------------------------------------------------------------------
    def _exposure_range_hw(self) -> tuple[float, float]:
        self._check_open()
        node = self._exposure_node()
        if node is None:
            return (0.0, float("inf"))
        return (float(node.min) * 1e-6, float(node.max) * 1e-6)

    def _set_exposure_hw(self, exposure_s: float) -> float:
        self._check_open()
        node = self._exposure_node()
        if node is None or not self._genapi.is_writable(node):
            raise DeviceError(f"{self.name}: camera has no writable ExposureTime node; "
                              f"leave exposure_s=None for this camera")
        lo, hi = float(node.min), float(node.max)
        value = exposure_s * 1e6
        if value < lo * (1 - 1e-9) or value > hi * (1 + 1e-9):
            raise ValueError(f"{self.name}: exposure {exposure_s:.6g} s outside the camera range "
                             f"{lo * 1e-6:.6g}..{hi * 1e-6:.6g} s")
        try:
            inc = float(node.inc) if node.has_inc() else None
        except Exception:
            inc = None
        node.value = snap_to_increment(value, lo, hi, inc)
        return float(node.value) * 1e-6

    def _check_open(self) -> None:
        if self._ia is None:
            raise DeviceError(f"{self.name}: camera is closed; open a new GenICamCamera")

    def _frame_period_s(self) -> float:
        for node_name in ("ResultingFrameRate", "AcquisitionFrameRate"):
            node = self._node(node_name)
            try:
                rate = float(node.value) if node is not None else 0.0
            except Exception:
                rate = 0.0
            if rate > 0:
                return 1.0 / rate
        return 0.0

    def _flush(self) -> int:
        flushed = 0
        while True:
            buf = self._ia.try_fetch(timeout=1e-4)   # timeout 0 would wait forever
            if buf is None:
                return flushed
            buf.queue()
            flushed += 1

    def _grab_hw(self, timeout_s: float) -> tuple[np.ndarray, float | None]:
        self._check_open()
        deadline = time.monotonic() + timeout_s
        t_start = None
        try:
            self._flush()
            if self.trigger == "software":
                t_start = self.timeline.now()
                self._nm.TriggerSoftware.execute()
            buf = self._ia.try_fetch(timeout=max(deadline - time.monotonic(), 1e-3))
        except Exception as exc:
            raise DeviceError(f"{self.name}: grab failed ({type(exc).__name__}: "
                              f"{one_line(exc)}); camera unplugged?") from None
        if buf is None:
            raise DeviceTimeout(f"{self.name}: no frame within {timeout_s:.3g} s (trigger {self.trigger!r}); "
                                f"check acquisition, triggering and cabling")
        try:
            comps = buf.payload.components if buf.payload is not None else []
            if not comps:
                raise FrameError(f"{self.name}: buffer without image data (chunk-only payload?)")
            comp = comps[0]
            data = np.asarray(comp.data)
            if data.size != comp.width * comp.height:
                raise FrameError(f"{self.name}: {data.size} pixels for a {comp.height}x{comp.width} "
                                 f"frame ({comp.data_format}); use a MonoN pixel format")
            image = data.reshape(comp.height, comp.width).copy()
            try:
                self.last_frame_id = int(buf.frame_id)
            except Exception:
                self.last_frame_id = None
        finally:
            buf.queue()
        if t_start is None:
            exposure = self._exposure_s if np.isfinite(self._exposure_s) else 0.0
            t_start = self.timeline.now() - exposure - self._frame_period_s()
        return image, t_start

    def close(self) -> None:
        """Stop acquisition and release camera and producer (idempotent)."""
        ia, self._ia = self._ia, None
        key, self._harvester_key = self._harvester_key, None
        if ia is not None:
            try:
                ia.stop()
            except Exception:
                pass
            try:
                ia.destroy()
            except Exception:
                pass
        if key is not None:
            _release_harvester(key)
