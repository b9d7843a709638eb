"""Physics-aware (hybrid) training: forward on one system, backward through a twin.

The forward pass runs on ``forward_system`` (normally the bench); the backward pass is
the twin's, evaluated at the measured layer inputs and pre-activations
(:meth:`twin.network.OpticalNetwork.backward_at`).  Weights are kept identical on both.
"""
from __future__ import annotations

import numpy as np

from twin.system import BackwardResult, ForwardResult, System

__all__ = ["HybridSystem"]


class HybridSystem:
    """A :class:`System` whose forward is ``forward_system``'s and backward is ``twin``'s."""

    def __init__(self, forward_system: System, twin):
        if not hasattr(twin, "backward_at"):
            raise TypeError("the backward side of a hybrid system must be a twin network with backward_at()")
        self.forward_system = forward_system
        self.twin = twin
        self._last: ForwardResult | None = None
        self.twin.set_weights(forward_system.get_weights())

    def forward(self, x: np.ndarray, rng=None) -> ForwardResult:
        self._last = self.forward_system.forward(x, rng=rng)
        return self._last

    def backward(self, output_error: np.ndarray) -> BackwardResult:
        if self._last is None:
            raise RuntimeError("backward() needs a forward() first")
        return self.twin.backward_at(self._last, output_error)

    def get_weights(self) -> list:
        return self.forward_system.get_weights()

    def set_weights(self, weights) -> None:
        self.forward_system.set_weights(weights)
        self.twin.set_weights(weights)
