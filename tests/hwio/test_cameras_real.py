"""Camera drivers against real vendor stacks: pylon's emulated camera, the GenTL
simulated producer viky.cti, and OpenCV reading a video file written here."""
from __future__ import annotations

import glob
import importlib.metadata
import os
import sys
import threading
import time

import numpy as np
import pytest

from hwio.devices import DeviceError, DeviceTimeout, Timeline

pytestmark = pytest.mark.hardware


# ----------------------------------------------------------------------------- pypylon
@pytest.fixture(scope="module")
def pylon_emulator():
    """pylon with its emulated camera (PYLON_CAMEMU must be set before pypylon loads)."""
    old = os.environ.get("PYLON_CAMEMU")
    os.environ["PYLON_CAMEMU"] = "1"
    try:
        pylon = pytest.importorskip("pypylon.pylon")
        if not any(d.GetDeviceClass() == "BaslerCamEmu"
                   for d in pylon.TlFactory.GetInstance().EnumerateDevices()):
            pytest.skip("pylon emulated camera not available")
        from hwio.drivers.pylon_camera import PylonCamera
        yield PylonCamera
    finally:
        if old is None:
            os.environ.pop("PYLON_CAMEMU", None)
        else:
            os.environ["PYLON_CAMEMU"] = old


def _emu_serial():
    from pypylon import pylon
    return next(d.GetSerialNumber() for d in pylon.TlFactory.GetInstance().EnumerateDevices()
                if d.GetDeviceClass() == "BaslerCamEmu")


def test_pylon_software_trigger_gives_one_fresh_frame_per_grab(pylon_emulator):
    with pylon_emulator(_emu_serial(), roi=(8, 16, 48, 64), exposure_s=2e-3,
                        timeline=Timeline()) as cam:
        node = cam.handle.GetNodeMap()
        assert cam.shape == (48, 64) == (node.GetNode("Height").GetValue(), node.GetNode("Width").GetValue())
        assert node.GetNode("OffsetX").GetValue() == 16 and node.GetNode("OffsetY").GetValue() == 8
        assert node.GetNode("ExposureAuto").GetValue() == "Off"
        assert node.GetNode("GainAuto").GetValue() == "Off"
        assert node.GetNode("TriggerMode").GetValue() == "On"
        assert cam.bit_depth == int(cam.pixel_format[4:])
        frames, ids = [], []
        for _ in range(4):
            frames.append(cam.grab())
            ids.append(cam.last_frame_id)
        assert [f.frame_index for f in frames] == [0, 1, 2, 3]
        assert np.diff(ids).tolist() == [1, 1, 1]             # exactly one camera frame per grab
        assert all(f.image.shape == (48, 64) for f in frames)
        assert all(f.image.dtype == (np.uint8 if cam.bit_depth == 8 else np.uint16) for f in frames)
        assert all(f.image.max() <= cam.max_adu for f in frames)
        # the emulator's test pattern moves every frame: equal images would mean a stale buffer
        assert all(not np.array_equal(a.image, b.image) for a, b in zip(frames, frames[1:]))
        stamps = [f.timestamp_s for f in frames]
        assert all(b > a for a, b in zip(stamps, stamps[1:]))
        assert frames[0].exposure_s == pytest.approx(2e-3)

        # a frame left over from an earlier trigger must be flushed, not returned
        before = cam.last_frame_id
        cam.handle.ExecuteSoftwareTrigger()
        time.sleep(0.05)
        cam.grab()
        assert cam.last_frame_id == before + 2


def test_pylon_exposure_round_trips_within_increment(pylon_emulator):
    with pylon_emulator(_emu_serial(), roi=(0, 0, 32, 32), timeline=Timeline()) as cam:
        node = cam.handle.GetNodeMap().GetNode("ExposureTime")
        inc_s = node.GetInc() * 1e-6
        for request in (50e-6, 1e-3, 12.345e-3, 0.25):
            cam.exposure_s = request
            assert abs(cam.exposure_s - request) <= inc_s + 1e-12
            assert cam.exposure_s == pytest.approx(node.GetValue() * 1e-6, abs=1e-12)
        cam.exposure_s = 1234.56e-6                            # off the camera's grid
        assert cam.exposure_s == pytest.approx(node.GetValue() * 1e-6, abs=1e-12)
        assert abs(cam.exposure_s - 1234.56e-6) <= 1e-6
        assert cam.grab().exposure_s == cam.exposure_s
        with pytest.raises(ValueError, match="outside the camera range"):
            cam.exposure_s = 1e3
        with pytest.raises(ValueError):
            cam.exposure_s = -1.0


def test_pylon_missing_trigger_is_a_quick_device_timeout(pylon_emulator):
    cam = pylon_emulator(_emu_serial(), roi=(0, 0, 32, 32), trigger="Line1", timeline=Timeline())
    try:
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeout) as info:
            cam.grab(timeout_s=0.25)
        assert time.monotonic() - t0 < 1.5
        assert info.value.retryable and "\n" not in str(info.value)
    finally:
        cam.close()
    cam.close()                                                # idempotent
    with pytest.raises(DeviceError, match="closed"):
        cam.grab()


