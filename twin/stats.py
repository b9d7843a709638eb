"""Statistics that compare two systems (e.g. bench vs twin), as in the paper's Fig. 2a.

Errors are normalised by the standard deviation of the reference values, so an
nrmse of 0.05 means the typical deviation is 5 % of the signal's spread.
"""
from __future__ import annotations

import numpy as np

__all__ = ["nrmse", "mvm_error_stats"]


def _spread(reference: np.ndarray) -> float:
    s = float(np.std(reference))
    if not s > 0:
        raise ValueError("reference values have zero spread; use inputs that exercise the MVM")
    return s


def nrmse(measured, reference) -> float:
    """rms(measured - reference) / std(reference)."""
    measured = np.asarray(measured, dtype=float)
    reference = np.asarray(reference, dtype=float)
    if measured.shape != reference.shape:
        raise ValueError(f"shapes differ: measured {measured.shape}, reference {reference.shape}")
    return float(np.sqrt(np.mean((measured - reference) ** 2)) / _spread(reference))


def mvm_error_stats(repeats, predicted, prediction_var=None) -> dict:
    """Systematic and shot-to-shot error of repeated measurements of one MVM.

    Parameters
    ----------
    repeats : (n_repeats, n_samples, n_out) measured outputs, n_repeats >= 2.
    predicted : (n_samples, n_out) predicted (or intended) outputs.
    prediction_var : optional variance of the prediction itself (scalar or broadcastable to
        (n_samples, n_out)), e.g. the readout noise of a *measured* input propagated through
        the model; it belongs to the noise floor, not to the model's systematic error.

    Returns
    -------
    dict with ``systematic_nrmse`` (mean measurement vs prediction), ``shot_to_shot_nrmse``
    (repeat-to-repeat scatter around the mean, with the unbiased n/(n-1) correction),
    ``total_nrmse`` (single shots vs prediction), ``noise_floor_nrmse`` (the nrmse two
    independent shots have between each other divided by sqrt(2), i.e. a perfect model's
    single-shot nrmse; with ``prediction_var`` it also carries the prediction's own noise),
    and the least-squares ``slope``/``offset`` of measured vs predicted.
    """
    y = np.asarray(repeats, dtype=float)
    p = np.asarray(predicted, dtype=float)
    if y.ndim != 3 or y.shape[0] < 2:
        raise ValueError(f"repeats must be (n_repeats >= 2, n_samples, n_out), got {y.shape}")
    if y.shape[1:] != p.shape:
        raise ValueError(f"repeats {y.shape[1:]} and predicted {p.shape} do not match")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(p))):
        raise ValueError("measurements or predictions contain NaN/inf")
    n = y.shape[0]
    spread = _spread(p)
    mean = y.mean(axis=0)
    shot_var = np.sum((y - mean) ** 2) / ((n - 1) * mean.size)
    shot = np.sqrt(shot_var) / spread
    pred_var = 0.0
    if prediction_var is not None:
        pv = np.broadcast_to(np.asarray(prediction_var, dtype=float), p.shape)
        if not (np.all(np.isfinite(pv)) and np.all(pv >= 0)):
            raise ValueError("prediction_var must be finite and >= 0")
        pred_var = float(np.mean(pv))
    # the mean of n shots still carries shot noise of variance shot_var / n: remove it
    sys_var = max(float(np.mean((mean - p) ** 2)) - shot_var / n - pred_var, 0.0)
    slope, offset = np.polyfit(p.ravel(), mean.ravel(), 1)
    return {
        "systematic_nrmse": float(np.sqrt(sys_var) / spread),
        "shot_to_shot_nrmse": float(shot),
        "total_nrmse": float(np.sqrt(np.mean((y - p) ** 2)) / spread),
        "noise_floor_nrmse": float(np.sqrt(shot_var + pred_var) / spread),
        "slope": float(slope),
        "offset": float(offset),
        "n_repeats": int(n),
        "n_values": int(mean.size),
    }
