"""Device protocols: spatial light modulators and cameras.

Every driver subclasses :class:`SLM` or :class:`Camera`.  The public methods
(``show``, ``grab``, ``exposure_s``) validate and convert their arguments and
then call exactly one private hardware hook (``_show_hw``, ``_grab_hw``,
``_set_exposure_hw``); a new driver implements only the hooks.

Timing guarantee
----------------
Devices of one bench share a :class:`Timeline`.  ``SLM.show`` records when the
new frame has settled (show time + settle time).  ``Camera.grab`` first waits
until the timeline has passed the latest settle time of any SLM and then
discards frames whose timestamp is older than that, so a frame grabbed after
``show()`` is always newer than that show plus its settle time.  It also discards a
frame whose driver timestamp is not newer than the camera's previous frame (a camera
re-delivering a buffered frame while no panel changed).  This is the one stale-frame check
of the package; ``Camera.stale_frames`` counts the frames it discarded.  Simulated benches
plug in a virtual clock so no real time is spent waiting.

Retries of failed calls (``DeviceError.retryable``) are the caller's:
:mod:`hwio.device_access` states the policy every layer uses.

An input encoder (DMD or SLM) is an :class:`SLM`.
"""
from __future__ import annotations

import abc
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = [
    "DeviceError", "DeviceTimeout", "SLMWriteError", "FrameError",
    "Timeline", "ShowToken", "CameraFrame", "SLM", "Camera",
]


class DeviceError(RuntimeError):
    """A device failed.  ``retryable`` says whether the same call may succeed."""

    retryable = False


class DeviceTimeout(DeviceError):
    """A device did not answer in time (retry the call; check cabling/trigger if it persists)."""

    retryable = True


class SLMWriteError(DeviceError):
    """An SLM frame could not be written (retry the call)."""

    retryable = True


class FrameError(DeviceError):
    """A camera delivered an unusable frame (wrong shape, dropped or stale)."""

    retryable = True


