"""Training-run files (HDF5): weights, settings, curves; written atomically.

Layout::

    /                   attrs: schema_version, software_version, created_utc, kind="optwin-run"
    /weights/layer0     float64 (n_out, n_in), normalised field units; attrs units
    /weights            attrs: layers (list of sizes)
    /settings           attrs: every setting of the run (JSON-compatible scalars/strings)
    /curves/<name>      float64 per-epoch curves (epoch, train_loss, test_accuracy, ...)
    /checkpoint/...     optimizer state and rng position for --resume (optional)
    /checkpoint/weights/<name>/layer0  further weight sets (optional; early stopping keeps
                        ``best``, the best validation epoch so far, and ``latest``, the last epoch's)

Integrity: the file is sealed (:func:`hwio.h5check.seal`: the SHA-256 of the file in its
first 512 bytes; a file changed after it was written is refused before HDF5 reads it) and
its arrays carry HDF5 Fletcher-32 checksums.  :func:`load_run` checks kind and schema
(:func:`hwio.h5check.check_root`: files that reach outside themselves are refused) and that
the weights are finite real matrices that chain (layer k's outputs are layer k+1's inputs).
Files written before seals load unverified.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import h5py
import numpy as np

from hwio.h5check import SEAL_BYTES, check_root, seal, verify_seal
from optwin.errors import UsageError

RUN_SCHEMA_VERSION = 1

__all__ = ["save_run", "load_run", "RUN_SCHEMA_VERSION"]


def _software_version() -> str:
    try:
        from importlib.metadata import version
        return version("optwin")
    except Exception:  # noqa: BLE001 - not installed (running from a checkout)
        return "0+checkout"


def _attr(value):
    if isinstance(value, (list, tuple, dict)) or value is None:
        return json.dumps(value)
    return value


def save_run(path, weights, settings: dict, curves: dict, optimizer_state: dict | None = None,
             extra_weights: dict | None = None) -> Path:
    """Write a run file atomically (uniquely named temporary file, then rename); returns the path.

    ``extra_weights``: named further weight sets, e.g. with early stopping the best epoch's
    and the last epoch's (``--resume`` needs both).  Whether ``path`` may be replaced is the
    command's check (:func:`optwin.outputs.guard_output`), made before training starts."""
    from optwin.outputs import temp_path
    path = Path(path)
    tmp = temp_path(path)
    try:
        _write_run(tmp, weights, settings, curves, optimizer_state, extra_weights)
        seal(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _dataset(group, name: str, data, dtype=None):
    """``group/name`` with a Fletcher-32 checksum where HDF5 allows one (non-empty arrays)."""
    arr = np.asarray(data, dtype=dtype)
    return group.create_dataset(name, data=arr, fletcher32=arr.ndim > 0 and arr.size > 0 and arr.dtype.kind in "biuf")


def _write_run(tmp: Path, weights, settings: dict, curves: dict, optimizer_state, extra_weights) -> None:
    """The run file's content into the new file ``tmp`` (layout in the module docstring)."""
    with h5py.File(tmp, "w", userblock_size=SEAL_BYTES) as f:
        f.attrs["kind"] = "optwin-run"
        f.attrs["schema_version"] = RUN_SCHEMA_VERSION
        f.attrs["software_version"] = _software_version()
        f.attrs["created_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
        g = f.create_group("weights")
        g.attrs["layers"] = json.dumps([int(weights[0].shape[1])] + [int(w.shape[0]) for w in weights])
        for k, w in enumerate(weights):
            d = _dataset(g, f"layer{k}", w, np.float64)
            d.attrs["units"] = "normalised field amplitude (output = W @ input)"
        s = f.create_group("settings")
        for k, v in settings.items():
            s.attrs[k] = _attr(v)
        c = f.create_group("curves")
        for k, v in curves.items():
            _dataset(c, k, v, np.float64)
        if optimizer_state:
            o = f.create_group("checkpoint/optimizer")
            for k, v in optimizer_state.items():
                if v is None:
                    continue
                if isinstance(v, list):
                    sub = o.create_group(k)
                    for i, arr in enumerate(v):
                        _dataset(sub, str(i), arr)
                else:
                    o.attrs[k] = v
        for name, ws in (extra_weights or {}).items():
            if ws is None:
                continue
            b = f.create_group(f"checkpoint/weights/{name}")
            for k, w in enumerate(ws):
                _dataset(b, f"layer{k}", w, np.float64)
        f.flush()


def load_run(path) -> dict:
    """Read a run file; one-line UsageError for missing, corrupt or wrong-schema files."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such run file")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, not a run file; give the file 'optwin train --out' wrote")
    verify_seal(path, lambda: _load(path), UsageError, "run file", "re-run training")
    return _load(path)


def _load(path: Path) -> dict:
    """:func:`load_run` after the seal was checked."""
    try:
        with h5py.File(path, "r") as f:
            check_root(f, path, "optwin-run", RUN_SCHEMA_VERSION, what="an optwin run file", label="run",
                       error=UsageError, advice="give the file 'optwin train --out' wrote")
            for group in ("weights", "settings", "curves"):
                if not isinstance(f.get(group), h5py.Group):
                    raise UsageError(f"{path}: /{group} is missing or not a group (damaged run file); "
                                     f"re-run training or pick another file")
            n = len([k for k in f["weights"] if k.startswith("layer")])
            weights = _weight_set(f["weights"], n, path, "/weights")
            settings = {k: _decode(v) for k, v in f["settings"].attrs.items()}
            curves = {k: _array(f[f"curves/{k}"]) for k in f["curves"]}
            opt = None
            if "checkpoint/optimizer" in f:
                g = f["checkpoint/optimizer"]
                opt = dict(g.attrs)
                for k in g:
                    opt[k] = [_array(g[k][str(i)]) for i in range(len(g[k]))]
            extra = {}
            if "checkpoint/weights" in f:
                for name, g in f["checkpoint/weights"].items():
                    extra[name] = _weight_set(g, len(g), path, f"/checkpoint/weights/{name}")
    except UsageError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError, RuntimeError, IndexError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(f"{path}: unreadable run file ({text}); re-run training or pick another file") from None
    return {"weights": weights, "settings": settings, "curves": curves, "optimizer": opt, "extra_weights": extra}


def _array(dataset) -> np.ndarray:
    """A stored numeric array (TypeError for anything else, e.g. a group or text)."""
    if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in "biuf":
        raise TypeError(f"{getattr(dataset, 'name', dataset)} is not a numeric dataset")
    return dataset[()]


def _weight_set(group, n: int, path, where: str) -> list:
    """Weight matrices ``group/layer0..n-1``: finite real 2-D arrays, each layer's inputs the
    previous layer's outputs (UsageError otherwise)."""
    weights = [_array(group[f"layer{k}"]) for k in range(n)]
    if not weights:
        raise UsageError(f"{path}: {where} holds no weight matrices (damaged run file); re-run training")
    for k, w in enumerate(weights):
        if w.ndim != 2 or w.dtype.kind not in "iuf" or not np.all(np.isfinite(w)):
            raise UsageError(f"{path}: {where}/layer{k} is not a finite real matrix (shape {w.shape}, {w.dtype}); "
                             f"the run file is damaged, re-run training")
        if k and w.shape[1] != weights[k - 1].shape[0]:
            raise UsageError(f"{path}: {where}/layer{k} takes {w.shape[1]} inputs but layer{k - 1} gives "
                             f"{weights[k - 1].shape[0]} outputs; the run file is damaged, re-run training")
    return [np.asarray(w, dtype=np.float64) for w in weights]


def _decode(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    if isinstance(v, np.generic):
        return v.item()
    return v
