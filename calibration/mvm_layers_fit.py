"""The three MVM fits (MVM-1 forward, MVM-2 forward, MVM-2 backward) from the probes' arrays.

The probes (:func:`calibration.procedures.mvm.mvm_plans`, measured by
:func:`calibration.procedures.mvm.measure_mvm`) are split into fit steps and held-out
('test') steps; the fit steps go to :func:`calibration.mvm_fit.fit_mvm_selected`, the
held-out ones score the fit (:func:`calibration.mvm_fit.mvm_fit_record`).  The free scales:
``w_max(mvm1)`` is its largest realised element at full amplitude; ``z2_per_h`` makes
``w_max(mvm2) = 1``; ``delta1_per_h`` makes the backward realised matrix equal to the forward
one in least squares.
"""
from __future__ import annotations

import math

import numpy as np

from calibration.mvm_fit import fit_mvm_selected, mvm_fit_record, predict_mvm
from calibration.quantities import Fit, Quantity

__all__ = ["fit_forward", "fit_mvm2_forward", "fit_backward", "scale_with_mvm"]


def _split(plan):
    """Indices of the fit steps and of the held-out ('test') steps of a plan."""
    kinds = np.array([st["kind"] for st in plan])
    return np.flatnonzero(kinds != "test"), np.flatnonzero(kinds == "test")


def fit_forward(name: str, plan: list, amp_key: str, x_key: str | None, y, x_measured=None) -> Fit:
    """Fit one forward MVM (``w_max`` = its largest realised element at full amplitude).

    Parameters
    ----------
    name : str
        Fit name ('mvm1').
    plan : list of dict
        The probe settings (:func:`calibration.procedures.mvm.mvm_plans`) with the realised
        amplitudes under ``amp_key`` and the programmed ones under ``amp_key`` less ``'_real'``.
    amp_key, x_key : str
        Keys of the realised amplitudes and inputs in the plan (``x_key`` None: ``x_measured``).
    y : (S, R, n_out) array_like
        The outputs' repeats (twin units).
    x_measured : (S, n_in) array_like, optional
        Measured inputs (twin units) when the plan does not fix them.

    Returns
    -------
    Fit
        See :func:`mvm_fit_record`; gains relative to ``w_max`` (twin weight).
    """
    raw = _forward_raw(plan, amp_key, x_key, y, x_measured)
    fit = raw["fit"]
    g = fit["gain"]
    kmax = np.unravel_index(np.argmax(np.abs(g)), g.shape)
    w_max = float(abs(g[kmax]))
    return _finish_forward(name, raw, unit=1.0, w_max=w_max, w_max_stderr=float(fit["gain_stderr"][kmax]),
                           info={"w_max_convention": "largest |realised element| at full amplitude "
                                                     "(max |gain| = 1)"})


def fit_mvm2_forward(plan: list, h_out, a1, a1_per_h: Quantity):
    """Fit MVM-2 forward and fix the output scale: ``z2_per_h`` makes ``w_max(mvm2) = 1``.

    Parameters
    ----------
    plan : list of dict
        The MVM-2 probe settings with realised amplitudes ``A2_real`` (and programmed ``A2``).
    h_out : (S, R, n_out) array_like
        Homodyne repeats of ``cam_out`` (homodyne units).
    a1 : (S, n_h) array_like
        Measured layer-2 inputs (twin units, mean over the repeats).
    a1_per_h : Quantity
        The ``cam_a1`` conversion (twin field per homodyne unit), for the scale's error.

    Returns
    -------
    fit : Fit
        'mvm2' in twin units (see :func:`mvm_fit_record`).
    z2_per_h : Quantity
        Twin field per homodyne unit of ``cam_out``.
    """
    raw2 = _forward_raw(plan, "A2_real", None, h_out, a1)
    hmax = raw2["fit"]["gain"]
    kmax = np.unravel_index(np.argmax(np.abs(hmax)), hmax.shape)
    z2_per_h = 1.0 / abs(hmax[kmax])
    z2_rel = math.hypot(raw2["fit"]["gain_stderr"][kmax] / abs(hmax[kmax]), a1_per_h.stderr / a1_per_h.value)
    fit2 = _finish_forward("mvm2", raw2, unit=z2_per_h, w_max=1.0, w_max_stderr=0.0,
                           info={"w_max_convention": "z2_per_h makes w_max = 1 (the best element at full "
                                                      "amplitude maps a1 = 1 to z2 = 1)"})
    return fit2, Quantity(z2_per_h, z2_per_h * z2_rel, "twin field per homodyne unit (cam_out)")


