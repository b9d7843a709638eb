"""What every command that writes files or JSON shares: output checks, locks, strict JSON.

Output rules (checked by :func:`guard_output` / :func:`guard_folder` before any work starts)
-----------------------------------------------------------------------------------------
* A file of another kind is never replaced.  The kind is read from the content, not the
  name: the HDF5 root attribute ``kind`` (``optwin-run``, ``optwin-calibration``,
  ``optwin-sweep``, ``optwin-recording``), the calibration resume state (JSON), a sweep's CSV
  header, the results of ``optwin demo`` (JSON), the title of an optwin report page.  Anything
  else (a lab's CSV, some other HDF5 file, a damaged file) is "a file optwin did not write".
* A file of the command's own kind is replaced only with ``--force`` (or continued with
  ``--resume`` where the command resumes).
* The files a command writes beside its output (``<out>.raw.h5``, ``<out>.state.json``,
  ``<out>.state.h5`` of a calibration, the CSV of a sweep) are checked the same way.
* The folder of the output must exist and be writable, and the output must not be a folder;
  a report folder is created when missing, and one holding files optwin would write there is
  only reused when it is an earlier output of the same command and ``--force`` is given.
* :func:`output_lock` (an ``flock`` on ``<out>.lock``) keeps a second process from writing
  the same output at the same time: it gets a one-line "locked by another process" error.
* :func:`temp_path` gives every temporary file a unique name, so writers never share one.

JSON (:func:`json_safe`, :func:`print_json`, :func:`write_json`) is strict: NaN and
infinities become ``null``; numpy values become plain numbers and lists.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import json
import math
import os
import socket
import sys
import uuid
from pathlib import Path, PurePath

from optwin.errors import UsageError

__all__ = ["OutputError", "OutputLockedError", "RUN", "CALIBRATION", "SWEEP", "RECORDING", "CALIBRATION_STATE",
           "SWEEP_CSV", "DEMO_RESULTS", "COMPARE_REPORT", "CALIBRATION_REPORT", "file_kind", "describe_kind",
           "guard_output", "guard_folder", "output_lock", "temp_path", "json_safe", "print_json", "write_json"]

# file kinds (HDF5 root attribute ``kind`` where the file is HDF5)
RUN = "optwin-run"
CALIBRATION = "optwin-calibration"
SWEEP = "optwin-sweep"
RECORDING = "optwin-recording"
CALIBRATION_STATE = "optwin-calibration-state"
SWEEP_CSV = "optwin-sweep-csv"
DEMO_RESULTS = "optwin-demo-results"
COMPARE_REPORT = "optwin-compare-report"
CALIBRATION_REPORT = "optwin-calibration-report"
_HDF5_OTHER, _OTHER, _UNREADABLE, _DIRECTORY, _MISSING = "hdf5", "other", "unreadable", "directory", "missing"

_DESCRIPTION = {
    RUN: "an optwin run file", CALIBRATION: "an optwin calibration file", SWEEP: "an optwin sweep results file",
    RECORDING: "an optwin raw recording", CALIBRATION_STATE: "the resume state of an optwin calibration",
    SWEEP_CSV: "the CSV of an optwin sweep", DEMO_RESULTS: "the results of optwin demo",
    COMPARE_REPORT: "an optwin compare report page", CALIBRATION_REPORT: "an optwin calibration report page",
    _HDF5_OTHER: "an HDF5 file optwin did not write", _OTHER: "a file optwin did not write",
    _UNREADABLE: "a file optwin cannot read (damaged, or no read permission)", _DIRECTORY: "a folder",
    _MISSING: "missing",
}
#: first CSV header cells of a sweep's CSV mirror (optwin.sweep.store)
_SWEEP_CSV_HEAD = "index,key,status,"
_EXAMPLE_NAME = {RUN: "run.h5", CALIBRATION: "cal.h5", SWEEP: "results.h5"}
_HTML_TITLES = {"<title>optwin: twin vs bench</title>": COMPARE_REPORT,
                "<title>optwin calibration:": CALIBRATION_REPORT}


class OutputError(UsageError):
    """An output the command must not (or cannot) write: printed as one line, exit code 2."""


class OutputLockedError(OutputError):
    """Another process is writing the same output."""


# ------------------------------------------------------------------------------------ kinds
def describe_kind(kind: str) -> str:
    """A few words for a kind returned by :func:`file_kind` (``'an optwin run file'``)."""
    return _DESCRIPTION.get(kind, f"a {kind} file")


def _hdf5_kind(path: Path) -> str:
    import h5py
    for options in ({}, {"swmr": True}):          # a recording killed while writing needs SWMR reading
        try:
            with h5py.File(path, "r", locking=False, **options) as f:
                kind = f.attrs.get("kind")
        except OSError:
            continue
        except Exception:  # noqa: BLE001 - a damaged attribute table: the file is not ours to judge
            return _UNREADABLE
        if isinstance(kind, bytes):
            kind = kind.decode(errors="replace")
        return kind if isinstance(kind, str) and kind.startswith("optwin-") else _HDF5_OTHER
    return _UNREADABLE


def _text_kind(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return _UNREADABLE
    text = head.decode("utf-8", errors="replace")
    if text.replace(" ", "").startswith(_SWEEP_CSV_HEAD):
        return SWEEP_CSV
    for title, kind in _HTML_TITLES.items():
        if text.lstrip().startswith("<!DOCTYPE html>") and title in text:
            return kind
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return _OTHER
        if isinstance(data, dict):
            if {"version", "bench", "parts", "parts_done"} <= set(data):
                return CALIBRATION_STATE
            if {"bench", "tasks", "report"} <= set(data):
                return DEMO_RESULTS
    return _OTHER


def file_kind(path) -> str:
    """The kind of whatever is at ``path``, judged by its content.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    str
        ``'missing'``, ``'directory'``, an optwin kind (:data:`RUN`, :data:`CALIBRATION`,
        :data:`SWEEP`, :data:`RECORDING` from the HDF5 root attribute ``kind``;
        :data:`CALIBRATION_STATE`, :data:`SWEEP_CSV`, :data:`DEMO_RESULTS`,
        :data:`COMPARE_REPORT`, :data:`CALIBRATION_REPORT` from text content), ``'hdf5'`` (an
        HDF5 file of no optwin kind), ``'unreadable'`` or ``'other'``.
    """
    import h5py
    path = Path(path)
    if not os.path.lexists(path):
        return _MISSING
    if path.is_dir():
        return _DIRECTORY
    try:
        is_h5 = h5py.is_hdf5(path)
    except OSError:
        return _UNREADABLE
    return _hdf5_kind(path) if is_h5 else _text_kind(path)


def calibration_state_complete(path) -> bool:
    """Whether ``path`` is the resume state of a calibration that finished (``complete``)."""
    try:
        return bool(json.loads(Path(path).read_text()).get("complete"))
    except (OSError, ValueError, AttributeError):
        return False


# ------------------------------------------------------------------------------------ guards
def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _check_folder_of(path: Path, flag: str) -> None:
    parent = path.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise OutputError(f"{flag} {path}: the folder {parent} {what}; create it (mkdir -p {parent}) or "
                          f"choose another {flag}")
    if not _writable(parent):
        raise OutputError(f"{flag} {path}: cannot write in the folder {parent} (permission denied); "
                          f"choose another {flag}")


def _refuse_other_kind(path: Path, found: str, kind, flag: str, beside: str = "") -> None:
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    if found in kinds:
        return
    where = f"{path} ({beside})" if beside else f"{flag} {path}"
    if found == _DIRECTORY:
        example = f"; give a file name such as {path / _EXAMPLE_NAME.get(kinds[0], 'out.h5')}" if not beside else ""
        raise OutputError(f"{where} is a folder, not {describe_kind(kinds[0])}{example}"
                          f"{'; move it away or choose another ' + flag if beside else ''}")
    raise OutputError(f"{where} is {describe_kind(found)}, not {describe_kind(kinds[0])}: optwin never "
                      f"replaces it; {'move it away or ' if beside else ''}choose another {flag}")


def _own_kind_needs(path: Path, found: str, allowed: bool, flag: str, resumable: bool, beside: str = "") -> None:
    if allowed:
        if not os.access(path, os.W_OK):
            raise OutputError(f"{path} is read-only; make it writable (chmod u+w {path}) or choose another {flag}")
        return
    what = describe_kind(found)
    where = f"{path} ({beside})" if beside else f"{flag} {path}"
    options = "add --force to replace it" + (", --resume to continue it" if resumable else "")
    raise OutputError(f"{where} already exists ({what}); {options}, or choose another {flag}")


def guard_output(path, kind, *, force: bool = False, resume: bool = False, flag: str = "--out",
                 siblings=(), resumable: bool = False) -> bool:
    """Refuse, before any work starts, an output file the command must not write.

    Parameters
    ----------
    path : the output file.
    kind : the kind the command writes there (e.g. :data:`RUN`), or a tuple of kinds it may
        replace.
    force : the user allows replacing a file of the command's own kind (``--force``).
    resume : the command continues the file (``--resume``): its own kind is fine.
    flag : the option that named ``path``, for the messages.
    siblings : files the command writes beside ``path``: ``(path, kind)`` or ``(path, kind,
        allowed)``, where ``allowed`` (bool) overrides ``force or resume`` for that file (e.g.
        True for the resume state of a finished calibration, which is nothing to lose).
    resumable : the command has ``--resume`` (named in the message).

    Returns
    -------
    bool
        Whether ``path`` exists (and may be replaced or continued).

    Raises
    ------
    OutputError
        one line naming the file, what it is and what to do; nothing was written.
    """
    path = Path(path)
    found = file_kind(path)
    if found == _DIRECTORY:
        _refuse_other_kind(path, found, kind, flag)
    _check_folder_of(path, flag)
    if found != _MISSING:
        _refuse_other_kind(path, found, kind, flag)
        _own_kind_needs(path, found, force or resume, flag, resumable)
    for entry in siblings:
        sib, sib_kind = Path(entry[0]), entry[1]
        allowed = (force or resume) if len(entry) < 3 or entry[2] is None else bool(entry[2])
        sib_found = file_kind(sib)
        if sib_found == _MISSING:
            continue
        beside = f"written beside {flag} {path}"
        _refuse_other_kind(sib, sib_found, sib_kind, flag, beside)
        _own_kind_needs(sib, sib_found, allowed, flag, resumable, beside)
    return found != _MISSING


def folder_kind(path, markers) -> str | None:
    """The kind of a folder: the kind of the first of ``markers`` (``(name, kind)``) found in it."""
    path = Path(path)
    for name, kind in markers:
        if file_kind(path / name) == kind:
            return kind
    return None


def guard_folder(path, kind, *, writes, markers, force: bool = False, resume: bool = False,
                 flag: str = "--out", resumable: bool = False, create: bool = True) -> Path:
    """Refuse, before any work starts, an output folder the command must not write into; create it.

    Parameters
    ----------
    path : the folder (created with its missing parents when the checks pass and ``create``).
    kind : what the command leaves there (e.g. :data:`COMPARE_REPORT`), for the messages.
    writes : names (glob patterns) of what the command writes into the folder.
    markers : ``(name, kind)`` pairs that identify an earlier output of the same command.
    force, resume, flag, resumable : as in :func:`guard_output`.
    create : create the folder once the checks pass (False: the command creates it later).

    Returns
    -------
    Path
        The folder.

    Raises
    ------
    OutputError
        ``path`` is a file; its nearest existing parent is not a writable folder; it holds
        files the command writes and is not an earlier output of it (never replaced), or is
        one and neither ``--force`` nor ``--resume`` was given.
    """
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise OutputError(f"{flag} {path} is {describe_kind(file_kind(path))}, not a folder: optwin never "
                          f"replaces it; choose another {flag}")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not _writable(ancestor):
        raise OutputError(f"{flag} {path}: cannot create or write in {ancestor} (not a writable folder); "
                          f"choose another {flag}")
    if path.is_dir():
        present = sorted(p.name for p in path.iterdir() if any(fnmatch.fnmatch(p.name, w) for w in writes))
        if present:
            if folder_kind(path, markers) is None:
                shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
                raise OutputError(f"{flag} {path} holds files optwin did not write there ({shown}); optwin "
                                  f"never replaces them: choose a new or empty folder")
            if not (force or resume):
                options = "add --force to replace it" + (", --resume to continue it" if resumable else "")
                raise OutputError(f"{flag} {path} already holds {describe_kind(kind)}; {options}, or choose "
                                  f"another {flag}")
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------------------------ lock, temporary names
def temp_path(path) -> Path:
    """A unique temporary name beside ``path`` (same folder, so ``os.replace`` is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def lock_path(path) -> Path:
    """The lock file of an output: ``<out>.lock`` beside a file, ``<folder>/.optwin.lock`` in a folder."""
    path = Path(path)
    return path / ".optwin.lock" if path.is_dir() else path.with_name(path.name + ".lock")


def _holder(lock: Path) -> str:
    try:
        text = lock.read_text().split()
    except OSError:
        return ""
    return f" (pid {text[0]} on {text[1]})" if len(text) >= 2 else ""


@contextlib.contextmanager
def output_lock(path, flag: str = "--out"):
    """Hold an exclusive lock on the output ``path`` while the block runs.

    The lock is an ``flock`` on :func:`lock_path` (the file records the holder's pid and
    host; it is removed on release, and a killed holder's lock is released by the kernel).
    Where the file system has no ``flock`` the block runs unlocked.

    Raises
    ------
    OutputLockedError
        another process holds the lock (one line: wait for it, or choose another output).
    """
    lock = lock_path(path)
    fd = None
    for _ in range(20):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputLockedError(f"{flag} {path} is locked by another process{_holder(lock)} that is writing "
                                    f"it; wait for it to finish or choose another {flag}") from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                fd = None          # no locks on this file system
                break
            raise
        try:                       # the file may have been removed by a holder releasing it
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
        fd = None
    try:
        if fd is not None:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield lock
    finally:
        if fd is not None:
            try:
                lock.unlink()
            except OSError:
                pass
            os.close(fd)


# ------------------------------------------------------------------------------------ JSON
def json_safe(obj):
    """``obj`` as strict JSON data: NaN and infinities become None, numpy values plain numbers,
    arrays and tuples lists, paths strings, dict keys strings."""
    import numpy as np
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj
        return [json_safe(v) for v in items]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.decode(errors="replace")
    try:
        return json_safe(float(obj))
    except (TypeError, ValueError):
        raise TypeError(f"{type(obj).__name__} is not JSON data") from None


def dumps(obj, **kwargs) -> str:
    """Strict JSON text of ``obj`` (:func:`json_safe`; never NaN or Infinity)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def print_json(obj, file=None) -> None:
    """Print ``obj`` as one line of strict JSON (stdout by default)."""
    print(dumps(obj), file=file or sys.stdout)


def write_json(path, obj, indent: int | None = 1) -> Path:
    """Write ``obj`` as strict JSON to ``path`` atomically (unique temporary file, then rename)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        tmp.write_text(dumps(obj, indent=indent))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
