"""Cameras and video files through ``cv2.VideoCapture`` (webcams, UVC cameras, V4L2, files).

Every VideoCapture call runs on one daemon worker thread per camera, so a capture that
blocks (unplugged camera, stalled stream, a pipe with no writer) surfaces as
:class:`hwio.devices.DeviceTimeout` after ``timeout_s`` instead of hanging the caller.

Live sources
------------
Auto exposure and auto white balance are switched off where the backend allows it
(OpenCV has no portable auto-gain or black-level control; fix those in the camera's
own tool).  ``CAP_PROP_EXPOSURE`` units depend on the backend (``exposure_units``):
V4L2 counts 100 us steps (``1e-4`` seconds per unit); DirectShow and Media Foundation use
log2 of the exposure in seconds (``"log2"``).  Each grab discards frames that were
already buffered (a buffered frame is returned by ``grab()`` without waiting) and
timestamps the frame as arrival - exposure - frame period.

Video files
-----------
A file plays one frame per grab, in order, timestamped when read; at the end a
:class:`hwio.devices.DeviceError` is raised unless ``loop=True``.  Files have no exposure.
"""
from __future__ import annotations

import concurrent.futures as cf
import math
import os
import queue
import threading
import time

import numpy as np

from hwio.devices import Camera, DeviceError, DeviceTimeout, FrameError, Timeline
from hwio.drivers import one_line, require

__all__ = ["OpenCVCamera"]

_EXPOSURE_UNITS = {"V4L2": 1e-4, "DSHOW": "log2", "MSMF": "log2"}


class _Worker:
    """One daemon thread that runs submitted calls in order (never blocks interpreter exit)."""

    def __init__(self, name: str):
        self._tasks: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._tasks.get()
            if item is None:
                return
            fn, fut = item
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as exc:
                    fut.set_exception(exc)

    def submit(self, fn) -> cf.Future:
        fut: cf.Future = cf.Future()
        self._tasks.put((fn, fut))
        return fut

    def stop(self) -> None:
        self._tasks.put(None)


def _check_source(cv2, name: str, source, backend, exposure_units) -> tuple[int | str, bool, int]:
    """Checked ``(source, is_file, api)`` of :class:`OpenCVCamera`'s arguments (index, path or URL).

    Raises TypeError/ValueError for bad arguments, DeviceError for a missing video file.
    """
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if isinstance(source, bool) or not isinstance(source, (int, str)):
        raise TypeError(f"{name}: source must be a device index, a file path or a URL, got {source!r}")
    is_file = isinstance(source, str) and "://" not in source
    if is_file and (not os.path.exists(source) or os.path.isdir(source)):
        raise DeviceError(f"{name}: video file {source!r} does not exist")
    if isinstance(source, int) and source < 0:
        raise ValueError(f"{name}: device index must be >= 0, got {source}")
    api = cv2.CAP_ANY
    if backend is not None:
        api = getattr(cv2, f"CAP_{str(backend).upper()}", None)
        if api is None:
            raise ValueError(f"{name}: unknown OpenCV backend {backend!r} "
                             f"(e.g. 'v4l2', 'dshow', 'ffmpeg')")
    if exposure_units is not None and exposure_units != "log2" and not (
            isinstance(exposure_units, (int, float)) and exposure_units > 0):
        raise ValueError(f"{name}: exposure_units must be seconds per unit (> 0) or 'log2', "
                         f"got {exposure_units!r}")
    return source, is_file, api


