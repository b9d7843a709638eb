"""Crash-safe HDF5 recording of camera frames (or any arrays) and their metadata.

File layout (``kind = "optwin-recording"``)::

    /                          attrs: kind, schema_version, software_version, created_utc, + user attrs
    /streams/<name>            attrs: committed (frames safely on disk), units, frame_shape, dtype
    /streams/<name>/frames     (n, *frame_shape), chunked, resizable along axis 0; attrs units
    /streams/<name>/meta/<f>   (n,) one dataset per metadata field: frame_index (int64),
                               timestamp_s (float64, Unix time), exposure_s (float64), + user scalars

Crash safety
------------
The file is written with ``libver='latest'`` in SWMR (single-writer/multiple-reader)
mode, in which HDF5 orders its metadata writes so that the file on disk is always
a consistent HDF5 file; readers may open it while it grows.  Every
``flush_every`` frames or ``flush_interval_s`` seconds the recorder flushes the
data, then sets each stream's ``committed`` attribute to its frame count, then
flushes again.  After a ``kill -9`` every frame below ``committed`` is intact;
frames above it (written but not committed) may be partial and are ignored by
:func:`read_stream` and dropped by ``Recorder(path, resume=True)``.

A killed writer leaves the superblock's "open for writing" flags set, which makes
HDF5 refuse to open the file for writing (``h5clear -s`` is the HDF5 tool for
this).  ``resume=True`` clears those flags itself: it checks the superblock
checksum, clears the flags, moves the end-of-allocation mark to the end of the file
(so nothing written after the last superblock update is overwritten) and rewrites
the checksum.  It refuses when the file's ``writer_pid`` (root attribute, 0 after a clean
close) is a live process on this host.  Readers use SWMR-read mode, which opens such files
directly, also while a recorder is writing.

New streams and metadata fields can appear at any time: HDF5 cannot create
objects in SWMR mode, so the recorder then flushes, closes and reopens the file
(a few milliseconds), creates them, and re-enters SWMR mode.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hwio.h5check import check_root

__all__ = ["Recorder", "RecordedStream", "read_stream", "list_streams", "RecordingError",
           "RECORDING_SCHEMA_VERSION"]

RECORDING_SCHEMA_VERSION = 1
KIND = "optwin-recording"
_STANDARD_FIELDS = {"frame_index": (np.int64, ""), "timestamp_s": (np.float64, "s"),
                    "exposure_s": (np.float64, "s")}


class RecordingError(ValueError):
    """A recording file is missing, corrupt, truncated or of another kind."""


def _software_version() -> str:
    try:
        from importlib.metadata import version
        return version("optwin")
    except Exception:  # noqa: BLE001 - running from a checkout
        return "0+checkout"


# ---------------------------------------------------------------------------------------------
# Superblock status flags (what `h5clear -s` does), with HDF5's Jenkins lookup3 checksum.

def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF


def _lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle`` (the checksum HDF5 stores in v2/v3 superblocks)."""
    m = 0xFFFFFFFF
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & m
    i = 0
    while length - i > 12:
        a = (a + int.from_bytes(data[i:i + 4], "little")) & m
        b = (b + int.from_bytes(data[i + 4:i + 8], "little")) & m
        c = (c + int.from_bytes(data[i + 8:i + 12], "little")) & m
        a = (a - c) & m; a ^= _rot(c, 4); c = (c + b) & m
        b = (b - a) & m; b ^= _rot(a, 6); a = (a + c) & m
        c = (c - b) & m; c ^= _rot(b, 8); b = (b + a) & m
        a = (a - c) & m; a ^= _rot(c, 16); c = (c + b) & m
        b = (b - a) & m; b ^= _rot(a, 19); a = (a + c) & m
        c = (c - b) & m; c ^= _rot(b, 4); b = (b + a) & m
        i += 12
    tail = data[i:]
    if not tail:
        return c
    tail = tail + bytes(12 - len(tail))
    a = (a + int.from_bytes(tail[0:4], "little")) & m
    b = (b + int.from_bytes(tail[4:8], "little")) & m
    c = (c + int.from_bytes(tail[8:12], "little")) & m
    c ^= b; c = (c - _rot(b, 14)) & m
    a ^= c; a = (a - _rot(c, 11)) & m
    b ^= a; b = (b - _rot(a, 25)) & m
    c ^= b; c = (c - _rot(b, 16)) & m
    a ^= c; a = (a - _rot(c, 4)) & m
    b ^= a; b = (b - _rot(a, 14)) & m
    c ^= b; c = (c - _rot(b, 24)) & m
    return c