def test_pylon_free_run_frames_are_newer_than_slm_settle(pylon_emulator):
    timeline = Timeline()
    with pylon_emulator(_emu_serial(), roi=(0, 0, 32, 32), trigger="free", exposure_s=1e-3,
                        timeline=timeline) as cam:
        for _ in range(3):
            settle = timeline.now() + 0.005                   # an SLM frame settling in 5 ms
            timeline.note_settle(settle)
            frame = cam.grab()
            assert frame.timestamp_s >= settle


def test_pylon_unknown_serial_or_trigger_is_clear(pylon_emulator):
    with pytest.raises(DeviceError, match="no camera with serial 'nope'"):
        pylon_emulator("nope")
    with pytest.raises(ValueError, match="trigger 'Line9'"):
        pylon_emulator(_emu_serial(), trigger="Line9")


# ----------------------------------------------------------------------------- harvesters
@pytest.fixture(scope="module")
def viky_cti():
    pytest.importorskip("harvesters.core")
    try:
        files = importlib.metadata.files("genicam") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("genicam wheel not installed")
    paths = [str(f.locate()) for f in files if str(f).endswith("viky.cti")]
    if not paths or not os.path.isfile(paths[0]):
        pytest.skip("simulated GenTL producer viky.cti not found in the genicam wheel")
    return paths[0]


def test_genicam_simulated_camera_streams_fresh_frames(viky_cti):
    from hwio.drivers.genicam_camera import GenICamCamera
    timeline = Timeline()
    with GenICamCamera(viky_cti, timeline=timeline, timeout_s=2.0) as cam:
        nm = cam.handle.remote_device.node_map
        assert cam.shape == (nm.Height.value, nm.Width.value)
        assert nm.PixelFormat.value == "Mono8" and cam.bit_depth == 8
        assert cam.trigger == "free"                         # viky has no trigger nodes
        ids, frames = [], []
        for _ in range(3):
            settle = timeline.now()
            timeline.note_settle(settle)
            frames.append(cam.grab())
            ids.append(cam.last_frame_id)
            assert frames[-1].timestamp_s >= settle
        assert [f.frame_index for f in frames] == [0, 1, 2]
        assert all(b > a for a, b in zip(ids, ids[1:]))
        assert all(f.image.shape == cam.shape and f.image.dtype == np.uint8 for f in frames)
        # frames queued while nobody grabbed are stale: after idling for several frame
        # periods the next grab must skip them instead of returning the oldest one
        period_s = 1.0 / nm.AcquisitionFrameRate.value
        before = cam.last_frame_id
        time.sleep(6 * period_s)
        cam.grab()
        assert cam.last_frame_id >= before + 2
        with pytest.raises(DeviceError, match="ExposureTime"):
            cam.exposure_s = 1e-3


def test_genicam_stalled_stream_times_out_and_recovers(viky_cti):
    from hwio.drivers.genicam_camera import GenICamCamera
    cam = GenICamCamera(viky_cti, serial="2", roi=(10, 20, 100, 200), timeline=Timeline())
    try:
        assert cam.shape == (100, 200) and cam.serial == "2"
        cam.handle.stop()                                      # nothing will arrive now
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeout):
            cam.grab(timeout_s=0.2)
        assert time.monotonic() - t0 < 1.5
        cam.handle.start()
        assert cam.grab(timeout_s=2.0).image.shape == (100, 200)
    finally:
        cam.close()
    cam.close()


def test_genicam_two_cameras_share_one_producer(viky_cti):
    from hwio.drivers.genicam_camera import GenICamCamera
    with GenICamCamera(viky_cti, serial="0", timeline=Timeline()) as a, \
            GenICamCamera(viky_cti, serial="1", timeline=Timeline()) as b:
        assert (a.serial, b.serial) == ("0", "1")
        assert a.grab().image.shape == a.shape and b.grab().image.shape == b.shape
        a.close()
        assert b.grab().image.shape == b.shape             # closing one keeps the other alive


def test_genicam_bad_producer_and_serial(viky_cti, tmp_path):
    from hwio.drivers.genicam_camera import GenICamCamera
    with pytest.raises(ValueError, match="not found"):
        GenICamCamera(str(tmp_path / "missing.cti"))
    with pytest.raises(DeviceError, match="no camera with serial '9'"):
        GenICamCamera(viky_cti, serial="9")


