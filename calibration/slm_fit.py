"""Phase-only SLM response fits (pure functions on numpy arrays).

Phase response
--------------
The phase ``phi(L)`` of gray level ``L`` is measured relative to level 0 (``phi(0) = 0``)
and increases with ``L``.  Two measurement methods are supported:

* diffractive: a binary grating of levels 0 and ``g``; its first diffraction order
  carries ``P1(g) = A sin^2(phi(g)/2) + B`` and its zero order
  ``P0(g) = A cos^2(phi(g)/2) + B`` (:func:`fit_diffractive_response`);
* interferometric: fringes of two beams, one passing the level under test; the fringe
  shift is the phase (:func:`fringe_phases` extracts it, :func:`fit_phase_response`
  fits it).

Each fit makes two monotone models: the power law ``phi = phase_range_rad *
(L / L_max)^gamma`` (lmfit, with standard errors) and a monotone spline (PCHIP through
knot phases with non-negative increments, fitted by least squares to the same data,
started from the branch-unfolded, isotonic-regressed points).  The spline is used when
its BIC is lower.  Because ``sin^2`` folds every phase back into [0, pi], the pointwise
inversion picks, per point, the branch ``2 pi k +- phi_principal`` that keeps the
phase increasing (and, as a second start, the branch nearest the power law); the
least-squares refinement then fits the folded data directly.

Diffractive data determine the phase only where the range exceeds about pi; with a
smaller range the amplitude ``A`` and the range are nearly degenerate (pass a known
``amplitude``).

Phase ranges below 2 pi: the LUT still covers one uniform turn (phases in the unreachable gap
map to the nearer end level) and the fit records what double-phase encoding keeps
(:class:`hwio.response.DoublePhaseRange`): ``info['double_phase']`` (gap centre and width,
``amplitude_max``, ``phase_offset_rad``), the quantity ``amplitude_max = cos((2 pi - range) / 2)``
with the standard error ``sin((2 pi - range) / 2) / 2`` times that of ``phase_range_rad``, and a
warning in ``info['warnings']`` (once per fit; the calibration summary prints it).

Other fits: the illumination profile (2-D Gaussian over the panel,
:func:`fit_illumination`) and the pixel-crosstalk blur (:func:`fit_crosstalk`).
:func:`combine_slm` assembles the ``Fit(name='slm')`` of a calibration.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import lmfit
import numpy as np
from scipy.interpolate import BSpline
from scipy.optimize import least_squares, minimize_scalar
from sklearn.isotonic import IsotonicRegression
from threadpoolctl import threadpool_limits

from calibration.quantities import Fit, Quantity
from hwio.response import DoublePhaseRange

__all__ = ["power_law_phase", "fit_diffractive_response", "fit_phase_response", "fringe_phases",
           "FringePhases", "inverse_lut", "fit_regions", "fit_illumination", "grating_first_order",
           "fit_crosstalk", "combine_slm", "transfer_table", "realise_amplitudes", "amplitude_max_quantity"]

TWO_PI = 2.0 * math.pi


# ----------------------------------------------------------------------------- helpers
def _stderr(par, fallback: float = float("nan")) -> float:
    s = par.stderr
    if s is None or not np.isfinite(s):
        return float(fallback)
    return float(s)


def _fd_stderr(result: lmfit.model.ModelResult) -> dict:
    """Standard errors from a finite-difference Jacobian of the weighted residuals (fallback
    when lmfit returns none), scaled by the reduced chi-square like lmfit's."""
    names = [n for n, p in result.params.items() if p.vary]
    p0 = np.array([result.params[n].value for n in names])

    def resid(p):
        pars = result.params.copy()
        for n, v in zip(names, p):
            pars[n].set(value=v)
        return result.model._residual(pars, result.data, result.weights, **result.userkws)

    r0 = resid(p0)
    jac = np.empty((r0.size, p0.size))
    for k in range(p0.size):
        h = 1e-6 * max(abs(p0[k]), 1e-3)
        pp = p0.copy()
        pp[k] += h
        jac[:, k] = (resid(pp) - r0) / h
    dof = max(r0.size - p0.size, 1)
    try:
        cov = np.linalg.pinv(jac.T @ jac) * float(r0 @ r0) / dof
    except np.linalg.LinAlgError:
        return {n: float("nan") for n in names}
    return {n: float(math.sqrt(max(cov[k, k], 0.0))) for k, n in enumerate(names)}


def _param_se(result, name: str) -> float:
    se = _stderr(result.params[name])
    if not np.isfinite(se):
        se = _fd_stderr(result).get(name, float("nan"))
    return se


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


def _observe(phi, kind: str):
    if kind == "first":
        return np.sin(0.5 * phi) ** 2
    if kind == "zero":
        return np.cos(0.5 * phi) ** 2
    return phi  # 'phase'


