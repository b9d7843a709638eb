"""The sweep result table: one HDF5 file plus a CSV mirror, written as each point finishes.

HDF5 layout (``results.h5``)::

    /          attrs: kind="optwin-sweep", schema_version, software_version, created_utc,
               updated_utc, grid (JSON: description, base, axes), identity (JSON: base and
               axis names; what a resumed sweep must match), axes (JSON list of axis names)
    /points    compound table, one row per finished point, sorted by grid index; columns
               index, key, status ('ok' | 'failed' | 'crashed'), one column per axis (float64 or
               int64 for numeric axes, else UTF-8 text, JSON for lists), test_accuracy,
               train_accuracy, test_loss, final_loss, epochs_run, seconds (s), error,
               weights_sha256, worker, started_utc, finished_utc, config (canonical JSON)

The HDF5 file is rewritten to a temporary file and renamed over the old one after every point
(or batch of points finishing together), so a sweep killed at any moment leaves a complete,
readable table.  The CSV (same name, .csv) is rewritten from the HDF5 rows when a sweep resumes,
then appended line by line, and rewritten in grid order when the sweep ends.  A lock
file (``results.h5.lock``, :func:`optwin.outputs.output_lock`) stops two sweeps from writing one
table at once.  Temporary files have unique names (:func:`optwin.outputs.temp_path`).  The CSV
beside the table is only ever replaced when it is a sweep's own CSV (``optwin sweep`` checks it
before it starts; :meth:`SweepStore.open` checks it again).

'failed' points (bad settings, diverged training) are final: a resumed sweep skips them unless
asked to retry.  'crashed' points (a worker died or the engine lost the task) are rerun.
"""
from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hwio.h5check import check_root
from optwin.outputs import SWEEP_CSV, describe_kind, file_kind, output_lock, temp_path

__all__ = ["SweepStore", "SweepResults", "read_results", "SWEEP_SCHEMA_VERSION", "FINAL_STATUSES"]

SWEEP_SCHEMA_VERSION = 1
FINAL_STATUSES = ("ok", "failed")
_STR = h5py.string_dtype("utf-8")
# (column, kind) of every row besides the axis columns; kind: 'i' int64, 'f' float64, 's' text.
HEAD_COLUMNS = [("index", "i"), ("key", "s"), ("status", "s")]
TAIL_COLUMNS = [("test_accuracy", "f"), ("train_accuracy", "f"), ("test_loss", "f"), ("final_loss", "f"),
                ("epochs_run", "i"), ("seconds", "f"), ("error", "s"), ("weights_sha256", "s"),
                ("worker", "s"), ("started_utc", "s"), ("finished_utc", "s"), ("config", "s")]
UNITS = {"seconds": "s", "test_accuracy": "fraction", "train_accuracy": "fraction",
         "test_loss": "loss units of the run", "final_loss": "loss units of the run (train, last epoch)"}


def _software_version() -> str:
    try:
        from importlib.metadata import version
        return version("optwin")
    except Exception:  # noqa: BLE001 - running from a checkout
        return "0+checkout"


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _axis_kind(values) -> str:
    values = list(values)
    if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return "i"
    if values and all(_is_number(v) or v is None for v in values):
        return "f"
    return "s"


def _as_text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode()
    if _is_number(v):
        return repr(float(v)) if isinstance(v, (float, np.floating)) else str(int(v))
    return json.dumps(v)


def _decode(v):
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode()
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


@dataclass
class SweepResults:
    """Rows of a results file (dicts: fixed columns plus one entry per axis) and its metadata."""

    path: Path
    rows: list
    axes: list
    grid: dict

    def column(self, name: str) -> np.ndarray:
        """One column over all rows (float array for numbers, object array otherwise)."""
        values = [r.get(name) for r in self.rows]
        if values and all(_is_number(v) for v in values):
            return np.asarray(values, dtype=np.float64)
        return np.asarray(values, dtype=object)


