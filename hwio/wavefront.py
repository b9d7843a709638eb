"""Wavefront-correction (flatness) maps of phase panels: read, check, identify.

A wavefront map is the phase (rad) a panel's pixels must add to their target so that the
panel acts as a flat mirror: its shape is the panel's (rows, cols), pixel (r, c) of the map
belongs to panel pixel (r, c).  :class:`hwio.encoding.PhaseEncoder` (``wavefront_rad=``)
adds it to every target phase modulo one turn before the inverse LUT.

File formats (:func:`load_wavefront`; ``fmt`` defaults from the file name's suffix)
-----------------------------------------------------------------------------------
``csv`` (``.csv``, ``.txt``)
    A plain matrix of phases in rad, one panel row per line, comma or whitespace
    separated; ``#`` starts a comment.
``santec_csv``
    Santec's vendor correction file: a CSV whose first row holds the column numbers and
    whose first column holds the row numbers (both skipped); the values are levels of the
    correction table, ``phase = value * span_rad / full_scale`` with ``full_scale`` 1024
    (10-bit levels, 1024 = one turn) by default.  Give ``fmt = "santec_csv"`` explicitly.
``png`` (``.png``)
    An 8- or 16-bit gray image (an RGB image with R = G = B is accepted);
    ``phase = value * span_rad / full_scale``.  Defaults: ``span_rad`` 2 pi and
    ``full_scale`` 255 (8 bit) or 65535 (16 bit), i.e. the common vendor convention that
    gray 255 means 2 pi.  Set ``full_scale = 256`` for maps where 256 means 2 pi (gray 255
    then is 2 pi * 255/256), and ``span_rad`` for a map made at another wavelength
    (``2 pi * lambda_map / lambda_used`` for a map in levels of the map's wavelength).
``hdf5`` (``.h5``, ``.hdf5``)
    A 2-D dataset (``dataset``; default: the file's only 2-D dataset, or
    ``wavefront_rad``): floating point values are rad; integer values are scaled like PNG.
``npy`` (``.npy``)
    A 2-D array in rad.

Every problem is a one-line ``ValueError`` naming the file: unreadable file, wrong shape,
non-finite values, unknown format.

Bench files
-----------
A phase panel declares its map in the bench file, relative to the bench file::

    [devices.slm1]
    wavefront_map = "maps/slm1_flat.png"
    # or with reading options:
    # wavefront_map = {path = "maps/slm1.csv", format = "santec_csv", span_rad = 6.2832, full_scale = 1024}

:func:`parse_wavefront_entry` checks that entry (``hwio.bench`` calls it) and stores the
resolved path; :func:`calibration.deploy.phase_encoder` reads the map and records
:func:`wavefront_record` (path and sha256 of the file) with the encoder.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

__all__ = ["FORMATS", "load_wavefront", "check_wavefront", "file_sha256", "wavefront_record",
           "parse_wavefront_entry", "load_bench_wavefront", "bench_wavefront"]

TWO_PI = 2.0 * math.pi
#: formats :func:`load_wavefront` reads, and the suffixes that select them
FORMATS = {"csv": (".csv", ".txt"), "santec_csv": (), "png": (".png",), "hdf5": (".h5", ".hdf5"),
           "npy": (".npy",)}
_ENTRY_KEYS = ("path", "format", "span_rad", "full_scale", "dataset")


def _format_for(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"wavefront map {path}: format must be one of {', '.join(map(repr, FORMATS))}, "
                             f"got {fmt!r}")
        return fmt
    suffix = path.suffix.lower()
    for name, suffixes in FORMATS.items():
        if suffix in suffixes:
            return name
    raise ValueError(f"wavefront map {path}: cannot tell the format from the suffix {suffix!r}; use a .csv, "
                     f".png, .h5 or .npy file or give the format ({', '.join(FORMATS)})")


def check_wavefront(phase_rad, shape, name: str = "SLM", source: str = "wavefront map") -> np.ndarray:
    """A wavefront map checked against the panel: float64 (rows, cols) rad, all finite.

    Parameters
    ----------
    phase_rad : array (rows, cols) of phases (rad).
    shape : the panel's (rows, cols) in pixels.
    name : panel name used in messages.
    source : what the map is (a file name) for messages.
    """
    arr = np.asarray(phase_rad)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name}: {source} must hold numbers, got dtype {arr.dtype}")
    arr = np.array(arr, dtype=np.float64)
    want = (int(shape[0]), int(shape[1]))
    if arr.shape != want:
        got = "x".join(map(str, arr.shape)) if arr.ndim else "a scalar"
        raise ValueError(f"{name}: {source} is {got} but the panel is {want[0]}x{want[1]} (rows x cols); "
                         f"use the map made for this panel (or crop it to the panel's pixels)")
    bad = ~np.isfinite(arr)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{name}: {source} has {int(bad.sum())} non-finite value(s) (first at row {r}, col {c}: "
                         f"{arr[r, c]}); fill or re-measure them")
    return arr


def _scaled(values: np.ndarray, span_rad, full_scale, default_full_scale, path) -> np.ndarray:
    fs = default_full_scale if full_scale is None else float(full_scale)
    span = TWO_PI if span_rad is None else float(span_rad)
    if not (math.isfinite(fs) and fs > 0 and math.isfinite(span) and span > 0):
        raise ValueError(f"wavefront map {path}: full_scale and span_rad must be finite numbers > 0, "
                         f"got {full_scale!r}, {span_rad!r}")
    return values.astype(np.float64) * (span / fs)


def _read_csv(p: Path, kind: str, span_rad, full_scale) -> np.ndarray:
    """Phase (rad) of a plain (``csv``) or Santec (``santec_csv``) CSV map; ValueError says why not."""
    text = p.read_text(encoding="utf-8-sig")
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    rows = [ln.replace(",", " ").split() for ln in lines if ln]
    if not rows or len({len(r) for r in rows}) != 1:
        raise ValueError("rows of unequal length" if rows else "no numbers")
    values = np.array(rows, dtype=np.float64)
    if kind == "santec_csv":
        if values.shape[0] < 2 or values.shape[1] < 2:
            raise ValueError("a Santec map needs a header row and column")
        values = _scaled(values[1:, 1:], span_rad, full_scale, 1024.0, p)
    elif span_rad is not None or full_scale is not None:
        raise ValueError("a plain CSV holds rad; span_rad/full_scale are for integer maps "
                         "(use format 'santec_csv' for a vendor level map)")
    return values


def _read_png(p: Path, span_rad, full_scale) -> np.ndarray:
    """Phase (rad) of an 8- or 16-bit gray PNG map; ValueError says why not."""
    import cv2
    img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("not a readable PNG")
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        if not (np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 1], img[:, :, 2])):
            raise ValueError("a colour image (R, G, B differ); save the map as gray")
        img = img[:, :, 0]
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{img.dtype} pixels; save an 8- or 16-bit gray PNG")
    return _scaled(img, span_rad, full_scale, 255.0 if img.dtype == np.uint8 else 65535.0, p)


def _read_hdf5(p: Path, dataset: str | None, span_rad, full_scale) -> np.ndarray:
    """Phase (rad) of a 2-D HDF5 dataset (float: rad; integer: scaled); ValueError says why not."""
    import h5py
    with h5py.File(p, "r") as f:
        if dataset is None:
            found = []
            f.visititems(lambda k, v: found.append(k) if isinstance(v, h5py.Dataset) and v.ndim == 2 else None)
            if "wavefront_rad" in found:
                dataset = "wavefront_rad"
            elif len(found) == 1:
                dataset = found[0]
            else:
                raise ValueError(f"{len(found)} 2-D datasets ({', '.join(found[:4]) or 'none'}); "
                                 f"name the one to use (dataset = ...)")
        if dataset not in f:
            raise ValueError(f"no dataset {dataset!r}")
        data = np.asarray(f[dataset][()])
    if data.dtype.kind in "iu":
        default = float(np.iinfo(data.dtype).max) if data.dtype.itemsize <= 2 else None
        if default is None and full_scale is None:
            raise ValueError(f"integer dataset {dataset!r} of {data.dtype}: give full_scale")
        return _scaled(data, span_rad, full_scale, default, p)
    return data


def load_wavefront(path, shape, *, fmt: str | None = None, span_rad: float | None = None,
                   full_scale: float | None = None, dataset: str | None = None,
                   name: str = "SLM") -> np.ndarray:
    """Read a wavefront-correction map (rad) for a panel of ``shape`` (module notes for the formats).

    Parameters
    ----------
    path : the map file.
    shape : the panel's (rows, cols) in pixels; a map of another shape raises ValueError.
    fmt : ``"csv"``, ``"santec_csv"``, ``"png"``, ``"hdf5"`` or ``"npy"`` (default: by suffix).
    span_rad : phase (rad) of ``full_scale`` for integer maps (PNG, Santec CSV, integer HDF5);
        default 2 pi.
    full_scale : the integer value that means ``span_rad``; default 255 / 65535 for 8- / 16-bit
        PNG and HDF5, 1024 for Santec CSV.
    dataset : HDF5 dataset name.
    name : panel name used in messages.

    Returns
    -------
    float64 array (rows, cols), phase to add to every pixel (rad).
    """
    p = Path(path)
    try:
        kind = _format_for(p, fmt)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if not p.is_file():
        raise ValueError(f"{name}: wavefront map {p} does not exist or is not a file; check the path")
    src = f"wavefront map {p.name}"
    try:
        if kind in ("csv", "santec_csv"):
            phase = _read_csv(p, kind, span_rad, full_scale)
        elif kind == "png":
            phase = _read_png(p, span_rad, full_scale)
        elif kind == "hdf5":
            phase = _read_hdf5(p, dataset, span_rad, full_scale)
        else:
            phase = np.load(p, allow_pickle=False)
    except ValueError as exc:
        msg = str(exc)
        if msg.startswith("wavefront map"):
            raise ValueError(f"{name}: {msg}") from None
        why = msg.splitlines()[0] if msg else "bad data"
        raise ValueError(f"{name}: cannot read {src} as {kind} ({why})") from None
    except (OSError, ImportError) as exc:
        raise ValueError(f"{name}: cannot read {src} as {kind} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    return check_wavefront(phase, shape, name, src)


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wavefront_record(entry: dict, phase_rad: np.ndarray | None = None) -> dict:
    """What a calibration records about the map a panel's encoder used.

    Parameters
    ----------
    entry : the panel's ``wavefront_map`` entry (:func:`parse_wavefront_entry`: ``path`` and
        reading options).
    phase_rad : the map as read (adds its shape and rms).

    Returns
    -------
    dict with ``wavefront_map_path`` (resolved), ``wavefront_map_sha256`` (of the file),
    ``wavefront_map_format`` and, when given, ``wavefront_map_span_rad``,
    ``wavefront_map_full_scale``, ``wavefront_map_dataset``, ``wavefront_map_shape`` and
    ``wavefront_map_rms_rad``: plain values, ready for a fit's ``info``.
    """
    rec = {"wavefront_map_path": str(entry["path"]), "wavefront_map_sha256": file_sha256(entry["path"]),
           "wavefront_map_format": entry.get("format") or _format_for(Path(entry["path"]), None)}
    for key in ("span_rad", "full_scale", "dataset"):
        if entry.get(key) is not None:
            rec[f"wavefront_map_{key}"] = entry[key]
    if phase_rad is not None:
        rec["wavefront_map_shape"] = [int(s) for s in np.shape(phase_rad)]
        wrapped = np.angle(np.exp(1j * (np.asarray(phase_rad) - np.mean(phase_rad))))
        rec["wavefront_map_rms_rad"] = float(np.sqrt(np.mean(wrapped ** 2)))
    return rec


def parse_wavefront_entry(value, base_dir, where: str) -> dict:
    """Check a bench file's ``wavefront_map`` entry; return ``{"path": resolved str, options...}``.

    Parameters
    ----------
    value : a path string, or a table with ``path`` and optional ``format``, ``span_rad``,
        ``full_scale``, ``dataset``.
    base_dir : directory relative paths start from (the bench file's); None: the working directory.
    where : ``file: [devices.x].wavefront_map`` prefix of the one-line errors.
    """
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a path (string) or a table {{path = ..., format = ...}}, got {value!r}")
    unknown = [k for k in value if k not in _ENTRY_KEYS]
    if unknown:
        raise ValueError(f"{where} has unknown key {unknown[0]!r} (known: {', '.join(_ENTRY_KEYS)})")
    raw = value.get("path")
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(f"{where} needs a file path (string), got {raw!r}")
    p = Path(raw).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    p = p.resolve()
    out = {"path": str(p)}
    fmt = value.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"{where}.format must be one of {', '.join(map(repr, FORMATS))}, got {fmt!r}")
    try:
        out["format"] = _format_for(p, fmt)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    for key in ("span_rad", "full_scale"):
        v = value.get(key)
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise ValueError(f"{where}.{key} must be a number > 0, got {v!r}")
            out[key] = float(v)
    if value.get("dataset") is not None:
        if not isinstance(value["dataset"], str):
            raise ValueError(f"{where}.dataset must be a string, got {value['dataset']!r}")
        out["dataset"] = value["dataset"]
    if not p.is_file():
        raise ValueError(f"{where}: no file {p}; give the path relative to the bench file")
    return out


def load_bench_wavefront(entry: dict, shape, name: str = "SLM") -> np.ndarray:
    """Read the map of a parsed bench entry (:func:`parse_wavefront_entry`) for a panel of ``shape``."""
    return load_wavefront(entry["path"], shape, fmt=entry.get("format"), span_rad=entry.get("span_rad"),
                          full_scale=entry.get("full_scale"), dataset=entry.get("dataset"), name=name)


def bench_wavefront(bench, slm: str):
    """The wavefront map of panel ``slm`` of an opened bench, and its record; (None, None) without one.

    A panel declared as a region of a physical panel (``region_of``) uses the physical
    panel's map, cropped to the region (the record then also holds ``wavefront_map_region_px``).

    Returns
    -------
    (phase_rad, record) : float64 (rows, cols) rad of the panel's pixels and
        :func:`wavefront_record`'s dict, or (None, None).
    """
    devices = bench.config.get("devices", {})
    dev = devices.get(slm, {})
    shape = tuple(bench.slms[slm].shape)
    if dev.get("wavefront_map") is not None:
        entry = dev["wavefront_map"]
        phase = load_bench_wavefront(entry, shape, slm)
        return phase, wavefront_record(entry, phase)
    parent = dev.get("region_of")
    if parent is None or devices.get(parent, {}).get("wavefront_map") is None:
        return None, None
    entry = devices[parent]["wavefront_map"]
    physical = getattr(bench, "physical", {}).get(parent)
    full_shape = tuple(physical.shape) if physical is not None else tuple(devices[parent]["shape"])
    full = load_bench_wavefront(entry, full_shape, parent)
    r0, c0 = (int(v) for v in dev["region_px"])
    phase = full[r0:r0 + shape[0], c0:c0 + shape[1]]
    if phase.shape != shape:
        raise ValueError(f"{slm}: region {shape} at {[r0, c0]} does not fit the {full_shape} wavefront map of "
                         f"{parent}; check region_px")
    record = wavefront_record(entry, phase)
    record["wavefront_map_region_px"] = [r0, c0]
    return np.ascontiguousarray(phase), record
