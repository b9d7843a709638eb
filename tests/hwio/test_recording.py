"""HDF5 recorder: round trip, crash safety under SIGKILL, resume, damaged files."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from hwio.devices import CameraFrame
from hwio.recording import (RECORDING_SCHEMA_VERSION, Recorder, RecordingError, _lookup3, list_streams,
                            read_stream)

REPO = Path(__file__).resolve().parents[2]
SHAPE = (48, 64)


def frame_for(k: int) -> np.ndarray:
    """Deterministic content of frame k (every pixel depends on k)."""
    return ((np.arange(SHAPE[0] * SHAPE[1], dtype=np.int64).reshape(SHAPE) * 3 + 7 * k) % 4096).astype(np.uint16)


CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    sys.path.insert(0, {repo!r})
    from hwio.recording import Recorder
    SHAPE = {shape!r}
    def frame_for(k):
        return ((np.arange(SHAPE[0] * SHAPE[1], dtype=np.int64).reshape(SHAPE) * 3 + 7 * k) % 4096).astype(np.uint16)
    mode = sys.argv[2]
    rec = Recorder(sys.argv[1], resume=(mode == "resume"), flush_every=5, flush_interval_s=60.0)
    k = rec.n_frames("cam")
    reported = rec.committed("cam")
    while True:
        rec.append("cam", frame_for(k), frame_index=1000 + k, timestamp_s=10.0 + 0.001 * k, exposure_s=2e-3,
                   lo_level=k % 256, power_w=0.25 * k)
        if k % 2 == 0:
            rec.append("vec", np.full(8, float(k)), units="e-")
        k += 1
        if mode == "partial" and k == 10:
            # commit 10 frames, then write 3 more and flush HDF5 without committing them:
            # the state a kill between the data flush and the commit leaves behind
            rec.flush()
            for j in range(10, 13):
                rec.append("cam", frame_for(j), frame_index=1000 + j, timestamp_s=10.0 + 0.001 * j,
                           exposure_s=2e-3, lo_level=j % 256, power_w=0.25 * j)
            rec._f.flush()
            print("ready", flush=True)
            time.sleep(60)
        if rec.committed("cam") != reported:
            reported = rec.committed("cam")
            print(reported, flush=True)
""")


