"""Phase-only SLM response fits (pure functions on numpy arrays).

The phase ``phi(L)`` of gray level ``L`` is measured relative to level 0 (``phi(0) = 0``)
and increases with ``L``.  Two measurement methods are supported:

* diffractive: a binary grating of levels 0 and ``g``; its first diffraction order
  carries ``P1(g) = A sin^2(phi(g)/2) + B`` and its zero order
  ``P0(g) = A cos^2(phi(g)/2) + B`` (:func:`fit_diffractive_response`);
* interferometric: fringes of two beams, one passing the level under test; the fringe
  shift is the phase (:func:`calibration.interference_fit.fringe_phases` or
  :func:`calibration.interference_fit.circle_phases` extract it, :func:`fit_phase_response`
  fits it).

Each fit makes two monotone models: the power law ``phi = phase_range_rad *
(L / L_max)^gamma`` (lmfit, with standard errors) and a monotone spline
(:mod:`calibration.slm_spline_fit`: a clamped cubic B-spline with non-negative increments,
fitted by least squares to the same data, started from the branch-unfolded,
isotonic-regressed points).  The spline is used when its BIC is lower.  Because ``sin^2``
folds every phase back into [0, pi], the pointwise inversion picks, per point, the branch
``2 pi k +- phi_principal`` that keeps the phase increasing (and, as a second start, the
branch nearest the power law); the least-squares refinement then fits the folded data
directly.

Diffractive data determine the phase only where the range exceeds about pi; with a
smaller range the amplitude ``A`` and the range are nearly degenerate (pass a known
``amplitude``).

Phase ranges below 2 pi: the LUT still covers one uniform turn (phases in the unreachable gap
map to the nearer end level) and the fit records what double-phase encoding keeps
(:class:`hwio.response.DoublePhaseRange`): ``info['double_phase']`` (gap centre and width,
``amplitude_max``, ``phase_offset_rad``), the quantity ``amplitude_max = cos((2 pi - range) / 2)``
with the standard error ``sin((2 pi - range) / 2) / 2`` times that of ``phase_range_rad``, and a
warning in ``info['warnings']`` (once per fit; the calibration summary prints it).
"""
from __future__ import annotations

import math
from typing import Mapping

import lmfit
import numpy as np
from sklearn.isotonic import IsotonicRegression
from threadpoolctl import threadpool_limits

from calibration.lmfit_stderr import param_se
from calibration.quantities import Fit, Quantity
from calibration.slm_spline_fit import (TWO_PI, MonotoneSpline, fit_monotone_spline, noise_from_differences,
                                        observe, unfold_guided, unfold_walk)
from hwio.response import DoublePhaseRange

__all__ = ["power_law_phase", "fit_diffractive_response", "fit_phase_response", "inverse_lut", "fit_regions",
           "amplitude_max_quantity"]


# ----------------------------------------------------------------------------- checks and models
def _check_bits(bits) -> int:
    if isinstance(bits, bool) or int(bits) != bits or not 1 <= int(bits) <= 16:
        raise ValueError(f"bits must be the panel's bit depth, an integer 1..16, got {bits!r}")
    return int(bits)


def _check_curve(levels, values, bits: int, what: str, min_points: int = 8):
    lv = np.asarray(levels, dtype=np.float64).ravel()
    y = np.asarray(values, dtype=np.float64).ravel()
    if lv.size != y.size:
        raise ValueError(f"{what}: levels ({lv.size}) and values ({y.size}) differ in length; "
                         "give one value per level")
    if lv.size == 0 or not (np.all(np.isfinite(lv)) and np.all(np.isfinite(y))):
        raise ValueError(f"{what}: levels/values are empty or contain NaN/inf; remove the bad rows")
    if np.any(lv != np.round(lv)) or lv.min() < 0 or lv.max() > 2 ** bits - 1:
        raise ValueError(f"{what}: levels must be integers 0..{2 ** bits - 1} for a {bits}-bit panel")
    if np.unique(lv).size < min_points:
        raise ValueError(f"{what}: only {np.unique(lv).size} distinct levels; measure at least {min_points} "
                         "levels spread over the panel's range")
    order = np.argsort(lv, kind="stable")
    return lv[order], y[order], order


