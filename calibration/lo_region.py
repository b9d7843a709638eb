"""The homodyne LO as a region of a phase panel (a bench without an LO phase stepper).

Where ``lo`` is a region of a phase panel (``region_of`` in the bench file), channel c's LO
beam reflects off column block c of the region and the camera sees its zero order: a
uniform block at level g gives the LO phase ``phi(g) - phi(0)`` of the panel's phase
response, so an LO phase needs the panel's calibrated response, not ``2 pi g / 2**bits``.

Which response (:func:`lo_phase_table`), best first:

1. the SLM fit of a phase SLM on the same panel (``slm`` for slm1, else ``slm.slm2``, else
   ``slm.probe_input``): interferometric, the most precise;
2. ``camera.lo_phase``, measured by the camera part before anything else needs the LO
   (:func:`measure_lo_phase`);
3. none: the caller falls back to the linear ``2 pi g / 2**bits`` law.

Calibration order.  registration -> readout -> slm all step the LO, and the slm part needs
accurate LO phases to measure the response the LO itself follows.  The camera part (first)
therefore measures the LO region's response with intensities only:
:func:`measure_lo_phase` shows, in every channel block, a checkerboard of level 0 and level g
(the rest of the bench blanked: input DMD off, zero-field weight frames).  The block's zero
order is ``L (1 + exp(i phi(g))) / 2``, so the power each camera collects is
``C + R cos(phi(g) - psi)`` (psi: a small offset from interference with the stray light left
on the camera).  :func:`fit_lo_phase` fits ``phi`` (monotone PCHIP through knots, ``phi(0) =
0``) and per-camera ``C, R, psi`` to all levels of all cameras at once.  The slm part then
measures the panel interferometrically with these LO phases, and every later step uses that.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.optimize import least_squares

from calibration.quantities import Fit, Quantity

__all__ = ["LO_FIT_NAME", "LO_SLM_FITS", "lo_phase_table", "lo_panel_slm", "checker_frame", "fit_lo_phase",
           "measure_lo_phase"]

#: the camera part's fit of the LO region's phase steps
LO_FIT_NAME = "camera.lo_phase"
#: phase SLMs whose fit an LO region on the same panel uses, in order of preference
LO_SLM_FITS = (("slm1", "slm"), ("slm2", "slm.slm2"), ("probe_input", "slm.probe_input"))


def lo_panel_slm(bench) -> str | None:
    """The phase SLM whose response an LO region follows (slm1 first), or None.

    None also when ``lo`` is a device of its own (a phase stepper) or its panel holds no
    phase SLM.
    """
    region_of = getattr(bench, "region_of", None)
    if region_of is None or region_of("lo") is None:
        return None
    mates = bench.sharing("lo")
    return next((s for s, _ in LO_SLM_FITS if s in mates), None)


def lo_phase_table(bench, fits: dict) -> np.ndarray | None:
    """LO phase (rad, relative to level 0) of every level of an LO panel region, or None.

    Parameters
    ----------
    bench : the opened :class:`hwio.bench.Bench`.
    fits : the calibration fits known so far (name -> Fit).

    Returns
    -------
    (2**bit_depth,) non-decreasing phases with table[0] = 0, from the panel's SLM fit when
    there is one, else from ``camera.lo_phase``; None for an LO stepper or before either fit.
    """
    region_of = getattr(bench, "region_of", None)
    if region_of is None or region_of("lo") is None:
        return None
    n = 2 ** bench.slms["lo"].bit_depth
    mates = bench.sharing("lo")
    names = [fit for slm, fit in LO_SLM_FITS if slm in mates] + [LO_FIT_NAME]
    for name in names:
        fit = fits.get(name)
        if fit is None or "phase_response_rad" not in fit.arrays:
            continue
        table = np.asarray(fit.arrays["phase_response_rad"], dtype=float)
        if table.size == n and np.all(np.isfinite(table)):
            table = np.maximum.accumulate(table)
            return table - table[0]
    return None


def checker_frame(shape, n_channels: int, level: int, dtype) -> np.ndarray:
    """LO frame with a 0 / ``level`` checkerboard in every channel block (zero order (1 + e^{i phi}) / 2)."""
    rr, cc = np.indices(tuple(shape))
    return np.where((rr + cc) % 2 == 1, int(level), 0).astype(dtype)


def fit_lo_phase(levels, powers, n_knots: int = 12, fit_psi: bool = False) -> dict:
    """Fit ``P_c(g) = C_c + R_c cos(phi(g) - psi_c)`` to LO powers of a checkerboard sweep.

    Parameters
    ----------
    levels : (n,) increasing levels g, the first 0.
    powers : (n, n_cameras) summed camera signal (ADU; any constant offset) per level.
    n_knots : knots of the monotone phase curve (PCHIP through cumulative positive steps).
    fit_psi : also fit the per-camera offsets psi.  Off by default: near level 0 the fringe
        is at its maximum, so a common psi is degenerate with a phase step right after level
        0 (intensities cannot tell them apart); with psi fixed at 0 the stray light's
        interference (|E| / L of a few %, random over spots) biases the phases by less.

    Returns
    -------
    dict with ``phase_rad`` (n,) at the levels (phase_rad[0] = 0), ``phase_stderr_rad`` (n,)
    (from the fit's covariance), per camera ``offset``, ``amplitude``, ``psi_rad``, the
    relative ``residual_rms`` and the knot positions.
    """
    g = np.asarray(levels, dtype=float)
    p = np.asarray(powers, dtype=float)
    if p.ndim == 1:
        p = p[:, None]
    n, m = p.shape
    if n < 2 * n_knots:
        raise ValueError(f"an LO phase fit needs at least {2 * n_knots} levels, got {n}")
    # normalised curves; the first minimum of their mean is about phi = pi
    lo_, hi_ = p.min(axis=0), p.max(axis=0)
    u = ((p - lo_) / np.where(hi_ > lo_, hi_ - lo_, 1.0)).mean(axis=1)
    smooth = np.convolve(np.pad(u, 4, mode="edge"), np.ones(9) / 9, mode="valid")
    g_pi = max(g[int(np.argmin(smooth))], g[1])
    knots = np.linspace(g[0], g[-1], n_knots)
    steps0 = np.full(n_knots - 1, math.pi / g_pi * (knots[1] - knots[0]))

    def phase(steps):
        y = np.r_[0.0, np.cumsum(np.abs(steps))]
        return PchipInterpolator(knots, y)(g)

    c0 = p.mean(axis=0)
    r0 = 0.5 * (hi_ - lo_)
    x0 = np.r_[steps0, c0 / r0, np.ones(m), np.zeros(m if fit_psi else 0)]

    def resid(x):
        ph = phase(x[:n_knots - 1])
        c, r = x[n_knots - 1:n_knots - 1 + m], x[n_knots - 1 + m:n_knots - 1 + 2 * m]
        psi = x[n_knots - 1 + 2 * m:] if fit_psi else np.zeros(m)
        model = c[None, :] + r[None, :] * np.cos(ph[:, None] - psi[None, :])
        return ((p / r0[None, :]) - model).ravel()

    sol = least_squares(resid, x0, method="lm", x_scale="jac")
    ph = phase(sol.x[:n_knots - 1])
    res = sol.fun
    dof = max(res.size - sol.x.size, 1)
    s2 = float(res @ res) / dof
    # phase standard error: propagate the covariance of the knot steps through the curve
    try:
        cov = np.linalg.inv(sol.jac.T @ sol.jac) * s2
        eps = 1e-6
        jac_ph = np.empty((n, n_knots - 1))
        for k in range(n_knots - 1):
            d = sol.x[:n_knots - 1].copy()
            d[k] += eps
            jac_ph[:, k] = (phase(d) - ph) / eps
        cs = cov[:n_knots - 1, :n_knots - 1]
        ph_se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", jac_ph, cs, jac_ph), 0.0))
    except np.linalg.LinAlgError:
        ph_se = np.full(n, np.nan)
    c = sol.x[n_knots - 1:n_knots - 1 + m] * r0
    r = sol.x[n_knots - 1 + m:n_knots - 1 + 2 * m] * r0
    psi = sol.x[n_knots - 1 + 2 * m:] if fit_psi else np.zeros(m)
    return {"phase_rad": ph, "phase_stderr_rad": ph_se, "offset": c, "amplitude": r, "psi_rad": psi,
            "residual_rms": math.sqrt(s2), "knots": knots}


def measure_lo_phase(ctx, n_avg: int = 2, level_step: int = 1) -> Fit:
    """Measure the phase steps of an LO panel region with intensities only (no registration needed).

    Parameters
    ----------
    ctx : :class:`~calibration.procedures.context.CalContext` of a bench whose ``lo`` is a
        region of a phase panel.
    n_avg : frames per level and camera.
    level_step : level spacing of the sweep (1: every level).

    Returns
    -------
    Fit ``camera.lo_phase`` (model 'lo-checkerboard'): array ``phase_response_rad`` (one phase
    per level, relative to level 0), ``phase_stderr_rad``; quantities ``phase_range_rad`` and
    ``residual_rms`` (relative to each camera's fringe amplitude); the LO cameras and their
    offsets ``psi_rad`` in ``info``.  The panel is blanked (input off, zero fields) while it runs.
    """
    bench = ctx.bench
    lo = bench.slms["lo"]
    channels = bench.lo_channels
    cams = [c for c in channels if c in bench.cameras]
    if not cams:
        raise ValueError(f"bench {bench.name!r}: lo has no camera channel; nothing to measure its phase with")
    levels = np.arange(0, lo.max_level + 1, int(level_step))
    ctx.blank_all()
    sums = np.empty((levels.size, len(cams)))
    for i, g in enumerate(levels):
        ctx.show("lo", checker_frame(lo.shape, len(channels), int(g), lo.level_dtype))
        for j, c in enumerate(cams):
            stack = ctx.grab_stack(c, n_avg)
            sums[i, j] = float(stack.sum(dtype=np.float64)) / n_avg
    for g, row in zip(levels, sums):
        ctx.record("camera.lo_phase", row, units="adu (frame sum per LO camera)", level=int(g))
    res = fit_lo_phase(levels, sums)
    table = np.interp(np.arange(lo.max_level + 1), levels, res["phase_rad"])
    table_se = np.interp(np.arange(lo.max_level + 1), levels, res["phase_stderr_rad"])
    ctx.show("lo", np.zeros(lo.shape, dtype=lo.level_dtype))
    return Fit(name=LO_FIT_NAME, model="lo-checkerboard",
               quantities={"phase_range_rad": Quantity(float(table[-1]), float(table_se[-1]), "rad"),
                           "residual_rms": Quantity(float(res["residual_rms"]), float("nan"), "")},
               arrays={"phase_response_rad": table, "phase_stderr_rad": table_se, "levels": levels.astype(float),
                       "frame_sums_adu": sums},
               x=levels.astype(float), y=res["phase_rad"], y_fit=res["phase_rad"],
               info={"cameras": cams, "psi_rad": [float(v) for v in res["psi_rad"]],
                     "method": "0/g checkerboard in every LO block, zero-order power C + R cos(phi - psi)",
                     "frames_per_level": int(n_avg)})
