"""Values with uncertainties, and the record every fit returns.

A :class:`Fit` is what each fitting function hands back: named quantities with
standard errors and units, the model name, the data it was fitted to and its
residuals (for the report), and free-form arrays (maps, tables) that belong in the
calibration file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Quantity", "Fit", "param_stderr"]


def param_stderr(par, fallback: float = float("nan")) -> float:
    """Standard error of an lmfit parameter, or ``fallback`` where lmfit gave none (or a non-finite one)."""
    s = getattr(par, "stderr", None)
    if s is None or not np.isfinite(s):
        return float(fallback)
    return float(s)


@dataclass(frozen=True)
class Quantity:
    """A fitted value with its one-sigma standard error and units (nan stderr = unknown)."""

    value: float
    stderr: float = float("nan")
    units: str = ""

    @classmethod
    def from_param(cls, par, units: str = "", scale: float = 1.0,
                   fallback_stderr: float = float("nan")) -> "Quantity":
        """The value and standard error of an lmfit parameter, both times ``scale``."""
        return cls(float(par.value) * scale, param_stderr(par, fallback_stderr) * abs(scale), units)

    def as_json(self) -> dict:
        def clean(x):
            x = float(x)
            return None if not math.isfinite(x) else x
        return {"value": clean(self.value), "stderr": clean(self.stderr), "units": self.units}

    def within(self, truth: float, n_sigma: float = 3.0) -> bool:
        """True if ``truth`` lies within ``n_sigma`` standard errors of the value."""
        return abs(self.value - truth) <= n_sigma * self.stderr

    def __format__(self, spec):
        return f"{format(self.value, spec)} +- {format(self.stderr, spec)} {self.units}".strip()


@dataclass
class Fit:
    """Result of one calibration fit.

    name : dotted prefix of the quantities, e.g. 'camera' or 'absorber.pump'.
    model : model name (e.g. 'emva1288', 'twolevel', 'gamma+spline').
    quantities : name -> Quantity (names without the prefix).
    arrays : name -> numpy array to store in the calibration file (maps, tables, LUTs).
    x, y, y_fit : the data and model curve for a residual plot (optional).
    info : extra JSON-able facts (AIC/BIC tables, chosen model, warnings).
    """

    name: str
    model: str
    quantities: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    y_fit: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def flat(self) -> dict:
        """{'<name>.<quantity>': {'value', 'stderr', 'units'}} for JSON output."""
        return {f"{self.name}.{k}": q.as_json() for k, q in self.quantities.items()}
