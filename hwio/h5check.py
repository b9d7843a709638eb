"""The one check every reader of an optwin HDF5 file makes before it trusts the file.

optwin's files (calibration, run, recording and sweep files) name what they are in the
root attribute ``kind`` and their layout in ``schema_version``.  :func:`check_root` checks
both and that the file reaches nothing outside itself: HDF5 can point a link at another
file (external link), keep a dataset's bytes in other files (external storage) or assemble
it from other files (virtual dataset).  A reader would silently follow these, so a file
copied elsewhere, or a crafted one, could make optwin read data the file does not hold;
they are refused.

Files written once and whole (calibration and run files) are also sealed: :func:`seal`
writes the SHA-256 of the file into its first :data:`SEAL_BYTES` bytes (an HDF5 user block,
which HDF5 skips) and :func:`verify_seal` compares it before HDF5 reads anything.  HDF5 can
crash the process on damaged metadata, so a file whose seal does not match is first read in a
forked child process, which reports what it found (or that reading crashed).

Every failure is one line naming the file, raised as the reader's own error class.
"""
from __future__ import annotations

import faulthandler
import hashlib
import numbers
import os
import select
import signal
import time

import h5py

__all__ = ["check_root", "check_kind_version", "refuse_external", "seal", "seal_state", "verify_seal",
           "SEAL_BYTES"]

#: bytes reserved at the start of a sealed file (``h5py.File(..., userblock_size=SEAL_BYTES)``)
SEAL_BYTES = 512
_SEAL_TAG = b"optwin-sha256:"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _text(value):
    """``value`` as str when it is text (str, or UTF-8 bytes), else None."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def _short(value, limit: int = 60) -> str:
    """``repr`` of an attribute value on one short line."""
    text = " ".join(repr(value.tolist() if hasattr(value, "tolist") else value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_kind_version(f: h5py.File, path, kind: str, newest: int, *, what: str, label: str,
                       error: type[Exception] = ValueError, advice: str = "pick the right file") -> int:
    """The stored ``schema_version`` of an open file whose root ``kind`` must be ``kind``.

    Parameters
    ----------
    f : the open file.
    path : its path (for the message).
    kind : the expected root attribute ``kind``, e.g. ``'optwin-run'``.
    newest : the newest schema version this optwin reads.
    what : the file in words for the message, e.g. ``'an optwin run file'``.
    label : the schema's name in the message, e.g. ``'run'``.
    error : exception class raised (with one line of text).
    advice : what to do when the file is of another kind.

    Returns
    -------
    int : the stored version, 0 <= version <= ``newest``.
    """
    path = os.fspath(path)
    try:
        stored = f.attrs.get("kind")
    except (OSError, KeyError, TypeError, ValueError):
        raise error(f"{path}: the file's root attributes cannot be read (damaged file); {advice}") from None
    text = _text(stored)
    if text != kind:
        raise error(f"{path}: not {what} (kind={_short(text if text is not None else stored)}); {advice}")
    try:
        version = f.attrs.get("schema_version")
    except (OSError, KeyError, TypeError, ValueError):
        version = "(unreadable)"
    if version is None:
        raise error(f"{path}: {what} without a schema_version attribute (damaged file); re-create it")
    if isinstance(version, (bool, float)) or not isinstance(version, numbers.Integral) or version < 0:
        raise error(f"{path}: schema_version {_short(version)} is not a whole number >= 0 (damaged file, or not "
                    f"written by optwin); re-create it")
    version = int(version)
    if version > newest:
        raise error(f"{path}: {label} schema {version} is newer than this optwin reads ({newest}); "
                    f"upgrade optwin to read it")
    return version


def refuse_external(f: h5py.File, path, *, what: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` (one line) when anything in ``f`` lives outside the file: an external
    link, a dataset with external storage or a virtual dataset.  Soft links are not followed
    (a dangling or circular one cannot trap the walk); objects are visited once."""
    path = os.fspath(path)
    seen = set()
    stack = [f]
    while stack:
        group = stack.pop()
        for name in group:
            where = f"{group.name.rstrip('/')}/{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise error(f"{path}: {where} is an external link to {link.filename}; {what} must hold all "
                            f"its data itself (refused: copy the data into the file)")
            if not isinstance(link, h5py.HardLink):
                continue
            obj = group.get(name)
            if obj is None:
                continue
            key = hash(obj.id)                 # file number and object address: hard links share it
            if key in seen:
                continue
            seen.add(key)
            if isinstance(obj, h5py.Group):
                stack.append(obj)
            elif isinstance(obj, h5py.Dataset):
                if obj.external:
                    raise error(f"{path}: dataset {where} keeps its data in external file(s) "
                                f"{', '.join(str(e[0]) for e in obj.external)}; {what} must hold all its "
                                f"data itself (refused)")
                if obj.is_virtual:
                    raise error(f"{path}: dataset {where} is a virtual dataset made of other files; {what} "
                                f"must hold all its data itself (refused)")