def _start_child(tmp_path: Path, path: Path, mode: str) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(repo=str(REPO), shape=SHAPE))
    return subprocess.Popen([sys.executable, str(script), str(path), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _kill_after(proc: subprocess.Popen, min_committed: int, extra_s: float) -> int:
    """Read committed counts until min_committed, keep it writing extra_s seconds, SIGKILL; last count."""
    last = 0
    deadline = time.monotonic() + 20
    for line in proc.stdout:
        last = int(line)
        if last >= min_committed or time.monotonic() > deadline:
            break
    time.sleep(extra_s)   # the child is appending (and committing) while we wait
    proc.send_signal(signal.SIGKILL)
    rest, err = proc.communicate(timeout=10)
    counts = [int(x) for x in rest.split()]
    assert proc.returncode == -signal.SIGKILL, err
    return max([last] + counts)


def _check_frames(stream, start=0):
    for i in range(len(stream)):
        k = start + i
        np.testing.assert_array_equal(stream.frames[i], frame_for(k))
    n = len(stream)
    np.testing.assert_array_equal(stream.meta["frame_index"], 1000 + np.arange(start, start + n))
    np.testing.assert_allclose(stream.meta["timestamp_s"], 10.0 + 0.001 * np.arange(start, start + n))
    np.testing.assert_array_equal(stream.meta["lo_level"], np.arange(start, start + n) % 256)
    np.testing.assert_allclose(stream.meta["power_w"], 0.25 * np.arange(start, start + n))


def test_round_trip_attributes_and_camera_frames(tmp_path):
    path = tmp_path / "rec.h5"
    with Recorder(path, flush_every=3, attrs={"bench": "sim", "layers": [2, 3]}) as rec:
        for k in range(7):
            rec.append("cam", frame_for(k), frame_index=1000 + k, timestamp_s=10.0 + 0.001 * k, exposure_s=2e-3,
                       units="adu", lo_level=k % 256, power_w=0.25 * k)
            rec.append_frame("cam_out", CameraFrame(image=frame_for(k)[:4, :5], frame_index=k, timestamp_s=1.0 + k,
                                                    exposure_s=1e-3), flag=bool(k % 2))
        assert rec.n_frames("cam") == 7
    s = read_stream(path, "cam")
    assert len(s) == 7 and s.units == "adu"
    _check_frames(s)
    assert s.attrs["kind"] == "optwin-recording"
    assert s.attrs["schema_version"] == RECORDING_SCHEMA_VERSION
    assert s.attrs["software_version"]
    assert s.attrs["bench"] == "sim" and s.attrs["layers"] == "[2, 3]"
    assert "timestamp_s" in s.attrs["units"]
    out = read_stream(path, "cam_out", start=2, stop=5)
    np.testing.assert_array_equal(out.meta["frame_index"], [2, 3, 4])
    np.testing.assert_array_equal(out.meta["flag"], [False, True, False])
    np.testing.assert_array_equal(out.frames[0], frame_for(2)[:4, :5])
    assert list_streams(path) == {"cam": 7, "cam_out": 7}
    with h5py.File(path, "r") as f:   # a cleanly closed file opens without SWMR
        assert f["streams/cam/frames"].attrs["units"] == "adu"
        assert f["streams/cam/meta/exposure_s"].attrs["units"] == "s"
        assert f["streams/cam/frames"].chunks[1:] == SHAPE


def test_flush_every_n_frames(tmp_path):
    rec = Recorder(tmp_path / "n.h5", flush_every=3, flush_interval_s=3600)
    counts = []
    for k in range(7):
        rec.append("x", np.full(4, k))
        counts.append(rec.committed("x"))
    assert counts == [0, 0, 3, 3, 3, 6, 6]
    rec.close()
    assert len(read_stream(tmp_path / "n.h5", "x")) == 7


def test_flush_by_time(tmp_path):
    rec = Recorder(tmp_path / "t.h5", flush_every=1000, flush_interval_s=0.05)
    rec.append("x", np.zeros(3))
    assert rec.committed("x") == 0
    time.sleep(0.08)
    rec.append("x", np.ones(3))
    assert rec.committed("x") == 2
    rec.close()


def test_sigkill_keeps_every_flushed_frame_and_resume_continues(tmp_path):
    path = tmp_path / "killed.h5"
    proc = _start_child(tmp_path, path, "fresh")
    reported = _kill_after(proc, min_committed=60, extra_s=0.15)
    # a killed writer leaves the file flagged as open: plain HDF5 refuses it, read_stream copes
    with pytest.raises(OSError, match="already open"):
        h5py.File(path, "r")
    s = read_stream(path, "cam")
    assert len(s) >= reported >= 60
    _check_frames(s)
    vec = read_stream(path, "vec")
    for i, v in enumerate(vec.frames):
        np.testing.assert_array_equal(v, np.full(8, 2.0 * i))
    assert vec.units == "e-"

    # resume in another process, kill it again, then finish in this one
    n_before = len(s)
    proc = _start_child(tmp_path, path, "resume")
    reported2 = _kill_after(proc, min_committed=n_before + 20, extra_s=0.1)
    s2 = read_stream(path, "cam")
    assert len(s2) >= reported2 >= n_before + 20
    _check_frames(s2)

    rec = Recorder(path, resume=True)
    n = rec.n_frames("cam")
    assert n == len(s2)
    for k in range(n, n + 4):
        rec.append("cam", frame_for(k), frame_index=1000 + k, timestamp_s=10.0 + 0.001 * k, exposure_s=2e-3,
                   lo_level=k % 256, power_w=0.25 * k)
    rec.close()
    s3 = read_stream(path, "cam")
    assert len(s3) == n + 4
    _check_frames(s3)
    with h5py.File(path, "r") as f:   # flags cleared by resume + clean close
        assert f["streams/cam"].attrs["committed"] == n + 4


def test_resume_drops_written_but_uncommitted_frames(tmp_path):
    path = tmp_path / "partial.h5"
    proc = _start_child(tmp_path, path, "partial")
    for line in proc.stdout:          # committed counts, then "ready"
        if line.strip() == "ready":
            break
    else:
        pytest.fail(f"child ended early: {proc.stderr.read()}")
    # while the recorder lives, resuming its file is refused (it would corrupt the file)
    with pytest.raises(RecordingError, match=f"process {proc.pid} on this host is still writing"):
        Recorder(path, resume=True)
    assert len(read_stream(path, "cam")) == 10        # readers may look while it writes
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    with h5py.File(path, "r", swmr=True) as f:
        assert f["streams/cam/frames"].shape[0] == 13       # on disk, but only 10 committed
        assert f["streams/cam"].attrs["committed"] == 10
    assert len(read_stream(path, "cam")) == 10
    rec = Recorder(path, resume=True)
    assert rec.dropped_on_resume == {"cam": 3}
    assert rec.n_frames("cam") == 10
    rec.append("cam", frame_for(10), frame_index=1010, timestamp_s=10.010, exposure_s=2e-3, lo_level=10,
               power_w=2.5)
    rec.close()
    s = read_stream(path, "cam")
    assert len(s) == 11
    _check_frames(s)


def test_lookup3_checksum_matches_hdf5(tmp_path):
    path = tmp_path / "c.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["x"] = 1
    raw = path.read_bytes()
    assert raw[:8] == b"\x89HDF\r\n\x1a\n" and raw[8] >= 2
    n = 12 + 4 * raw[9]
    assert _lookup3(raw[:n]) == int.from_bytes(raw[n:n + 4], "little")
    # published lookup3 test vector: hashlittle("Four score and seven years ago", 30, 0)
    assert _lookup3(b"Four score and seven years ago") == 0x17770551


def test_damaged_and_foreign_files_give_one_line_errors(tmp_path):
    good = tmp_path / "good.h5"
    with Recorder(good) as rec:
        for k in range(20):
            rec.append("cam", frame_for(k))
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(RecordingError, match="truncated.*re-copy") as exc:
        read_stream(truncated, "cam")
    assert "\n" not in str(exc.value)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(RecordingError, match="not a readable HDF5 recording.*resume=True") as exc:
        read_stream(garbage, "cam")
    assert "\n" not in str(exc.value)
    with pytest.raises(RecordingError, match="no HDF5 superblock|not a readable"):
        Recorder(garbage, resume=True)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(RecordingError, match="not an optwin recording"):
        read_stream(other, "cam")
    with pytest.raises(RecordingError, match="no such recording"):
        read_stream(tmp_path / "missing.h5", "cam")
    with pytest.raises(RecordingError, match=r"no stream 'z' \(streams: cam\)"):
        read_stream(good, "z")
    with pytest.raises(FileExistsError, match="resume=True"):
        Recorder(good)


def test_append_errors(tmp_path):
    rec = Recorder(tmp_path / "e.h5")
    rec.append("cam", frame_for(0), lo_level=1)
    with pytest.raises(ValueError, match="shape"):
        rec.append("cam", np.zeros((3, 3), np.uint16), lo_level=1)
    with pytest.raises(ValueError, match="dtype float64 does not fit"):
        rec.append("cam", frame_for(0).astype(float), lo_level=1)
    with pytest.raises(ValueError, match="same fields"):
        rec.append("cam", frame_for(0))
    with pytest.raises(TypeError, match="number or bool"):
        rec.append("new", np.zeros(2), note="text")
    rec.append("cam", frame_for(1).astype(np.uint8), lo_level=2)   # safe cast is fine
    rec.close()
    with pytest.raises(ValueError, match="closed"):
        rec.append("cam", frame_for(0), lo_level=1)
    assert len(read_stream(tmp_path / "e.h5", "cam")) == 2


def test_a_reader_holding_the_file_does_not_break_the_writer(tmp_path):
    """Someone inspecting the raw file mid-run: the writer waits for the lock instead of crashing."""
    import subprocess
    path = tmp_path / "shared.h5"
    rec = Recorder(path, flush_every=1)
    rec.append("first", np.zeros((4, 4)))
    rec.flush()
    opened = tmp_path / "opened"
    reader = subprocess.Popen([sys.executable, "-c",
                               "import h5py, pathlib, sys, time\n"
                               "f = h5py.File(sys.argv[1], 'r', swmr=True)\n"
                               "pathlib.Path(sys.argv[2]).touch()\n"
                               "time.sleep(1.0)\n"
                               "f.close()\n", str(path), str(opened)])
    deadline = time.monotonic() + 20
    while not opened.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert opened.exists(), "the reader never opened the file"
    rec.append("second", np.ones((4, 4)))      # a new stream: the writer must reopen the file
    rec.close()
    reader.wait(timeout=20)
    counts = list_streams(path)
    assert counts == {"first": 1, "second": 1}
