"""The ``System`` protocol that training runs against: a twin, a bench, or a hybrid.

forward(inputs)        -> ForwardResult: per-layer pre-activations (MVM outputs) and
                          post-activations (inputs of each MVM), as computed or measured.
backward(output_error) -> BackwardResult: per-layer errors at each MVM output and the
                          weight updates, as computed or measured.
get_weights / set_weights: the programmed weights, one (n_out, n_in) array per MVM.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["ForwardResult", "BackwardResult", "System"]


@dataclass
class ForwardResult:
    """pre[k]: output of MVM k (batch, n_k+1); post[k]: input of MVM k (batch, n_k); output = pre[-1]."""

    pre: list
    post: list
    output: np.ndarray


@dataclass
class BackwardResult:
    """errors[k]: error at the output of MVM k (batch, n_k+1); grads[k]: update for weights k."""

    errors: list
    grads: list


@runtime_checkable
class System(Protocol):
    def forward(self, x: np.ndarray, rng=None) -> ForwardResult: ...

    def backward(self, output_error: np.ndarray) -> BackwardResult: ...

    def get_weights(self) -> list: ...

    def set_weights(self, weights) -> None: ...