def _read_file(path: Path) -> tuple[dict, list]:
    try:
        with h5py.File(path, "r") as f:
            check_root(f, path, "optwin-sweep", SWEEP_SCHEMA_VERSION, what="an optwin sweep results file",
                       label="sweep", advice="move it away or choose another --out")
            attrs = {k: _decode(v) for k, v in f.attrs.items()}
            table = f["points"][()]
        names = table.dtype.names or ()
        rows = [{n: _decode(rec[n]) for n in names} for rec in table]
    except (OSError, KeyError, TypeError, AttributeError, RuntimeError, ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(f"{path}:"):
            raise
        raise ValueError(f"{path}: unreadable sweep results file ({' '.join(str(exc).split())}); move it away "
                         f"or choose another --out") from None
    return attrs, rows


def read_results(path) -> SweepResults:
    """Read a results file written by :class:`SweepStore`; ValueError (one line) if it is not one."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such sweep results file")
    attrs, rows = _read_file(path)
    try:
        axes, grid = json.loads(attrs["axes"]), json.loads(attrs["grid"])
        if not isinstance(axes, list) or not all(isinstance(a, str) for a in axes) or not isinstance(grid, dict):
            raise ValueError("axes or grid attribute of the wrong type")
        for r in rows:
            for a in axes:  # text columns hold JSON for lists (e.g. hidden = [16])
                if isinstance(r[a], str) and r[a][:1] in "[{":
                    try:
                        r[a] = json.loads(r[a])
                    except ValueError:
                        pass
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: damaged sweep results file ({' '.join(str(exc).split())}); move it away or "
                         f"choose another --out") from None
    return SweepResults(path, rows, axes, grid)


class SweepStore:
    """Append-as-you-go result table of one grid (use as a context manager).

    Parameters
    ----------
    path : the HDF5 file; the CSV mirror is the same path with suffix .csv.
    grid : the :class:`optwin.sweep.grid.Grid` being run; an existing file must hold a sweep
        with the same base settings and axis names (axis values may differ: that extends it).
    """

    def __init__(self, path, grid):
        self.path = Path(path)
        self.csv_path = self.path.with_suffix(".csv")
        if self.csv_path == self.path:
            raise ValueError(f"--out {self.path} must be the HDF5 file (e.g. results.h5); "
                             f"the CSV mirror is written beside it")
        self.grid = grid
        self.axes = list(grid.axes)
        self.rows: dict[str, dict] = {}
        self.created_utc = _utc_now()
        self._lock = None
        self._csv_ready = False

    # -- opening and closing ---------------------------------------------------
    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def open(self) -> None:
        if not self.path.parent.is_dir():
            raise ValueError(f"{self.path.parent}: no such folder for the results file")
        self._acquire_lock()
        try:
            csv_kind = file_kind(self.csv_path)
            if csv_kind not in ("missing", SWEEP_CSV):
                raise ValueError(f"{self.csv_path} (the CSV written beside {self.path}) is {describe_kind(csv_kind)}: "
                                 f"optwin never replaces it; move it away or choose another --out")
            if self.path.exists():
                self._load_existing()
                self._write_csv()  # the CSV mirrors the HDF5 rows (it may lag them after a kill)
        except BaseException:
            self._unlock()
            raise

    def close(self) -> None:
        if self._lock is None:
            return
        try:
            if self.rows:
                self._write_h5()
                self._write_csv()  # final CSV in grid order
        finally:
            self._unlock()

    def _acquire_lock(self) -> None:
        """:func:`optwin.outputs.output_lock` on the table (OutputLockedError when another process
        writes it)."""
        lock = contextlib.ExitStack()
        lock.enter_context(output_lock(self.path))
        self._lock = lock

    def _unlock(self) -> None:
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.close()

    def _load_existing(self) -> None:
        attrs, rows = _read_file(self.path)
        mine = json.dumps(self.grid.identity(), sort_keys=True)
        theirs = attrs.get("identity", "")
        if json.dumps(json.loads(theirs), sort_keys=True) != mine:
            raise ValueError(f"{self.path} holds a sweep of another grid (base settings or axis names "
                             f"differ); write to a new --out or restore the grid")
        self.created_utc = attrs.get("created_utc", self.created_utc)
        index_of = {p.key: p.index for p in self.grid.points()}
        for r in rows:
            r["index"] = index_of.get(r["key"], -1)  # -1: not a point of the current grid
            self.rows[r["key"]] = r

    # -- queries and updates ---------------------------------------------------
    def finished_keys(self, retry_failed: bool = False) -> set:
        """Keys a resumed sweep skips: 'ok' points, and 'failed' ones unless ``retry_failed``."""
        final = ("ok",) if retry_failed else FINAL_STATUSES
        return {k for k, r in self.rows.items() if r["status"] in final}

    def add(self, point, result: dict) -> dict:
        """Record one finished point (a :class:`Point` and the dict :func:`run_point` returned)."""
        return self.add_many([(point, result)])[0]

    def add_many(self, finished) -> list[dict]:
        """Record several finished ``(point, result)`` pairs with one table rewrite."""
        rows = [self._row(point, result) for point, result in finished]
        for row in rows:
            self.rows[row["key"]] = row
        self._write_h5()
        for row in rows:
            self._append_csv(row)
        return rows

    def _row(self, point, result: dict) -> dict:
        if result.get("key") and result["key"] != point.key:
            raise RuntimeError(f"point {point.index}: worker computed key {result['key']}, grid has "
                               f"{point.key}; workers run a different optwin version")
        row = {"index": point.index, "key": point.key, "status": result.get("status", "crashed")}
        row.update({a: point.values[a] for a in self.axes})
        for name, kind in TAIL_COLUMNS:
            default = float("nan") if kind == "f" else (0 if kind == "i" else "")
            row[name] = result.get(name, default)
        row["config"] = json.dumps(point.config, sort_keys=True, separators=(",", ":"))
        return row

    # -- writers ---------------------------------------------------------------
    def _columns(self) -> list[tuple[str, str]]:
        axis_cols = [(a, _axis_kind(r[a] for r in self.rows.values())) for a in self.axes]
        return HEAD_COLUMNS + axis_cols + TAIL_COLUMNS

    def _sorted_rows(self) -> list:
        return sorted(self.rows.values(), key=lambda r: (r["index"] < 0, r["index"], r["key"]))

    def _write_h5(self) -> None:
        cols = self._columns()
        np_kind = {"i": np.int64, "f": np.float64, "s": _STR}
        dtype = np.dtype([(name, np_kind[kind]) for name, kind in cols])
        rows = self._sorted_rows()
        table = np.empty(len(rows), dtype=dtype)
        for i, r in enumerate(rows):
            table[i] = tuple(self._cell(r[name], kind) for name, kind in cols)
        tmp = temp_path(self.path)
        try:
            self._write_h5_to(tmp, table)
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def _write_h5_to(self, tmp: Path, table) -> None:
        """The whole table and its metadata into the new file ``tmp``."""
        with h5py.File(tmp, "w") as f:
            f.attrs["kind"] = "optwin-sweep"
            f.attrs["schema_version"] = SWEEP_SCHEMA_VERSION
            f.attrs["software_version"] = _software_version()
            f.attrs["created_utc"] = self.created_utc
            f.attrs["updated_utc"] = _utc_now()
            f.attrs["grid"] = json.dumps(self.grid.as_dict())
            f.attrs["identity"] = json.dumps(self.grid.identity(), sort_keys=True)
            f.attrs["axes"] = json.dumps(self.axes)
            f.attrs["n_grid_points"] = len(self.grid)
            ds = f.create_dataset("points", data=table)
            ds.attrs["units"] = json.dumps(UNITS)

    @staticmethod
    def _cell(v, kind):
        if kind == "f":
            return float("nan") if v is None else float(v)
        if kind == "i":
            return int(v)
        return _as_text(v)

    def _csv_header(self) -> list:
        return [name for name, _ in HEAD_COLUMNS] + self.axes + [name for name, _ in TAIL_COLUMNS]

    def _csv_record(self, row: dict) -> list:
        out = []
        for name in self._csv_header():
            v = row[name]
            out.append("nan" if isinstance(v, float) and math.isnan(v) else _as_text(v))
        return out

    def _write_csv(self) -> None:
        tmp = temp_path(self.csv_path)
        try:
            with open(tmp, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(self._csv_header())
                for r in self._sorted_rows():
                    w.writerow(self._csv_record(r))
            os.replace(tmp, self.csv_path)
        finally:
            if tmp.exists():
                tmp.unlink()
        self._csv_ready = True

    def _append_csv(self, row: dict) -> None:
        if not self._csv_ready:
            self._write_csv()  # first row of a new table: header and row
            return
        with open(self.csv_path, "a", newline="") as fh:
            csv.writer(fh).writerow(self._csv_record(row))