def check_root(f: h5py.File, path, kind: str, newest: int, *, what: str, label: str,
               error: type[Exception] = ValueError, advice: str = "pick the right file") -> int:
    """:func:`check_kind_version` then :func:`refuse_external`; returns the stored version.

    Damage found while walking the file (a corrupt object header) is raised as ``error``."""
    version = check_kind_version(f, path, kind, newest, what=what, label=label, error=error, advice=advice)
    try:
        refuse_external(f, path, what=what, error=error)
    except error:
        raise
    except (OSError, KeyError, RuntimeError, TypeError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"{os.fspath(path)}: damaged {label} file ({msg}); re-create it") from None
    return version


# ------------------------------------------------------------------------------------ seals
def seal(path) -> None:
    """Write ``optwin-sha256:<hex>`` (the SHA-256 of everything after the user block) into the
    user block of the closed HDF5 file ``path``, made with ``userblock_size=SEAL_BYTES``."""
    with open(path, "r+b") as fh:
        fh.seek(SEAL_BYTES)
        h = hashlib.sha256()
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
        head = _SEAL_TAG + h.hexdigest().encode() + b"\n"
        fh.seek(0)
        fh.write(head + b"\0" * (SEAL_BYTES - len(head)))


def seal_state(path) -> str:
    """``'ok'`` (the seal matches), ``'none'`` (no seal: written before seals, or not by optwin)
    or ``'broken'`` (sealed, or laid out for a seal, and its bytes changed since).

    Raises OSError when the file cannot be read."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        head = fh.read(SEAL_BYTES + len(_HDF5_SIGNATURE))
        h.update(head[SEAL_BYTES:])
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    if not head.startswith(_SEAL_TAG):
        laid_out = head[SEAL_BYTES:] == _HDF5_SIGNATURE and not head.startswith(_HDF5_SIGNATURE)
        return "broken" if laid_out and head[:len(_SEAL_TAG)].strip(b"\0") else "none"
    stored = head[len(_SEAL_TAG):len(_SEAL_TAG) + 64]
    return "ok" if stored == h.hexdigest().encode() else "broken"


def verify_seal(path, load, error: type[Exception], what: str, redo: str) -> None:
    """Raise ``error`` (one line) when the sealed file ``path`` changed after it was written.

    Parameters
    ----------
    path : the file.
    load : callable without arguments that reads the file the way the reader does, raising
        ``error`` on what it finds; it runs in a forked child process (where processes cannot
        fork the message only says that the file changed).
    error : exception class of the reader.
    what : the file in words, e.g. ``'calibration file'``.
    redo : what makes the file again, e.g. ``'re-run the calibration'``.
    """
    path = os.fspath(path)
    try:
        state = seal_state(path)
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc}); check the path and its "
                    f"permissions") from None
    if state != "broken":
        return
    found = _load_in_child(path, load, error, what, redo)
    raise error(found or f"{path}: the {what} changed after optwin wrote it (its checksum does not match: bit "
                         f"rot, a bad copy or an edit outside optwin); restore it from a copy or {redo}")


def _load_in_child(path: str, load, error, what: str, redo: str, timeout_s: float = 60.0) -> str:
    """``load()`` in a forked child: its one-line ``error`` text, '' when it loaded (or no fork),
    or a message when reading crashed or hung the child."""
    if not hasattr(os, "fork"):
        return ""
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return ""
    if pid == 0:                                       # the child: load, report, leave at once
        code = 0
        try:
            os.close(r)
            faulthandler.disable()                     # a crash is reported by the parent, not dumped
            try:
                load()
                msg = b""
            except error as exc:
                msg = " ".join(str(exc).split()).encode("utf-8", "replace")
            except BaseException as exc:               # noqa: BLE001 - reported as damage
                msg = f"{path}: damaged {what} ({type(exc).__name__}); {redo}".encode()
            view = memoryview(msg[:8192])
            while view:
                view = view[os.write(w, view):]
        except BaseException:                          # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks, deadline = [], time.monotonic() + timeout_s
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return (f"{path}: the {what} changed after optwin wrote it and reading it does not finish "
                        f"(damaged HDF5 structure); restore it from a copy or {redo}")
            block = os.read(r, 65536)
            if not block:
                break
            chunks.append(block)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return (f"{path}: the {what} changed after optwin wrote it and its HDF5 structure is damaged (reading "
                f"it crashed the HDF5 library); restore it from a copy or {redo}")
    return b"".join(chunks).decode("utf-8", "replace")
