"""Illumination of a phase panel from per-element amplitudes (pure functions on numpy arrays).

The field amplitude reaching each element is modelled as a Gaussian
``a exp(-((x - x0)^2 + (y - y0)^2) / waist^2)`` over the element centres
(:func:`fit_illumination`, optionally elliptical).  Where every column of a panel is lit
through its own input beam, whose profile multiplies the whole column,
:func:`fit_column_free_illumination` fits the rows' Gaussian with a free factor per column.
:func:`fit_panel_illumination` chooses between them and sets the errors the way the bench
measurement needs: the scatter of repeated readings (:func:`pooled_stderr`) plus a relative
systematic error per spot (``SPOT_SYSTEMATIC``, the per-spot readout calibration), scaled by
the model misfit and widened to a row/column jackknife (:func:`jackknife_errors`).
"""
from __future__ import annotations

import math

import lmfit
import numpy as np
from scipy.optimize import least_squares

from calibration.lmfit_stderr import param_se
from calibration.quantities import Fit, Quantity

__all__ = ["SPOT_SYSTEMATIC", "fit_illumination", "fit_column_free_illumination", "fit_panel_illumination",
           "pooled_stderr", "jackknife_errors", "leak_by_distance", "median_leaks", "probe_element_amplitudes"]

#: relative systematic error of one spot's field from the per-spot readout calibration
SPOT_SYSTEMATIC = 3e-3


