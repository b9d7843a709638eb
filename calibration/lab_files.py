"""Readers for measurement files a lab already has (camera HDF5, SLM and absorber CSVs).

Every reader raises :class:`LabFileError` (a ``ValueError``) with a one-line message that
names the file and says what is wrong: missing, unreadable, truncated or corrupt files,
wrong schema, non-numeric values.

Camera photon-transfer file (HDF5)
----------------------------------
::

    /points/<name>/bright   (n, rows, cols) frames with light, n >= 2, DN (integer or float)
    /points/<name>/dark     (m, rows, cols) frames without light at the same exposure, m >= 2
    attributes (on the group /points/<name>, or on its 'bright' dataset):
        exposure_s          exposure time in seconds (required)
        photons_per_pixel   mean photons per pixel per exposure (optional; gives QE)

One group per operating point (any names; at least 3 points), all frames the same
(rows, cols).

CSV files
---------
Comma-, semicolon-, tab- or whitespace-separated; ``#`` starts a comment; blank lines are
skipped.  The header row is optional: with a header, columns are found by name (case
insensitive, a unit suffix in brackets such as ``input (mW)`` is ignored, extra columns
are allowed); without one the file must have exactly the listed columns in this order.

* SLM curve: ``level, first_order_power`` (gray level, first-order power in any units)
* absorber pump sweep: ``input, output`` (powers in any consistent units)
* absorber probe sweep: ``pump, probe_transmission`` (pump power in the pump sweep's
  units, weak probe power transmission)
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import Sequence

import numpy as np

from calibration.camera_fit import CameraPoint

__all__ = ["LabFileError", "read_camera_h5", "read_csv_columns", "read_slm_csv", "read_absorber_pump_csv",
           "read_absorber_probe_csv", "file_provenance"]


class LabFileError(ValueError):
    """A measurement file is missing, unreadable or not in the documented format."""


# ----------------------------------------------------------------------------- camera HDF5
def _attr(objs, name):
    for o in objs:
        if name in o.attrs:
            v = o.attrs[name]
            try:
                v = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                return "bad"
            if v.size != 1:
                return "bad"
            return float(v.ravel()[0])
    return None


def read_camera_h5(path) -> list[CameraPoint]:
    """Read a photon-transfer series from an HDF5 file in the schema above.

    Returns
    -------
    list of :class:`~calibration.camera_fit.CameraPoint` in the file's (alphabetical) order,
    ready for :func:`calibration.camera_fit.fit_camera`.
    """
    import h5py

    path = os.fspath(path)
    if not os.path.exists(path):
        raise LabFileError(f"{path}: no such file; give the path of the camera HDF5 file")
    if os.path.isdir(path):
        raise LabFileError(f"{path}: is a directory; give the camera HDF5 file")
    try:
        is_h5 = h5py.is_hdf5(path)
    except OSError as exc:
        raise LabFileError(f"{path}: cannot read the file ({exc})") from None
    if not is_h5:
        raise LabFileError(f"{path}: not an HDF5 file; expected /points/<name>/bright and /dark frame stacks")
    points = []
    try:
        with h5py.File(path, "r") as f:
            grp = f.get("points")
            if not isinstance(grp, h5py.Group):
                raise LabFileError(f"{path}: no /points group; expected /points/<name>/bright and "
                                   "/points/<name>/dark frame stacks")
            names = list(grp.keys())
            if not names:
                raise LabFileError(f"{path}: /points is empty; record at least 3 operating points")
            shape = None
            for name in names:
                g = grp[name]
                if not isinstance(g, h5py.Group):
                    raise LabFileError(f"{path}: /points/{name} is not a group with 'bright' and 'dark' datasets")
                stacks = {}
                for kind in ("bright", "dark"):
                    d = g.get(kind)
                    if not isinstance(d, h5py.Dataset):
                        raise LabFileError(f"{path}: /points/{name}/{kind} is missing; every point needs "
                                           "'bright' and 'dark' frame stacks")
                    if d.ndim != 3:
                        raise LabFileError(f"{path}: /points/{name}/{kind} has shape {d.shape}; expected "
                                           "(n_frames, rows, cols)")
                    if d.dtype.kind not in "iuf":
                        raise LabFileError(f"{path}: /points/{name}/{kind} has dtype {d.dtype}; expected "
                                           "integer or float pixel values")
                    if shape is None:
                        shape = d.shape[1:]
                    elif d.shape[1:] != shape:
                        raise LabFileError(f"{path}: /points/{name}/{kind} frames are {d.shape[1:]}, other "
                                           f"points are {shape}; all points need the same frame size")
                    stacks[kind] = d[()]
                exposure = _attr([g, g["bright"]], "exposure_s")
                if exposure is None:
                    raise LabFileError(f"{path}: /points/{name} has no 'exposure_s' attribute (seconds)")
                if exposure == "bad" or not np.isfinite(exposure) or exposure < 0:
                    raise LabFileError(f"{path}: /points/{name} attribute exposure_s must be one number >= 0")
                photons = _attr([g, g["bright"]], "photons_per_pixel")
                if photons == "bad" or (photons is not None and (not np.isfinite(photons) or photons < 0)):
                    raise LabFileError(f"{path}: /points/{name} attribute photons_per_pixel must be one "
                                       "number >= 0")
                points.append(CameraPoint(stacks["bright"], stacks["dark"], exposure, photons, name=name))
    except LabFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LabFileError(f"{path}: cannot read the camera file, it may be truncated or corrupt ({msg})") from None
    return points


# ----------------------------------------------------------------------------- CSV
_NUM = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _split(line: str, delim: str | None):
    parts = line.split(delim) if delim else line.split()
    return [p.strip().strip('"').strip("'").strip() for p in parts]


def _column_name(raw: str) -> str:
    name = re.sub(r"[\(\[].*?[\)\]]", "", raw).strip().lower()
    return re.sub(r"[\s\-]+", "_", name)


def read_csv_columns(path, columns: Sequence[str], *, what: str = "CSV file") -> dict:
    """Read named numeric columns from a small CSV file (format in the module docstring).

    Returns
    -------
    dict column name -> float64 array (file order).
    """
    path = os.fspath(path)
    columns = [c.lower() for c in columns]
    expected = ", ".join(columns)
    if not os.path.exists(path):
        raise LabFileError(f"{path}: no such file; give the {what} with columns {expected}")
    if os.path.isdir(path):
        raise LabFileError(f"{path}: is a directory; give the {what} with columns {expected}")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise LabFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if b"\x00" in raw:
        raise LabFileError(f"{path}: binary data, not a text CSV; expected columns {expected}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LabFileError(f"{path}: not UTF-8 text; save the {what} as plain text CSV") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if line:
            rows.append((lineno, line))
    if not rows:
        raise LabFileError(f"{path}: no data rows; expected columns {expected}")
    first = rows[0][1]
    delim = "," if "," in first else ";" if ";" in first else "\t" if "\t" in first else None
    head = _split(first, delim)
    index = list(range(len(columns)))
    n_cols = len(columns)
    if not all(_NUM.match(h) or h.lower() in ("nan", "inf", "-inf") for h in head):
        names = [_column_name(h) for h in head]
        missing = [c for c in columns if c not in names]
        if missing:
            raise LabFileError(f"{path}: header has columns {', '.join(names)} but needs {expected} "
                               f"(missing {', '.join(missing)})")
        index = [names.index(c) for c in columns]
        n_cols = len(names)
        rows = rows[1:]
        if not rows:
            raise LabFileError(f"{path}: header only, no data rows")
    elif len(head) != len(columns):
        raise LabFileError(f"{path}: line {rows[0][0]} has {len(head)} columns; without a header row the file "
                           f"must have exactly the columns {expected}")
    data = np.empty((len(rows), len(columns)))
    for r, (lineno, line) in enumerate(rows):
        parts = _split(line, delim)
        if len(parts) != n_cols:
            raise LabFileError(f"{path}: line {lineno} has {len(parts)} columns, expected {n_cols}")
        for c, i in enumerate(index):
            try:
                v = float(parts[i])
            except ValueError:
                raise LabFileError(f"{path}: line {lineno}: {parts[i]!r} in column {columns[c]} is not a "
                                   "number") from None
            if not np.isfinite(v):
                raise LabFileError(f"{path}: line {lineno}: column {columns[c]} is {parts[i]}; remove the "
                                   "row or give a finite number")
            data[r, c] = v
    return {c: data[:, k].copy() for k, c in enumerate(columns)}


def read_slm_csv(path):
    """SLM diffractive curve ``level, first_order_power`` -> (levels int64, power float64)."""
    d = read_csv_columns(path, ["level", "first_order_power"], what="SLM curve")
    lv = d["level"]
    if np.any(lv != np.round(lv)) or np.any(lv < 0):
        raise LabFileError(f"{os.fspath(path)}: column level must hold integer gray levels >= 0")
    return lv.astype(np.int64), d["first_order_power"]


def read_absorber_pump_csv(path):
    """Absorber pump sweep ``input, output`` -> (input, output) float64 arrays."""
    d = read_csv_columns(path, ["input", "output"], what="absorber pump sweep")
    if np.any(d["input"] < 0):
        raise LabFileError(f"{os.fspath(path)}: column input must hold powers >= 0")
    return d["input"], d["output"]


def read_absorber_probe_csv(path):
    """Absorber probe sweep ``pump, probe_transmission`` -> (pump, probe_transmission) arrays."""
    d = read_csv_columns(path, ["pump", "probe_transmission"], what="absorber probe sweep")
    if np.any(d["pump"] < 0):
        raise LabFileError(f"{os.fspath(path)}: column pump must hold powers >= 0")
    return d["pump"], d["probe_transmission"]


# ----------------------------------------------------------------------------- provenance
def file_provenance(path) -> dict:
    """Where a fit's data came from: ``{'path': absolute path, 'sha256': hex digest of the
    file's bytes, 'size_bytes': int}`` (stored in the fit's info when the fit is saved)."""
    path = os.fspath(path)
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise LabFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    return {"path": os.path.abspath(path), "sha256": h.hexdigest(), "size_bytes": os.path.getsize(path)}
