"""Losses on the output fields: value and gradient with respect to the outputs.

Both are averaged over the batch, so the gradient carries a 1/batch factor.
"""
from __future__ import annotations

import numpy as np

__all__ = ["mse_loss", "cross_entropy_loss", "LOSSES", "one_hot"]


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(batch, n_classes) float64 one-hot targets."""
    labels = np.asarray(labels)
    out = np.zeros((labels.size, n_classes))
    out[np.arange(labels.size), labels] = 1.0
    return out


def mse_loss(outputs: np.ndarray, targets: np.ndarray):
    """0.5 * mean over the batch of ||outputs - targets||^2; returns (loss, dL/doutputs)."""
    diff = outputs - targets
    n = outputs.shape[0]
    return 0.5 * float(np.einsum("ij,ij->", diff, diff)) / n, diff / n


def cross_entropy_loss(outputs: np.ndarray, targets: np.ndarray):
    """Softmax cross-entropy against (one-hot or soft) targets; returns (loss, dL/doutputs)."""
    shifted = outputs - outputs.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_norm
    n = outputs.shape[0]
    loss = -float(np.einsum("ij,ij->", targets, log_p)) / n
    return loss, (np.exp(log_p) - targets) / n


LOSSES = {"mse": mse_loss, "ce": cross_entropy_loss}