# ----------------------------------------------------------------------------- monotone spline
class _MonotoneSpline:
    """Clamped cubic B-spline on [0, end] with coefficients ``c = [0, cumsum(d)]``, ``d >= 0``.

    Non-decreasing coefficients make a non-decreasing spline, and ``phi(0) = c[0] = 0``.
    Beyond ``end`` the curve continues linearly with its end slope.
    """

    def __init__(self, end: float, n_coef: int):
        self.end = float(end)
        n_int = max(n_coef - 4, 0)
        inner = np.linspace(0.0, self.end, n_int + 2)[1:-1]
        self.t = np.concatenate([[0.0] * 4, inner, [self.end] * 4])
        self.n = n_int + 4
        self.cum = np.tril(np.ones((self.n, self.n - 1)), -1)   # c = cum @ d

    def basis(self, levels):
        lv = np.clip(np.asarray(levels, dtype=np.float64), 0.0, self.end)
        b = BSpline.design_matrix(lv, self.t, 3).toarray()
        return b

    def evaluate(self, levels, d):
        lv = np.asarray(levels, dtype=np.float64)
        c = self.cum @ d
        out = self.basis(lv) @ c
        if np.any(lv > self.end):
            slope = 3.0 * (c[-1] - c[-2]) / (self.t[-1] - self.t[-5]) if self.end > 0 else 0.0
            out = np.where(lv > self.end, c[-1] + slope * (lv - self.end), out)
        return out

    def slope_matrix(self, levels):
        """Matrix mapping d to phi at ``levels`` (linear), including the linear extension."""
        lv = np.asarray(levels, dtype=np.float64)
        m = self.basis(lv) @ self.cum
        if np.any(lv > self.end):
            e = np.zeros(self.n)
            e[-1] = 1.0
            e2 = np.zeros(self.n)
            e2[-2] = 1.0
            h = 3.0 / (self.t[-1] - self.t[-5])
            ext = (e @ self.cum)[None, :] + h * ((e - e2) @ self.cum)[None, :] * (lv - self.end)[:, None]
            m = np.where((lv > self.end)[:, None], ext, m)
        return m


def _noise_from_differences(levels, y):
    """Noise sigma from second differences of neighbouring points (curvature negligible when dense)."""
    if y.size < 5:
        return float(np.std(y)) or 1.0
    d2 = y[1:-1] - 0.5 * (y[:-2] + y[2:])
    s = float(np.sqrt(np.mean(d2 ** 2) / 1.5))
    return s if s > 0 else max(float(np.std(y)) * 1e-3, 1e-12)


def _fit_spline(levels, y, w, kind, spl: _MonotoneSpline, phi_start, lin0, fixed, tau, d_floor=None,
                max_nfev=500):
    """Penalised least squares: data residuals plus (d_{k+1} - d_k) / tau (second differences
    of the coefficients, a P-spline penalty); returns a dict with the solution."""
    m = spl.slope_matrix(levels)
    # start: least-squares coefficients for the unfolded phases, made monotone
    c0 = np.linalg.lstsq(spl.basis(levels), phi_start, rcond=None)[0]
    c0 = np.maximum.accumulate(c0 - c0[0])
    # flat stretches (e.g. phases clipped to 0 where sin^2 has no slope) start slightly rising
    floor = max(float(c0[-1]), 0.1) / (spl.n - 1) * 0.05 if d_floor is None else d_floor
    d0 = np.maximum(np.diff(c0), floor)
    free = [i for i in range(2) if fixed[i] is None]
    n_lin = len(free)
    n_pen = spl.n - 2

    def unpack(p):
        lin = np.array([fixed[i] if fixed[i] is not None else 0.0 for i in range(2)], float)
        lin[free] = p[:n_lin]
        return lin, p[n_lin:]

    def resid(p):
        lin, d = unpack(p)
        phi = m @ d
        r = (lin[0] * _observe(phi, kind) + lin[1] - y) * w
        return np.concatenate([r, np.diff(d) / tau])

    def jac(p):
        lin, d = unpack(p)
        phi = m @ d
        obs = _observe(phi, kind)
        if kind == "first":
            dobs = 0.5 * np.sin(phi)
        elif kind == "zero":
            dobs = -0.5 * np.sin(phi)
        else:
            dobs = np.ones_like(phi)
        cols = []
        if 0 in free:
            cols.append((obs * w)[:, None])
        if 1 in free:
            cols.append(w[:, None])
        cols.append((lin[0] * dobs * w)[:, None] * m)
        top = np.hstack(cols)
        pen = np.zeros((n_pen, p.size))
        idx = np.arange(n_pen)
        pen[idx, n_lin + idx] = -1.0 / tau
        pen[idx, n_lin + idx + 1] = 1.0 / tau
        return np.vstack([top, pen])

    p0 = np.concatenate([np.asarray(lin0, float)[free], d0])
    lo = np.concatenate([np.full(n_lin, -np.inf), np.zeros(d0.size)])
    if kind != "phase" and 0 in free:
        lo[0] = 0.0
    p0 = np.maximum(p0, lo + 1e-12 * (lo > -np.inf))
    res = least_squares(resid, p0, jac=jac, bounds=(lo, np.inf), method="trf", x_scale="jac",
                        max_nfev=max_nfev)
    lin, d = unpack(res.x)
    r = res.fun
    chi2 = float(r[:y.size] @ r[:y.size])
    objective = float(r @ r)
    J = jac(res.x)
    dof = max(y.size - res.x.size, 1)
    try:
        cov = np.linalg.pinv(J.T @ J)
    except np.linalg.LinAlgError:
        cov = np.full((res.x.size, res.x.size), np.nan)
    lin_se = np.zeros(2)
    for j, i in enumerate(free):
        lin_se[i] = math.sqrt(max(cov[j, j], 0.0))        # unscaled, like cov_d
    return {"d": d, "lin": lin, "lin_se": lin_se, "chi2": chi2, "x": res.x, "objective": objective,
            "cov_d": cov[n_lin:, n_lin:],
            "cov_scale": chi2 / dof, "n_params": int(res.x.size)}