def power_law_phase(levels, phase_range_rad: float, gamma: float, max_level: float):
    """Power-law response ``phase_range_rad * (levels / max_level) ** gamma`` (rad)."""
    u = np.clip(np.asarray(levels, dtype=np.float64) / max_level, 0.0, None)
    return phase_range_rad * u ** gamma



def _bic(chi2, n, k):
    return n * math.log(max(chi2, 1e-300) / n) + k * math.log(n)


def _aic(chi2, n, k):
    return n * math.log(max(chi2, 1e-300) / n) + 2 * k




# ----------------------------------------------------------------------------- core fit
def _fit_response(levels, y, *, bits, kind, sigma=None, amplitude=None, background=None,
                  n_knots=None, what="SLM response") -> Fit:
    """Fit one response curve with the power law and the monotone spline; keep the lower BIC.

    ``kind`` is 'first', 'zero' (diffractive orders) or 'phase' (interferometric phases);
    ``sigma`` the standard errors of ``y`` (None: from the scatter); ``amplitude`` /
    ``background`` fix the diffractive ``A`` / ``B``.  Returns the Fit described in
    :func:`fit_diffractive_response`.
    """
    bits = _check_bits(bits)
    lv, y, order = _check_curve(levels, y, bits, what)
    max_level = 2 ** bits - 1
    w, sigma_known = _curve_weights(sigma, np.asarray(levels).size, order, what)
    n = y.size
    warnings: list[str] = []
    if kind != "phase" and np.ptp(y) <= 0:
        raise ValueError(f"{what}: the power does not change with level; check the grating and the detector")
    if lv.max() < 0.9 * max_level:
        warnings.append(f"data stop at level {int(lv.max())} of {max_level}: the response above is extrapolated")
    fixed = [amplitude, background] if kind != "phase" else [1.0, None]
    law = _fit_power_law(lv, y, w, kind=kind, fixed=fixed, max_level=max_level, sigma_known=sigma_known)
    spl, spline, tau, chi2_spl = _fit_spline_model(lv, y, w, kind=kind, fixed=fixed, law=law, n_knots=n_knots,
                                                   sigma_known=sigma_known)
    aic, bic = _criteria(law["chi2"], law["k"], chi2_spl, spline["n_params"], n, sigma_known)
    use_spline = bic["spline"] < bic["gamma"]
    chosen = _chosen_response(lv, kind, max_level, law, spl, spline, use_spline, fixed, sigma_known)
    if not np.isfinite(chosen["range_se"]):
        raise ValueError(f"{what}: could not estimate the phase range's uncertainty; measure more levels")
    if kind != "phase" and chosen["range"] < math.pi:
        warnings.append("phase range below pi: amplitude and range are nearly degenerate in diffractive data "
                        "(pass a known amplitude, or use the interferometric method)")
    return _response_fit(lv, y, kind=kind, bits=bits, law=law, spl=spl, spline=spline, tau=tau, aic=aic, bic=bic,
                         chosen=chosen, warnings=warnings)


def _curve_weights(sigma, n_points: int, order, what: str):
    """Weights ``1 / sigma`` in the sorted order (ones when ``sigma`` is None) and whether the
    errors are known (else the covariance is scaled by the scatter)."""
    if sigma is None:
        return np.ones(n_points), False
    s = np.broadcast_to(np.asarray(sigma, float), (n_points,)).ravel()[order]
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"{what}: stderr values must be finite and > 0")
    return 1.0 / s, True


