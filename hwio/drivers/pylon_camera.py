"""Basler cameras through pypylon (``pip install optwin[hardware]``).

Linear radiometry settings applied at open (each only where the camera has the node):
ExposureAuto/GainAuto/BalanceWhiteAuto off, BlackLevel fixed, gamma 1 and LUT off,
ExposureMode Timed.  Every trigger selector is switched off except FrameStart.

Trigger modes (``trigger``)
---------------------------
``"software"`` (default)
    Each grab flushes queued frames, issues one software trigger and waits for that
    frame, so every frame starts exposing after the call (timestamp = trigger time).
``"free"``
    Free-running camera with pylon's LatestImageOnly strategy; queued frames are
    flushed and the next frame is returned with timestamp = arrival - exposure -
    frame period (so :meth:`hwio.devices.Camera.grab` can reject a frame that started
    before the SLM settled).
``"Line1"``, ``"Line2"``, ...
    Hardware trigger on that input; timestamped like ``"free"``.

The emulated camera of pylon (environment variable ``PYLON_CAMEMU=1`` set before
pypylon is imported) works with all modes.
"""
from __future__ import annotations

import time

import numpy as np

from hwio.devices import Camera, DeviceError, DeviceTimeout, FrameError, Timeline
from hwio.drivers import one_line, require
from hwio.drivers.genicam_camera import mono_bits, pick_mono_format, snap_to_increment

__all__ = ["PylonCamera"]


def _ms(seconds: float) -> int:
    return max(1, int(np.ceil(seconds * 1000.0)))