_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _clear_status_flags(path: Path) -> bool:
    """Clear the 'open for write' flags a killed writer left; returns True if anything changed.

    Raises RecordingError when the superblock cannot be found or its checksum is wrong.
    """
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        offset = 0
        while True:  # the superblock sits at 0, 512, 1024, 2048, ...
            if offset + 8 > size:
                raise RecordingError(f"{path}: no HDF5 superblock found; the file is not HDF5 or is damaged, "
                                     f"re-record")
            fh.seek(offset)
            if fh.read(8) == _SIGNATURE:
                break
            offset = 512 if offset == 0 else offset * 2
        head = fh.read(4)
        version, size_off = head[0], head[1]
        flags = head[3]
        if version < 2 or flags == 0:
            return False
        if size_off not in (4, 8):
            raise RecordingError(f"{path}: unsupported superblock (offset size {size_off}); run `h5clear -s {path}`")
        n = 12 + 4 * size_off
        fh.seek(offset)
        block = bytearray(fh.read(n + 4))
        stored = struct.unpack("<I", block[n:n + 4])[0]
        if _lookup3(bytes(block[:n])) != stored:
            raise RecordingError(f"{path}: superblock checksum mismatch, the file is damaged; "
                                 f"recover frames with read_stream() and re-record")
        fmt = "<I" if size_off == 4 else "<Q"
        base = struct.unpack(fmt, block[12:12 + size_off])[0]
        eoa_pos = 12 + 2 * size_off
        eoa = struct.unpack(fmt, block[eoa_pos:eoa_pos + size_off])[0]
        block[11] = 0
        block[eoa_pos:eoa_pos + size_off] = struct.pack(fmt, max(eoa, size - base))
        block[n:n + 4] = struct.pack("<I", _lookup3(bytes(block[:n])))
        fh.seek(offset)
        fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _open_for_append(path, wait_s: float = 30.0) -> h5py.File:
    """Reopen a recording for writing; a reader (e.g. someone inspecting the raw file while a
    calibration runs) may hold the file lock for a moment, so retry until ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return h5py.File(path, "a", libver="latest")
        except BlockingIOError as exc:
            if time.monotonic() > deadline:
                raise RecordingError(f"{path}: another process keeps the file open ({exc}); close readers of "
                                     f"the raw file and resume the run") from None
            time.sleep(0.05)


def _open_read(path) -> h5py.File:
    """Open a recording for reading (SWMR-read if a writer is live or was killed)."""
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"{path}: no such recording file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        if "already open for write" in str(exc):
            try:
                f = h5py.File(path, "r", swmr=True)
            except OSError as exc2:
                raise RecordingError(_damage_message(path, exc2)) from None
        else:
            raise RecordingError(_damage_message(path, exc)) from None
    try:
        check_root(f, path, KIND, RECORDING_SCHEMA_VERSION, what="an optwin recording", label="recording",
                   error=RecordingError)
    except BaseException:
        f.close()
        raise
    return f


def _damage_message(path: Path, exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "truncated" in text:
        return (f"{path}: recording is truncated ({text}); it was cut short (incomplete copy or full disk): "
                f"re-copy it from the source, or re-record")
    return (f"{path}: not a readable HDF5 recording ({text}); if a recorder was killed open it with "
            f"Recorder(path, resume=True), otherwise re-record")


# ---------------------------------------------------------------------------------------------

class Recorder:
    """Append frames and per-frame metadata to an HDF5 file as they arrive.

    Parameters
    ----------
    path : HDF5 file to write.
    resume : continue an existing recording after its last committed frame (frames
        written but not committed are dropped).  A missing file is created.
    overwrite : replace an existing file (without ``resume``).
    flush_every : commit after this many appended frames (all streams together).
    flush_interval_s : commit when this many seconds passed since the last commit
        (checked at every append).
    attrs : extra root attributes (JSON-compatible values; dicts/lists stored as JSON).
    compression : h5py compression for frames (None, "gzip", "lzf").
    """

    def __init__(self, path, resume: bool = False, overwrite: bool = False, flush_every: int = 16,
                 flush_interval_s: float = 1.0, attrs: dict | None = None, compression: str | None = None):
        self.path = Path(path)
        if int(flush_every) < 1:
            raise ValueError(f"flush_every must be >= 1 frame, got {flush_every}")
        if not flush_interval_s > 0:
            raise ValueError(f"flush_interval_s must be > 0 s, got {flush_interval_s}")
        self.flush_every = int(flush_every)
        self.flush_interval_s = float(flush_interval_s)
        self.compression = compression
        self._f: h5py.File | None = None
        self._streams: dict[str, dict] = {}
        self._pending = 0
        self._last_flush = time.monotonic()
        self.dropped_on_resume: dict[str, int] = {}
        if self.path.exists() and resume:
            self._resume()
        else:
            if self.path.exists() and not overwrite:
                raise FileExistsError(f"{self.path}: recording exists; pass resume=True to continue it, "
                                      f"overwrite=True to replace it, or choose another path")
            self._f = h5py.File(self.path, "w", libver="latest")
            root = self._f.attrs
            root["kind"] = KIND
            root["schema_version"] = RECORDING_SCHEMA_VERSION
            root["software_version"] = _software_version()
            root["created_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
            root["units"] = json.dumps({"timestamp_s": "s (Unix time)", "exposure_s": "s"})
            for k, v in (attrs or {}).items():
                root[k] = json.dumps(v) if isinstance(v, (dict, list, tuple)) or v is None else v
            self._f.create_group("streams")
            self._mark_writer()
            self._f.swmr_mode = True

    # ------------------------------------------------------------------ open / resume
    def _resume(self) -> None:
        probe = _open_read(self.path)  # validates kind and schema, works on killed files
        pid = int(probe.attrs.get("writer_pid", 0))
        host = probe.attrs.get("writer_host", "")
        host = host.decode() if isinstance(host, bytes) else str(host)
        probe.close()
        if pid and host == socket.gethostname() and pid != os.getpid() and _pid_alive(pid):
            raise RecordingError(f"{self.path}: recorder process {pid} on this host is still writing it; "
                                 f"stop that process before resuming")
        _clear_status_flags(self.path)
        try:
            self._f = _open_for_append(self.path)
        except OSError as exc:
            raise RecordingError(_damage_message(self.path, exc)) from None
        for name, g in self._f["streams"].items():
            committed = int(g.attrs["committed"])
            frames = g["frames"]
            extra = frames.shape[0] - committed
            if extra > 0:
                self.dropped_on_resume[name] = extra
            frames.resize(committed, axis=0)
            fields = {}
            for fname, d in g["meta"].items():
                d.resize((committed,))
                fields[fname] = d
            self._streams[name] = {"group": g, "frames": frames, "meta": fields, "n": committed,
                                   "committed": committed}
        self._mark_writer()
        self._f.flush()
        self._f.swmr_mode = True

    def _mark_writer(self) -> None:
        """Record which process writes the file (0 after a clean close), so resume can refuse a live one."""
        self._f.attrs["writer_pid"] = os.getpid()
        self._f.attrs["writer_host"] = socket.gethostname()

    def _reopen_for_new_objects(self) -> None:
        """Leave SWMR mode (close + reopen) so new datasets can be created."""
        self.flush()
        self._f.close()
        self._f = _open_for_append(self.path)
        for name, s in self._streams.items():
            g = self._f["streams"][name]
            s["group"], s["frames"] = g, g["frames"]
            s["meta"] = {k: g["meta"][k] for k in s["meta"]}

    def _create_stream(self, name: str, data: np.ndarray, fields: dict, units: str) -> dict:
        if "/" in name or not name:
            raise ValueError(f"stream name must be a non-empty string without '/', got {name!r}")
        self._reopen_for_new_objects()
        g = self._f["streams"].create_group(name)
        frame_bytes = max(1, data.nbytes)
        rows = int(max(1, min(1024, (1 << 20) // frame_bytes)))
        frames = g.create_dataset("frames", shape=(0,) + data.shape, maxshape=(None,) + data.shape,
                                  dtype=data.dtype, chunks=(rows,) + data.shape, compression=self.compression)
        frames.attrs["units"] = units
        g.attrs["committed"] = 0
        g.attrs["units"] = units
        g.attrs["frame_shape"] = json.dumps(list(data.shape))
        g.attrs["dtype"] = data.dtype.str
        meta = g.create_group("meta")
        s = {"group": g, "frames": frames, "meta": {}, "n": 0, "committed": 0}
        for fname, value in fields.items():
            s["meta"][fname] = self._create_field(meta, fname, value)
        self._f.swmr_mode = True
        return s

    @staticmethod
    def _create_field(meta_group, fname: str, value):
        if fname in _STANDARD_FIELDS:
            dtype, unit = _STANDARD_FIELDS[fname]
        else:
            v = np.asarray(value)
            if v.ndim != 0 or v.dtype.kind not in "biuf":
                raise TypeError(f"metadata field {fname!r} must be a number or bool, got {value!r}; "
                                f"store text or arrays as root attrs or as their own stream")
            dtype = np.bool_ if v.dtype.kind == "b" else (np.int64 if v.dtype.kind in "iu" else np.float64)
            unit = "s" if fname.endswith("_s") else ""
        d = meta_group.create_dataset(fname, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(4096,))
        d.attrs["units"] = unit
        return d

    # ------------------------------------------------------------------ writing
    def append(self, stream: str, data, *, frame_index: int | None = None, timestamp_s: float | None = None,
               exposure_s: float | None = None, units: str = "", **fields) -> int:
        """Append one frame to ``stream``; returns its position in the stream.

        Parameters
        ----------
        stream : stream name (created on first use with this frame's shape and dtype).
        data : array of the stream's shape and dtype (any numeric array for a new stream).
        frame_index : device frame index (default: position in the stream).
        timestamp_s : acquisition time, Unix seconds (default: now).
        exposure_s : exposure time in seconds (default NaN).
        units : units of the frame values (stored when the stream is created), e.g. "adu".
        **fields : further scalar metadata; a stream records the fields of its first
            frame and every later frame must give the same fields.
        """
        if self._f is None:
            raise ValueError(f"{self.path}: recorder is closed")
        arr = np.asarray(data)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"stream {stream!r}: frames must be numeric arrays, got dtype {arr.dtype}")
        s = self._streams.get(stream)
        n = 0 if s is None else s["n"]
        meta = {"frame_index": n if frame_index is None else int(frame_index),
                "timestamp_s": time.time() if timestamp_s is None else float(timestamp_s),
                "exposure_s": math.nan if exposure_s is None else float(exposure_s)}
        meta.update(fields)
        if s is None:
            s = self._create_stream(stream, arr, meta, units)
            self._streams[stream] = s
        else:
            frames = s["frames"]
            if arr.shape != frames.shape[1:]:
                raise ValueError(f"stream {stream!r}: frame has shape {arr.shape}, the stream records "
                                 f"{frames.shape[1:]}; use another stream name for other shapes")
            if arr.dtype != frames.dtype and not np.can_cast(arr.dtype, frames.dtype, "safe"):
                raise ValueError(f"stream {stream!r}: frame dtype {arr.dtype} does not fit the stream's "
                                     f"{frames.dtype}; convert it or use another stream")
            if set(meta) != set(s["meta"]):
                raise ValueError(f"stream {stream!r}: frame has metadata fields {sorted(meta)}, the stream "
                                 f"records {sorted(s['meta'])}; give the same fields with every frame")
        frames = s["frames"]
        frames.resize(n + 1, axis=0)
        frames[n] = arr
        for fname, d in s["meta"].items():
            d.resize((n + 1,))
            d[n] = meta[fname]
        s["n"] = n + 1
        self._pending += 1
        if self._pending >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()
        return n

    def append_frame(self, stream: str, frame, units: str = "adu", **fields) -> int:
        """Append a :class:`hwio.devices.CameraFrame` (image, frame_index, timestamp_s, exposure_s)."""
        return self.append(stream, frame.image, frame_index=frame.frame_index, timestamp_s=frame.timestamp_s,
                           exposure_s=frame.exposure_s, units=units, **fields)

    def flush(self) -> None:
        """Write pending frames to disk and commit them (update every stream's ``committed``)."""
        if self._f is None:
            return
        self._f.flush()
        changed = False
        for s in self._streams.values():
            if s["committed"] != s["n"]:
                s["group"].attrs["committed"] = s["n"]
                s["committed"] = s["n"]
                changed = True
        if changed:
            self._f.flush()
        self._pending = 0
        self._last_flush = time.monotonic()

    def committed(self, stream: str) -> int:
        """Frames of ``stream`` safely on disk."""
        return self._streams[stream]["committed"] if stream in self._streams else 0

    def n_frames(self, stream: str) -> int:
        """Frames of ``stream`` appended so far (committed or not)."""
        return self._streams[stream]["n"] if stream in self._streams else 0

    @property
    def streams(self) -> list[str]:
        return list(self._streams)

    def close(self) -> None:
        """Commit everything and close the file (idempotent)."""
        if self._f is not None:
            self.flush()
            self._f.attrs["writer_pid"] = 0
            self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Recorder({str(self.path)!r}, streams={ {k: v['n'] for k, v in self._streams.items()} })"


# ---------------------------------------------------------------------------------------------

@dataclass
class RecordedStream:
    """Committed frames of one stream with their metadata (arrays of equal length)."""

    name: str
    frames: np.ndarray
    meta: dict
    units: str
    attrs: dict

    def __len__(self):
        return self.frames.shape[0]


def list_streams(path) -> dict[str, int]:
    """Stream names of a recording with their committed frame counts."""
    with _open_read(path) as f:
        return {name: int(g.attrs.get("committed", 0)) for name, g in f["streams"].items()}


def read_stream(path, name: str, start: int = 0, stop: int | None = None) -> RecordedStream:
    """Read the committed frames ``[start, stop)`` of stream ``name`` and their metadata.

    Works on files of a live or killed recorder (SWMR read).  Raises RecordingError
    with a one-line hint for missing, damaged, truncated or foreign files.
    """
    path = Path(path)
    f = _open_read(path)
    with f:
        if "streams" not in f or name not in f["streams"]:
            have = sorted(f["streams"]) if "streams" in f else []
            raise RecordingError(f"{path}: no stream {name!r} (streams: {', '.join(have) or 'none'})")
        g = f["streams"][name]
        try:
            committed = int(g.attrs["committed"])
            n = min(committed, g["frames"].shape[0], *(d.shape[0] for d in g["meta"].values()))
            stop = n if stop is None else min(int(stop), n)
            start = max(0, int(start))
            frames = g["frames"][start:stop] if stop > start else np.empty((0,) + g["frames"].shape[1:],
                                                                              g["frames"].dtype)
            meta = {k: d[start:stop] for k, d in g["meta"].items()}
        except (OSError, KeyError) as exc:
            raise RecordingError(_damage_message(path, exc)) from None
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        return RecordedStream(name=name, frames=frames, meta=meta, units=str(g.attrs.get("units", "")),
                              attrs=attrs)
