"""Logical devices as rectangular regions of one physical device (any backend).

A lab often has one camera imaging several planes, or one SLM panel holding both weight
matrices side by side.  The bench file then declares the physical device under a name of
its own and each standard (logical) device as a region of it::

    [devices.panel]            # the physical LCoS panel
    kind = "slm"
    backend = "window"         # or "sim", ...
    shape = [1080, 1920]

    [devices.slm1]
    region_of = "panel"
    region_px = [0, 0]         # [row0, col0] of the region's top-left pixel on the panel
    shape = [164, 24]          # the region's size (rows, cols)

The region devices below work over any :class:`~hwio.devices.SLM` / :class:`~hwio.devices.Camera`
(simulated or a real driver); they only use the protocols' public methods.

* :class:`RegionSLM` ``show(levels)`` writes its rectangle into the panel's current full
  frame (``panel.last_levels``; zeros before the first show) and shows the whole panel, so
  the other regions keep their content.  The returned :class:`~hwio.devices.ShowToken`
  carries the panel's frame index and show/settle times (the panel's settle time applies).
* :class:`RegionCamera` ``grab()`` grabs one frame of the physical camera and crops it.  Frame
  index and timestamp are the physical camera's, so stale-frame detection keeps working
  (two regions never return the same physical frame twice: every grab is a new exposure).
  Each region keeps its own requested ``exposure_s``; it is set on the physical camera
  before the region's grab when the camera currently uses another one.
"""
from __future__ import annotations

import numpy as np

from hwio.devices import Camera, CameraFrame, SLM, ShowToken

__all__ = ["RegionSLM", "RegionCamera", "check_region", "regions_overlap"]


def check_region(origin_px, shape, parent_shape) -> str | None:
    """Why a region does not fit its physical device (None when it fits).

    Parameters
    ----------
    origin_px : (row0, col0) of the region's top-left pixel on the device (pixels).
    shape : (rows, cols) of the region (pixels).
    parent_shape : (rows, cols) of the physical device (pixels).
    """
    r0, c0 = (int(v) for v in origin_px)
    nr, nc = (int(v) for v in shape)
    if r0 < 0 or c0 < 0:
        return f"starts at ({r0}, {c0}), outside the device (negative pixel)"
    if nr < 1 or nc < 1:
        return f"has an empty shape {[nr, nc]}"
    if r0 + nr > parent_shape[0] or c0 + nc > parent_shape[1]:
        return (f"spans rows {r0}..{r0 + nr - 1}, cols {c0}..{c0 + nc - 1}, beyond the "
                f"{parent_shape[0]}x{parent_shape[1]} device")
    return None


def regions_overlap(a_origin, a_shape, b_origin, b_shape) -> bool:
    """Whether two rectangles (origin (row, col), shape (rows, cols), pixels) share a pixel."""
    return (a_origin[0] < b_origin[0] + b_shape[0] and b_origin[0] < a_origin[0] + a_shape[0]
            and a_origin[1] < b_origin[1] + b_shape[1] and b_origin[1] < a_origin[1] + a_shape[1])


def _slices(origin_px, shape):
    r0, c0 = int(origin_px[0]), int(origin_px[1])
    return slice(r0, r0 + int(shape[0])), slice(c0, c0 + int(shape[1]))