def test_genicam_node_helpers():
    from hwio.drivers.genicam_camera import mono_bits, pick_mono_format, snap_to_increment
    assert pick_mono_format(["RGB8", "Mono8", "Mono12", "Mono12p"], None, "c") == "Mono12"
    assert pick_mono_format(["Mono8", "Mono10"], "Mono8", "c") == "Mono8"
    with pytest.raises(ValueError, match="not offered"):
        pick_mono_format(["Mono8"], "Mono16", "c")
    with pytest.raises(DeviceError, match="monochrome"):
        pick_mono_format(["RGB8", "BayerRG8"], None, "c")
    assert mono_bits("Mono12p") == 12 and mono_bits("Mono8") == 8
    assert snap_to_increment(1234.56, 10.0, 1e6, 5.0) == 1235.0
    assert snap_to_increment(7.0, 10.0, 100.0, 4.0) == 10.0
    assert snap_to_increment(99.0, 10.0, 100.0, 4.0) == 98.0       # grid point below max
    assert snap_to_increment(3.3, 1.0, 9.0, None) == 3.3


# ----------------------------------------------------------------------------- OpenCV
@pytest.fixture
def gray_video(tmp_path):
    """A lossless (FFV1) gray .avi of 6 random frames; returns (path, frames)."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, (40, 56), dtype=np.uint8) for _ in range(6)]
    path = str(tmp_path / "frames.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (56, 40), isColor=False)
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write FFV1 video")
    for f in frames:
        writer.write(f)
    writer.release()
    return path, frames


def test_opencv_video_file_plays_frames_in_order(gray_video):
    from hwio.drivers.opencv_camera import OpenCVCamera
    path, frames = gray_video
    cam = OpenCVCamera(path, timeline=Timeline())
    try:
        assert cam.shape == (40, 56) and cam.bit_depth == 8
        got = [cam.grab() for _ in frames]
        assert [g.frame_index for g in got] == list(range(len(frames)))
        for g, f in zip(got, frames):
            np.testing.assert_array_equal(g.image, f)          # lossless, in order, gray
        stamps = [g.timestamp_s for g in got]
        assert all(b >= a for a, b in zip(stamps, stamps[1:]))
        with pytest.raises(DeviceError, match="end of video file") as info:
            cam.grab()
        assert not info.value.retryable
        with pytest.raises(DeviceError, match="no exposure"):
            cam.exposure_s = 1e-3
    finally:
        cam.close()
    cam.close()
    with OpenCVCamera(path, loop=True, timeline=Timeline()) as looping:
        for i in range(len(frames) + 2):
            np.testing.assert_array_equal(looping.grab().image, frames[i % len(frames)])


def test_opencv_missing_device_is_a_quick_device_error(tmp_path):
    pytest.importorskip("cv2")
    from hwio.drivers.opencv_camera import OpenCVCamera
    with pytest.raises(DeviceError, match="does not exist"):
        OpenCVCamera(str(tmp_path / "none.avi"))
    if glob.glob("/dev/video*"):
        pytest.skip("a capture device exists here; cannot test the missing-device error")
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match="could not open video source 0"):
        OpenCVCamera(0, open_timeout_s=3.0)
    assert time.monotonic() - t0 < 3.5


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX named pipes")
def test_opencv_blocked_open_times_out_instead_of_hanging(tmp_path):
    pytest.importorskip("cv2")
    from hwio.drivers.opencv_camera import OpenCVCamera
    fifo = str(tmp_path / "stream")
    os.mkfifo(fifo)                       # opening a pipe without a writer blocks forever
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout, match="took longer than"):
        OpenCVCamera(fifo, backend="ffmpeg", open_timeout_s=0.3)
    assert time.monotonic() - t0 < 1.5
    # unblock the stuck open(); the driver's worker thread must then finish
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        if not any(t.name == f"optwin-opencv-{fifo}" for t in threading.enumerate()):
            break
        time.sleep(0.05)
    assert not any(t.name == f"optwin-opencv-{fifo}" for t in threading.enumerate())


# ----------------------------------------------------------------------------- registry
def test_registry_template_and_missing_extras(monkeypatch):
    from hwio import drivers
    from hwio.devices import SLM, Camera
    from hwio.drivers import template
    assert drivers.get_driver("opencv").__name__ == "OpenCVCamera"
    with pytest.raises(ValueError, match="unknown hardware backend"):
        drivers.get_driver("nope")
    # the template overrides every hook a driver must implement
    assert template.TemplateSLM._show_hw is not SLM._show_hw
    assert template.TemplateSLM.close is not SLM.close
    for hook in ("_grab_hw", "_set_exposure_hw", "close"):
        assert getattr(template.TemplateCamera, hook) is not getattr(Camera, hook)
    with pytest.raises(NotImplementedError, match="template"):
        template.TemplateCamera()._grab_hw(1.0)
    from hwio.drivers.genicam_camera import GenICamCamera
    from hwio.drivers.pylon_camera import PylonCamera
    monkeypatch.setitem(sys.modules, "pypylon.pylon", None)
    with pytest.raises(ImportError, match=r"pip install optwin\[hardware\]"):
        PylonCamera()
    monkeypatch.setitem(sys.modules, "harvesters.core", None)
    with pytest.raises(ImportError, match=r"pip install optwin\[hardware\]"):
        GenICamCamera("x.cti")
