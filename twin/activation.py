"""The hidden activation of the twin: the vapour cell as a layer (:class:`AbsorberActivation`)."""
from __future__ import annotations

import numpy as np

from twin.absorber import Absorber

__all__ = ["AbsorberActivation"]


class AbsorberActivation:
    """The vapour cell: a = g(z); backward multiplies by g'(z) (rule 'exact') or the probe t(z).

    probe_strength : peak probe intensity in units of i_sat (0 = ideal weak probe).  The
        backward error of each sample is scaled so its largest |value| carries that
        intensity, and the probe then sees the pump plus its own intensity
        (self-saturation), which makes the backward map nonlinear.

    Outputs and slopes keep the dtype of ``z``.
    """

    def __init__(self, absorber: Absorber, rule: str = "probe", probe_strength: float = 0.0):
        if rule not in ("exact", "probe"):
            raise ValueError(f"unknown backward rule {rule!r}: use 'exact' or 'probe'")
        if not probe_strength >= 0:
            raise ValueError(f"probe_strength must be >= 0, got {probe_strength}")
        self.absorber = absorber
        self.rule = rule
        self.probe_strength = float(probe_strength)
        self._z = self._slope = None

    def forward(self, z: np.ndarray, keep: bool = True, out=None, slope=None) -> np.ndarray:
        """g(z); ``out`` and ``slope`` (arrays like ``z``) may receive the output and the
        backward slope (their roles may come back swapped: use the returned output and
        ``self._slope``)."""
        if out is None or out.shape != z.shape or out.dtype != z.dtype:
            out = np.empty_like(z)
        if slope is None or slope.shape != z.shape or slope.dtype != z.dtype:
            slope = np.empty_like(z)
        out, slope = self.absorber.forward_into(z, out, slope, self.rule)
        if keep:
            self._z, self._slope = z, slope
        return out

    def backward(self, delta: np.ndarray, out=None) -> np.ndarray:
        """Error before the cell for the error ``delta`` after it (in ``out`` when given)."""
        if self._slope is None:
            raise RuntimeError("backward() needs a forward() with keep=True first")
        if self.rule == "probe" and self.probe_strength > 0:
            i_sat = getattr(self.absorber, "i_sat", 1.0)
            peak = np.abs(delta).max(axis=1, keepdims=True)
            rel = np.divide(delta, peak, out=np.zeros_like(delta), where=peak > 0)
            z_eff = np.sqrt(self._z ** 2 + self.probe_strength * i_sat * rel ** 2)
            res = delta * np.asarray(self.absorber.probe(z_eff), dtype=delta.dtype)
            if out is not None and out.shape == res.shape:
                out[...] = res
                return out
            return res
        if out is not None and out.shape == delta.shape and out.dtype == np.result_type(delta, self._slope):
            return np.multiply(delta, self._slope, out=out)
        return delta * self._slope