def _power_law_grid(lv, y, w, kind, fixed, max_level):
    """Coarse grid over (range, gamma) with the free linear parameters (amplitude, background)
    solved exactly per grid point: the start ``(range_rad, gamma, [amplitude, background])`` of
    the power-law fit."""
    best = None
    ranges = np.linspace(0.2, 7 * TWO_PI, 281) if kind != "phase" else None
    gammas = np.geomspace(0.3, 4.0, 41)
    if kind == "phase":
        # phase data: range from the data span, gamma by grid
        span = max(float(np.ptp(y)), 1e-3)
        ranges = span * np.linspace(0.5, 2.0, 61)
    u = lv / max_level
    for g in gammas:
        ug = u ** g
        phi = ranges[:, None] * ug[None, :]
        obs = observe(phi, kind)
        a_cols = [obs, np.ones_like(obs)]
        yy = np.broadcast_to(y, obs.shape).copy()
        for i, f in enumerate(fixed):
            if f is not None:
                yy -= f * a_cols[i]
        free = [i for i, f in enumerate(fixed) if f is None]
        # weighted normal equations per grid row
        cols = [a_cols[i] * w for i in free]
        yw = yy * w
        coef = _grid_linear_solve(cols, yw)
        fit_y = sum(c[:, None] * col for c, col in zip(coef, cols))
        chi2 = np.sum((yw - fit_y) ** 2, 1) if coef else np.sum(yw ** 2, 1)
        if kind != "phase" and 0 in free:
            chi2 = np.where(coef[0] > 0, chi2, np.inf)
        chi2 = np.where(np.isfinite(chi2), chi2, np.inf)
        j = int(np.argmin(chi2))
        if best is None or chi2[j] < best[0]:
            lin = [fixed[i] for i in range(2)]
            for c, i in zip(coef, free):
                lin[i] = float(c[j])
            best = (float(chi2[j]), float(ranges[j]), float(g), lin)
    return best[1], best[2], best[3]


def _grid_linear_solve(cols, yw):
    """Least-squares coefficients of 0, 1 or 2 weighted columns per grid row (normal equations)."""
    if len(cols) == 2:
        s11 = np.sum(cols[0] ** 2, 1)
        s12 = np.sum(cols[0] * cols[1], 1)
        s22 = np.sum(cols[1] ** 2, 1)
        t1 = np.sum(cols[0] * yw, 1)
        t2 = np.sum(cols[1] * yw, 1)
        det = s11 * s22 - s12 ** 2
        det = np.where(np.abs(det) < 1e-300, np.nan, det)
        c1 = (s22 * t1 - s12 * t2) / det
        c2 = (s11 * t2 - s12 * t1) / det
        return [c1, c2]
    if len(cols) == 1:
        return [np.sum(cols[0] * yw, 1) / np.sum(cols[0] ** 2, 1)]
    return []


def _fit_power_law(lv, y, w, *, kind, fixed, max_level, sigma_known) -> dict:
    """lmfit of ``amp * observe(power_law_phase(L), kind) + offset`` from the grid's start.

    Returns a dict: ``res`` (lmfit result), ``R``/``R_se`` (range, rad), ``gamma``/``gamma_se``,
    ``amp``/``off`` (data units), ``k`` (varied parameters), ``chi2`` (weighted) and ``phi``
    (the law's phases at the data levels, rad).
    """
    r0, g0, lin0 = _power_law_grid(lv, y, w, kind, fixed, max_level)

    def law(level, phase_range_rad, gamma, amp, offset):
        return amp * observe(power_law_phase(level, phase_range_rad, gamma, max_level), kind) + offset

    model = lmfit.Model(law, independent_vars=["level"])
    params = model.make_params(phase_range_rad=r0, gamma=g0, amp=lin0[0], offset=lin0[1])
    params["phase_range_rad"].set(min=1e-3)
    params["gamma"].set(min=0.1, max=10.0)
    if fixed[0] is not None:
        params["amp"].set(value=fixed[0], vary=False)
    elif kind != "phase":
        params["amp"].set(min=0.0)
    if fixed[1] is not None:
        params["offset"].set(value=fixed[1], vary=False)
    res = model.fit(y, params, level=lv, weights=w, scale_covar=not sigma_known)
    pr = res.params
    R, gam = float(pr["phase_range_rad"].value), float(pr["gamma"].value)
    return {"res": res, "R": R, "gamma": gam,
            "R_se": param_se(res, "phase_range_rad"), "gamma_se": param_se(res, "gamma"),
            "amp": float(pr["amp"].value), "off": float(pr["offset"].value),
            "k": sum(1 for p in pr.values() if p.vary),
            "chi2": float(np.sum(((res.best_fit - y) * w) ** 2)),
            "phi": power_law_phase(lv, R, gam, max_level)}


