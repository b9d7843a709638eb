"""The calibration file: every fit of a bench, with uncertainties, in one HDF5 file.

Layout (schema version 1)::

    /                          attrs kind='optwin-calibration', schema_version, software_version,
                                     created_utc, bench_name, bench_config (JSON, no truth),
                                     bench_fingerprint (JSON, optional: the bench's identity,
                                     see calibration.fingerprint)
    /fits/<name>               attrs model, info (JSON), created_utc, sha256 (digest of the fit)
    /fits/<name>/quantities/<q> attrs value, stderr, units          (a fitted number)
    /fits/<name>/arrays/<a>    dataset (maps, tables, LUTs), attr units when known
    /fits/<name>/data/{x,y,y_fit}  the data and model curve behind the fit (for reports)
    /raw/<path>                raw measurements the fits came from

Loading reads attributes and datasets only (never executes code), refuses files of a
newer schema with a clear message and migrates older ones (see ``MIGRATIONS``).

Integrity: the file is sealed (:func:`hwio.h5check.seal`: the SHA-256 of the file in its
first 512 bytes, an HDF5 user block), so a file whose bytes changed after it was written is
refused before HDF5 reads it (the message says what changed where that can be found without
risk: HDF5 can crash on damaged metadata, so the file is read in a child process first).
Every dataset that HDF5 can checksum (non-empty arrays) carries a Fletcher-32
checksum, checked by HDF5 on every read; every fit carries ``sha256``, a digest of
everything it holds (model, info, each quantity's value, stderr and units, every array),
stored when it is written and verified on load, so a value changed afterwards (bit rot, a
hand edit) is refused with a one-line message naming the fit.  Fitted values must be finite
(NaN or inf is refused on write and on load; a standard error may be NaN, "unknown").  A
file that reaches outside itself (external links, external or virtual datasets) is refused
(:func:`hwio.h5check.check_root`).  Files and fits written before seals and digests existed
carry none and are read unverified.

:func:`write_fit` adds or replaces one fit in a file and keeps everything else in it (fits of
lab measurement files, ``optwin calibrate slm|camera|absorber --out``); like ``save`` it writes
a temporary file beside the target and renames it over it.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from calibration.quantities import Fit, Quantity
from hwio.h5check import SEAL_BYTES, check_kind_version, check_root, seal, verify_seal

__all__ = ["CalibrationSet", "CalibrationFileError", "FitExistsError", "SCHEMA_VERSION", "write_fit",
           "check_fit_target", "fit_digest"]

SCHEMA_VERSION = 1
KIND = "optwin-calibration"


class CalibrationFileError(ValueError):
    """A calibration file cannot be used (one-line message says why and what to do)."""


class FitExistsError(CalibrationFileError):
    """:func:`write_fit` would replace a fit of the same name (``path``, ``fit_name``)."""

    def __init__(self, path, fit_name: str):
        self.path, self.fit_name = Path(path), fit_name
        super().__init__(f"{path} already holds a fit {fit_name!r}; pass replace=True to overwrite it")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _software_version() -> str:
    try:
        from importlib.metadata import version
        return version("optwin")
    except Exception:  # noqa: BLE001 - running from a checkout
        return "0+checkout"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


@dataclass
class CalibrationSet:
    """All fits of one bench calibration, plus provenance and raw data."""

    fits: dict = field(default_factory=dict)
    bench_name: str = ""
    bench_config: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)
    bench_fingerprint: dict = field(default_factory=dict)
    created_utc: str = field(default_factory=_now)
    software_version: str = field(default_factory=_software_version)
    schema_version: int = SCHEMA_VERSION

    # -- content -------------------------------------------------------------
    def add(self, fit: Fit) -> None:
        """Add or replace the fit called ``fit.name``."""
        if not fit.name or "/" in fit.name:
            raise ValueError(f"fit name {fit.name!r} must be non-empty and contain no '/'")
        self.fits[fit.name] = fit

    def fit(self, name: str) -> Fit:
        try:
            return self.fits[name]
        except KeyError:
            raise KeyError(f"calibration has no fit {name!r}; it has {sorted(self.fits)} "
                           f"(run 'optwin calibrate --only ...' for the missing part)") from None

    def quantity(self, dotted: str) -> Quantity:
        """A quantity by its dotted name, e.g. 'camera.gain_adu_per_e'."""
        for name in sorted(self.fits, key=len, reverse=True):
            prefix = name + "."
            if dotted.startswith(prefix):
                q = self.fits[name].quantities.get(dotted[len(prefix):])
                if q is not None:
                    return q
        raise KeyError(f"calibration has no quantity {dotted!r}")

    def as_json(self) -> dict:
        """Flat JSON: every quantity as {'value', 'stderr', 'units'} and every model name."""
        out = {}
        for fit in self.fits.values():
            out.update(fit.flat())
            out[f"{fit.name}.model"] = fit.model
        return out

    # -- file I/O ------------------------------------------------------------
    def save(self, path) -> Path:
        """Write atomically (temporary file, then rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")     # unique: writers never collide
        try:
            with h5py.File(tmp, "w", userblock_size=SEAL_BYTES) as f:
                f.attrs["kind"] = KIND
                f.attrs["schema_version"] = SCHEMA_VERSION
                f.attrs["software_version"] = self.software_version
                f.attrs["created_utc"] = self.created_utc
                f.attrs["bench_name"] = self.bench_name
                f.attrs["bench_config"] = json.dumps(_jsonable(self.bench_config))
                if self.bench_fingerprint:
                    f.attrs["bench_fingerprint"] = json.dumps(_jsonable(self.bench_fingerprint))
                fits = f.create_group("fits")
                for name, fit in self.fits.items():
                    _write_fit(fits, fit, name)
                raw = f.create_group("raw")
                for key, arr in self.raw.items():
                    _dataset(raw, key, arr)
            seal(tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path) -> "CalibrationSet":
        """Read a calibration file; CalibrationFileError (one line) when it cannot be used."""
        path = Path(path)
        if not path.exists():
            raise CalibrationFileError(f"{path}: no such calibration file (run 'optwin calibrate' first)")
        _verify_seal(path)
        return cls._load(path)

    @classmethod
    def _load(cls, path: Path) -> "CalibrationSet":
        """:meth:`load` after the file's seal was checked."""
        if path.is_dir():
            raise CalibrationFileError(f"{path}: is a directory, not a calibration file")
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise CalibrationFileError(f"{path}: not a readable HDF5 file ({exc}); "
                                       f"the file is corrupt or truncated, re-run the calibration") from None
        with f:
            check_root(f, path, KIND, SCHEMA_VERSION, what="an optwin calibration file", label="calibration",
                       error=CalibrationFileError, advice="give the calibration file 'optwin calibrate' wrote")
            try:
                content = _read_tree(f, path)
            except CalibrationFileError:
                raise
            except _DAMAGE as exc:
                raise CalibrationFileError(f"{path}: damaged calibration file ({_first_line(exc)}); "
                                           f"re-run the calibration") from None
        try:
            while content["schema_version"] < SCHEMA_VERSION:
                step = MIGRATIONS.get(content["schema_version"])
                if step is None:
                    raise CalibrationFileError(f"{path}: schema {content['schema_version']} cannot be migrated")
                content = step(content)
        except _DAMAGE as exc:
            raise CalibrationFileError(f"{path}: damaged calibration file of schema {content['schema_version']} "
                                       f"({_first_line(exc)}); re-run the calibration") from None
        for fit in content["fits"].values():
            bad = _nonfinite_values(fit)
            if bad:
                raise CalibrationFileError(f"{path}: fit {fit.name!r} holds a fitted value that is not a finite "
                                           f"number ({bad}); re-run that part of the calibration")
        return cls(**content)


def _verify_seal(path: Path) -> None:
    """Refuse a sealed file whose bytes changed after it was written (one line; what changed is
    found by loading the file in a child process, see :func:`hwio.h5check.verify_seal`)."""
    verify_seal(path, lambda: CalibrationSet._load(path), CalibrationFileError, "calibration file",
                "re-run the calibration")


#: what reading a damaged file can raise (h5py/HDF5, JSON, attribute types)
_DAMAGE = (KeyError, ValueError, OSError, TypeError, AttributeError, RuntimeError, IndexError)


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _nonfinite_values(fit: Fit) -> str:
    """``'name=value, ...'`` of the quantities of ``fit`` whose value is NaN or infinite ('' if none)."""
    return ", ".join(f"{q}={float(v.value)!r}" for q, v in fit.quantities.items()
                     if not math.isfinite(float(v.value)))


def _dataset(group, name: str, data) -> None:
    """Store ``data`` as ``group/name``: Fletcher-32 checksummed where HDF5 allows it (arrays
    of at least one element; scalars and empty arrays cannot be chunked), gzip when large."""
    arr = np.asarray(data)
    chunkable = arr.ndim > 0 and arr.size > 0 and arr.dtype.kind in "biufcSV"
    group.create_dataset(name, data=arr, fletcher32=chunkable,
                         compression="gzip" if chunkable and arr.size > 1024 else None)


def _attr_bytes(value) -> bytes:
    """The canonical bytes of one attribute or dataset value for :func:`fit_digest`."""
    if isinstance(value, str):
        return b"s" + value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes):
        return b"b" + value
    arr = np.asarray(value)
    if arr.dtype.kind == "O":                    # variable-length strings: their text, not pointers
        return b"o" + repr(arr.tolist()).encode("utf-8", "backslashreplace")
    head = f"{arr.dtype.str}{arr.shape}".encode()
    return head + np.ascontiguousarray(arr).tobytes()