class RegionSLM(SLM):
    """A rectangle of a physical SLM panel, driven as an SLM of its own.

    Parameters
    ----------
    name : logical device name (``slm1``, ``lo``, ...).
    panel : the physical :class:`~hwio.devices.SLM` (any backend).
    origin_px : (row0, col0) of the region on the panel (pixels).
    shape : (rows, cols) of the region (pixels).

    Bit depth, pixel pitch (m), settle time (s) and timeline are the panel's.
    """

    def __init__(self, name: str, panel: SLM, origin_px, shape):
        problem = check_region(origin_px, shape, panel.shape)
        if problem:
            raise ValueError(f"{name}: region of {panel.name} {problem}")
        super().__init__(name, tuple(shape), bit_depth=panel.bit_depth, pixel_pitch_m=panel.pixel_pitch_m,
                         settle_time_s=panel.settle_time_s, timeline=panel.timeline)
        self.panel = panel
        self.origin_px = (int(origin_px[0]), int(origin_px[1]))
        self._window = _slices(self.origin_px, self.shape)

    def crop(self, frame: np.ndarray) -> np.ndarray:
        """This region's part of a full panel frame (a view)."""
        return frame[self._window]

    def show(self, levels) -> ShowToken:
        """Show ``levels`` (region-shaped) in the region; the rest of the panel keeps its frame.

        Returns the panel's :class:`~hwio.devices.ShowToken` under this region's name.  A failed
        panel write (e.g. :class:`~hwio.devices.SLMWriteError`) leaves the region's
        ``last_levels`` unchanged, like the panel's.
        """
        arr = self.checked_levels(levels)
        current = self.panel.last_levels
        full = (np.zeros(self.panel.shape, dtype=self.panel.level_dtype) if current is None
                else np.array(current, dtype=self.panel.level_dtype, copy=True))
        full[self._window] = arr
        token = self.panel.show(full)
        self._frame_index = token.frame_index
        self.last_levels = arr
        return ShowToken(self.name, token.frame_index, token.shown_s, token.settled_s)

    def _show_hw(self, levels: np.ndarray) -> None:   # pragma: no cover - show() goes through the panel
        raise NotImplementedError("RegionSLM.show writes through its panel")

    def close(self) -> None:
        """Nothing to release: the bench closes the physical panel."""

    def __repr__(self):
        return (f"RegionSLM(name={self.name!r}, panel={self.panel.name!r}, origin_px={self.origin_px}, "
                f"shape={self.shape})")


class RegionCamera(Camera):
    """A rectangle of a physical camera's frame, used as a camera of its own.

    Parameters
    ----------
    name : logical camera name (``cam_z1``, ...).
    camera : the physical :class:`~hwio.devices.Camera` (any backend).
    origin_px : (row0, col0) of the region on the sensor (pixels).
    shape : (rows, cols) of the region (pixels).
    exposure_s : the region's requested exposure (s); default: the camera's current one.

    Bit depth, grab timeout (s), stale-frame retries and timeline are the camera's.
    """

    def __init__(self, name: str, camera: Camera, origin_px, shape, exposure_s: float | None = None):
        problem = check_region(origin_px, shape, camera.shape)
        if problem:
            raise ValueError(f"{name}: region of {camera.name} {problem}")
        self.camera = camera
        self.origin_px = (int(origin_px[0]), int(origin_px[1]))
        self._window = _slices(self.origin_px, shape)
        super().__init__(name, tuple(shape), bit_depth=camera.bit_depth, exposure_s=camera.exposure_s,
                         timeout_s=camera.timeout_s, timeline=camera.timeline,
                         max_stale_retries=camera.max_stale_retries)
        if exposure_s is not None:
            self.exposure_s = exposure_s

    @property
    def readout_s(self) -> float:
        """Readout time of the physical camera (s; 0 when its driver does not say)."""
        return float(getattr(self.camera, "readout_s", 0.0))

    def _exposure_range_hw(self) -> tuple[float, float]:
        return self.camera.exposure_range_s

    def _set_exposure_hw(self, exposure_s: float) -> float:
        """Set the exposure on the physical camera now; the value it uses is this region's."""
        self.camera.exposure_s = exposure_s
        return self.camera.exposure_s

    def grab(self, timeout_s: float | None = None) -> CameraFrame:
        """One new frame of the physical camera, cropped to the region.

        The physical camera is switched to this region's exposure first when it differs.
        Timestamp, frame index and exposure are the physical frame's; ``meta['physical']``
        names the camera and ``meta['region_px']`` the region's origin.
        """
        if self.camera.exposure_s != self._exposure_s:
            self.camera.exposure_s = self._exposure_s
        frame = self.camera.grab(timeout_s)
        image = np.array(np.asarray(frame.image)[self._window], copy=True)
        self._frame_index = frame.frame_index
        meta = dict(frame.meta)
        meta.update(physical=self.camera.name, region_px=list(self.origin_px))
        return CameraFrame(image=image, frame_index=frame.frame_index, timestamp_s=frame.timestamp_s,
                           exposure_s=frame.exposure_s, device=self.name, meta=meta)

    def _grab_hw(self, timeout_s: float):   # pragma: no cover - grab() goes through the camera
        raise NotImplementedError("RegionCamera.grab grabs through its camera")

    def close(self) -> None:
        """Nothing to release: the bench closes the physical camera."""

    def __repr__(self):
        return (f"RegionCamera(name={self.name!r}, camera={self.camera.name!r}, origin_px={self.origin_px}, "
                f"shape={self.shape}, exposure_s={self._exposure_s})")