class Timeline:
    """Clock shared by the devices of one bench.

    Parameters
    ----------
    clock : callable returning seconds (monotonic); default ``time.monotonic``.
    sleep : callable sleeping for a number of seconds; default ``time.sleep``.
    """

    def __init__(self, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] | None = None):
        self._clock = clock or time.monotonic
        self._sleep = sleep or time.sleep
        self._lock = threading.Lock()
        self.latest_settle_s = -np.inf

    def now(self) -> float:
        """Current time in seconds."""
        return float(self._clock())

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (virtual or real)."""
        if seconds > 0:
            self._sleep(seconds)

    def wait_until(self, t_s: float) -> None:
        """Block until the clock reads at least ``t_s``."""
        remaining = t_s - self.now()
        while remaining > 0:
            self.sleep(remaining)
            remaining = t_s - self.now()

    def note_settle(self, t_s: float) -> None:
        """Record that some device settles at time ``t_s``."""
        with self._lock:
            self.latest_settle_s = max(self.latest_settle_s, t_s)


DEFAULT_TIMELINE = Timeline()


@dataclass(frozen=True)
class ShowToken:
    """Receipt of ``SLM.show``: frame index, time shown and time settled (s)."""

    device: str
    frame_index: int
    shown_s: float
    settled_s: float


@dataclass
class CameraFrame:
    """One camera image (rows, cols) with its metadata."""

    image: np.ndarray
    frame_index: int
    timestamp_s: float
    exposure_s: float
    device: str = ""
    meta: dict = field(default_factory=dict)


class SLM(abc.ABC):
    """A pixelated modulator driven with integer gray levels.

    Parameters
    ----------
    name : device name used in messages.
    shape : (rows, cols) in pixels.
    bit_depth : levels run from 0 to ``2**bit_depth - 1``.
    pixel_pitch_m : pixel pitch in metres.
    settle_time_s : time after a write until the panel has settled.
    timeline : shared :class:`Timeline` (default: the process-wide one).
    """

    def __init__(self, name: str, shape: tuple[int, int], bit_depth: int = 8,
                 pixel_pitch_m: float = 8e-6, settle_time_s: float = 0.0,
                 timeline: Timeline | None = None):
        if len(shape) != 2 or min(shape) <= 0:
            raise ValueError(f"{name}: SLM shape must be (rows, cols) > 0, got {shape}")
        if not 1 <= int(bit_depth) <= 16:
            raise ValueError(f"{name}: bit_depth must be 1..16, got {bit_depth}")
        if settle_time_s < 0:
            raise ValueError(f"{name}: settle_time_s must be >= 0, got {settle_time_s}")
        self.name = name
        self.shape = (int(shape[0]), int(shape[1]))
        self.bit_depth = int(bit_depth)
        self.pixel_pitch_m = float(pixel_pitch_m)
        self.settle_time_s = float(settle_time_s)
        self.timeline = timeline or DEFAULT_TIMELINE
        self._frame_index = -1
        self.last_levels: np.ndarray | None = None

    @property
    def max_level(self) -> int:
        """Largest gray level the panel accepts."""
        return 2 ** self.bit_depth - 1

    @property
    def level_dtype(self) -> np.dtype:
        """Unsigned integer dtype the hook receives."""
        return np.dtype(np.uint8 if self.bit_depth <= 8 else np.uint16)

    def show(self, levels: np.ndarray) -> ShowToken:
        """Display an integer level frame of shape ``self.shape``; returns a :class:`ShowToken`."""
        arr = self.checked_levels(levels)
        self._show_hw(arr)
        self._frame_index += 1
        self.last_levels = arr
        shown = self.timeline.now()
        settled = shown + self.settle_time_s
        self.timeline.note_settle(settled)
        return ShowToken(self.name, self._frame_index, shown, settled)

    def checked_levels(self, levels) -> np.ndarray:
        """``levels`` validated (integer, ``self.shape``, 0..max_level) as a contiguous ``level_dtype`` array.

        Raises TypeError for non-integer frames and ValueError for a wrong shape or range.
        """
        arr = np.asarray(levels)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{self.name}: SLM levels must be an integer array, got dtype {arr.dtype} "
                            f"(convert weights with hwio.encoding first)")
        if arr.shape != self.shape:
            raise ValueError(f"{self.name}: level frame has shape {arr.shape}, the panel is {self.shape}")
        if arr.size and (arr.min() < 0 or arr.max() > self.max_level):
            raise ValueError(f"{self.name}: levels must lie in 0..{self.max_level} "
                             f"({self.bit_depth} bit), got {arr.min()}..{arr.max()}")
        return np.ascontiguousarray(arr, dtype=self.level_dtype)

    @abc.abstractmethod
    def _show_hw(self, levels: np.ndarray) -> None:
        """Hardware hook: put the validated ``levels`` (``level_dtype``, ``shape``) on the panel."""

    def close(self) -> None:
        """Release the device (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"{type(self).__name__}(name={self.name!r}, shape={self.shape}, "
                f"bit_depth={self.bit_depth}, settle_time_s={self.settle_time_s})")