def _stored_fit(group) -> dict:
    """Everything one stored fit holds, as read (attribute values and arrays, not interpreted):
    ``model``, ``info``, ``sha256`` (None when absent), ``quantities`` {name: {value, stderr,
    units}}, ``arrays`` and ``data`` {name: array}."""
    attrs = group.attrs
    quantities = group["quantities"]
    stored = {"model": attrs["model"], "info": attrs.get("info", "{}"), "sha256": attrs.get("sha256"),
              "quantities": {q: {key: d.attrs[key] for key in ("value", "stderr", "units")}
                             for q, d in quantities.items()}}
    for section in ("arrays", "data"):
        sub = group.get(section)
        stored[section] = {} if sub is None else {name: d[()] for name, d in sub.items()}
    return stored


def _digest(stored: dict) -> str:
    """SHA-256 (hex) of a fit as :func:`_stored_fit` reads it."""
    h = hashlib.sha256()

    def put(tag: str, data: bytes) -> None:
        h.update(tag.encode("utf-8", "surrogatepass") + b"\0" + len(data).to_bytes(8, "little") + data)

    put("model", _attr_bytes(stored["model"]))
    put("info", _attr_bytes(stored["info"]))
    for q in sorted(stored["quantities"]):
        for key in ("value", "stderr", "units"):
            put(f"quantities/{q}/{key}", _attr_bytes(stored["quantities"][q][key]))
    for section in ("arrays", "data"):
        for name in sorted(stored[section]):
            put(f"{section}/{name}", _attr_bytes(stored[section][name]))
    return h.hexdigest()