def fit_illumination(amplitude, x=None, y=None, *, stderr=None, elliptical: bool = False) -> Fit:
    """2-D Gaussian field profile ``a exp(-((x-x0)^2 + (y-y0)^2) / waist^2)`` fitted to
    per-element amplitudes.

    Parameters
    ----------
    amplitude : (rows, cols) measured field amplitude per element (any units).
    x, y : element centre coordinates, same shape; default the centres in fractions of the
        layout extent, ``x = (col + 0.5) / cols``, ``y = (row + 0.5) / rows``.
    stderr : optional standard errors of ``amplitude``.
    elliptical : fit separate ``waist_x`` and ``waist_y`` (``waist`` is then their
        geometric mean).

    Returns
    -------
    Fit named 'slm.illumination', model 'gaussian', quantities ``amplitude``, ``x0``, ``y0``,
    ``waist`` (1/e field radius = 1/e^2 intensity radius, units of x/y) [+ ``waist_x``,
    ``waist_y``]; array ``illumination_map`` (the model on the grid, peak 1).
    """
    a = np.asarray(amplitude, dtype=np.float64)
    if a.ndim != 2 or a.size < 6:
        raise ValueError(f"illumination: amplitude must be a (rows, cols) grid with >= 6 elements, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("illumination: amplitudes contain NaN or inf; re-measure those elements")
    if x is None or y is None:
        rows, cols = a.shape
        y, x = np.meshgrid((np.arange(rows) + 0.5) / rows, (np.arange(cols) + 0.5) / cols, indexing="ij")
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if x.shape != a.shape or y.shape != a.shape:
        raise ValueError("illumination: x and y must have the amplitude grid's shape")
    w = None
    if stderr is not None:
        s = np.broadcast_to(np.asarray(stderr, float), a.shape)
        if np.any(~np.isfinite(s)) or np.any(s <= 0):
            raise ValueError("illumination: stderr must be finite and > 0")
        w = (1.0 / s).ravel()

    def gauss(x, y, amp, x0, y0, waist_x, waist_y):
        return amp * np.exp(-((x - x0) / waist_x) ** 2 - ((y - y0) / waist_y) ** 2)

    model = lmfit.Model(gauss, independent_vars=["x", "y"])
    wt = np.clip(a, 0, None)
    tot = wt.sum()
    if tot <= 0:
        raise ValueError("illumination: no positive amplitude measured; check the light")
    cx, cy = float((wt * x).sum() / tot), float((wt * y).sum() / tot)
    ext = float(max(np.ptp(x), np.ptp(y), 1e-12))
    params = model.make_params(amp=float(a.max()), x0=cx, y0=cy, waist_x=ext, waist_y=ext)
    params["waist_x"].set(min=1e-6 * ext)
    params["waist_y"].set(min=1e-6 * ext)
    if not elliptical:
        params["waist_y"].set(expr="waist_x")
    res = model.fit(a.ravel(), params, x=x.ravel(), y=y.ravel(), weights=w, scale_covar=stderr is None)
    p = res.params
    q = {"amplitude": Quantity(p["amp"].value, param_se(res, "amp"), "data units"),
         "x0": Quantity(p["x0"].value, param_se(res, "x0"), "layout fraction" if stderr is None else ""),
         "y0": Quantity(p["y0"].value, param_se(res, "y0"), "layout fraction" if stderr is None else "")}
    if elliptical:
        wx, wy = p["waist_x"].value, p["waist_y"].value
        sx, sy = param_se(res, "waist_x"), param_se(res, "waist_y")
        q["waist_x"] = Quantity(wx, sx)
        q["waist_y"] = Quantity(wy, sy)
        gm = math.sqrt(wx * wy)
        q["waist"] = Quantity(gm, 0.5 * gm * math.hypot(sx / wx, sy / wy))
    else:
        q["waist"] = Quantity(p["waist_x"].value, param_se(res, "waist_x"))
    units = q["x0"].units
    for k in ("waist", "waist_x", "waist_y"):
        if k in q:
            q[k] = Quantity(q[k].value, q[k].stderr, units)
    fitted = res.best_fit.reshape(a.shape)
    return Fit(name="slm.illumination", model="gaussian", quantities=q,
               arrays={"illumination_map": fitted / p["amp"].value},
               x=np.hypot(x - p["x0"].value, y - p["y0"].value).ravel(), y=a.ravel(), y_fit=res.best_fit,
               info={"redchi": float(res.redchi), "elliptical": bool(elliptical)})



def fit_column_free_illumination(amplitude, xs, ys, stderr) -> Fit:
    """Round Gaussian illumination from the row profile, with a free factor per column.

    Every element of column ``j`` of slm1 is lit through input ``j`` alone, whose own
    illumination (the input panel's beam) multiplies the whole column: the column profile of
    slm1 cannot be told apart from it.  The model ``c_j exp(-((y - y0) / waist)^2)`` takes the
    waist and ``y0`` from the rows (a round beam: one waist); ``x0`` is the centre of the
    columns' product profile (an elliptical fit of the amplitudes; exact when both beams are
    centred on their layouts).  Errors scaled by sqrt(reduced chi^2) when that exceeds 1; the
    per-spot readout systematic (``SPOT_SYSTEMATIC``, common to a row's elements) is added to the
    waist's and ``y0``'s from a fit of the row profile with that error per row.

    Parameters
    ----------
    amplitude : (rows >= 3, cols) element amplitudes (relative units).
    xs, ys : (rows, cols) element centres (layout fractions).
    stderr : (rows, cols) standard errors of ``amplitude``.

    Returns
    -------
    Fit named 'slm.illumination', model 'gaussian rows x free column factors': quantities
    ``waist``, ``x0``, ``y0`` (layout fractions) with standard errors and ``amplitude``;
    arrays ``illumination_map`` (peak 1) and ``column_factor``.
    """
    a = np.asarray(amplitude, float)
    se = np.asarray(stderr, float)
    nr, nc = a.shape
    if nr < 3:
        raise ValueError(f"illumination: a row profile needs >= 3 rows, got {nr}")
    y = np.asarray(ys, float)[:, 0]
    ext = float(max(np.ptp(y), 1e-12))

    def model(p):
        return np.exp(p[:nc])[None, :] * np.exp(-((y[:, None] - p[nc]) / p[nc + 1]) ** 2)

    def resid(p):
        return ((model(p) - a) / se).ravel()

    wt = np.clip(a, 0, None)
    y0 = float((wt.sum(axis=1) * y).sum() / max(wt.sum(), 1e-300))
    p0 = np.concatenate([np.log(np.maximum(a.max(axis=0), 1e-300)), [y0, ext]])
    lo = np.concatenate([np.full(nc, -np.inf), [-np.inf, 1e-6 * ext]])
    res = least_squares(resid, p0, bounds=(lo, np.full(nc + 2, np.inf)), x_scale="jac")
    dof = max(a.size - nc - 2, 1)
    redchi = float(res.fun @ res.fun) / dof
    try:
        cov = np.linalg.inv(res.jac.T @ res.jac) * max(redchi, 1.0)
        perr = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    except np.linalg.LinAlgError:
        perr = np.full(nc + 2, np.nan)
    # every element of a row is read on the same spot: the per-spot readout systematic
    # (SPOT_SYSTEMATIC) scales a whole row, so it enters the row profile once per row
    col = np.exp(res.x[:nc])
    prof = (a / col[None, :]).mean(axis=1)
    gy = np.exp(-((y - res.x[nc]) / res.x[nc + 1]) ** 2)
    jac = np.column_stack([gy, gy * 2 * (y - res.x[nc]) / res.x[nc + 1] ** 2,
                           gy * 2 * (y - res.x[nc]) ** 2 / res.x[nc + 1] ** 3]) / (SPOT_SYSTEMATIC * prof)[:, None]
    try:
        sys_se = np.sqrt(np.clip(np.diag(np.linalg.inv(jac.T @ jac)), 0.0, None))[1:]
    except np.linalg.LinAlgError:
        sys_se = np.zeros(2)
    perr[nc:nc + 2] = np.hypot(perr[nc:nc + 2], sys_se)
    # x0: the product profile's centre (an elliptical fit; a round one when too few columns
    # leave its column waist undetermined)
    ell = fit_illumination(a, xs, ys, stderr=se, elliptical=nc >= 4)
    waist, x0 = float(res.x[nc + 1]), ell.quantities["x0"]
    xx = np.asarray(xs, float)
    shape = np.exp(-((xx - x0.value) ** 2 + (np.asarray(ys, float) - res.x[nc]) ** 2) / waist ** 2)
    best = model(res.x)
    q = {"amplitude": Quantity(float(np.exp(res.x[:nc]).max()), float("nan"), "data units"),
         "x0": x0, "y0": Quantity(float(res.x[nc]), float(perr[nc]), ""),
         "waist": Quantity(waist, float(perr[nc + 1]), "")}
    return Fit(name="slm.illumination", model="gaussian rows x free column factors", quantities=q,
               arrays={"illumination_map": shape / shape.max(), "column_factor": np.exp(res.x[:nc])},
               x=np.asarray(ys, float).ravel(), y=a.ravel(), y_fit=best.ravel(),
               info={"redchi": redchi, "elliptical": False, "column_factors": True,
                     "waist_x_product": float(ell.quantities.get("waist_x", ell.quantities["waist"]).value)})




def fit_panel_illumination(amplitude, xs, ys, stderr=None, *, column_factors: bool = False) -> tuple[Fit, object]:
    """Illumination fit of a panel's measured element amplitudes, with bench-level errors.

    The errors are the repeat scatter ``stderr`` plus ``SPOT_SYSTEMATIC`` times the amplitude
    (the per-spot readout calibration, which no repeat reveals).  With ``column_factors`` (each
    column lit through its own input) and at least 3 rows and 2 columns:
    :func:`fit_column_free_illumination`; otherwise :func:`fit_illumination`, refitted with the
    errors scaled by sqrt(reduced chi^2) when that exceeds 1 and widened to
    :func:`jackknife_errors`.

    Parameters
    ----------
    amplitude : (rows, cols) element amplitudes (relative units).
    xs, ys : (rows, cols) element centres (fractions of the layout extent).
    stderr : (rows, cols) standard errors of ``amplitude`` from repeats, or None (unweighted
        fit, errors from the scatter).
    column_factors : fit a free factor per column.

    Returns
    -------
    (Fit 'slm.illumination' with ``waist``, ``x0``, ``y0`` (layout fractions) and
    ``amplitude`` and their standard errors, the total standard errors used (or None)).
    """
    amp = amplitude
    amp_se = stderr
    nr, nc = np.shape(amp)
    if amp_se is not None:
        # repeat scatter (laser jitter, shot noise) plus 0.3 % per element for the per-spot readout
        # calibration (ROI fractions, LO amplitudes), which no repeat reveals
        amp_se = np.hypot(amp_se, SPOT_SYSTEMATIC * amp)
    if column_factors and amp_se is not None and nr >= 3 and nc >= 2:
        # each column is lit through its own input, whose beam profile multiplies it
        return fit_column_free_illumination(amp, xs, ys, amp_se), amp_se
    fit = fit_illumination(amp, xs, ys, stderr=amp_se)
    if amp_se is not None and fit.info["redchi"] > 1.0:    # model misfit: scale the errors up
        fit = fit_illumination(amp, xs, ys, stderr=amp_se * math.sqrt(fit.info["redchi"]))
    if amp_se is not None:
        jackknife_errors(fit, amp, xs, ys, amp_se)
    return fit, amp_se


def leak_by_distance(signal: np.ndarray, lit: np.ndarray, n_rows: int, spacing: int) -> dict:
    """Field seen on unlit spots relative to the lit spot ``d`` rows away, median per distance
    ``d`` = 1 .. spacing - 1 (the output crosstalk that lit rows ``spacing`` apart leave out)."""
    out = {}
    for d in range(1, max(int(spacing), 1)):
        vals = []
        for k in lit:
            for i in (k - d, k + d):
                if 0 <= i < n_rows and (i - lit[0]) % spacing != 0 and abs(signal[k]) > 0:
                    vals.append(abs(signal[i]) / abs(signal[k]))
        if vals:
            out[d] = float(np.median(vals))
    return out


def pooled_stderr(reps: np.ndarray):
    """Standard error of the mean over repeats ``reps`` (n_rep, rows, cols), pooled: the noise of
    an element's reading is its spot's (row) times its column's (e.g. 1 / a1_j) -- the rank-one
    model ``row mean x column mean / grand mean`` of the repeat variances -- so an element's
    weight does not depend on its own few repeats (weights from a handful of repeats bias a
    weighted fit towards the elements whose repeats happened to agree).  None for one repeat."""
    if reps.shape[0] < 2:
        return None
    var = reps.var(axis=0, ddof=1)
    grand = float(var.mean())
    if not grand > 0:
        return np.full(var.shape, 1e-300)
    model = np.outer(var.mean(axis=1), var.mean(axis=0)) / grand
    return np.sqrt(model / reps.shape[0])


def jackknife_errors(fit: Fit, amp, xs, ys, se) -> None:
    """Widen the illumination fit's ``waist``/``x0``/``y0`` errors to the delete-one-row and
    delete-one-column jackknife's: errors common to a row (its spot's readout calibration) or a
    column (slm2's division by the column's ``a1``) are not independent per element."""
    nr, nc = amp.shape
    keys = ("waist", "x0", "y0")
    var = dict.fromkeys(keys, 0.0)
    for axis, n in ((0, nr), (1, nc)):
        if n < 4:
            continue
        vals = {k: [] for k in keys}
        for i in range(n):
            keep = np.arange(n) != i
            sl = (keep, slice(None)) if axis == 0 else (slice(None), keep)
            try:
                f = fit_illumination(amp[sl], xs[sl], ys[sl], stderr=se[sl])
            except ValueError:
                continue
            for k in keys:
                vals[k].append(f.quantities[k].value)
        for k in keys:
            v = np.asarray(vals[k])
            if v.size > 2:
                var[k] += (v.size - 1) / v.size * float(np.sum((v - v.mean()) ** 2))
    for k in keys:
        q = fit.quantities[k]
        fit.quantities[k] = Quantity(q.value, max(q.stderr, math.sqrt(var[k])), q.units)
    fit.info["stderr_jackknife"] = {k: math.sqrt(var[k]) for k in keys}



def median_leaks(leaks: list) -> dict:
    """Median over columns of :func:`leak_by_distance` dicts: distance (rows) -> relative field."""
    dist = sorted({d for lk in leaks for d in lk})
    return {int(d): float(np.median([lk[d] for lk in leaks if d in lk])) for d in dist}


def probe_element_amplitudes(ratios, signal) -> np.ndarray:
    """Relative amplitudes of the probe panel's elements from backward/forward field ratios.

    For a fixed slm2 column ``j`` the ratio of probe element ``i`` is ``t_j * d_i``: every
    column is normalised by its sum over ``i``, then the columns are averaged weighted by their
    backward signal power.

    Parameters
    ----------
    ratios : (n_probe, n_cols) complex backward field over forward field per element.
    signal : (n_probe, n_cols) complex backward fields (field units; the weights).

    Returns
    -------
    (1, n_probe) relative element amplitudes (they sum to 1).
    """
    a = np.abs(ratios)
    rel = a / a.sum(axis=0, keepdims=True)
    wgt = (np.abs(signal) ** 2).sum(axis=0)
    return ((rel * wgt[None, :]).sum(axis=1) / wgt.sum())[None, :]
