"""Sweep grids: a base training configuration and the axes to vary (their Cartesian product).

A grid file (TOML)::

    description = "robustness of the probe rule on moons"   # optional
    [base]                       # any point setting; the rest take their defaults
    task = "moons"
    hidden = [32]
    epochs = 200
    [axes]                       # every combination of these values is one point
    alpha0 = [0.5, 2.0, 5.0, 10.0]
    readout_noise = {start = 0.0, stop = 0.2, num = 5}     # linspace; add log = true for geomspace
    seed = [0, 1, 2]

Point settings (``POINT_DEFAULTS`` lists them all): the training settings of ``optwin train``
(task, n_samples, limit_train, hidden or layers, absorber, alpha0, i_sat, rule, loss, optimizer,
epochs, batch, lr, init_scale, seed) plus ``update`` ('gradient' or 'optical') and the bench
imperfections applied to every optical layer: ``illumination_waist`` (Gaussian beam 1/e^2 radius
as a fraction of the weight area's half-size; inf or unset = uniform), ``output_crosstalk``
(field leakage into each neighbouring output spot), ``readout_noise`` (std of additive Gaussian
noise on every layer's outputs, normalised field units), ``probe_strength`` (peak probe intensity
in units of I_sat), ``slm_levels`` and ``w_max`` (SLM quantisation).

Every point has a canonical configuration (all settings, task defaults filled in, numbers
normalised) and a stable key: a hash of its canonical JSON.  Equal configurations have equal
keys whatever the grid they came from, which is what resuming relies on.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from optwin.settings import TASK_DEFAULTS

__all__ = ["Grid", "Point", "load_grid", "parse_grid", "canonical_config", "point_key", "check_config",
           "POINT_DEFAULTS"]

FLOAT_KEYS = ("alpha0", "i_sat", "lr", "init_scale", "illumination_waist", "output_crosstalk",
              "readout_noise", "probe_strength", "w_max")
INT_KEYS = ("epochs", "batch", "seed", "n_samples", "limit_train", "slm_levels")
STR_KEYS = ("task", "absorber", "rule", "update", "loss", "optimizer")
LIST_KEYS = ("hidden", "layers")

# None = unset: the task's default (epochs, batch, lr, init_scale, hidden) or the feature is off.
POINT_DEFAULTS = {
    "task": None, "n_samples": None, "limit_train": None, "hidden": None, "layers": None,
    "absorber": "thin", "alpha0": 10.0, "i_sat": 1.0, "rule": "probe", "update": "gradient",
    "loss": "mse", "optimizer": "adam", "epochs": None, "batch": None, "lr": None, "init_scale": None,
    "seed": 0, "illumination_waist": None, "output_crosstalk": 0.0, "readout_noise": 0.0,
    "probe_strength": 0.0, "slm_levels": None, "w_max": None,
}
_KEY_SCHEMA = b"optwin-sweep-point/1\n"


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def normalise(name: str, value):
    """One setting in canonical form (5 -> 5.0 for float settings, 16 -> [16] for ``hidden``...).

    Values of the wrong type are returned unchanged: the point that uses them fails with a
    clear error (see :func:`check_config`) instead of stopping the whole sweep.
    """
    if name in FLOAT_KEYS and _is_number(value):
        value = float(value)
        if name == "illumination_waist" and value == math.inf:
            return None  # an infinitely wide beam is uniform illumination
        return value
    if name in INT_KEYS and _is_number(value) and float(value).is_integer():
        return int(value)
    if name == "hidden" and _is_number(value):
        value = [value]
    if name in LIST_KEYS and isinstance(value, (list, tuple)):
        return [int(v) if _is_number(v) and float(v).is_integer() else v for v in value]
    return value


def canonical_config(settings: dict) -> dict:
    """Every point setting, defaults (including the task's) filled in, values normalised."""
    cfg = dict(POINT_DEFAULTS)
    for k, v in settings.items():
        if k not in POINT_DEFAULTS:
            raise ValueError(f"unknown sweep setting {k!r}; known: {', '.join(sorted(POINT_DEFAULTS))}")
        cfg[k] = normalise(k, v)
    defaults = TASK_DEFAULTS.get(cfg["task"]) if isinstance(cfg["task"], str) else None
    if defaults is not None:
        for k in ("epochs", "batch", "lr", "init_scale"):
            if cfg[k] is None:
                cfg[k] = normalise(k, defaults[k])
        if cfg["hidden"] is None and cfg["layers"] is None:
            cfg["hidden"] = list(defaults["hidden"])
    return cfg


def canonical_json(config: dict) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def point_key(config: dict) -> str:
    """Stable 16-hex-digit key of a canonical configuration (SHA-256 of its canonical JSON)."""
    return hashlib.sha256(_KEY_SCHEMA + canonical_json(config).encode()).hexdigest()[:16]


def check_config(cfg: dict) -> None:
    """Raise ValueError (one line) on settings a twin training cannot use.

    The training settings shared with ``optwin train`` are validated again there; this checks
    types and the sweep-only settings (imperfections, update, layer lists).
    """
    if not isinstance(cfg.get("task"), str):
        raise ValueError(f"task must be a task name, got {cfg.get('task')!r}")
    for k in STR_KEYS:
        if not isinstance(cfg[k], str):
            raise ValueError(f"{k} must be a string, got {cfg[k]!r}")
    for k in FLOAT_KEYS:
        v = cfg[k]
        if v is not None and (not _is_number(v) or not math.isfinite(v)):
            raise ValueError(f"{k} must be a finite number, got {v!r}")
    for k in INT_KEYS:
        v = cfg[k]
        if v is not None and not isinstance(v, int):
            raise ValueError(f"{k} must be an integer, got {v!r}")
    for k in ("output_crosstalk", "readout_noise", "probe_strength"):
        if cfg[k] < 0:
            raise ValueError(f"{k} must be >= 0, got {cfg[k]}")
    for k in ("illumination_waist", "w_max"):
        if cfg[k] is not None and not cfg[k] > 0:
            raise ValueError(f"{k} must be > 0, got {cfg[k]}")
    if cfg["update"] not in ("gradient", "optical"):
        raise ValueError(f"update must be 'gradient' or 'optical', got {cfg['update']!r}")
    if cfg["n_samples"] is not None and cfg["n_samples"] < 8:
        raise ValueError(f"n_samples must be >= 8, got {cfg['n_samples']}")
    if cfg["slm_levels"] is not None and (cfg["slm_levels"] < 2 or cfg["w_max"] is None):
        raise ValueError("slm_levels needs an integer >= 2 and w_max > 0 (the full-scale weight)")
    if cfg["slm_levels"] is None and cfg["w_max"] is not None:
        raise ValueError("w_max is the full scale of SLM quantisation: set slm_levels too")
    if cfg["hidden"] is not None and cfg["layers"] is not None:
        raise ValueError("give hidden (hidden-layer widths) or layers (all widths), not both")
    for k in LIST_KEYS:
        v = cfg[k]
        if v is not None and (not isinstance(v, list) or not all(isinstance(n, int) and n > 0 for n in v)):
            raise ValueError(f"{k} must be a list of positive integers, got {v!r}")


@dataclass(frozen=True)
class Point:
    """One grid point: its position, its axis values (as written in the grid), config and key."""

    index: int
    values: dict
    config: dict
    key: str


@dataclass
class Grid:
    """A base configuration and ordered axes; iterate :meth:`points` for their product."""

    base: dict
    axes: dict
    description: str = ""
    source: str | None = None
    _points: list | None = field(default=None, repr=False, compare=False)

    def points(self) -> list[Point]:
        if self._points is None:
            names = list(self.axes)
            pts, seen = [], {}
            for i, combo in enumerate(itertools.product(*(self.axes[n] for n in names))):
                values = dict(zip(names, combo))
                cfg = canonical_config({**self.base, **values})
                key = point_key(cfg)
                if key in seen:
                    raise ValueError(f"grid points {seen[key]} and {i} have the same configuration "
                                     f"({values}); remove the duplicate axis value")
                seen[key] = i
                pts.append(Point(i, values, cfg, key))
            self._points = pts
        return self._points

    def __len__(self) -> int:
        return math.prod(len(v) for v in self.axes.values())

    def identity(self) -> dict:
        """What must match for a results file to be resumed or extended: base and axis names."""
        return {"base": self.base, "axes": list(self.axes)}

    def as_dict(self) -> dict:
        return {"description": self.description, "base": self.base, "axes": self.axes}


def _axis_values(name: str, spec) -> list:
    if isinstance(spec, dict):
        extra = set(spec) - {"start", "stop", "num", "log"}
        if extra or not {"start", "stop", "num"} <= set(spec):
            raise ValueError(f"axis {name!r}: a range needs start, stop, num (and optional log), got "
                             f"{', '.join(sorted(spec))}")
        start, stop, num = spec["start"], spec["stop"], spec["num"]
        if not (_is_number(start) and _is_number(stop) and isinstance(num, int) and num >= 1):
            raise ValueError(f"axis {name!r}: start and stop must be numbers and num an integer >= 1")
        if spec.get("log", False):
            if not (start > 0 and stop > 0):
                raise ValueError(f"axis {name!r}: a log range needs start > 0 and stop > 0")
            raw = np.geomspace(start, stop, num)
        else:
            raw = np.linspace(start, stop, num)
        values = [float(f"{v:.12g}") for v in raw]
        if name in INT_KEYS:
            if not all(v.is_integer() for v in values):
                raise ValueError(f"axis {name!r} takes integers; the range gives {values}")
            values = [int(v) for v in values]
        return values
    if not isinstance(spec, list) or not spec:
        raise ValueError(f"axis {name!r} needs a non-empty list of values or a "
                         f"{{start, stop, num}} range, got {spec!r}")
    return list(spec)


def parse_grid(data: dict, source: str | None = None) -> Grid:
    """Build a :class:`Grid` from the parsed TOML tables; ValueError (one line) on a bad grid."""
    where = f"{source}: " if source else ""
    extra = set(data) - {"base", "axes", "description"}
    if extra:
        raise ValueError(f"{where}unknown grid table(s) {', '.join(sorted(extra))}; use [base] and [axes]")
    base, axes = data.get("base", {}), data.get("axes")
    if not isinstance(base, dict):
        raise ValueError(f"{where}[base] must be a table of settings")
    if not isinstance(axes, dict) or not axes:
        raise ValueError(f"{where}the grid needs an [axes] table naming at least one setting to vary")
    known = ", ".join(sorted(POINT_DEFAULTS))
    for name in list(base) + list(axes):
        if name not in POINT_DEFAULTS:
            raise ValueError(f"{where}unknown sweep setting {name!r}; known: {known}")
    both = set(base) & set(axes)
    if both:
        raise ValueError(f"{where}{', '.join(sorted(both))} is set in [base] and varied in [axes]; keep one")
    names = set(base) | set(axes)
    if "task" not in names:
        raise ValueError(f"{where}the grid must name a task in [base] (or vary it in [axes])")
    if {"hidden", "layers"} <= names:
        raise ValueError(f"{where}give hidden (hidden-layer widths) or layers (all widths), not both")
    norm_base = {k: normalise(k, v) for k, v in base.items()}
    norm_axes = {}
    for name, spec in axes.items():
        values = _axis_values(name, spec)
        seen = set()
        for v in values:
            token = canonical_json(normalise(name, v))
            if token in seen:
                raise ValueError(f"{where}axis {name!r} lists {v!r} twice")
            seen.add(token)
        norm_axes[name] = [normalise(name, v) for v in values] if name in LIST_KEYS else values
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"{where}description must be a string")
    grid = Grid(norm_base, norm_axes, description, source)
    grid.points()  # canonical configs and keys now: duplicates surface before anything runs
    return grid


def load_grid(path) -> Grid:
    """Read a grid TOML file; ValueError (one line) when it is missing or malformed."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such grid file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read grid file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; a grid file is TOML (save it as UTF-8)") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    try:
        return parse_grid(data, str(path))
    except ValueError as exc:                  # every message names the file
        if str(exc).startswith(f"{path}"):
            raise
        raise ValueError(f"{path}: {exc}") from None