def fit_digest(group) -> str:
    """SHA-256 (hex) of everything one stored fit holds: model, info, each quantity's value,
    stderr and units, every array and data curve (names, dtypes, shapes and bytes).

    Parameters
    ----------
    group : the fit's ``h5py.Group`` (``/fits/<name>``), open for reading.
    """
    return _digest(_stored_fit(group))


def _write_fit(fits_group, fit: Fit, name: str | None = None) -> None:
    """Write one fit as ``fits_group/<name>`` (layout in the module docstring)."""
    bad = _nonfinite_values(fit)
    if bad:
        raise ValueError(f"fit {fit.name!r}: fitted values must be finite numbers, got {bad}; "
                         f"the fit failed, check its data")
    g = fits_group.create_group(fit.name if name is None else name)
    g.attrs["model"] = fit.model
    g.attrs["info"] = json.dumps(_jsonable(fit.info))
    qg = g.create_group("quantities")
    for qname, q in fit.quantities.items():
        d = qg.create_group(qname)
        d.attrs["value"] = float(q.value)
        d.attrs["stderr"] = float(q.stderr)
        d.attrs["units"] = q.units
    ag = g.create_group("arrays")
    for aname, arr in fit.arrays.items():
        _dataset(ag, aname, arr)
    dg = g.create_group("data")
    for key in ("x", "y", "y_fit"):
        val = getattr(fit, key)
        if val is not None:
            _dataset(dg, key, np.asarray(val, dtype=float))
    g.attrs["sha256"] = fit_digest(g)           # of what was written, read back as a reader sees it