def _fit_spline_model(lv, y, w, *, kind, fixed, law, n_knots, sigma_known):
    """Monotone spline: unfold, isotonic regression, penalised least squares from several starts
    (two rounds for diffractive data, the second unfolded with the first round's spline).

    Returns (spline basis, best :func:`fit_monotone_spline` solution, penalty scale tau (rad),
    chi-square of the data in the weights ``w``).
    """
    R, amp, off, phi_law = law["R"], law["amp"], law["off"], law["phi"]
    n_distinct = np.unique(lv).size
    n_coef = int(n_knots) if n_knots is not None else int(np.clip(n_distinct // 4, 6, 40))
    n_coef = int(np.clip(n_coef, 4, max(4, n_distinct - 2)))
    spl = MonotoneSpline(float(lv.max()), n_coef)
    # balance the smoothness penalty against the data: residuals in noise units
    w_s = w if sigma_known else w / noise_from_differences(lv, y)
    tau = 0.5 * max(R, 1.0) / (spl.n - 1)
    c_law = np.linalg.lstsq(spl.basis(lv), phi_law, rcond=None)[0]
    d_floor = np.maximum(0.3 * np.diff(np.maximum.accumulate(c_law - c_law[0])), 1e-3 * max(R, 1.0) / spl.n)
    iso = IsotonicRegression(increasing=True, out_of_bounds="clip")

    def unfolded(a_, b_, guide):
        if kind == "phase":
            return [y - b_]
        c = np.clip((y - b_) / max(a_, 1e-300), 0.0, 1.0)
        principal = 2.0 * np.arcsin(np.sqrt(c)) if kind == "first" else 2.0 * np.arccos(np.sqrt(c))
        sts = [unfold_walk(lv, principal), unfold_guided(principal, guide)]
        return [iso.fit_transform(np.concatenate([[0.0], lv]), np.concatenate([[0.0], st]))[1:] for st in sts]

    spline = None
    starts = unfolded(amp, off, phi_law) + [phi_law]
    for _round in range(2 if kind != "phase" else 1):
        for st in starts:
            cand = fit_monotone_spline(lv, y, w_s, kind, spl, st, [amp, off], fixed, tau, d_floor=d_floor)
            if spline is None or cand["objective"] < spline["objective"]:
                spline = cand
        # second round: unfold again with the spline's amplitude/background and curve as guide
        starts = unfolded(spline["lin"][0], spline["lin"][1], spl.slope_matrix(lv) @ spline["d"])
    chi2_spl = spline["chi2"] * (1.0 if sigma_known else float(np.mean((w / w_s) ** 2)))
    return spl, spline, tau, chi2_spl


def _criteria(chi2_law, k_law, chi2_spl, k_spl, n, sigma_known):
    """AIC and BIC of both models ({'gamma', 'spline'} each): chi-square based with known errors,
    log-likelihood with the variance estimated from the residuals otherwise."""
    if sigma_known:
        bic_law, bic_spl = chi2_law + k_law * math.log(n), chi2_spl + k_spl * math.log(n)
        aic_law, aic_spl = chi2_law + 2 * k_law, chi2_spl + 2 * k_spl
    else:
        bic_law, bic_spl = _bic(chi2_law, n, k_law), _bic(chi2_spl, n, k_spl)
        aic_law, aic_spl = _aic(chi2_law, n, k_law), _aic(chi2_spl, n, k_spl)
    return {"gamma": aic_law, "spline": aic_spl}, {"gamma": bic_law, "spline": bic_spl}


def _chosen_response(lv, kind, max_level, law, spl, spline, use_spline, fixed, sigma_known) -> dict:
    """Both models on every level and the chosen one's response, errors and data curve.

    Returns a dict: ``resp``/``resp_se`` (2**bits, rad), ``range``/``range_se`` (rad),
    ``y_fit`` (model at the data levels), ``model`` ('spline' or 'gamma'), ``lin``
    (amplitude, background), ``amp_se``, and ``resp_law``/``resp_spl`` (rad).
    """
    all_levels = np.arange(max_level + 1, dtype=np.float64)
    resp_law = power_law_phase(all_levels, law["R"], law["gamma"], max_level)
    m_all = spl.slope_matrix(all_levels)
    resp_spl = m_all @ spline["d"]
    cov_d = spline["cov_d"] * (1.0 if sigma_known else max(spline["cov_scale"], 1e-300))
    spl_se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", m_all, cov_d, m_all), 0.0))
    out = {"resp_law": resp_law, "resp_spl": resp_spl}
    if use_spline:
        out.update(resp=resp_spl, resp_se=spl_se, range=float(resp_spl[-1]), range_se=float(spl_se[-1]),
                   y_fit=spline["lin"][0] * observe(spl.evaluate(lv, spline["d"]), kind) + spline["lin"][1],
                   model="spline", lin=spline["lin"],
                   amp_se=float(spline["lin_se"][0]) * (1.0 if sigma_known
                                                         else math.sqrt(max(spline["cov_scale"], 0.0))))
    else:
        res = law["res"]
        out.update(resp=resp_law, range=law["R"], range_se=law["R_se"],
                   resp_se=_law_se(all_levels, law["R"], law["gamma"], max_level, res),
                   y_fit=res.best_fit, model="gamma", lin=np.array([law["amp"], law["off"]]),
                   amp_se=param_se(res, "amp") if fixed[0] is None else 0.0)
    return out


def _response_fit(lv, y, *, kind, bits, law, spl, spline, tau, aic, bic, chosen, warnings) -> Fit:
    """The Fit of a response: quantities, model comparison, double-phase range, LUT arrays."""
    quantities = {
        "phase_range_rad": Quantity(chosen["range"], chosen["range_se"], "rad"),
        "gamma": Quantity(law["gamma"], law["gamma_se"], ""),
    }
    if kind != "phase":
        quantities["amplitude"] = Quantity(float(chosen["lin"][0]), chosen["amp_se"], "data units")
    info = {
        "method": {"first": "diffractive first order", "zero": "diffractive zero order",
                   "phase": "interferometric"}[kind],
        "chosen": chosen["model"],
        "aic": aic,
        "bic": bic,
        "power_law": {"phase_range_rad": [law["R"], law["R_se"]], "gamma": [law["gamma"], law["gamma_se"]]},
        "spline_knots_level": [float(k) for k in spl.t[3:-3]],
        "spline_coefficients_rad": [float(v) for v in spl.cum @ spline["d"]],
        "spline_penalty_tau_rad": tau,
        "bits": bits,
        "warnings": warnings,
    }
    resp = chosen["resp"]
    grid, lut = _lut_arrays(resp, bits)
    dp = DoublePhaseRange.of_table(np.maximum.accumulate(resp))
    info["double_phase"] = dp.as_dict()
    if not dp.full:
        quantities["amplitude_max"] = amplitude_max_quantity(quantities["phase_range_rad"])
        warnings.append(_short_range_warning(dp))
    arrays = {
        "phase_response_rad": resp,
        "phase_response_stderr_rad": chosen["resp_se"],
        "phase_response_gamma_rad": chosen["resp_law"],
        "phase_response_spline_rad": chosen["resp_spl"],
        "inverse_lut": lut,
        "inverse_lut_phase_rad": grid,
    }
    return Fit(name="slm", model=chosen["model"], quantities=quantities, arrays=arrays,
               x=lv, y=y, y_fit=chosen["y_fit"], info=info)


def _law_se(levels, R, gam, max_level, res):
    """Standard error (rad) of the power law at ``levels`` from the covariance of (range, gamma)."""
    names = ["phase_range_rad", "gamma"]
    cov = res.covar
    var_names = list(res.var_names or [])
    if cov is None or any(nm not in var_names for nm in names):
        se_r, se_g = param_se(res, names[0]), param_se(res, names[1])
        c = np.diag([se_r ** 2, se_g ** 2])
    else:
        idx = [var_names.index(nm) for nm in names]
        c = cov[np.ix_(idx, idx)]
    u = np.clip(levels / max_level, 1e-300, None)
    g1 = u ** gam
    g2 = R * g1 * np.log(u)
    g2 = np.where(levels > 0, g2, 0.0)
    return np.sqrt(np.maximum(g1 ** 2 * c[0, 0] + 2 * g1 * g2 * c[0, 1] + g2 ** 2 * c[1, 1], 0.0))


def _lut_arrays(resp, bits):
    """Uniform grid of one turn and the nearest level on the circle for each grid phase (for
    a range short of 2 pi, phases in the gap take the nearer end level)."""
    n = 2 ** bits
    span = float(resp.max() - resp.min())
    if span >= TWO_PI:
        grid = np.arange(n) * (TWO_PI / n)
    else:
        grid = float(resp.min()) + np.arange(n) * (TWO_PI / n)
    return grid, inverse_lut(resp, grid, wrap=True)


def amplitude_max_quantity(phase_range: Quantity) -> Quantity:
    """``amplitude_max = cos((2 pi - R) / 2)`` of a panel with phase range ``R`` (< 2 pi), with the
    standard error ``sin((2 pi - R) / 2) / 2 * stderr(R)`` (1 for ``R >= 2 pi``)."""
    gap = max(TWO_PI - float(phase_range.value), 0.0)
    se = 0.5 * math.sin(0.5 * gap) * float(phase_range.stderr) if gap > 0 else 0.0
    return Quantity(math.cos(0.5 * gap), se, "fraction of full amplitude")


def _short_range_warning(dp: DoublePhaseRange) -> str:
    return (f"phase range {TWO_PI - dp.gap_width_rad:.3f} rad is below 2 pi: double-phase encoding "
            f"keeps amplitudes up to amplitude_max = {dp.amplitude_max:.4f} of full scale (gap of "
            f"{dp.gap_width_rad:.3f} rad centred on phase {dp.gap_centre_rad:.3f} rad; weights are encoded "
            f"around phase {dp.phase_offset_rad:.3f} rad)")


# ----------------------------------------------------------------------------- public fits
def fit_diffractive_response(levels, power, *, bits: int, order: str = "first", power_stderr=None,
                             amplitude: float | None = None, background: float | None = None,
                             n_knots: int | None = None) -> Fit:
    """Phase vs level from the power of a binary grating of levels 0 and ``g``.

    Parameters
    ----------
    levels : gray levels g of the grating (integers 0 .. 2**bits - 1); repeats allowed.
    power : detected power of the chosen order (data units, e.g. ADU).
    bits : panel bit depth.
    order : 'first' (``A sin^2(phi/2) + B``) or 'zero' (``A cos^2(phi/2) + B``).
    power_stderr : optional standard errors of ``power`` (scalar or per point); without
        them the errors are taken from the scatter (covariance scaled by reduced chi^2).
    amplitude, background : fix ``A`` or ``B`` when known.
    n_knots : spline coefficients (default: distinct levels / 4, between 6 and 40, at most
        distinct levels - 2).

    Returns
    -------
    Fit named 'slm', model 'gamma' or 'spline' (the lower BIC), quantities
    ``phase_range_rad`` (phase of the top level, rad), ``gamma`` (power-law exponent),
    ``amplitude`` (data units), each with its standard error (+ ``amplitude_max`` for ranges
    below 2 pi); arrays ``phase_response_rad`` (2**bits, rad), its stderr, both models'
    responses, ``inverse_lut`` (level per phase of ``inverse_lut_phase_rad``).
    """
    if order not in ("first", "zero"):
        raise ValueError(f"order must be 'first' or 'zero', got {order!r}")
    with threadpool_limits(limits=1, user_api="blas"):   # small matrices: threads only cost time
        return _fit_response(levels, power, bits=bits, kind=order, sigma=power_stderr, amplitude=amplitude,
                         background=background, n_knots=n_knots, what=f"diffractive SLM curve ({order} order)")


def fit_phase_response(levels, phase_rad, *, bits: int, phase_stderr_rad=None,
                       n_knots: int | None = None) -> Fit:
    """Monotone fit of measured phases vs level.

    A constant offset is fitted and removed so that ``phi(0) = 0``.

    Parameters
    ----------
    levels : gray levels (integers 0 .. 2**bits - 1); repeats allowed.
    phase_rad : measured phase per level, rad (e.g. from
        :func:`calibration.interference_fit.circle_phases` or
        :func:`calibration.interference_fit.fringe_phases`).
    bits : panel bit depth.
    phase_stderr_rad : optional standard errors of ``phase_rad``, rad (scalar or per point);
        without them the errors are taken from the scatter.
    n_knots : spline coefficients, as in :func:`fit_diffractive_response`.

    Returns
    -------
    Fit with the layout of :func:`fit_diffractive_response` (without ``amplitude``):
    ``phase_range_rad`` (rad) and ``gamma`` with standard errors, ``phase_response_rad``
    (2**bits, rad) and its stderr, ``inverse_lut``.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_response(levels, phase_rad, bits=bits, kind="phase", sigma=phase_stderr_rad,
                         n_knots=n_knots, what="interferometric SLM curve")


def inverse_lut(phase_response_rad, phase_rad_grid, *, wrap: bool = True) -> np.ndarray:
    """Level whose phase is nearest each target phase.

    Parameters
    ----------
    phase_response_rad : (2**bits,) phase per level (from a fit's ``arrays``).
    phase_rad_grid : target phases (any shape), rad.
    wrap : compare phases modulo 2 pi (a target outside the response's range maps to the
        level nearest on the circle); otherwise nearest on the line.

    Returns
    -------
    Integer levels (int64) with the shape of ``phase_rad_grid``; ties go to the lowest level.
    """
    resp = np.asarray(phase_response_rad, dtype=np.float64).ravel()
    tgt = np.asarray(phase_rad_grid, dtype=np.float64)
    if resp.size < 2 or not np.all(np.isfinite(resp)):
        raise ValueError("phase_response_rad must be a finite array with one phase per level")
    if not np.all(np.isfinite(tgt)):
        raise ValueError("phase_rad_grid contains NaN or inf")
    flat = tgt.ravel()
    out = np.empty(flat.size, dtype=np.int64)
    chunk = max(1, 2 ** 22 // resp.size)
    for s in range(0, flat.size, chunk):
        d = flat[s:s + chunk, None] - resp[None, :]
        if wrap:
            d = (d + math.pi) % TWO_PI - math.pi
        out[s:s + chunk] = np.argmin(np.abs(d), axis=1)
    return out.reshape(tgt.shape)


def fit_regions(data: Mapping[str, tuple], *, bits: int, method: str = "diffractive", **kwargs) -> dict:
    """Fit the response of every panel region separately.

    Parameters
    ----------
    data : region name -> (levels, values); values are powers ('diffractive') or phases
        ('interferometric').
    method : 'diffractive' (kwargs go to :func:`fit_diffractive_response`) or
        'interferometric' (kwargs go to :func:`fit_phase_response`).

    Returns
    -------
    dict region name -> Fit named ``'slm.region.<name>'``.
    """
    if not isinstance(data, Mapping) or not data:
        raise ValueError("regions: give a non-empty mapping region name -> (levels, values)")
    out = {}
    for name, pair in data.items():
        if len(pair) != 2:
            raise ValueError(f"region {name!r}: expected (levels, values), got {len(pair)} items")
        if method == "diffractive":
            f = fit_diffractive_response(pair[0], pair[1], bits=bits, **kwargs)
        elif method == "interferometric":
            f = fit_phase_response(pair[0], pair[1], bits=bits, **kwargs)
        else:
            raise ValueError(f"unknown method {method!r}: use 'diffractive' or 'interferometric'")
        f.name = f"slm.region.{name}"
        out[str(name)] = f
    return out
