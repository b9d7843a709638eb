"""Phases from interference (pure functions on numpy arrays).

Two ways to read an SLM level's phase from interfering light:

* homodyne spot fields: with the whole panel uniform at level ``g`` every element carries
  ``exp(i phi(g))`` and each spot traces a circle ``E_k(g) = A_k exp(i phi(g)) + B_k`` (B:
  stray light).  :func:`fit_circle` fits the circle of one spot, :func:`circle_phases` gives
  ``phi(g) = arg((E_k(g) - B_k) / (E_k(0) - B_k))`` averaged over the spots, and
  :func:`fit_interferometric_response` fits the phase response to it;
* camera fringes: :func:`fringe_phases` fits the fringe phase of 1-D interference profiles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares, minimize_scalar

from calibration.quantities import Fit, Quantity
from calibration.slm_phase_fit import fit_phase_response
from calibration.slm_spline_fit import TWO_PI

__all__ = ["fit_circle", "circle_phases", "fit_interferometric_response", "FringePhases", "fringe_phases"]


# ----------------------------------------------------------------------------- homodyne circles
def fit_circle(z, return_cov: bool = False):
    """Circle through complex points.

    Algebraic (Kasa) start, then geometric least squares on ``|z - c| - R``.

    Parameters
    ----------
    z : (n >= 3,) complex points (field units).
    return_cov : also return the covariance.

    Returns
    -------
    (centre (complex), radius, radial residuals (n,)[, 3x3 covariance of (centre real,
    centre imag, radius), scaled by the residual variance]), all in the units of ``z``.
    """
    z = np.asarray(z, dtype=complex).ravel()
    if z.size < 3:
        raise ValueError(f"a circle fit needs at least 3 points, got {z.size}")
    a = np.column_stack([2 * z.real, 2 * z.imag, np.ones(z.size)])
    sol = np.linalg.lstsq(a, np.abs(z) ** 2, rcond=None)[0]
    c0 = complex(sol[0], sol[1])
    r0 = math.sqrt(max(sol[2] + abs(c0) ** 2, 1e-300))

    def res(p):
        return np.abs(z - complex(p[0], p[1])) - p[2]

    fit = least_squares(res, [c0.real, c0.imag, r0], method="lm")
    c = complex(fit.x[0], fit.x[1])
    if return_cov:
        dof = max(z.size - 3, 1)
        try:
            cov = np.linalg.inv(fit.jac.T @ fit.jac) * float(fit.fun @ fit.fun) / dof
        except np.linalg.LinAlgError:
            cov = np.full((3, 3), np.nan)
        return c, float(abs(fit.x[2])), fit.fun, cov
    return c, float(abs(fit.x[2])), fit.fun


def circle_phases(fields, levels):
    """Phase vs level from complex spot fields on circles (one circle per spot).

    Parameters
    ----------
    fields : (n_levels, n_spots) complex fields, levels increasing, first = reference level.
    levels : (n_levels,) the levels.

    Returns
    -------
    phase_rad (n_levels,) relative to the first level, stderr_rad (n_levels,), and a dict
    with per-spot centres, radii, phases and residual rms, and ``common_mode_noise_rad``
    (per-level noise shared by all spots, from the curve's second differences; included in
    stderr_rad).
    """
    f = np.asarray(fields, dtype=complex)
    n_lv, n_sp = f.shape
    per = np.empty((n_lv, n_sp))
    sig = np.empty(n_sp)
    radius = np.empty(n_sp)
    centres = np.empty(n_sp, dtype=complex)
    range_var = np.empty(n_sp)
    for k in range(n_sp):
        c, r, resid, cov = fit_circle(f[:, k], return_cov=True)
        ph = np.unwrap(np.angle(f[:, k] - c))
        per[:, k] = ph - ph[0]
        centres[k], radius[k] = c, r
        sig[k] = max(float(np.sqrt(np.mean(resid ** 2))), 1e-12) / r      # phase noise per point (rad)
        # an error of the centre shifts every phase coherently: its share of the last-minus-first phase
        w0, w1 = f[0, k] - c, f[-1, k] - c
        jac = np.array([w1.imag / abs(w1) ** 2 - w0.imag / abs(w0) ** 2,
                        -(w1.real / abs(w1) ** 2 - w0.real / abs(w0) ** 2)])
        range_var[k] = float(jac @ cov[:2, :2] @ jac)
    if np.median(per[-1]) < 0:        # the phase rises with level; flip a mirrored convention
        per = -per
    w = 1.0 / sig ** 2
    phase = per @ w / w.sum()
    # scatter between spots (when there are several) or the propagated noise, whichever is larger
    se_noise = np.full(n_lv, 1.0 / math.sqrt(w.sum()))
    if n_sp > 1:
        chi = ((per - phase[:, None]) ** 2 * w).sum(axis=1) / (n_sp - 1)
        se = se_noise * np.sqrt(np.maximum(chi, 1.0))
    else:
        se = se_noise
    se[0] = se[1] if n_lv > 1 else se[0]
    # noise common to every spot of a level (laser-power jitter between the four LO-phase frames
    # moves all spots' I/Q together) survives the average over spots and is not in the scatter
    # between spots: estimate the total per-level noise from the roughness of the averaged curve
    # (second differences of a smooth response are ~0; robust MAD) and add what is left over
    cm_var = 0.0
    if n_lv >= 8:
        d2 = phase[:-2] - 2.0 * phase[1:-1] + phase[2:]
        total_var = (1.4826 * float(np.median(np.abs(d2 - np.median(d2))))) ** 2 / 6.0
        cm_var = max(total_var - float(np.median(se[1:] ** 2)), 0.0)
        se = np.sqrt(se ** 2 + cm_var)
    wn = w / w.sum()
    centre_se = math.sqrt(float(np.sum(wn ** 2 * range_var)))
    return phase, se, {"centres": centres, "radii": radius, "per_spot_phase_rad": per, "noise_rad": sig,
                       "range_centre_stderr_rad": centre_se, "common_mode_noise_rad": math.sqrt(cm_var)}



def fit_interferometric_response(fields, levels, *, bits: int) -> tuple[Fit, np.ndarray, np.ndarray, dict]:
    """Phase response of a panel from homodyne spot fields of uniform levels.

    :func:`circle_phases` then :func:`calibration.slm_phase_fit.fit_phase_response`; the
    uncertainty of the circle centres, which moves all phases together, is added to the
    range's standard error.

    Parameters
    ----------
    fields : (n_levels, n_spots) complex homodyne fields (field units), levels increasing.
    levels : (n_levels,) the gray levels shown.
    bits : panel bit depth.

    Returns
    -------
    (Fit named 'slm' with ``phase_range_rad`` (rad) and ``gamma`` and their standard errors
    and ``info['range_centre_stderr_rad']``, phases (n_levels,) rad, their standard errors
    (rad), the circle dict of :func:`circle_phases`).
    """
    phase, se, circ = circle_phases(fields, levels)
    interf = fit_phase_response(levels, phase, bits=bits, phase_stderr_rad=se)
    # the circle centres' uncertainty moves all phases together: add its share to the range
    rq = interf.quantities["phase_range_rad"]
    interf.quantities["phase_range_rad"] = Quantity(rq.value, math.hypot(rq.stderr, circ["range_centre_stderr_rad"]),
                                                    rq.units)
    interf.info["range_centre_stderr_rad"] = circ["range_centre_stderr_rad"]
    return interf, phase, se, circ


# ----------------------------------------------------------------------------- camera fringes
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
