"""Calibrated correction of the optical derivative (physics.md section 2).

In optical backpropagation the error reaching the hidden layer has passed the pumped cell
backward, so it carries the probe's amplitude transmission t(z) where backpropagation
wants the derivative g'(z).  The ratio R(z) = g'(z) / t(z) >= 1 is a property of the cell
alone (1 at z = 0 and when bleached, up to ~1 + alpha0/4 in between).  With the pump and
probe laws both calibrated, R is known, and the electronics that already read the
pre-activation z(1) on its tap-off camera can multiply each measured hidden error by
R(z(1)): the backward *light* still does the transposed MVM through the real, imperfect
optics, and the remaining bias of the probe approximation is removed.

:class:`ProbeCorrectedSystem` wraps any :class:`twin.system.System` whose backward pass
reports probe-weighted hidden errors (a bench in optical mode, or a twin with the probe
rule) and applies the correction at the measured pre-activations.
"""
from __future__ import annotations

import numpy as np

from twin.system import BackwardResult, ForwardResult, System

__all__ = ["derivative_ratio", "ProbeCorrectedSystem"]


def derivative_ratio(absorber, z, floor: float = 1e-6) -> np.ndarray:
    """R(z) = g'(z) / t(z) of an absorber model (dimensionless, even in z).

    ``floor`` keeps R finite where the probe transmission underflows (an opaque cell).
    """
    z = np.asarray(z, dtype=np.float64)
    t = np.asarray(absorber.probe(z), dtype=np.float64)
    return np.asarray(absorber.derivative(z), dtype=np.float64) / np.maximum(t, floor)


class ProbeCorrectedSystem:
    """A :class:`System` whose hidden-layer errors are multiplied by R(z) of ``absorber``.

    ``absorber`` is the *calibrated* cell model (pump and probe laws, e.g.
    :func:`calibration.absorber_fit.absorber_from_fit`); swap it when a re-fit changes the
    cell (drift).  Forward passes are the wrapped system's own.  For every hidden layer k
    the measured error d(k) becomes d(k) * R(z(k)), with z(k) the pre-activation measured
    in the same forward pass, and the weight update of the layer feeding it is re-formed
    as the outer product with the same measured inputs.
    """

    def __init__(self, system: System, absorber):
        for name in ("forward", "backward", "get_weights", "set_weights"):
            if not callable(getattr(system, name, None)):
                raise TypeError(f"the system to correct needs a {name}() method")
        for name in ("probe", "derivative"):
            if not callable(getattr(absorber, name, None)):
                raise TypeError(f"the absorber model needs a {name}() method (a twin.absorber model)")
        self.system = system
        self.absorber = absorber
        self._last: ForwardResult | None = None

    def forward(self, x: np.ndarray, rng=None) -> ForwardResult:
        self._last = self.system.forward(x, rng=rng)
        return self._last

    def backward(self, output_error: np.ndarray) -> BackwardResult:
        if self._last is None:
            raise RuntimeError("backward() needs a forward() first")
        bw = self.system.backward(output_error)
        errors, grads = list(bw.errors), list(bw.grads)
        for k in range(len(errors) - 1):        # every layer but the output feeds a cell
            ratio = derivative_ratio(self.absorber, self._last.pre[k])
            if ratio.shape != np.shape(errors[k]):
                raise ValueError(f"measured pre-activations of layer {k} have shape {ratio.shape}, "
                                 f"the errors {np.shape(errors[k])}")
            errors[k] = errors[k] * ratio
            grads[k] = errors[k].T @ np.asarray(self._last.post[k], dtype=np.float64)
        return BackwardResult(errors=errors, grads=grads)

    def get_weights(self) -> list:
        return self.system.get_weights()

    def set_weights(self, weights) -> None:
        self.system.set_weights(weights)