def scale_with_mvm(scale: Fit, z2_per_h: Quantity, delta1_per_h: Quantity) -> Fit:
    """The ``scale`` fit with the MVM conversions ``z2_per_h`` and ``delta1_per_h`` added.

    Parameters
    ----------
    scale : Fit
        The absorber's scale fit (``z1_per_h``, ``a1_per_h``).
    z2_per_h, delta1_per_h : Quantity
        Twin field per homodyne unit of ``cam_out`` and ``cam_back``.

    Returns
    -------
    Fit
        Named 'scale' with all four conversions.
    """
    q = dict(scale.quantities)
    q["z2_per_h"] = z2_per_h
    q["delta1_per_h"] = delta1_per_h
    return Fit(name="scale", model=scale.model, quantities=q,
               info={**scale.info, "z2_from": "mvm2: w_max(mvm2) = 1",
                     "delta1_from": "mvm2_backward: backward realised matrix = forward one in least squares"})


def _forward_raw(plan, amp_key, x_key, y, x_measured) -> dict:
    """The fit of a forward MVM's fit steps and what :func:`_finish_forward` needs."""
    amps = np.stack([st[amp_key] for st in plan])
    x = np.stack([st[x_key] for st in plan]) if x_key is not None else np.asarray(x_measured, float)
    tr, te = _split(plan)
    ym = y.mean(axis=1)
    fit = fit_mvm_selected(x[tr], amps[tr], ym[tr])
    programmed = np.stack([st[amp_key.replace("_real", "")] for st in plan])
    return {"fit": fit, "amps": amps, "programmed": programmed, "x": x, "y": y, "test": te}


def _finish_forward(name, raw, *, unit, w_max, w_max_stderr, info):
    """The Fit of a forward MVM in output units times ``unit``, scored on the held-out probes."""
    fit = dict(raw["fit"])
    for key in ("gain", "gain_stderr", "stray", "stray_stderr"):
        fit[key] = fit[key] * unit
    fit["residual_rms"] = fit["residual_rms"] * unit
    y = raw["y"] * unit
    te = raw["test"]
    pred = predict_mvm(raw["x"][te], raw["amps"][te], fit["gain"], fit["crosstalk"], fit["stray"])
    ideal = np.einsum("sij,sj->si", raw["programmed"][te] * w_max, raw["x"][te])
    noise = float(np.sqrt(np.mean(np.var(y, axis=1, ddof=1))))
    return mvm_fit_record(name, fit, w_max=w_max, w_max_stderr=w_max_stderr,
                          held_out={"repeats": np.moveaxis(y[te], 1, 0), "predicted": pred, "ideal": ideal},
                          readout_noise=noise, info={**info, "n_fit_probes": int(y.shape[0] - te.size),
                                                     "n_test_probes": int(te.size), "repeats": int(y.shape[1])})


