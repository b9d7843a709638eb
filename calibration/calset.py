"""The calibration file: every fit of a bench, with uncertainties, in one HDF5 file.

Layout (schema version 1)::

    /                          attrs kind='optwin-calibration', schema_version, software_version,
                                     created_utc, bench_name, bench_config (JSON, no truth),
                                     bench_fingerprint (JSON, optional: the bench's identity,
                                     see calibration.fingerprint)
    /fits/<name>               attrs model, info (JSON), created_utc
    /fits/<name>/quantities/<q> attrs value, stderr, units          (a fitted number)
    /fits/<name>/arrays/<a>    dataset (maps, tables, LUTs), attr units when known
    /fits/<name>/data/{x,y,y_fit}  the data and model curve behind the fit (for reports)
    /raw/<path>                raw measurements the fits came from

Loading reads attributes and datasets only (never executes code), refuses files of a
newer schema with a clear message and migrates older ones (see ``MIGRATIONS``).
:func:`write_fit` adds or replaces one fit in a file and keeps everything else in it (fits of
lab measurement files, ``optwin calibrate slm|camera|absorber --out``); like ``save`` it writes
a temporary file beside the target and renames it over it.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from calibration.quantities import Fit, Quantity

__all__ = ["CalibrationSet", "CalibrationFileError", "FitExistsError", "SCHEMA_VERSION", "write_fit",
           "check_fit_target"]

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
            with h5py.File(tmp, "w") as f:
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
                    raw.create_dataset(key, data=np.asarray(arr), compression="gzip"
                                       if np.asarray(arr).size > 1024 else None)
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
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise CalibrationFileError(f"{path}: not a readable HDF5 file ({exc}); "
                                       f"the file is corrupt or truncated, re-run the calibration") from None
        with f:
            kind = f.attrs.get("kind")
            if kind != KIND:
                raise CalibrationFileError(f"{path}: not an optwin calibration file (kind={kind!r})")
            version = int(f.attrs.get("schema_version", -1))
            if version > SCHEMA_VERSION:
                raise CalibrationFileError(
                    f"{path}: calibration schema {version} is newer than this optwin reads "
                    f"({SCHEMA_VERSION}); upgrade optwin to read it")
            try:
                content = _read_tree(f)
            except (KeyError, ValueError, OSError) as exc:
                raise CalibrationFileError(f"{path}: damaged calibration file ({exc}); "
                                           f"re-run the calibration") from None
        while content["schema_version"] < SCHEMA_VERSION:
            step = MIGRATIONS.get(content["schema_version"])
            if step is None:
                raise CalibrationFileError(f"{path}: schema {content['schema_version']} cannot be migrated")
            content = step(content)
        return cls(**content)


def _write_fit(fits_group, fit: Fit, name: str | None = None) -> None:
    """Write one fit as ``fits_group/<name>`` (layout in the module docstring)."""
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
        ag.create_dataset(aname, data=np.asarray(arr), compression="gzip"
                          if np.asarray(arr).size > 1024 else None)
    dg = g.create_group("data")
    for key in ("x", "y", "y_fit"):
        val = getattr(fit, key)
        if val is not None:
            dg.create_dataset(key, data=np.asarray(val, dtype=float))


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
    try:
        with h5py.File(path, "r") as f:
            kind = f.attrs.get("kind")
            version = int(f.attrs.get("schema_version", -1))
    except OSError as exc:
        raise CalibrationFileError(f"{path}: exists but cannot be opened as HDF5, it may be truncated or corrupt "
                                   f"({str(exc).splitlines()[0]}); {what}") from None
    except (TypeError, ValueError):
        kind, version = None, -1
    if kind != KIND:
        raise CalibrationFileError(f"{path}: exists and is not an optwin calibration file (kind={kind!r}); {what}")
    return version, CalibrationSet.load(path)


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
            with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
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


def _read_tree(f) -> dict:
    """Plain-data view of an open file (attributes and arrays only)."""
    content = {
        "schema_version": int(f.attrs["schema_version"]),
        "software_version": str(f.attrs.get("software_version", "")),
        "created_utc": str(f.attrs.get("created_utc", "")),
        "bench_name": str(f.attrs.get("bench_name", "")),
        "bench_config": json.loads(f.attrs.get("bench_config", "{}")),
        "bench_fingerprint": json.loads(f.attrs.get("bench_fingerprint", "{}")),
        "fits": {}, "raw": {},
    }
    if content["schema_version"] == 0:
        content["legacy_attrs"] = {k: f.attrs[k] for k in f.attrs}
        return content
    for name, g in f.get("fits", {}).items():
        quantities = {q: Quantity(float(d.attrs["value"]), float(d.attrs["stderr"]), str(d.attrs["units"]))
                      for q, d in g["quantities"].items()}
        arrays = {a: d[()] for a, d in g["arrays"].items()}
        data = {k: g["data"][k][()] for k in ("x", "y", "y_fit") if k in g["data"]}
        content["fits"][name] = Fit(name=name, model=str(g.attrs["model"]), quantities=quantities,
                                    arrays=arrays, info=json.loads(g.attrs.get("info", "{}")), **data)
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
