"""Optimizers that update a list of weight arrays in place."""
from __future__ import annotations

import numpy as np

__all__ = ["SGD", "Adam", "make_optimizer"]


class SGD:
    """Stochastic gradient descent with optional momentum."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.0):
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        self.lr, self.momentum = float(lr), float(momentum)
        self._v = None

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        if self.momentum == 0:
            for p, g in zip(params, grads):
                p -= self.lr * g
            return
        if self._v is None:
            self._v = [np.zeros_like(p) for p in params]
        for p, g, v in zip(params, grads, self._v):
            v *= self.momentum
            v += g
            p -= self.lr * v

    def state(self) -> dict:
        return {"v": self._v}

    def load_state(self, state: dict) -> None:
        self._v = state.get("v")


class Adam:
    """Adam (Kingma & Ba) with bias correction."""

    def __init__(self, lr: float = 5e-4, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        self.lr, self.beta1, self.beta2, self.eps = float(lr), float(beta1), float(beta2), float(eps)
        self.t = 0
        self._m = self._v = None

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        if self._m is None:
            self._m = [np.zeros_like(p) for p in params]
            self._v = [np.zeros_like(p) for p in params]
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        lr_t = self.lr * np.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        eps_t = self.eps * np.sqrt(1 - b2 ** self.t)
        for p, g, m, v in zip(params, grads, self._m, self._v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            p -= lr_t * m / (np.sqrt(v) + eps_t)

    def state(self) -> dict:
        return {"t": self.t, "m": self._m, "v": self._v}

    def load_state(self, state: dict) -> None:
        self.t = int(state.get("t", 0))
        self._m, self._v = state.get("m"), state.get("v")


def make_optimizer(name: str, lr: float):
    """'adam' or 'sgd'."""
    if name == "adam":
        return Adam(lr)
    if name == "sgd":
        return SGD(lr)
    raise ValueError(f"unknown optimizer {name!r}: use 'adam' or 'sgd'")