def _unfold_walk(levels, principal, kmax: int = 8, tol_rad: float = 0.3):
    """Choose per point the branch ``2 pi k +- principal`` that keeps the phase increasing,
    predicting each point from the local slope of the points before it."""
    ks = TWO_PI * np.arange(kmax + 1)
    out = np.empty_like(principal)
    prev, slope, last_level = 0.0, 0.0, 0.0
    hist_l, hist_p = [0.0], [0.0]
    for i, (lv, pp) in enumerate(zip(levels, principal)):
        cand = np.concatenate([ks + pp, ks - pp])
        pred = prev + slope * (lv - last_level)
        ok = cand >= prev - tol_rad
        c = cand[ok] if ok.any() else cand
        out[i] = c[np.argmin(np.abs(c - pred))]
        prev = max(prev, out[i])
        last_level = lv
        hist_l.append(lv)
        hist_p.append(out[i])
        l_arr, p_arr = np.array(hist_l[-6:]), np.array(hist_p[-6:])
        if l_arr.size >= 3 and np.ptp(l_arr) > 0:
            slope = max(float(np.polyfit(l_arr, p_arr, 1)[0]), 0.0)
    return out


def _unfold_guided(principal, guide):
    """Branch ``2 pi k +- principal`` nearest a guide curve (the power law)."""
    c1 = TWO_PI * np.round((guide - principal) / TWO_PI) + principal
    c2 = TWO_PI * np.round((guide + principal) / TWO_PI) - principal
    return np.where(np.abs(c1 - guide) <= np.abs(c2 - guide), c1, c2)


def _bic(chi2, n, k):
    return n * math.log(max(chi2, 1e-300) / n) + k * math.log(n)


def _aic(chi2, n, k):
    return n * math.log(max(chi2, 1e-300) / n) + 2 * k