def _existing_calibration(path: Path) -> tuple[int, "CalibrationSet"]:
    """``(schema version as stored, loaded set)`` of an existing calibration file;
    CalibrationFileError (one line) when the file at ``path`` is anything else: a directory,
    a CSV, a run file, a damaged file or one of a newer schema."""
    what = "choose another file name, or an existing calibration file to add the fit to"
    if path.is_dir():
        raise CalibrationFileError(f"{path}: is a directory, not a calibration file; {what}")
    try:
        is_h5 = h5py.is_hdf5(path)
    except OSError as exc:
        raise CalibrationFileError(f"{path}: cannot read it ({exc.strerror or exc}); {what}") from None
    if not is_h5:
        raise CalibrationFileError(f"{path}: exists and is not an HDF5 calibration file; {what}")
    verify_seal(path, lambda: _open_existing(path, what), CalibrationFileError, "calibration file",
                "re-run the calibration")
    return _open_existing(path, what)


def _open_existing(path: Path, what: str) -> tuple[int, "CalibrationSet"]:
    """:func:`_existing_calibration` after the seal was checked."""
    try:
        with h5py.File(path, "r") as f:
            version = check_kind_version(f, path, KIND, SCHEMA_VERSION, what="an optwin calibration file",
                                         label="calibration", error=CalibrationFileError, advice=what)
    except OSError as exc:
        raise CalibrationFileError(f"{path}: exists but cannot be opened as HDF5, it may be truncated or corrupt "
                                   f"({_first_line(exc)}); {what}") from None
    return version, CalibrationSet._load(path)


def check_fit_target(path, fit_name: str, *, replace: bool = False) -> bool:
    """Whether :func:`write_fit` could store a fit named ``fit_name`` in ``path``, checked before
    the (possibly slow) fit is made: raises what ``write_fit`` would raise, returns whether the
    file exists."""
    return _fit_target(Path(path), fit_name, replace)[1] is not None


def _fit_target(path: Path, fit_name: str, replace: bool):
    """``(stored schema version, loaded set)`` of an existing target file, ``(None, None)`` when
    there is none; the errors of :func:`write_fit`."""
    if not fit_name or "/" in fit_name:
        raise ValueError(f"fit name {fit_name!r} must be non-empty and contain no '/'")
    if not path.parent.is_dir():
        raise CalibrationFileError(f"{path}: directory {path.parent} does not exist; create it or choose "
                                   f"another file name")
    if not path.exists() and not path.is_symlink():
        return None, None
    version, cs = _existing_calibration(path)
    if fit_name in cs.fits and not replace:
        raise FitExistsError(path, fit_name)
    return version, cs


def write_fit(path, fit: Fit, *, replace: bool = False, bench_name: str = "") -> dict:
    """Add one fit to a calibration file, keeping everything else in it; create the file if absent.

    The new file is written to a temporary file in the same directory and renamed over
    ``path`` (``os.replace``), so ``path`` is either the old file or the complete new one.
    Every other fit, the raw data and the file's root attributes (bench name, config,
    fingerprint, creation date) are copied unchanged (files of an older schema are migrated).

    Parameters
    ----------
    path : calibration file (HDF5) to create or add to.
    fit : the fit to store under ``fit.name``.
    replace : replace a fit of the same name; without it such a file raises FitExistsError.
    bench_name : bench name recorded when the file is created ('' for fits of lab files,
        which belong to no configured bench).

    Returns
    -------
    dict with ``created`` (bool: no file was there), ``replaced`` (bool) and ``fits`` (the
    names of all fits in the file afterwards, sorted).

    Raises
    ------
    CalibrationFileError
        ``path`` exists and is not a usable calibration file, or its directory is missing
        (one line; the file is left untouched).
    FitExistsError
        the file holds a fit named ``fit.name`` and ``replace`` is False.
    """
    path = Path(path)
    version, cs = _fit_target(path, fit.name, replace)
    if cs is None:
        cs = CalibrationSet(bench_name=bench_name)
        cs.add(fit)
        _atomic(path, cs.save)
        return {"created": True, "replaced": False, "fits": [fit.name]}
    names = set(cs.fits)
    exists = fit.name in names
    if version < SCHEMA_VERSION:
        cs.add(fit)                  # an older layout: write the migrated file whole
        _atomic(path, cs.save)
    else:
        def copy_and_add(tmp):       # copy the file object by object, leaving out the old fit
            with h5py.File(path, "r") as src, h5py.File(tmp, "w", userblock_size=SEAL_BYTES) as dst:
                for key, value in src.attrs.items():
                    dst.attrs[key] = value
                for key in src:
                    if key != "fits":
                        src.copy(src[key], dst, name=key)
                fits = dst.create_group("fits")
                old = src.get("fits")
                if isinstance(old, h5py.Group):
                    for key, value in old.attrs.items():
                        fits.attrs[key] = value
                    for name in old:
                        if name != fit.name:
                            src.copy(old[name], fits, name=name)
                _write_fit(fits, fit)
            seal(tmp)
        _atomic(path, copy_and_add)
    return {"created": False, "replaced": exists, "fits": sorted(names | {fit.name})}


