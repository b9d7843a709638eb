"""The calibration file: every fit of a bench, with uncertainties, in one HDF5 file.

Layout (schema version 1)::

    /                          attrs kind='optwin-calibration', schema_version, software_version,
                                     created_utc, bench_name, bench_config (JSON, no truth)
    /fits/<name>               attrs model, info (JSON), created_utc
    /fits/<name>/quantities/<q> attrs value, stderr, units          (a fitted number)
    /fits/<name>/arrays/<a>    dataset (maps, tables, LUTs), attr units when known
    /fits/<name>/data/{x,y,y_fit}  the data and model curve behind the fit (for reports)
    /raw/<path>                raw measurements the fits came from

Loading reads attributes and datasets only (never executes code), refuses files of a
newer schema with a clear message and migrates older ones (see ``MIGRATIONS``).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from calibration.quantities import Fit, Quantity

__all__ = ["CalibrationSet", "CalibrationFileError", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
KIND = "optwin-calibration"


class CalibrationFileError(ValueError):
    """A calibration file cannot be used (one-line message says why and what to do)."""


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
        tmp = path.with_name(path.name + ".tmp")
        with h5py.File(tmp, "w") as f:
            f.attrs["kind"] = KIND
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["software_version"] = self.software_version
            f.attrs["created_utc"] = self.created_utc
            f.attrs["bench_name"] = self.bench_name
            f.attrs["bench_config"] = json.dumps(_jsonable(self.bench_config))
            fits = f.create_group("fits")
            for name, fit in self.fits.items():
                g = fits.create_group(name)
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
            raw = f.create_group("raw")
            for key, arr in self.raw.items():
                raw.create_dataset(key, data=np.asarray(arr), compression="gzip"
                                   if np.asarray(arr).size > 1024 else None)
        os.replace(tmp, path)
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


def _read_tree(f) -> dict:
    """Plain-data view of an open file (attributes and arrays only)."""
    content = {
        "schema_version": int(f.attrs["schema_version"]),
        "software_version": str(f.attrs.get("software_version", "")),
        "created_utc": str(f.attrs.get("created_utc", "")),
        "bench_name": str(f.attrs.get("bench_name", "")),
        "bench_config": json.loads(f.attrs.get("bench_config", "{}")),
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