# ----------------------------------------------------------------------------- core fit
def _fit_response(levels, y, *, bits, kind, sigma=None, amplitude=None, background=None,
                  n_knots=None, what="SLM response") -> Fit:
    bits = _check_bits(bits)
    lv, y, order = _check_curve(levels, y, bits, what)
    max_level = 2 ** bits - 1
    if sigma is None:
        w = np.ones_like(y)
        sigma_known = False
    else:
        s = np.broadcast_to(np.asarray(sigma, float), (np.asarray(levels).size,)).ravel()[order]
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError(f"{what}: stderr values must be finite and > 0")
        w = 1.0 / s
        sigma_known = True
    n = y.size
    warnings: list[str] = []
    if kind != "phase" and np.ptp(y) <= 0:
        raise ValueError(f"{what}: the power does not change with level; check the grating and the detector")
    if lv.max() < 0.9 * max_level:
        warnings.append(f"data stop at level {int(lv.max())} of {max_level}: the response above is extrapolated")

    # ---- power law: coarse grid (linear params solved exactly), then lmfit
    fixed = [amplitude, background] if kind != "phase" else [1.0, None]
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
        obs = _observe(phi, kind)
        a_cols = [obs, np.ones_like(obs)]
        yy = np.broadcast_to(y, obs.shape).copy()
        for i, f in enumerate(fixed):
            if f is not None:
                yy -= f * a_cols[i]
        free = [i for i, f in enumerate(fixed) if f is None]
        # weighted normal equations per grid row
        cols = [a_cols[i] * w for i in free]
        yw = yy * w
        if len(free) == 2:
            s11 = np.sum(cols[0] ** 2, 1)
            s12 = np.sum(cols[0] * cols[1], 1)
            s22 = np.sum(cols[1] ** 2, 1)
            t1 = np.sum(cols[0] * yw, 1)
            t2 = np.sum(cols[1] * yw, 1)
            det = s11 * s22 - s12 ** 2
            det = np.where(np.abs(det) < 1e-300, np.nan, det)
            c1 = (s22 * t1 - s12 * t2) / det
            c2 = (s11 * t2 - s12 * t1) / det
            coef = [c1, c2]
        elif len(free) == 1:
            coef = [np.sum(cols[0] * yw, 1) / np.sum(cols[0] ** 2, 1)]
        else:
            coef = []
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
    _, r0, g0, lin0 = best

    def law(level, phase_range_rad, gamma, amp, offset):
        return amp * _observe(power_law_phase(level, phase_range_rad, gamma, max_level), kind) + offset

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
    R_se, gam_se = _param_se(res, "phase_range_rad"), _param_se(res, "gamma")
    amp, off = float(pr["amp"].value), float(pr["offset"].value)
    k_law = sum(1 for p in pr.values() if p.vary)
    chi2_law = float(np.sum(((res.best_fit - y) * w) ** 2))
    phi_law = power_law_phase(lv, R, gam, max_level)

    # ---- monotone spline: unfold, isotonic, penalised least squares from several starts
    n_distinct = np.unique(lv).size
    n_coef = int(n_knots) if n_knots is not None else int(np.clip(n_distinct // 4, 6, 40))
    n_coef = int(np.clip(n_coef, 4, max(4, n_distinct - 2)))
    spl = _MonotoneSpline(float(lv.max()), n_coef)
    # balance the smoothness penalty against the data: residuals in noise units
    w_s = w if sigma_known else w / _noise_from_differences(lv, y)
    tau = 0.5 * max(R, 1.0) / (spl.n - 1)
    c_law = np.linalg.lstsq(spl.basis(lv), phi_law, rcond=None)[0]
    d_floor = np.maximum(0.3 * np.diff(np.maximum.accumulate(c_law - c_law[0])), 1e-3 * max(R, 1.0) / spl.n)
    iso = IsotonicRegression(increasing=True, out_of_bounds="clip")

    def unfolded(a_, b_, guide):
        if kind == "phase":
            return [y - b_]
        c = np.clip((y - b_) / max(a_, 1e-300), 0.0, 1.0)
        principal = 2.0 * np.arcsin(np.sqrt(c)) if kind == "first" else 2.0 * np.arccos(np.sqrt(c))
        sts = [_unfold_walk(lv, principal), _unfold_guided(principal, guide)]
        return [iso.fit_transform(np.concatenate([[0.0], lv]), np.concatenate([[0.0], st]))[1:] for st in sts]

    spline = None
    starts = unfolded(amp, off, phi_law) + [phi_law]
    for _round in range(2 if kind != "phase" else 1):
        for st in starts:
            cand = _fit_spline(lv, y, w_s, kind, spl, st, [amp, off], fixed, tau, d_floor=d_floor)
            if spline is None or cand["objective"] < spline["objective"]:
                spline = cand
        # second round: unfold again with the spline's amplitude/background and curve as guide
        starts = unfolded(spline["lin"][0], spline["lin"][1], spl.slope_matrix(lv) @ spline["d"])
    chi2_spl = spline["chi2"] * (1.0 if sigma_known else float(np.mean((w / w_s) ** 2)))
    k_spl = spline["n_params"]

    if sigma_known:
        bic_law, bic_spl = chi2_law + k_law * math.log(n), chi2_spl + k_spl * math.log(n)
        aic_law, aic_spl = chi2_law + 2 * k_law, chi2_spl + 2 * k_spl
    else:
        bic_law, bic_spl = _bic(chi2_law, n, k_law), _bic(chi2_spl, n, k_spl)
        aic_law, aic_spl = _aic(chi2_law, n, k_law), _aic(chi2_spl, n, k_spl)
    use_spline = bic_spl < bic_law

    all_levels = np.arange(max_level + 1, dtype=np.float64)
    resp_law = power_law_phase(all_levels, R, gam, max_level)
    m_all = spl.slope_matrix(all_levels)
    resp_spl = m_all @ spline["d"]
    cov_d = spline["cov_d"] * (1.0 if sigma_known else max(spline["cov_scale"], 1e-300))
    spl_se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", m_all, cov_d, m_all), 0.0))
    if use_spline:
        resp, resp_se = resp_spl, spl_se
        rng_val, rng_se = float(resp_spl[-1]), float(spl_se[-1])
        y_fit = spline["lin"][0] * _observe(spl.evaluate(lv, spline["d"]), kind) + spline["lin"][1]
        model_name = "spline"
        lin_final = spline["lin"]
        amp_se = float(spline["lin_se"][0]) * (1.0 if sigma_known else math.sqrt(max(spline["cov_scale"], 0.0)))
    else:
        resp = resp_law
        rng_val, rng_se = R, R_se
        resp_se = _law_se(all_levels, R, gam, max_level, res)
        y_fit = res.best_fit
        model_name = "gamma"
        lin_final = np.array([amp, off])
        amp_se = _param_se(res, "amp") if fixed[0] is None else 0.0
    if not np.isfinite(rng_se):
        raise ValueError(f"{what}: could not estimate the phase range's uncertainty; measure more levels")
    if kind != "phase" and rng_val < math.pi:
        warnings.append("phase range below pi: amplitude and range are nearly degenerate in diffractive data "
                        "(pass a known amplitude, or use the interferometric method)")

    quantities = {
        "phase_range_rad": Quantity(rng_val, rng_se, "rad"),
        "gamma": Quantity(gam, gam_se, ""),
    }
    if kind != "phase":
        quantities["amplitude"] = Quantity(float(lin_final[0]), amp_se, "data units")
    info = {
        "method": {"first": "diffractive first order", "zero": "diffractive zero order",
                   "phase": "interferometric"}[kind],
        "chosen": model_name,
        "aic": {"gamma": aic_law, "spline": aic_spl},
        "bic": {"gamma": bic_law, "spline": bic_spl},
        "power_law": {"phase_range_rad": [R, R_se], "gamma": [gam, gam_se]},
        "spline_knots_level": [float(k) for k in spl.t[3:-3]],
        "spline_coefficients_rad": [float(v) for v in spl.cum @ spline["d"]],
        "spline_penalty_tau_rad": tau,
        "bits": bits,
        "warnings": warnings,
    }
    grid, lut = _lut_arrays(resp, bits)
    dp = DoublePhaseRange.of_table(np.maximum.accumulate(resp))
    info["double_phase"] = dp.as_dict()
    if not dp.full:
        quantities["amplitude_max"] = amplitude_max_quantity(quantities["phase_range_rad"])
        warnings.append(_short_range_warning(dp))
    arrays = {
        "phase_response_rad": resp,
        "phase_response_stderr_rad": resp_se,
        "phase_response_gamma_rad": resp_law,
        "phase_response_spline_rad": resp_spl,
        "inverse_lut": lut,
        "inverse_lut_phase_rad": grid,
    }
    return Fit(name="slm", model=model_name, quantities=quantities, arrays=arrays,
               x=lv, y=y, y_fit=y_fit, info=info)


def _law_se(levels, R, gam, max_level, res):
    names = ["phase_range_rad", "gamma"]
    cov = res.covar
    var_names = list(res.var_names or [])
    if cov is None or any(nm not in var_names for nm in names):
        se_r, se_g = _param_se(res, names[0]), _param_se(res, names[1])
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
    power : detected power of the chosen order (any units).
    bits : panel bit depth.
    order : 'first' (``A sin^2(phi/2) + B``) or 'zero' (``A cos^2(phi/2) + B``).
    power_stderr : optional standard errors of ``power`` (scalar or per point); without
        them the errors are taken from the scatter (covariance scaled by reduced chi^2).
    amplitude, background : fix ``A`` or ``B`` when known.
    n_knots : spline knots (default: distinct levels / 5, between 5 and 32).

    Returns
    -------
    Fit named 'slm', model 'gamma' or 'spline' (the lower BIC), quantities
    ``phase_range_rad`` (phase of the top level), ``gamma`` (power-law exponent),
    ``amplitude``; arrays ``phase_response_rad`` (2**bits, rad), its stderr, both models'
    responses, ``inverse_lut`` (level per phase of ``inverse_lut_phase_rad``).
    """
    if order not in ("first", "zero"):
        raise ValueError(f"order must be 'first' or 'zero', got {order!r}")
    with threadpool_limits(limits=1, user_api="blas"):   # small matrices: threads only cost time
        return _fit_response(levels, power, bits=bits, kind=order, sigma=power_stderr, amplitude=amplitude,
                         background=background, n_knots=n_knots, what=f"diffractive SLM curve ({order} order)")


def fit_phase_response(levels, phase_rad, *, bits: int, phase_stderr_rad=None,
                       n_knots: int | None = None) -> Fit:
    """Monotone fit of measured phases (e.g. from :func:`fringe_phases`) vs level.

    A constant offset is fitted and removed so that ``phi(0) = 0``.  Returns the same
    Fit layout as :func:`fit_diffractive_response` (without ``amplitude``).
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_response(levels, phase_rad, bits=bits, kind="phase", sigma=phase_stderr_rad,
                         n_knots=n_knots, what="interferometric SLM curve")


@dataclass
class FringePhases:
    """Result of :func:`fringe_phases`."""

    phase_rad: np.ndarray    # unwrapped fringe phase per profile, increasing, first = 0
    stderr_rad: np.ndarray   # one-sigma error per profile
    period_px: float         # fringe period
    contrast: np.ndarray     # fringe amplitude / mean, per profile


def _sinusoid_fit(profiles, freq, x):
    a = np.column_stack([np.ones_like(x), np.cos(TWO_PI * freq * x), np.sin(TWO_PI * freq * x),
                         x - x.mean()])
    coef, *_ = np.linalg.lstsq(a, profiles.T, rcond=None)
    resid = profiles.T - a @ coef
    return a, coef, resid


def fringe_phases(profiles, reference=None) -> FringePhases:
    """Fringe phase of each 1-D interference profile, one profile per level.

    The common fringe frequency is found from the summed FFT power and refined by
    least squares; every profile is then fitted with ``a + b cos(2 pi f x) + c sin(2 pi f x)
    + slope (x - x_mean)`` and its phase is ``atan2(-c, b)``.  With ``reference`` (profiles of
    the half of the panel held at a fixed level, same shape) the reference phase is
    subtracted (cancels drift).  Phases are unwrapped along the profiles, shifted so that the
    first is 0 and their sign chosen so that they increase overall.

    Parameters
    ----------
    profiles : (n_levels, n_x) intensities.
    reference : optional (n_levels, n_x) intensities of the reference fringes.

    Returns
    -------
    FringePhases (phase_rad, stderr_rad, period_px, contrast).
    """
    p = np.asarray(profiles, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 2 or p.shape[1] < 8:
        raise ValueError(f"fringe profiles must be (n_levels>=2, n_x>=8), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("fringe profiles contain NaN or inf; remove the bad profiles")
    x = np.arange(p.shape[1], dtype=np.float64)

    def phases(stack):
        z = stack - stack.mean(axis=1, keepdims=True)
        spec = np.sum(np.abs(np.fft.rfft(z, axis=1)) ** 2, axis=0)
        spec[0] = 0.0
        k0 = int(np.argmax(spec[1:]) + 1) if spec.size > 2 else 1
        if spec[k0] <= 0:
            raise ValueError("fringe profiles show no fringes; check the interferometer alignment")
        n = stack.shape[1]

        def cost(f):
            _, _, r = _sinusoid_fit(stack, f, x)
            return float(np.sum(r ** 2))

        lo, hi = max(k0 - 1, 0.5) / n, (k0 + 1) / n
        f = minimize_scalar(cost, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7}).x
        a, coef, resid = _sinusoid_fit(stack, f, x)
        b, c = coef[1], coef[2]
        amp = np.hypot(b, c)
        if np.any(amp <= 0):
            raise ValueError("a fringe profile has zero fringe amplitude; check the profiles")
        ph = np.arctan2(-c, b)
        dof = max(n - 4, 1)
        s2 = np.sum(resid ** 2, axis=0) / dof
        cov = np.linalg.pinv(a.T @ a)
        var_ph = s2 * ((c / amp ** 2) ** 2 * cov[1, 1] + (b / amp ** 2) ** 2 * cov[2, 2]
                       - 2 * (c / amp ** 2) * (b / amp ** 2) * cov[1, 2])
        return ph, np.sqrt(var_ph), 1.0 / f, amp / np.maximum(np.abs(coef[0]), 1e-300)

    ph, se, period, contrast = phases(p)
    if reference is not None:
        r = np.asarray(reference, dtype=np.float64)
        if r.shape != p.shape:
            raise ValueError(f"reference fringes {r.shape} must match the profiles {p.shape}")
        if not np.all(np.isfinite(r)):
            raise ValueError("reference fringe profiles contain NaN or inf")
        ph_r, se_r, _, _ = phases(r)
        ph = ph - ph_r
        se = np.hypot(se, se_r)
    ph = np.unwrap(ph)
    ph = ph - ph[0]
    if np.polyfit(np.arange(ph.size), ph, 1)[0] < 0:
        ph = -ph
    return FringePhases(ph, se, float(period), contrast)


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


# ----------------------------------------------------------------------------- illumination
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
    q = {"amplitude": Quantity(p["amp"].value, _param_se(res, "amp"), "data units"),
         "x0": Quantity(p["x0"].value, _param_se(res, "x0"), "layout fraction" if stderr is None else ""),
         "y0": Quantity(p["y0"].value, _param_se(res, "y0"), "layout fraction" if stderr is None else "")}
    if elliptical:
        wx, wy = p["waist_x"].value, p["waist_y"].value
        sx, sy = _param_se(res, "waist_x"), _param_se(res, "waist_y")
        q["waist_x"] = Quantity(wx, sx)
        q["waist_y"] = Quantity(wy, sy)
        gm = math.sqrt(wx * wy)
        q["waist"] = Quantity(gm, 0.5 * gm * math.hypot(sx / wx, sy / wy))
    else:
        q["waist"] = Quantity(p["waist_x"].value, _param_se(res, "waist_x"))
    units = q["x0"].units
    for k in ("waist", "waist_x", "waist_y"):
        if k in q:
            q[k] = Quantity(q[k].value, q[k].stderr, units)
    fitted = res.best_fit.reshape(a.shape)
    return Fit(name="slm.illumination", model="gaussian", quantities=q,
               arrays={"illumination_map": fitted / p["amp"].value},
               x=np.hypot(x - p["x0"].value, y - p["y0"].value).ravel(), y=a.ravel(), y_fit=res.best_fit,
               info={"redchi": float(res.redchi), "elliptical": bool(elliptical)})


# ----------------------------------------------------------------------------- crosstalk
def _kernel_transfer(freq, sigma_px, kernel):
    freq = np.asarray(freq, float)
    if kernel == "continuous":
        return np.exp(-2.0 * math.pi ** 2 * sigma_px ** 2 * freq ** 2)
    # discrete: normalised sampled Gaussian on integer pixel offsets
    if sigma_px < 1e-6:
        return np.ones_like(freq)
    half = int(math.ceil(6 * sigma_px)) + 1
    k = np.arange(-half, half + 1, dtype=float)
    g = np.exp(-0.5 * (k / sigma_px) ** 2)
    g /= g.sum()
    return np.sum(g[None, :] * np.cos(TWO_PI * freq[..., None] * k[None, :]), axis=-1)


def grating_first_order(period_px, sigma_px: float, dphi_rad: float = math.pi, *,
                        kernel: str = "continuous"):
    """First-order diffracted power of a blurred binary phase grating, per unit incident power.

    Forward model: a grating of integer period ``p`` pixels, ``floor(p/2)`` pixels at phase
    ``dphi`` and the rest at 0, pixel field ``exp(i phi)`` (sharp unit pixels), blurred by a
    Gaussian of ``sigma_px`` (the fringing field).  Its first Fourier coefficient is
    ``c1 = (exp(i dphi) - 1) sin(pi d) / pi * H(1/p)`` with duty ``d = floor(p/2)/p`` and the
    blur's transfer function ``H(f) = exp(-2 pi^2 sigma^2 f^2)`` (``kernel='continuous'``) or
    that of the normalised Gaussian sampled on integer pixel offsets (``'discrete'``), so

        P1(p) = 4 sin^2(dphi/2) sin^2(pi d) / pi^2 * H(1/p)^2.

    The zero order does not depend on the blur (``H(0) = 1``), so the first order is the
    observable; its field modulation depth relative to an unblurred grating is ``H(1/p)``.
    """
    p = np.asarray(period_px, dtype=np.float64)
    d = np.floor(p / 2.0) / p
    h = _kernel_transfer(1.0 / p, sigma_px, kernel)
    return 4.0 * math.sin(dphi_rad / 2.0) ** 2 * np.sin(math.pi * d) ** 2 / math.pi ** 2 * h ** 2


def fit_crosstalk(period_px, first_order, *, observable: str = "power", stderr=None,
                  background: bool = False, kernel: str = "continuous") -> Fit:
    """Gaussian crosstalk width (pixels) from first-order signals of gratings of several periods.

    Fits ``S * grating_first_order(p, sigma) [+ B]`` (``observable='power'``) or its square
    root (``'amplitude'``) with unknown scale ``S`` (incident power, ``sin^2(dphi/2)``,
    detector) and, with ``background=True``, an offset ``B``.  Needs at least 3 distinct
    periods including short ones (2-4 px) where the blur matters.  Without ``stderr`` the
    errors are taken as proportional to the signal (floored at 0.1 % of the largest) and
    scaled by the scatter.

    Returns
    -------
    Fit named 'slm.crosstalk', model 'gaussian-blur', quantities ``crosstalk_px`` (sigma)
    and ``scale``.
    """
    p = np.asarray(period_px, dtype=np.float64).ravel()
    y = np.asarray(first_order, dtype=np.float64).ravel()
    if p.size != y.size:
        raise ValueError(f"crosstalk: {p.size} periods but {y.size} signals; give one signal per grating")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(y))):
        raise ValueError("crosstalk: periods/signals contain NaN or inf")
    if np.any(p < 2) or np.any(p != np.round(p)):
        raise ValueError("crosstalk: periods must be integers >= 2 pixels")
    if np.unique(p).size < 3:
        raise ValueError("crosstalk: measure gratings of at least 3 different periods (e.g. 2, 4, 8, 16 px)")
    if observable not in ("power", "amplitude"):
        raise ValueError(f"observable must be 'power' or 'amplitude', got {observable!r}")
    if kernel not in ("continuous", "discrete"):
        raise ValueError(f"kernel must be 'continuous' or 'discrete', got {kernel!r}")

    def law(period, scale, sigma, offset):
        f = grating_first_order(period, sigma, kernel=kernel)
        return scale * (f if observable == "power" else np.sqrt(f)) + offset

    model = lmfit.Model(law, independent_vars=["period"])
    if stderr is not None:
        s = np.broadcast_to(np.asarray(stderr, float), y.shape)
        if np.any(~np.isfinite(s)) or np.any(s <= 0):
            raise ValueError("crosstalk: stderr must be finite and > 0")
        w = 1.0 / s
    else:   # relative errors (laser power noise), floored at 0.1 % of the largest signal
        if np.max(np.abs(y)) <= 0:
            raise ValueError("crosstalk: all signals are zero; check the detector")
        w = 1.0 / np.maximum(np.abs(y), 1e-3 * np.max(np.abs(y)))
    best = None
    for s0 in (0.1, 0.4, 0.8, 1.5, 3.0):
        base = law(p, 1.0, s0, 0.0)
        sc = float(np.sum(base * y) / np.sum(base * base))
        params = model.make_params(scale=max(sc, 1e-12), sigma=s0, offset=0.0)
        params["sigma"].set(min=0.0, max=50.0)
        params["scale"].set(min=0.0)
        if not background:
            params["offset"].set(value=0.0, vary=False)
        r = model.fit(y, params, period=p, weights=w, scale_covar=stderr is None)
        if best is None or r.chisqr < best.chisqr:
            best = r
    sig, sig_se = best.params["sigma"].value, _param_se(best, "sigma")
    return Fit(name="slm.crosstalk", model="gaussian-blur",
               quantities={"crosstalk_px": Quantity(sig, sig_se, "px"),
                           "scale": Quantity(best.params["scale"].value, _param_se(best, "scale"), "data units")},
               x=p, y=y, y_fit=best.best_fit,
               info={"observable": observable, "kernel": kernel, "redchi": float(best.redchi)})


# ----------------------------------------------------------------------------- assembly
def combine_slm(response: Fit, *, illumination: Fit | None = None, crosstalk: Fit | None = None,
                regions: Mapping[str, Fit] | None = None) -> Fit:
    """One ``Fit(name='slm')`` from the response fit and the optional illumination, crosstalk
    and per-region fits.

    Quantities ``phase_range_rad``, ``gamma``, ``amplitude_max`` (ranges below 2 pi; from
    ``response``), ``illumination_waist``
    (with ``illumination_x0``, ``illumination_y0``) and ``crosstalk_px`` when given; arrays of
    the response plus ``illumination_map``, and per region ``region_phase_response_rad`` /
    ``region_inverse_lut`` (n_regions, 2**bits) with the names in ``info['regions']``.
    """
    q = {k: response.quantities[k] for k in ("phase_range_rad", "gamma")}
    if "amplitude_max" in response.quantities:
        # from the final range (a procedure may have widened its error after the fit)
        q["amplitude_max"] = amplitude_max_quantity(q["phase_range_rad"])
    arrays = dict(response.arrays)
    info = dict(response.info)
    if illumination is not None:
        q["illumination_waist"] = illumination.quantities["waist"]
        q["illumination_x0"] = illumination.quantities["x0"]
        q["illumination_y0"] = illumination.quantities["y0"]
        arrays["illumination_map"] = illumination.arrays["illumination_map"]
    if crosstalk is not None:
        q["crosstalk_px"] = crosstalk.quantities["crosstalk_px"]
    if regions:
        names = list(regions)
        arrays["region_phase_response_rad"] = np.stack([regions[n].arrays["phase_response_rad"] for n in names])
        arrays["region_inverse_lut"] = np.stack([regions[n].arrays["inverse_lut"] for n in names])
        info["regions"] = names
        info["region_phase_range_rad"] = {n: regions[n].quantities["phase_range_rad"].as_json() for n in names}
    return Fit(name="slm", model=response.model, quantities=q, arrays=arrays,
               x=response.x, y=response.y, y_fit=response.y_fit, info=info)


# ============================================================================ amplitude transfer
def transfer_table(fit) -> tuple[np.ndarray, np.ndarray] | None:
    """The panel's amplitude transfer staircase from an SLM fit, scaled to +-1 at full amplitude.

    ``fit.arrays['amplitude_transfer_edges']`` (m,) and ``['amplitude_transfer']`` (m + 1,)
    hold the encoder's steps and the realised amplitude fraction of each; dividing by the half
    span leaves what varies from value to value (LUT rounding, response residuals) and keeps
    the overall scale (fringing loss) in the MVM gains.  Returns ``(edges, values)``, or None
    when the fit has no table (older files).
    """
    if fit is None or "amplitude_transfer" not in fit.arrays or "amplitude_transfer_edges" not in fit.arrays:
        return None
    v = np.asarray(fit.arrays["amplitude_transfer"], dtype=float)
    e = np.asarray(fit.arrays["amplitude_transfer_edges"], dtype=float)
    if (v.ndim != 1 or e.ndim != 1 or v.size != e.size + 1 or v.size < 2 or not np.all(np.isfinite(v))
            or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0)):
        raise ValueError(f"calibration '{fit.name}.amplitude_transfer' is not a valid staircase (m increasing "
                         f"edges, m + 1 finite values); re-run 'optwin calibrate --only slm'")
    half_span = 0.5 * (v[-1] - v[0])
    if not half_span > 0:
        raise ValueError(f"calibration '{fit.name}.amplitude_transfer' is not increasing; re-run the SLM calibration")
    return e, v / half_span


def realise_amplitudes(table, amps) -> np.ndarray:
    """Realised amplitude fractions for programmed ones (``table = (edges, values)``; clipped to +-1)."""
    a = np.clip(np.asarray(amps, dtype=float), -1.0, 1.0)
    if table is None:
        return a
    edges, values = table
    return values[np.searchsorted(edges, a, side="right")]
