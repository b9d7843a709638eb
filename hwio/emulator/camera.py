"""The emulated camera: pylon's own camera emulation fed by the optics process.

:class:`EmulatedPylonCamera` is :class:`hwio.drivers.pylon_camera.PylonCamera` (the real
driver: node setup, software trigger, flush, ``RetrieveResult``, frame ids, timestamps) on
one of pylon's emulated devices (``PYLON_CAMEMU``) in image-file mode: every triggered frame
is the PNG the optics process last wrote (pylon's emulation reads the file when streaming
starts, so each grab restarts streaming before its trigger).  Two things a real sensor knows and a file does
not are exchanged with the optics process through small JSON files beside the image:

* the exposure register: setting ``exposure_s`` writes ``<image>.exposure.json`` and waits
  until the optics process renders at that exposure (a real camera applies it to the next
  frame);
* the sensor's frame clock: a grab waits for a frame whose exposure started after the grab
  was called (``<image>.state.json``), as a triggered sensor would, and never returns the
  same sensor frame twice.

Times are ``time.monotonic`` readings, one clock for all processes of the machine.  What the
frame *shows* is not synchronised: it is the display as the optics process saw it
one display latency earlier, so a grab too soon after an SLM update returns the old scene.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from hwio.devices import DeviceError, DeviceTimeout, Timeline
from hwio.drivers.pylon_camera import PylonCamera

__all__ = ["EmulatedPylonCamera", "read_state", "write_json_atomic", "EMULATED_DEVICES"]

#: emulated pylon devices created per process when PYLON_CAMEMU is not set
EMULATED_DEVICES = 4


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file and a rename (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def read_state(path: Path) -> dict | None:
    """The optics process's state JSON at ``path``, or None while it does not exist (or is being replaced)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class EmulatedPylonCamera(PylonCamera):
    """A pylon emulated camera showing the images of ``optwin emulate``.

    Parameters
    ----------
    image_file : the PNG the optics process writes for this camera (absolute path).
    index : which emulated pylon device to open (one per camera of the bench).
    pixel_format : ``"Mono12"`` for a 12-bit sensor (the PNG holds the value << 4).
    roi : (row0, col0, rows, cols) = (0, 0, image rows, image cols).
    frame_period_s : the optics process's frame period (s); sets the emulated camera's frame rate.
    wait_s : how long to wait for the optics process (frame or exposure change) before
        raising :class:`hwio.devices.DeviceTimeout`.
    other keywords : as :class:`hwio.drivers.pylon_camera.PylonCamera`.
    """

    def __init__(self, image_file: str, *, index: int = 0, name: str | None = None,
                 exposure_s: float | None = 1e-3, timeout_s: float = 2.0, pixel_format: str | None = "Mono12",
                 roi: tuple[int, int, int, int] | None = None, trigger: str = "software",
                 frame_period_s: float | None = None, wait_s: float = 5.0, timeline: Timeline | None = None,
                 max_stale_retries: int = 5):
        self.image_file = Path(image_file)
        self.frame_period_s = None if frame_period_s is None else float(frame_period_s)
        self.wait_s = float(wait_s)
        self._state_path = self.image_file.with_name(self.image_file.name + ".state.json")
        self._exposure_path = self.image_file.with_name(self.image_file.name + ".exposure.json")
        self._exposure_seq = 0
        self._frame_seen = -1
        state = read_state(self._state_path)
        if state is None or not self.image_file.is_file():
            raise DeviceError(f"{name or 'emulated camera'}: no optics process is writing {self.image_file}; "
                              f"start `optwin emulate` first and use the bench file it writes")
        os.environ.setdefault("PYLON_CAMEMU", str(EMULATED_DEVICES))   # read when pypylon is imported
        if not 0 <= int(index) < int(os.environ.get("PYLON_CAMEMU", "0") or 0):
            raise DeviceError(f"{name or 'emulated camera'}: emulated pylon device {index} does not exist "
                              f"(PYLON_CAMEMU={os.environ.get('PYLON_CAMEMU')}); set PYLON_CAMEMU to the "
                              f"number of cameras before pypylon is imported")
        self._exposure_seq = int(state.get("exposure_seq", 0))
        super().__init__(None, index=index, name=name, exposure_s=exposure_s, timeout_s=timeout_s,
                         pixel_format=pixel_format, roi=roi, trigger=trigger, timeline=timeline,
                         max_stale_retries=max_stale_retries)

    def _configure(self, name, pixel_format, black_level, gain, roi, num_buffers) -> str:
        fmt = super()._configure(name, pixel_format, black_level, gain, roi, num_buffers)
        # image-file mode is set while the camera is not streaming
        if "Off" in self._enum_entries("TestImageSelector"):
            self._set("TestImageSelector", "Off")
        if not (self._set("ImageFilename", str(self.image_file)) and self._set("ImageFileMode", "On")):
            raise DeviceError(f"{name}: pylon device has no image-file mode; it is not an emulated camera "
                              f"(set PYLON_CAMEMU before pypylon is imported)")
        if self.frame_period_s:
            self._set("AcquisitionFrameRateEnable", True)
            for node in ("AcquisitionFrameRate", "AcquisitionFrameRateAbs"):
                if self._set(node, 1.0 / self.frame_period_s):
                    break
        return fmt

    def _reload(self) -> None:
        """Restart streaming: pylon's emulation reads the image file when grabbing starts."""
        pylon = self._pylon
        self._cam.StopGrabbing()
        self._cam.StartGrabbing(pylon.GrabStrategy_LatestImageOnly if self.trigger == "free"
                                else pylon.GrabStrategy_OneByOne)

    # -- the sensor's registers as the optics process sees them -------------------------
    def _state(self, what: str, ok, deadline: float) -> dict:
        while True:
            state = read_state(self._state_path)
            if state is not None and ok(state):
                return state
            if time.monotonic() > deadline:
                raise DeviceTimeout(f"{self.name}: the optics process did not {what} within {self.wait_s:.3g} s; "
                                    f"is `optwin emulate` still running?")
            time.sleep(5e-4)

    def _set_exposure_hw(self, exposure_s: float) -> float:
        value = super()._set_exposure_hw(exposure_s)
        self._exposure_seq += 1
        seq = self._exposure_seq
        write_json_atomic(self._exposure_path, {"exposure_s": value, "seq": seq})
        self._state("apply the new exposure", lambda s: int(s.get("exposure_seq", -1)) >= seq,
                    time.monotonic() + self.wait_s)
        return value

    def _grab_hw(self, timeout_s: float):
        t_call = time.monotonic()
        after = self._frame_seen
        # a triggered sensor: the frame's exposure starts after the trigger
        self._state("deliver a new frame", lambda s: int(s["frame"]) > after and float(s["start_s"]) >= t_call,
                    t_call + max(self.wait_s, timeout_s))
        self._check_open()
        self._reload()
        image, t_start = super()._grab_hw(timeout_s)
        state = read_state(self._state_path)
        # the newest frame that may have been on disk when pylon read it (state read after the
        # PNG was loaded, ``pending`` written before a PNG is replaced): the next grab waits for a later one
        self._frame_seen = int(state["pending"]) if state is not None else after + 1
        return image, t_start
