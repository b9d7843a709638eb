"""The one device-access policy (hwio.device_access) and the one stale-frame check (Camera.grab)."""
from __future__ import annotations

import numpy as np
import pytest

from hwio.device_access import DEFAULT_RETRIES, DeviceAccess, DeviceRetriesExhausted, call_with_retries
from hwio.devices import Camera, DeviceError, DeviceTimeout, FrameError, SLMWriteError, Timeline


class Flaky:
    """Fails with ``errors`` in turn, then returns ``"ok"``; counts its calls."""

    def __init__(self, *errors):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return ("ok",) + args


def test_retryable_errors_are_retried_until_the_call_succeeds():
    seen = []
    call = Flaky(DeviceTimeout("t"), FrameError("f"), SLMWriteError("w"))
    assert call_with_retries(call, 7, retries=3, on_retry=seen.append) == ("ok", 7)
    assert call.calls == 4 and [type(e) for e in seen] == [DeviceTimeout, FrameError, SLMWriteError]


@pytest.mark.parametrize("retries", [0, 2, DEFAULT_RETRIES])
def test_a_persistent_retryable_error_is_tried_retries_plus_one_times_then_named(retries):
    call = Flaky(*[DeviceTimeout(f"cam_z1: no frame ({k})") for k in range(20)])
    with pytest.raises(DeviceRetriesExhausted) as info:
        DeviceAccess(retries=retries).call(call, what="grab on cam_z1")
    assert call.calls == retries + 1
    msg = str(info.value)
    assert msg.startswith(f"grab on cam_z1 failed {retries + 1} times in a row (cam_z1: no frame ({retries}))")
    assert "check the device" in msg and "\n" not in msg
    err = info.value
    assert isinstance(err, DeviceError) and not err.retryable and err.attempts == retries + 1
    assert isinstance(err.last, DeviceTimeout) and err.__cause__ is err.last


def test_non_retryable_errors_are_never_retried():
    broken = DeviceError("cam_z1: sensor gone")             # retryable False
    call = Flaky(broken)
    with pytest.raises(DeviceError) as info:
        call_with_retries(call, retries=5)
    assert info.value is broken and call.calls == 1
    call = Flaky(ValueError("bad frame shape"))
    with pytest.raises(ValueError):
        call_with_retries(call, retries=5)
    assert call.calls == 1
    # an exhausted inner policy is not retried again by an outer one: attempts do not multiply
    inner = Flaky(*[FrameError("dropped")] * 10)
    with pytest.raises(DeviceRetriesExhausted):
        call_with_retries(lambda: call_with_retries(inner, retries=1), retries=3)
    assert inner.calls == 2


def test_policy_is_validated():
    with pytest.raises(ValueError, match="retries"):
        DeviceAccess(retries=-1)
    with pytest.raises(ValueError, match="grab_timeout_s"):
        DeviceAccess(grab_timeout_s=0.0)
    assert DeviceAccess().attempts == DEFAULT_RETRIES + 1


class ScriptedCamera(Camera):
    """A camera whose driver delivers scripted (timestamp, value) frames; records the timeouts asked."""

    def __init__(self, script, **kw):
        super().__init__("cam", (2, 3), timeline=Timeline(clock=lambda: 100.0, sleep=lambda s: None), **kw)
        self.script = list(script)
        self.timeouts = []

    def _grab_hw(self, timeout_s):
        self.timeouts.append(timeout_s)
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        ts, value = item
        return np.full(self.shape, value, dtype=np.uint16), ts


def test_camera_discards_repeated_frames_and_frames_older_than_the_last_panel_change():
    cam = ScriptedCamera([(1.0, 1), (1.0, 1), (2.0, 2), (2.5, 3), (3.5, 4)])
    assert cam.grab().image[0, 0] == 1
    assert cam.grab().image[0, 0] == 2 and cam.stale_frames == 1      # the repeat of frame 1 is dropped
    cam.timeline.note_settle(3.0)                                     # a panel settles at t = 3 s
    frame = cam.grab()
    assert frame.image[0, 0] == 4 and frame.timestamp_s == 3.5 and cam.stale_frames == 2
    # a driver that keeps repeating: a clear, retryable error after max_stale_retries + 1 tries
    cam = ScriptedCamera([(5.0, 1)] * 4, max_stale_retries=2)
    cam.grab()
    with pytest.raises(FrameError, match="stale frames.*3 tries") as info:
        cam.grab()
    assert info.value.retryable and cam.stale_frames == 3


def test_policy_grab_retries_camera_faults_with_its_timeout():
    cam = ScriptedCamera([DeviceTimeout("late"), (1.0, 1), (1.0, 1), (1.0, 1), (2.0, 2)], max_stale_retries=1)
    seen = []
    frame = DeviceAccess(retries=2, grab_timeout_s=0.25).grab(cam, on_retry=seen.append)
    assert frame.image[0, 0] == 1 and cam.timeouts == [0.25, 0.25]
    # the next grab sees two repeats (a stale FrameError, retried) and then a fresh frame
    frame = DeviceAccess(retries=2, grab_timeout_s=0.25).grab(cam, on_retry=seen.append)
    assert frame.image[0, 0] == 2 and [type(e) for e in seen] == [DeviceTimeout, FrameError]
    assert DeviceAccess().grab(ScriptedCamera([(1.0, 0)])).timestamp_s == 1.0     # default: the camera's timeout