class PylonCamera(Camera):
    """A Basler camera opened through pypylon.

    Parameters
    ----------
    serial : serial number of the camera; default: the ``index``-th camera found.
    index : position in pylon's device list when ``serial`` is not given.
    name : device name (default ``"pylon-<serial>"``).
    exposure_s : initial exposure in seconds (None keeps the camera's value).
    timeout_s : default grab timeout in seconds.
    pixel_format : e.g. ``"Mono12"``; default the deepest unpacked MonoN format.
    black_level : BlackLevel node value (camera units) to fix; None fixes the present one.
    gain : Gain node value (camera units, usually dB); None keeps the present one.
    roi : (row0, col0, rows, cols) sensor window; None keeps the camera's.
    trigger : ``"software"``, ``"free"`` or a hardware line name (see module docstring).
    num_buffers : buffers pylon allocates for streaming.
    timeline, max_stale_retries : see :class:`hwio.devices.Camera`.
    """

    def __init__(self, serial: str | None = None, *, index: int = 0, name: str | None = None,
                 exposure_s: float | None = 1e-3, timeout_s: float = 2.0,
                 pixel_format: str | None = None, black_level: float | None = None,
                 gain: float | None = None, roi: tuple[int, int, int, int] | None = None,
                 trigger: str = "software", num_buffers: int = 4,
                 timeline: Timeline | None = None, max_stale_retries: int = 5):
        self._pylon = pylon = require("pypylon.pylon", "PylonCamera")
        self._genicam = require("pypylon.genicam", "PylonCamera")
        if not isinstance(trigger, str) or not trigger:
            raise ValueError(f"trigger must be 'software', 'free' or a line name like 'Line1', "
                             f"got {trigger!r}")
        self.trigger = trigger
        self._cam = None
        self._grabbing = False

        tl = pylon.TlFactory.GetInstance()
        devices = list(tl.EnumerateDevices())
        if not devices:
            raise DeviceError("PylonCamera: no Basler camera found; check cable, power and pylon Viewer "
                              "(set PYLON_CAMEMU=1 for an emulated camera)")
        if serial is not None:
            matches = [d for d in devices if d.GetSerialNumber() == str(serial)]
            if not matches:
                raise DeviceError(f"PylonCamera: no camera with serial {serial!r}; found "
                                  + ", ".join(d.GetSerialNumber() for d in devices))
            info = matches[0]
        else:
            if not 0 <= int(index) < len(devices):
                raise DeviceError(f"PylonCamera: camera index {index} out of range; "
                                  f"{len(devices)} camera(s) found")
            info = devices[int(index)]
        name = name or f"pylon-{info.GetSerialNumber()}"
        try:
            cam = pylon.InstantCamera(tl.CreateDevice(info))
            cam.Open()
        except Exception as exc:
            raise DeviceError(f"{name}: cannot open camera {info.GetFullName()} "
                              f"(in use by another program?): {one_line(exc)}") from None
        self._cam = cam
        self._nodemap = cam.GetNodeMap()
        try:
            fmt = self._configure(name, pixel_format, black_level, gain, roi, num_buffers)
            shape = (int(self._node("Height").GetValue()), int(self._node("Width").GetValue()))
            super().__init__(name, shape, bit_depth=mono_bits(fmt), exposure_s=1e-3,
                             timeout_s=timeout_s, timeline=timeline, max_stale_retries=max_stale_retries)
            self.pixel_format = fmt
            self.serial = info.GetSerialNumber()
            self.model = info.GetModelName()
            self.last_frame_id: int | None = None
            if exposure_s is None:
                self._exposure_s = self._read_exposure_s()
            else:
                self.exposure_s = exposure_s
            strategy = (pylon.GrabStrategy_LatestImageOnly if trigger == "free"
                        else pylon.GrabStrategy_OneByOne)
            cam.StartGrabbing(strategy)
            self._grabbing = True
        except BaseException:
            self.close()
            raise

    # -- node helpers ----------------------------------------------------------------------
    def _node(self, name: str):
        try:
            node = self._nodemap.GetNode(name)
            return node if node is not None and self._genicam.IsAvailable(node) else None
        except Exception:
            return None

    def _writable(self, name: str):
        node = self._node(name)
        return node if node is not None and self._genicam.IsWritable(node) else None

    def _set(self, name: str, value) -> bool:
        node = self._writable(name)
        if node is None:
            return False
        node.SetValue(value)
        return True

    def _enum_entries(self, name: str) -> list[str]:
        node = self._node(name)
        if node is None:
            return []
        return [e.GetSymbolic() for e in node.GetEntries() if self._genicam.IsAvailable(e)]

    @property
    def handle(self):
        """The underlying ``pypylon.pylon.InstantCamera`` (for vendor-specific settings)."""
        return self._cam

    def _configure(self, name, pixel_format, black_level, gain, roi, num_buffers) -> str:
        formats = self._enum_entries("PixelFormat")
        fmt = pick_mono_format(formats, pixel_format, name)
        self._set("PixelFormat", fmt)
        if roi is not None:
            self._set_roi(name, roi)
        for auto in ("ExposureAuto", "GainAuto", "BalanceWhiteAuto", "BlackLevelAuto"):
            if "Off" in self._enum_entries(auto):
                self._set(auto, "Off")
        if "All" in self._enum_entries("BlackLevelSelector"):
            self._set("BlackLevelSelector", "All")
        for node_name in ("BlackLevel", "BlackLevelRaw"):
            node = self._writable(node_name)
            if node is not None:
                node.SetValue(node.GetValue() if black_level is None else black_level)
                break
        if gain is not None:
            if not (self._set("Gain", float(gain)) or self._set("GainRaw", int(gain))):
                raise ValueError(f"{name}: this camera has no writable Gain node; leave gain=None")
        self._set("GammaEnable", False)
        if self._writable("Gamma") is not None:
            self._set("Gamma", 1.0)
        self._set("LUTEnable", False)
        if "Timed" in self._enum_entries("ExposureMode"):
            self._set("ExposureMode", "Timed")
        self._set("AcquisitionMode", "Continuous")
        selectors = self._enum_entries("TriggerSelector")
        for sel in selectors:
            self._set("TriggerSelector", sel)
            self._set("TriggerMode", "Off")
        if self.trigger != "free":
            if "FrameStart" not in selectors:
                raise DeviceError(f"{name}: camera has no FrameStart trigger; use trigger='free'")
            sources = self._enum_entries("TriggerSource")
            source = "Software" if self.trigger == "software" else self.trigger
            if source not in sources:
                raise ValueError(f"{name}: trigger {self.trigger!r} not offered; use 'software', 'free' "
                                 f"or one of " + ", ".join(s for s in sources if s != "Software"))
            self._set("TriggerSelector", "FrameStart")
            self._set("TriggerMode", "On")
            self._set("TriggerSource", source)
        self._cam.MaxNumBuffer.SetValue(max(2, int(num_buffers)))
        return fmt

    def _set_roi(self, name, roi) -> None:
        try:
            row0, col0, rows, cols = (int(v) for v in roi)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: roi must be (row0, col0, rows, cols), got {roi!r}") from None
        try:
            self._set("OffsetX", 0)
            self._set("OffsetY", 0)
            self._set("Width", cols)
            self._set("Height", rows)
            self._set("OffsetX", col0)
            self._set("OffsetY", row0)
        except Exception as exc:
            w, h = self._node("Width"), self._node("Height")
            raise ValueError(f"{name}: roi {roi} rejected by the camera (width step {w.GetInc()}, "
                             f"height step {h.GetInc()}, sensor {self._node('WidthMax').GetValue()}x"
                             f"{self._node('HeightMax').GetValue()}): {one_line(exc)}") from None

    def _exposure_node(self):
        for node_name, scale in (("ExposureTime", 1e-6), ("ExposureTimeAbs", 1e-6)):
            node = self._node(node_name)
            if node is not None:
                return node, scale
        raise DeviceError(f"{self.name}: camera has no ExposureTime node")

    def _read_exposure_s(self) -> float:
        node, scale = self._exposure_node()
        return float(node.GetValue()) * scale

    # -- Camera hooks -----------------------------------------------------------------------
    def _exposure_range_hw(self) -> tuple[float, float]:
        self._check_open()
        node, scale = self._exposure_node()
        return (float(node.GetMin()) * scale, float(node.GetMax()) * scale)

    def _set_exposure_hw(self, exposure_s: float) -> float:
        self._check_open()
        node, scale = self._exposure_node()
        lo, hi = node.GetMin(), node.GetMax()
        value = exposure_s / scale
        if value < lo * (1 - 1e-9) or value > hi * (1 + 1e-9):
            raise ValueError(f"{self.name}: exposure {exposure_s:.6g} s outside the camera range "
                             f"{lo * scale:.6g}..{hi * scale:.6g} s")
        inc = node.GetInc() if node.HasInc() else None
        node.SetValue(snap_to_increment(value, lo, hi, inc))
        return float(node.GetValue()) * scale

    def _check_open(self) -> None:
        if self._cam is None:
            raise DeviceError(f"{self.name}: camera is closed; open a new PylonCamera")

    def _flush(self) -> int:
        pylon = self._pylon
        flushed = 0
        while True:
            res = self._cam.RetrieveResult(0, pylon.TimeoutHandling_Return)
            if not res.IsValid():
                return flushed
            res.Release()
            flushed += 1

    def _frame_period_s(self) -> float:
        for node_name in ("ResultingFrameRate", "ResultingFrameRateAbs"):
            node = self._node(node_name)
            if node is not None and self._genicam.IsReadable(node):
                rate = float(node.GetValue())
                if rate > 0:
                    return 1.0 / rate
        return 0.0

    def _grab_hw(self, timeout_s: float) -> tuple[np.ndarray, float | None]:
        self._check_open()
        pylon = self._pylon
        deadline = time.monotonic() + timeout_s
        try:
            self._flush()
            t_start = None
            if self.trigger == "software":
                if not self._cam.WaitForFrameTriggerReady(_ms(timeout_s), pylon.TimeoutHandling_Return):
                    raise DeviceTimeout(f"{self.name}: camera not ready for a trigger "
                                        f"within {timeout_s:.3g} s")
                t_start = self.timeline.now()
                self._cam.ExecuteSoftwareTrigger()
            remaining = max(deadline - time.monotonic(), 1e-3)
            res = self._cam.RetrieveResult(_ms(remaining), pylon.TimeoutHandling_Return)
        except DeviceError:
            raise
        except self._genicam.TimeoutException:
            raise DeviceTimeout(f"{self.name}: no frame within {timeout_s:.3g} s") from None
        except Exception as exc:
            raise DeviceError(f"{self.name}: grab failed ({type(exc).__name__}: "
                              f"{one_line(exc)}); camera unplugged?") from None
        if not res.IsValid():
            src = "software trigger" if self.trigger == "software" else f"trigger {self.trigger!r}"
            raise DeviceTimeout(f"{self.name}: no frame within {timeout_s:.3g} s ({src}); "
                                f"check triggering, cabling and exposure")
        try:
            if not res.GrabSucceeded():
                raise FrameError(f"{self.name}: frame dropped ({res.GetErrorDescription().strip()}, "
                                 f"code {res.GetErrorCode():#x})")
            image = np.array(res.GetArray(), copy=True)
            self.last_frame_id = int(res.ImageNumber)
        finally:
            res.Release()
        if t_start is None:
            t_start = self.timeline.now() - self._exposure_s - self._frame_period_s()
        return image, t_start

    def close(self) -> None:
        """Stop streaming and release the camera (idempotent)."""
        cam, self._cam = self._cam, None
        if cam is None:
            return
        for step in (cam.StopGrabbing, cam.Close, cam.DestroyDevice):
            try:
                step()
            except Exception:
                pass
        self._grabbing = False
