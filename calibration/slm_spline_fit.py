"""Monotone spline model of an SLM phase response (pure functions on numpy arrays).

The phase ``phi(L)`` of gray level ``L`` is a clamped cubic B-spline whose coefficients are
the cumulative sums of non-negative increments, so the curve never decreases and
``phi(0) = 0`` (:class:`MonotoneSpline`).  :func:`fit_monotone_spline` fits it by penalised
least squares to what a measurement sees of the phase (:func:`observe`: the first or zero
diffraction order ``sin^2``/``cos^2(phi / 2)`` of a binary grating, or the phase itself), and
:func:`unfold_walk` / :func:`unfold_guided` give starting phases from folded ``sin^2`` data.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.interpolate import BSpline
from scipy.optimize import least_squares

__all__ = ["TWO_PI", "observe", "MonotoneSpline", "noise_from_differences", "fit_monotone_spline",
           "unfold_walk", "unfold_guided"]

TWO_PI = 2.0 * math.pi


def observe(phi, kind: str):
    """What a measurement of kind ``kind`` sees of phase ``phi`` (rad): 'first' ``sin^2(phi/2)``,
    'zero' ``cos^2(phi/2)`` (relative power of a binary grating's order), 'phase' the phase."""
    if kind == "first":
        return np.sin(0.5 * phi) ** 2
    if kind == "zero":
        return np.cos(0.5 * phi) ** 2
    return phi  # 'phase'


class MonotoneSpline:
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



def noise_from_differences(levels, y):
    """Noise sigma from second differences of neighbouring points (curvature negligible when dense)."""
    if y.size < 5:
        return float(np.std(y)) or 1.0
    d2 = y[1:-1] - 0.5 * (y[:-2] + y[2:])
    s = float(np.sqrt(np.mean(d2 ** 2) / 1.5))
    return s if s > 0 else max(float(np.std(y)) * 1e-3, 1e-12)


def fit_monotone_spline(levels, y, w, kind, spl: MonotoneSpline, phi_start, lin0, fixed, tau, d_floor=None,
                        max_nfev=500) -> dict:
    """Penalised least-squares fit of ``lin[0] * observe(phi(levels), kind) + lin[1]`` to ``y``.

    The residuals are the weighted data residuals plus ``(d_{k+1} - d_k) / tau`` (second
    differences of the spline coefficients, a P-spline penalty), with the increments ``d >= 0``.
    Long only because of this docstring (one line per argument and result); the code is about
    55 lines: start values, the residuals and their Jacobian (closures over the data), the solve.

    Parameters
    ----------
    levels : (n,) gray levels, increasing.
    y : (n,) measured values (data units; rad for kind 'phase').
    w : (n,) weights (1 / standard error, 1 / data units).
    kind : 'first', 'zero' or 'phase' (:func:`observe`).
    spl : the spline basis.
    phi_start : (n,) starting phases at ``levels`` (rad).
    lin0 : starting ``[amplitude, background]`` (data units).
    fixed : ``[amplitude, background]`` held fixed, None where fitted.
    tau : penalty scale (rad).
    d_floor : smallest starting increment (rad); default 5 % of the mean increment.
    max_nfev : evaluation limit of the optimiser.

    Returns
    -------
    dict: ``d`` increments (rad), ``lin`` / ``lin_se`` (amplitude, background and their
    unscaled standard errors), ``chi2`` (data part), ``objective`` (with the penalty), ``x``
    (all parameters), ``cov_d`` (unscaled covariance of ``d``, rad^2), ``cov_scale`` (reduced
    chi-square) and ``n_params``.
    """
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
        r = (lin[0] * observe(phi, kind) + lin[1] - y) * w
        return np.concatenate([r, np.diff(d) / tau])

    def jac(p):
        lin, d = unpack(p)
        phi = m @ d
        obs = observe(phi, kind)
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
    return _spline_solution(res, jac(res.x), y.size, free, lin, d)


def _spline_solution(res, J, n_data: int, free: list, lin, d) -> dict:
    """The solution dict of :func:`fit_monotone_spline` from the optimiser's result ``res`` and
    the Jacobian ``J`` at the solution (covariances unscaled, ``cov_scale`` the reduced chi-square)."""
    n_lin = len(free)
    r = res.fun
    chi2 = float(r[:n_data] @ r[:n_data])
    objective = float(r @ r)
    dof = max(n_data - res.x.size, 1)
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


def unfold_walk(levels, principal, kmax: int = 8, tol_rad: float = 0.3):
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


def unfold_guided(principal, guide):
    """Branch ``2 pi k +- principal`` nearest a guide curve (the power law)."""
    c1 = TWO_PI * np.round((guide - principal) / TWO_PI) + principal
    c2 = TWO_PI * np.round((guide + principal) / TWO_PI) - principal
    return np.where(np.abs(c1 - guide) <= np.abs(c2 - guide), c1, c2)