def _atomic(path: Path, write) -> None:
    """Call ``write(tmp)`` on a new temporary file name beside ``path``, then rename the file over
    ``path``, keeping the permissions of the file it replaces (the temporary file is removed
    when ``write`` fails)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(tmp)
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _str(value) -> str:
    """A text attribute as str (h5py gives str, or bytes for fixed-length strings)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if not isinstance(value, str):
        raise ValueError(f"expected text, found {type(value).__name__}")
    return value


def _json_attr(attrs, key: str, where: str) -> dict:
    """A JSON object stored as a text attribute ({} when absent)."""
    value = attrs.get(key, "{}")
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise ValueError(f"{where}attribute {key} is not JSON text")
    data = json.loads(value)
    if not isinstance(data, dict):
        raise ValueError(f"{where}attribute {key} is not a JSON object")
    return data


def _read_tree(f, path="") -> dict:
    """Plain-data view of an open file (attributes and arrays only); every fit that carries a
    digest is verified (CalibrationFileError naming the fit when it does not match)."""
    content = {
        "schema_version": int(f.attrs["schema_version"]),
        "software_version": str(f.attrs.get("software_version", "")),
        "created_utc": str(f.attrs.get("created_utc", "")),
        "bench_name": str(f.attrs.get("bench_name", "")),
        "bench_config": _json_attr(f.attrs, "bench_config", ""),
        "bench_fingerprint": _json_attr(f.attrs, "bench_fingerprint", ""),
        "fits": {}, "raw": {},
    }
    if content["schema_version"] == 0:
        content["legacy_attrs"] = {k: f.attrs[k] for k in f.attrs}
        return content
    fits = f.get("fits")
    if fits is not None and not isinstance(fits, h5py.Group):
        raise ValueError("/fits is not a group")
    for name, g in (fits or {}).items():
        if not isinstance(g, h5py.Group):
            raise ValueError(f"/fits/{name} is not a group")
        try:
            stored = _stored_fit(g)
        except _DAMAGE as exc:
            raise CalibrationFileError(
                f"{path}: fit {name!r} cannot be read: its stored data are damaged or fail their checksum "
                f"({_first_line(exc)}); restore the file from a copy or re-run that part of the "
                f"calibration") from None
        digest = stored["sha256"]
        if digest is not None:
            digest = digest.decode() if isinstance(digest, bytes) else digest
            if digest != _digest(stored):
                raise CalibrationFileError(
                    f"{path}: fit {name!r} does not match the checksum stored with it (its values changed "
                    f"after it was written: bit rot, a bad copy or an edit); restore the file from a copy "
                    f"or re-run that part of the calibration")
        quantities = {q: Quantity(float(d["value"]), float(d["stderr"]), _str(d["units"]))
                      for q, d in stored["quantities"].items()}
        data = {k: stored["data"][k] for k in ("x", "y", "y_fit") if k in stored["data"]}
        content["fits"][name] = Fit(name=name, model=_str(stored["model"]), quantities=quantities,
                                    arrays=stored["arrays"], info=_json_attr(stored, "info", f"/fits/{name} "),
                                    **data)
    raw = f.get("raw")
    if raw is not None:
        def visit(key, obj):
            if isinstance(obj, h5py.Dataset):
                content["raw"][key] = obj[()]
        raw.visititems(visit)
    return content


def _migrate_0_to_1(content: dict) -> dict:
    """Schema 0 (pre-release) kept quantities as root attributes '<fit>.<q>' = value and
    '<fit>.<q>.stderr'; schema 1 groups them into fits."""
    legacy = content.pop("legacy_attrs", {})
    fits = {}
    for key, value in legacy.items():
        if key.count(".") != 1 or key.endswith(".stderr"):
            continue
        fit_name, q = key.split(".")
        stderr = float(legacy.get(f"{key}.stderr", float("nan")))
        fit = fits.setdefault(fit_name, Fit(name=fit_name, model=str(legacy.get(f"{fit_name}_model", "unknown"))))
        fit.quantities[q] = Quantity(float(value), stderr)
    content["fits"] = fits
    content["schema_version"] = 1
    return content


MIGRATIONS = {0: _migrate_0_to_1}
