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
The file must hold its frames itself: external links and external or virtual datasets
are refused.

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

Physically impossible data
--------------------------
Readers refuse data no measurement can give, with a one-line :class:`LabFileError`:

* powers below zero (SLM ``first_order_power``, absorber ``output``) or a column without a
  single positive power; a negative excursion within detector noise, at most
  ``NOISE_FRACTION`` (5 %) of the column's largest magnitude, is kept (dark-subtracted data);
* absorber output above its input, or a probe transmission above 1: the cell is passive.
  Allowed are ``NOISE_FRACTION`` of the point's input plus ``FLOOR_FRACTION`` (1 %) of the
  sweep's largest output.  Where the output arm does amplify, or its detector reads higher
  than the input arm's, the file declares the factor in a comment line ``# gain = G``
  (G > 0): output up to G x input (probe transmission up to G) is then accepted, and the
  data are returned unchanged (the fits' scale factor absorbs G);
* camera frames with negative or non-finite pixel values (raw frames in DN are >= 0), or
  a point whose bright frames are darker than its dark frames by more than 5 standard
  errors of the difference.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import Sequence

import numpy as np

from calibration.camera_fit import CameraPoint
from hwio.h5check import refuse_external

__all__ = ["LabFileError", "read_camera_h5", "read_csv_columns", "read_slm_csv", "read_absorber_pump_csv",
           "read_absorber_probe_csv", "file_provenance", "declared_gain", "NOISE_FRACTION", "FLOOR_FRACTION"]

#: a power may fall below zero, or an output exceed its bound, by this fraction (detector noise)
NOISE_FRACTION = 0.05
#: ... plus this fraction of the sweep's largest output (the detector's noise floor)
FLOOR_FRACTION = 0.01


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
            refuse_external(f, path, what="a camera file", error=LabFileError)
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
                    _check_frames(path, name, kind, stacks[kind])
                exposure = _attr([g, g["bright"]], "exposure_s")
                if exposure is None:
                    raise LabFileError(f"{path}: /points/{name} has no 'exposure_s' attribute (seconds)")
                if exposure == "bad" or not np.isfinite(exposure) or exposure < 0:
                    raise LabFileError(f"{path}: /points/{name} attribute exposure_s must be one number >= 0")
                photons = _attr([g, g["bright"]], "photons_per_pixel")
                if photons == "bad" or (photons is not None and (not np.isfinite(photons) or photons < 0)):
                    raise LabFileError(f"{path}: /points/{name} attribute photons_per_pixel must be one "
                                       "number >= 0")
                _check_bright_above_dark(path, name, stacks["bright"], stacks["dark"])
                points.append(CameraPoint(stacks["bright"], stacks["dark"], exposure, photons, name=name))
    except LabFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LabFileError(f"{path}: cannot read the camera file, it may be truncated or corrupt ({msg})") from None
    return points


def _check_frames(path, name: str, kind: str, frames: np.ndarray) -> None:
    """Raw frames in DN: finite and >= 0."""
    if frames.size == 0:
        raise LabFileError(f"{path}: /points/{name}/{kind} holds no pixels; record at least 2 frames per stack")
    if frames.dtype.kind == "f" and not np.all(np.isfinite(frames)):
        raise LabFileError(f"{path}: /points/{name}/{kind} holds NaN or infinite pixel values; give the raw "
                           f"camera frames in DN")
    if frames.dtype.kind in "if" and frames.min() < 0:
        raise LabFileError(f"{path}: /points/{name}/{kind} holds negative pixel values (down to "
                           f"{frames.min():g} DN); a camera's raw frames are >= 0, give them as recorded "
                           f"(not dark-subtracted)")


def _check_bright_above_dark(path, name: str, bright: np.ndarray, dark: np.ndarray) -> None:
    """The frames with light may not be darker than those without, beyond 5 standard errors."""
    b = np.asarray(bright, dtype=np.float64)
    d = np.asarray(dark, dtype=np.float64)
    diff = b.mean() - d.mean()
    se = np.sqrt(b.var() / b.size + d.var() / d.size)
    if diff < -5.0 * se:
        raise LabFileError(f"{path}: /points/{name}: the bright frames are darker than the dark frames "
                           f"({b.mean():.6g} < {d.mean():.6g} DN on average); check that 'bright' and 'dark' "
                           f"are not swapped")


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


_GAIN = re.compile(r"^\s*#\s*gain\s*[=:]\s*(\S+)\s*$", re.IGNORECASE)


def declared_gain(path) -> float:
    """The gain a CSV file declares in a comment line ``# gain = G`` (1.0 when it declares none).

    Raises
    ------
    LabFileError : the declaration is not one finite number > 0, or there are several.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8-sig", errors="replace")
    except OSError as exc:
        raise LabFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    found = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        match = _GAIN.match(line)
        if match:
            found.append((lineno, match.group(1)))
    if not found:
        return 1.0
    if len(found) > 1:
        raise LabFileError(f"{path}: lines {', '.join(str(n) for n, _ in found)} each declare a gain; keep one "
                           f"'# gain = G' line")
    lineno, raw = found[0]
    try:
        gain = float(raw)
    except ValueError:
        gain = float("nan")
    if not (np.isfinite(gain) and gain > 0):
        raise LabFileError(f"{path}: line {lineno}: the declared gain {raw!r} must be one finite number > 0")
    return gain


def _check_powers(path, values: np.ndarray, column: str) -> None:
    """Powers: at least one > 0 and none below zero by more than NOISE_FRACTION of the largest."""
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    if values.size == 0 or not np.any(values > 0):
        raise LabFileError(f"{path}: column {column} holds no power above zero; a measured power is > 0, "
                           f"check the column and the detector (dark level subtracted twice?)")
    low = int(np.argmin(values))
    if values[low] < -NOISE_FRACTION * scale:
        raise LabFileError(f"{path}: column {column} has {values[low]:g} in data row {low + 1}, below zero by more "
                           f"than {NOISE_FRACTION:.0%} of the largest power ({scale:g}); a power cannot be "
                           f"negative: fix the dark subtraction or re-measure")


def read_slm_csv(path):
    """SLM diffractive curve ``level, first_order_power`` -> (levels int64, power float64)."""
    d = read_csv_columns(path, ["level", "first_order_power"], what="SLM curve")
    lv = d["level"]
    if np.any(lv != np.round(lv)) or np.any(lv < 0):
        raise LabFileError(f"{os.fspath(path)}: column level must hold integer gray levels >= 0")
    if np.any(lv > np.iinfo(np.int64).max // 2):
        raise LabFileError(f"{os.fspath(path)}: column level holds {lv.max():g}, not a gray level")
    _check_powers(os.fspath(path), d["first_order_power"], "first_order_power")
    return lv.astype(np.int64), d["first_order_power"]


def read_absorber_pump_csv(path):
    """Absorber pump sweep ``input, output`` -> (input, output) float64 arrays.

    Output above ``gain`` x input (``# gain = G`` in the file, default 1) beyond noise is
    refused: the cell is passive (module docstring)."""
    d = read_csv_columns(path, ["input", "output"], what="absorber pump sweep")
    path = os.fspath(path)
    p_in, p_out = d["input"], d["output"]
    if np.any(p_in < 0):
        raise LabFileError(f"{path}: column input must hold powers >= 0")
    _check_powers(path, p_out, "output")
    gain = declared_gain(path)
    allowed = gain * p_in * (1 + NOISE_FRACTION) + FLOOR_FRACTION * float(np.max(np.abs(p_out)))
    over = np.flatnonzero(p_out > allowed)
    if over.size:
        k = int(over[np.argmax((p_out - gain * p_in)[over])])
        declared = f"the declared gain {gain:g} x input" if gain != 1.0 else "the input"
        raise LabFileError(f"{path}: output {p_out[k]:g} exceeds {declared} {p_in[k]:g} in data row {k + 1} "
                           f"({over.size} row(s) in all); a passive absorber cannot add power: give input and "
                           f"output in the same calibrated units, or declare the output arm's gain in a "
                           f"comment line '# gain = G'")
    return p_in, p_out


def read_absorber_probe_csv(path):
    """Absorber probe sweep ``pump, probe_transmission`` -> (pump, probe_transmission) arrays.

    A transmission above ``gain`` (``# gain = G`` in the file, default 1) beyond noise is refused."""
    d = read_csv_columns(path, ["pump", "probe_transmission"], what="absorber probe sweep")
    path = os.fspath(path)
    pump, t = d["pump"], d["probe_transmission"]
    if np.any(pump < 0):
        raise LabFileError(f"{path}: column pump must hold powers >= 0")
    _check_powers(path, t, "probe_transmission")
    gain = declared_gain(path)
    over = np.flatnonzero(t > gain * (1 + NOISE_FRACTION))
    if over.size:
        k = int(over[np.argmax(t[over])])
        bound = f"the declared gain {gain:g}" if gain != 1.0 else "1"
        raise LabFileError(f"{path}: probe_transmission {t[k]:g} in data row {k + 1} is above {bound} "
                           f"({over.size} row(s) in all); a passive cell transmits at most all of the probe: "
                           f"check the probe normalisation, or declare the gain in a comment line '# gain = G'")
    return pump, t


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