class OpenCVCamera(Camera):
    """A camera or video file read through OpenCV.

    Parameters
    ----------
    source : device index (int), video file path, or stream URL.
    name : device name (default ``"opencv-<source>"``).
    backend : OpenCV capture API name, e.g. ``"v4l2"``, ``"dshow"``, ``"ffmpeg"`` (default any).
    exposure_s : initial exposure in seconds; None keeps the camera's.
    exposure_units : seconds per ``CAP_PROP_EXPOSURE`` unit, or ``"log2"``; default by backend.
    width, height : requested frame size for live cameras (checked after setting).
    gain : CAP_PROP_GAIN value to fix (backend units); None keeps the present one.
    timeout_s : default grab timeout in seconds.
    open_timeout_s : limit for opening the source.
    loop : restart a video file at its end instead of raising.
    timeline, max_stale_retries : see :class:`hwio.devices.Camera`.
    """

    def __init__(self, source: int | str | os.PathLike = 0, *, name: str | None = None,
                 backend: str | None = None, exposure_s: float | None = None,
                 exposure_units: float | str | None = None, width: int | None = None,
                 height: int | None = None, gain: float | None = None, timeout_s: float = 2.0,
                 open_timeout_s: float = 5.0, loop: bool = False,
                 timeline: Timeline | None = None, max_stale_retries: int = 5):
        cv2 = self._cv2 = require("cv2", "OpenCVCamera")
        name = name or f"opencv-{source}"
        source, self._is_file, api = _check_source(cv2, name, source, backend, exposure_units)
        self.source = source
        self.loop = bool(loop)
        self.auto_exposure_off = False
        self._cap = None
        self._pending: cf.Future | None = None
        self._worker = _Worker(f"optwin-{name}")

        def _open():
            if isinstance(source, str) and not self._is_file:
                ms = int(open_timeout_s * 1000)
                params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                          int(timeout_s * 1000)]
                return cv2.VideoCapture(source, api, params)
            return cv2.VideoCapture(source, api)

        fut = self._worker.submit(_open)
        try:
            cap = fut.result(timeout=open_timeout_s)
        except cf.TimeoutError:
            # the blocked open keeps the worker; release whatever it returns later
            self._worker.submit(lambda: fut.result().release())
            self._worker.stop()
            raise DeviceTimeout(f"{name}: opening video source {source!r} took longer than "
                                f"{open_timeout_s:g} s (stalled stream or pipe without writer?)") from None
        except Exception as exc:
            self._worker.stop()
            raise DeviceError(f"{name}: could not open video source {source!r}: "
                              f"{one_line(exc)}") from None
        if not cap.isOpened():
            self._worker.stop()
            hint = ("unreadable file or unsupported codec" if self._is_file else
                    "no camera at that index? check /dev/video* and permissions" if isinstance(source, int)
                    else "check the URL and network")
            raise DeviceError(f"{name}: could not open video source {source!r} ({hint})")
        self._cap = cap
        try:
            self.backend_name = self._call(cap.getBackendName, open_timeout_s, "query backend")
            if exposure_units is None:
                exposure_units = _EXPOSURE_UNITS.get(self.backend_name.upper())
            self.exposure_units = None if self._is_file else exposure_units
            if not self._is_file:
                self._call(self._setup_live, open_timeout_s, "configure", width, height, gain)
            rows = int(self._call(cap.get, open_timeout_s, "query size", cv2.CAP_PROP_FRAME_HEIGHT))
            cols = int(self._call(cap.get, open_timeout_s, "query size", cv2.CAP_PROP_FRAME_WIDTH))
            if rows <= 0 or cols <= 0:
                raise DeviceError(f"{name}: source reports no frame size; is it delivering frames?")
            if (width is not None and cols != int(width)) or (height is not None and rows != int(height)):
                raise ValueError(f"{name}: camera delivers {cols}x{rows}, not the requested "
                                 f"{width}x{height}; choose a mode the camera supports")
            super().__init__(name, (rows, cols), bit_depth=8, exposure_s=float("nan"),
                             timeout_s=timeout_s, timeline=timeline, max_stale_retries=max_stale_retries)
            fps = float(self._call(cap.get, open_timeout_s, "query fps", cv2.CAP_PROP_FPS) or 0.0)
            self.fps = fps if math.isfinite(fps) and fps > 0 else 0.0
            if exposure_s is not None:
                self.exposure_s = exposure_s
            elif not self._is_file and self.exposure_units is not None:
                raw = self._call(cap.get, timeout_s, "query exposure", cv2.CAP_PROP_EXPOSURE)
                self._exposure_s = self._from_units(raw)
        except BaseException:
            self.close()
            raise

    # -- worker plumbing ---------------------------------------------------------------------
    def _call(self, fn, timeout_s: float, what: str, *args):
        """Run ``fn(*args)`` on the worker; DeviceTimeout if it does not finish in time."""
        label = getattr(self, "name", f"opencv-{self.source}")
        if self._pending is not None:
            try:
                self._pending.result(timeout=timeout_s)
            except cf.TimeoutError:
                raise DeviceTimeout(f"{label}: an earlier read is still blocked in the capture "
                                    f"driver; cannot {what}") from None
            except Exception:
                pass
            self._pending = None
        fut = self._worker.submit(lambda: fn(*args))
        try:
            return fut.result(timeout=timeout_s)
        except cf.TimeoutError:
            self._pending = fut
            raise DeviceTimeout(f"{label}: capture did not {what} within {timeout_s:.3g} s") from None

    def _setup_live(self, width, height, gain) -> None:
        cv2, cap = self._cv2, self._cap
        if width is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(width))
        if height is not None:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(height))
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        # manual exposure: V4L2 takes 1 (V4L2_EXPOSURE_MANUAL), DirectShow/MSMF take 0.25
        manual = 1 if self.backend_name.upper() == "V4L2" else 0.25
        self.auto_exposure_off = bool(cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, manual))
        cap.set(cv2.CAP_PROP_AUTO_WB, 0)
        if gain is not None and not cap.set(cv2.CAP_PROP_GAIN, float(gain)):
            raise ValueError(f"opencv-{self.source}: the camera refused gain={gain}; leave gain=None")

    def _to_units(self, exposure_s: float) -> float:
        if self.exposure_units == "log2":
            return math.log2(exposure_s)
        return exposure_s / float(self.exposure_units)

    def _from_units(self, value: float) -> float:
        if self.exposure_units == "log2":
            return float(2.0 ** value)
        return float(value) * float(self.exposure_units)

    # -- Camera hooks ------------------------------------------------------------------------
    def _set_exposure_hw(self, exposure_s: float) -> float:
        self._check_open()
        if self._is_file:
            raise DeviceError(f"{self.name}: a video file has no exposure to set")
        if self.exposure_units is None:
            raise DeviceError(f"{self.name}: exposure units of backend {self.backend_name} are unknown; "
                              f"pass exposure_units= (seconds per unit or 'log2')")
        cv2, cap = self._cv2, self._cap
        ok = self._call(cap.set, self.timeout_s, "set exposure", cv2.CAP_PROP_EXPOSURE,
                        self._to_units(exposure_s))
        if not ok:
            raise DeviceError(f"{self.name}: the camera refused exposure {exposure_s:.6g} s "
                              f"(auto exposure still on, or out of range)")
        return self._from_units(self._call(cap.get, self.timeout_s, "read exposure", cv2.CAP_PROP_EXPOSURE))

    def _check_open(self) -> None:
        if self._cap is None:
            raise DeviceError(f"{self.name}: camera is closed; open a new OpenCVCamera")

    def _read_frame(self):
        """Worker side: return (status, gray image, arrival time)."""
        cv2, cap = self._cv2, self._cap
        if self._is_file:
            ok, frame = cap.read()
            if not ok and self.loop:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = cap.read()
            if not ok:
                return "eof", None, None
        else:
            min_wait_s = 0.25 / self.fps if self.fps else 2e-3
            for _ in range(16):   # buffered frames return at once; a fresh one makes grab() wait
                t0 = time.monotonic()
                if not cap.grab():
                    return "fail", None, None
                if time.monotonic() - t0 >= min_wait_s:
                    break
            ok, frame = cap.retrieve()
            if not ok:
                return "fail", None, None
        arrival = self.timeline.now()
        if frame.ndim == 3:
            code = cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY
            frame = cv2.cvtColor(frame, code)
        return "ok", np.ascontiguousarray(frame), arrival

    def _grab_hw(self, timeout_s: float) -> tuple[np.ndarray, float | None]:
        self._check_open()
        status, image, arrival = self._call(self._read_frame, timeout_s, "deliver a frame")
        if status == "eof":
            raise DeviceError(f"{self.name}: end of video file {self.source!r}; pass loop=True to repeat it")
        if status == "fail":
            raise DeviceTimeout(f"{self.name}: the capture returned no frame; check the camera connection")
        if image.dtype != np.uint8:
            raise FrameError(f"{self.name}: frame dtype {image.dtype}, expected uint8")
        if self._is_file:
            return image, arrival
        exposure = self._exposure_s if math.isfinite(self._exposure_s) else 0.0
        return image, arrival - exposure - (1.0 / self.fps if self.fps else 0.0)

    def close(self) -> None:
        """Release the capture (idempotent; never blocks on a stalled driver)."""
        cap, self._cap = self._cap, None
        worker = getattr(self, "_worker", None)
        if worker is None:
            return
        if cap is not None:
            fut = worker.submit(cap.release)
            try:
                fut.result(timeout=1.0)
            except Exception:
                pass
        worker.stop()
        self._worker = None