class Camera(abc.ABC):
    """An area camera that returns one fresh frame per ``grab()``.

    Parameters
    ----------
    name : device name used in messages.
    shape : (rows, cols) in pixels.
    bit_depth : ADC bits; images are returned as ``uint16`` (or ``uint8`` for 8 bit).
    exposure_s : initial exposure time in seconds.
    timeout_s : default grab timeout in seconds.
    timeline : shared :class:`Timeline` (default: the process-wide one).
    max_stale_retries : how many stale frames a grab discards before failing.

    Attributes
    ----------
    stale_frames : number of stale frames discarded by ``grab`` so far.
    """

    def __init__(self, name: str, shape: tuple[int, int], bit_depth: int = 12,
                 exposure_s: float = 1e-3, timeout_s: float = 2.0,
                 timeline: Timeline | None = None, max_stale_retries: int = 5):
        if len(shape) != 2 or min(shape) <= 0:
            raise ValueError(f"{name}: camera shape must be (rows, cols) > 0, got {shape}")
        self.name = name
        self.shape = (int(shape[0]), int(shape[1]))
        self.bit_depth = int(bit_depth)
        self.timeout_s = float(timeout_s)
        self.timeline = timeline or DEFAULT_TIMELINE
        self.max_stale_retries = int(max_stale_retries)
        self._exposure_s = float(exposure_s)
        self._frame_index = -1
        self._last_hw_timestamp_s = -np.inf
        self.stale_frames = 0

    @property
    def max_adu(self) -> int:
        """Largest pixel value the ADC delivers."""
        return 2 ** self.bit_depth - 1

    @property
    def exposure_s(self) -> float:
        """Exposure time in seconds."""
        return self._exposure_s

    @exposure_s.setter
    def exposure_s(self, value: float) -> None:
        value = float(value)
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{self.name}: exposure must be a positive number of seconds, got {value}")
        self._exposure_s = float(self._set_exposure_hw(value))

    def grab(self, timeout_s: float | None = None) -> CameraFrame:
        """Return one fresh frame: newer than the latest settled SLM frame and than the previous one.

        A stale frame (timestamp before the latest settle time, or a driver timestamp not
        newer than the previous frame's) is discarded and grabbed again, at most
        ``max_stale_retries`` times.

        Parameters
        ----------
        timeout_s : how long one hardware grab may wait for a frame (s); default ``self.timeout_s``.

        Returns
        -------
        CameraFrame
            The image (rows, cols) in ADU with its timestamp (s) and exposure (s).

        Raises
        ------
        DeviceTimeout
            (retryable) when the camera does not deliver within ``timeout_s``.
        FrameError
            (retryable) on a frame of the wrong shape, or after ``max_stale_retries + 1`` stale ones.
        """
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        if timeout <= 0:
            raise ValueError(f"{self.name}: timeout must be > 0 s, got {timeout}")
        must_follow = self.timeline.latest_settle_s
        if np.isfinite(must_follow):
            self.timeline.wait_until(must_follow)
        for _ in range(self.max_stale_retries + 1):
            image, timestamp = self._grab_hw(timeout)
            repeated = timestamp is not None and timestamp <= self._last_hw_timestamp_s
            if timestamp is None:
                timestamp = self.timeline.now()
            if timestamp >= must_follow and not repeated:
                break
            self.stale_frames += 1
        else:
            raise FrameError(f"{self.name}: camera kept delivering stale frames (older than the last SLM "
                             f"update or repeated; {self.max_stale_retries + 1} tries); check "
                             f"triggering/buffering")
        self._last_hw_timestamp_s = float(timestamp)
        image = np.asarray(image)
        if image.shape != self.shape:
            raise FrameError(f"{self.name}: frame has shape {image.shape}, expected {self.shape}")
        self._frame_index += 1
        return CameraFrame(image=image, frame_index=self._frame_index, timestamp_s=float(timestamp),
                           exposure_s=self._exposure_s, device=self.name)

    @abc.abstractmethod
    def _grab_hw(self, timeout_s: float) -> tuple[np.ndarray, float | None]:
        """Hardware hook: acquire one new image; return (image, timestamp_s or None).

        Must raise :class:`DeviceTimeout` when nothing arrives within ``timeout_s``.
        """

    def _set_exposure_hw(self, exposure_s: float) -> float:
        """Hardware hook: set exposure; return the value the device actually uses."""
        return exposure_s

    @property
    def exposure_range_s(self) -> tuple[float, float]:
        """(shortest, longest) exposure the camera can be set to, in seconds.

        Drivers report their hardware limits; a value outside them is refused by
        ``exposure_s`` with a ValueError, so callers that scale exposures clamp into this range.
        """
        return self._exposure_range_hw()

    def _exposure_range_hw(self) -> tuple[float, float]:
        """Hardware hook: the settable exposure range (s); unlimited unless a driver knows better."""
        return (0.0, float("inf"))

    def close(self) -> None:
        """Release the device (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"{type(self).__name__}(name={self.name!r}, shape={self.shape}, "
                f"bit_depth={self.bit_depth}, exposure_s={self._exposure_s})")