def fit_backward(plan: list, hb, t, fwd: Fit):
    """Backward MVM: ``h_back = t * ((Gb' * A2^T) (R u)) + s`` in cam_back units, then twin units.

    Parameters
    ----------
    plan : list of dict
        The backward probe settings with realised ``A2_real``, ``u_real`` (and programmed
        ``A2``, ``u``).
    hb : (S, R, n_h) ndarray
        Homodyne repeats of ``cam_back`` (homodyne units).
    t : (n_h,) ndarray
        The cell's probe amplitude transmission at the pump (dimensionless).
    fwd : Fit
        The MVM-2 forward fit (twin units).

    Returns
    -------
    fit : Fit
        'mvm2_backward' in twin units (see :func:`calibration.mvm_fit.mvm_fit_record`).
    delta1_per_h : Quantity
        Twin field per homodyne unit of ``cam_back`` (backward matrix = forward one in least squares).
    """
    a2 = np.stack([st["A2_real"] for st in plan])                # (S, n_out, n_h)
    u = np.stack([st["u_real"] for st in plan])                  # (S, n_out)
    amps = np.transpose(a2, (0, 2, 1))                           # (S, n_h, n_out)
    S = len(plan)
    F = np.broadcast_to(np.asarray(t, float), (S, t.size))
    tr, te = _split(plan)
    ym = hb.mean(axis=1)
    fit = fit_mvm_selected(u[tr], amps[tr], ym[tr], side="input", factor=F[tr])
    hb_gain = fit["gain"].T                                      # (n_out, n_h): h_back per unit probe
    fwd_real = fwd.arrays["gain"] * fwd.quantities["w_max"].value
    den = float(np.sum(hb_gain ** 2))
    delta = float(np.sum(fwd_real * hb_gain) / den)
    dev = fwd_real - delta * hb_gain
    delta_se = math.sqrt(float(np.sum(dev ** 2)) / max(dev.size - 1, 1) / den) if dev.size > 1 else float("nan")
    w_max2 = fwd.quantities["w_max"].value
    rec = {"gain": delta * hb_gain, "gain_stderr": abs(delta) * fit["gain_stderr"].T,
           "crosstalk": fit["crosstalk"].T, "crosstalk_stderr": fit["crosstalk_stderr"].T,
           "stray": delta * fit["stray"], "stray_stderr": abs(delta) * fit["stray_stderr"],
           "residual_rms": abs(delta) * fit["residual_rms"], "dof": fit["dof"], "side": "backward (input of W^T)",
           "band": fit["band"], "band_cv_rms": fit["band_cv_rms"]}
    y = hb * delta
    pred = delta * predict_mvm(u[te], amps[te], fit["gain"], fit["crosstalk"], fit["stray"], side="input",
                               factor=F[te])
    programmed = np.transpose(np.stack([st["A2"] for st in plan]), (0, 2, 1))
    u_programmed = np.stack([st["u"] for st in plan])
    ideal = F[te] * np.einsum("sij,sj->si", programmed[te] * w_max2, u_programmed[te])
    noise = float(np.sqrt(np.mean(np.var(y, axis=1, ddof=1))))
    out = mvm_fit_record("mvm2_backward", rec, w_max=w_max2, w_max_stderr=fwd.quantities["w_max"].stderr,
                         held_out={"repeats": np.moveaxis(y[te], 1, 0), "predicted": pred, "ideal": ideal},
                         readout_noise=noise,
                         info={"n_fit_probes": int(S - te.size), "n_test_probes": int(te.size),
                               "repeats": int(hb.shape[1]),
                               "model_detail": "delta1 = t(z1) * ((gain*W2)^T crosstalk^T delta2) + stray, "
                                               "t from the absorber fit's probe law at the measured pump",
                               "delta1_convention": "delta1_per_h makes gain*w_max match mvm2's in least squares",
                               "gain_ratio_to_forward": (delta * hb_gain / np.where(fwd_real != 0, fwd_real, np.nan)
                                                         ).tolist()})
    out.quantities["reciprocity_rms"] = Quantity(float(np.sqrt(np.mean(dev ** 2)) / max(np.sqrt(np.mean(
        fwd_real ** 2)), 1e-300)), float("nan"), "")
    return out, Quantity(delta, delta_se, "twin field per homodyne unit (cam_back)")
