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
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import h5py
import numpy as np

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
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _write_run(tmp: Path, weights, settings: dict, curves: dict, optimizer_state, extra_weights) -> None:
    """The run file's content into the new file ``tmp`` (layout in the module docstring)."""
    with h5py.File(tmp, "w") as f:
        f.attrs["kind"] = "optwin-run"
        f.attrs["schema_version"] = RUN_SCHEMA_VERSION
        f.attrs["software_version"] = _software_version()
        f.attrs["created_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
        g = f.create_group("weights")
        g.attrs["layers"] = json.dumps([int(weights[0].shape[1])] + [int(w.shape[0]) for w in weights])
        for k, w in enumerate(weights):
            d = g.create_dataset(f"layer{k}", data=np.asarray(w, dtype=np.float64))
            d.attrs["units"] = "normalised field amplitude (output = W @ input)"
        s = f.create_group("settings")
        for k, v in settings.items():
            s.attrs[k] = _attr(v)
        c = f.create_group("curves")
        for k, v in curves.items():
            c.create_dataset(k, data=np.asarray(v, dtype=np.float64))
        if optimizer_state:
            o = f.create_group("checkpoint/optimizer")
            for k, v in optimizer_state.items():
                if v is None:
                    continue
                if isinstance(v, list):
                    sub = o.create_group(k)
                    for i, arr in enumerate(v):
                        sub.create_dataset(str(i), data=arr)
                else:
                    o.attrs[k] = v
        for name, ws in (extra_weights or {}).items():
            if ws is None:
                continue
            b = f.create_group(f"checkpoint/weights/{name}")
            for k, w in enumerate(ws):
                b.create_dataset(f"layer{k}", data=np.asarray(w, dtype=np.float64))
        f.flush()


def load_run(path) -> dict:
    """Read a run file; one-line UsageError for missing, corrupt or wrong-schema files."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such run file")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("kind") != "optwin-run":
                raise UsageError(f"{path}: not an optwin run file (no kind='optwin-run' attribute)")
            version = int(f.attrs.get("schema_version", -1))
            if version > RUN_SCHEMA_VERSION:
                raise UsageError(f"{path}: run schema {version} is newer than this optwin reads "
                                 f"({RUN_SCHEMA_VERSION}); upgrade optwin")
            n = len([k for k in f["weights"] if k.startswith("layer")])
            weights = [f[f"weights/layer{k}"][()] for k in range(n)]
            settings = {k: _decode(v) for k, v in f["settings"].attrs.items()}
            curves = {k: f[f"curves/{k}"][()] for k in f["curves"]}
            opt = None
            if "checkpoint/optimizer" in f:
                g = f["checkpoint/optimizer"]
                opt = dict(g.attrs)
                for k in g:
                    opt[k] = [g[k][str(i)][()] for i in range(len(g[k]))]
            extra = {}
            if "checkpoint/weights" in f:
                for name, g in f["checkpoint/weights"].items():
                    extra[name] = [g[f"layer{k}"][()] for k in range(len(g))]
    except UsageError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable run file ({exc}); re-run training or pick another file") from None
    return {"weights": weights, "settings": settings, "curves": curves, "optimizer": opt, "extra_weights": extra}


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
