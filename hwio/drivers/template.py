"""Template for a new hardware driver: copy this file, rename the classes, fill in the hooks.

The public methods of :class:`hwio.devices.SLM` and :class:`hwio.devices.Camera`
(``show``, ``grab``, the ``exposure_s`` setter) already validate arguments, keep the
frame indices, enforce the SLM-settle/camera-freshness guarantee and build the
returned :class:`~hwio.devices.ShowToken` / :class:`~hwio.devices.CameraFrame`.
A driver implements only the hooks listed here.  The real drivers beside this file
(``window_slm``, ``pylon_camera``, ``genicam_camera``, ``opencv_camera``) follow it.

Checklist for a new driver
--------------------------
1. Import the vendor library inside ``__init__`` with :func:`hwio.drivers.require`, so
   ``import hwio.drivers`` works without it and the error names what to install.
2. Open the device, configure it, *then* call ``super().__init__`` with the shape and
   bit depth the device really has (read them back, do not trust the request).
3. Raise :class:`~hwio.devices.DeviceError` with a one-line message that says what is
   wrong and what to do; :class:`~hwio.devices.DeviceTimeout` (retryable) when the
   device does not answer in time.  Never block without a timeout.
4. ``close()`` releases everything and may be called any number of times.
5. Register the class in ``hwio.drivers.BACKENDS`` and add tests that run against the
   vendor's emulator or simulated producer (see ``tests/hwio/test_cameras_real.py``).
"""
from __future__ import annotations

import numpy as np

from hwio.devices import SLM, Camera, Timeline

__all__ = ["TemplateSLM", "TemplateCamera"]

_TODO = "this is the driver template; copy hwio/drivers/template.py and implement {}"


class TemplateSLM(SLM):
    """Skeleton of an SLM driver (documentation only; every hook raises NotImplementedError).

    Parameters
    ----------
    name, shape, bit_depth, pixel_pitch_m, settle_time_s, timeline :
        as :class:`hwio.devices.SLM`.  A real driver derives ``shape`` and ``bit_depth``
        from the opened device and takes only what identifies the device (serial
        number, screen index, ...) plus settings.
    """

    def __init__(self, name: str = "template-slm", shape: tuple[int, int] = (1080, 1920),
                 bit_depth: int = 8, pixel_pitch_m: float = 8e-6, settle_time_s: float = 0.0,
                 timeline: Timeline | None = None):
        # vendor = require("vendor_sdk", "MySLM")          # 1. lazy import
        # self._dev = vendor.open(serial)                   # 2. open + configure
        super().__init__(name, shape, bit_depth=bit_depth, pixel_pitch_m=pixel_pitch_m,
                         settle_time_s=settle_time_s, timeline=timeline)

    def _show_hw(self, levels: np.ndarray) -> None:
        """Put ``levels`` on the panel and return once the panel has received them.

        ``levels`` is already validated: C-contiguous, ``self.level_dtype``, shape
        ``self.shape``, values in ``0..self.max_level``.  Do not sleep for the settle
        time: :meth:`SLM.show` records ``shown + settle_time_s`` on the timeline and
        cameras wait for it.  Raise :class:`~hwio.devices.SLMWriteError` if the write
        fails (retryable).
        """
        raise NotImplementedError(_TODO.format("TemplateSLM._show_hw"))

    def close(self) -> None:
        """Release the device; idempotent (a second call does nothing)."""
        raise NotImplementedError(_TODO.format("TemplateSLM.close"))


class TemplateCamera(Camera):
    """Skeleton of a camera driver (documentation only; every hook raises NotImplementedError).

    A real driver switches auto exposure/gain off, fixes the black level and selects a
    linear mono pixel format at open, so that pixel values are proportional to light.
    """

    def __init__(self, name: str = "template-camera", shape: tuple[int, int] = (1024, 1280),
                 bit_depth: int = 12, exposure_s: float = 1e-3, timeout_s: float = 2.0,
                 timeline: Timeline | None = None):
        super().__init__(name, shape, bit_depth=bit_depth, exposure_s=exposure_s,
                         timeout_s=timeout_s, timeline=timeline)

    def _grab_hw(self, timeout_s: float) -> tuple[np.ndarray, float | None]:
        """Acquire one *new* image; return ``(image, timestamp_s)``.

        - Discard frames already queued in the driver, then trigger (software trigger)
          or wait for the next frame, so the image starts exposing after this call.
        - ``timestamp_s`` is on ``self.timeline``'s clock and must not be later than the
          true start of the exposure (trigger time, or arrival - exposure - readout for
          free-running cameras); :meth:`Camera.grab` retries frames older than the last
          SLM settle time.  Return ``None`` only if the frame certainly started after
          the call.
        - ``image`` is (rows, cols), ``uint8`` for 8 bit, else ``uint16``, copied out of
          the driver's buffer.
        - Raise :class:`~hwio.devices.DeviceTimeout` when nothing arrives within
          ``timeout_s`` (never wait longer), :class:`~hwio.devices.FrameError` for an
          incomplete frame.
        """
        raise NotImplementedError(_TODO.format("TemplateCamera._grab_hw"))

    def _set_exposure_hw(self, exposure_s: float) -> float:
        """Set the exposure (seconds, already validated > 0); return the value now in use.

        Convert to the device unit, round to its increment, raise ``ValueError`` naming
        the valid range if the value is outside it, and read the value back.
        """
        raise NotImplementedError(_TODO.format("TemplateCamera._set_exposure_hw"))

    def close(self) -> None:
        """Stop acquisition and release the device; idempotent."""
        raise NotImplementedError(_TODO.format("TemplateCamera.close"))
