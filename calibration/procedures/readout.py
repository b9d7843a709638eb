"""Readout calibration: the local-oscillator amplitude of every spot of every camera.

With the signal blocked (``ctx.blank_all()``: input DMD off, zero-field frames on the
weight panels) each camera's spots hold the LO plus whatever field is left, ``E`` (stray
light, an imperfect zero field before the SLMs are calibrated).  Spot powers at the LO
phases 0, pi/2, pi, 3 pi/2 (``P(t) = L^2 + |E|^2 + 2 L |E| cos(t - phi) + B``, B the
laser-on background light in the ROI) give the LO power exactly, whatever E is:

    M = mean_t P(t) - B = L^2 + |E|^2,   Q = (P_0 - P_pi)^2 + (P_pi/2 - P_3pi/2)^2 = 16 L^2 |E|^2
    L^2 = (M + sqrt(M^2 - Q/4)) / 2          (the root with L >= |E|)

The background ``B`` (light that reaches every pixel while the laser is on; not in the dark
map, which is taken with the laser blocked) is the median per-pixel level, dark-subtracted,
of an annulus around each spot (from 1.5 ROI radii out, 3 px wide, away from every spot), times
the ROI's pixel count.  Powers are the SpotReadout's: dark-subtracted ADU summed over a
circular ROI of ``roi_radius_px`` (3 PSF sigmas from the registration) around the registered
centres.
"""
from __future__ import annotations

import math

import numpy as np

from calibration.procedures.context import CalContext
from calibration.quantities import Fit, Quantity

__all__ = ["measure_readout", "spot_backgrounds"]


def spot_backgrounds(mean_image, centers_px, roi_radius_px: float, dark_adu=0.0, inner_gap_px: float | None = None,
                     width_px: float = 3.0) -> np.ndarray:
    """Median background level per pixel (ADU) in an annulus around every spot.

    The annulus runs from ``roi_radius_px + inner_gap_px`` (default gap: half the ROI radius,
    i.e. 4.5 PSF sigmas out for a 3-sigma ROI, where the spot's own wings are negligible) to
    that plus ``width_px`` and leaves out pixels that close to any spot; with fewer than 8
    such pixels the median of every pixel away from all spots is used.
    """
    if inner_gap_px is None:
        inner_gap_px = 0.5 * roi_radius_px
    img = np.asarray(mean_image, dtype=float) - np.asarray(dark_adu, dtype=float)
    c = np.asarray(centers_px, dtype=float)
    rr, cc = np.indices(img.shape)
    d = np.sqrt((rr[None] - c[:, 0, None, None]) ** 2 + (cc[None] - c[:, 1, None, None]) ** 2)
    r_in = roi_radius_px + inner_gap_px
    away = np.all(d > r_in, axis=0)
    glob = float(np.median(img[away])) if away.any() else 0.0
    out = np.empty(len(c))
    for k in range(len(c)):
        sel = away & (d[k] <= r_in + width_px)
        out[k] = float(np.median(img[sel])) if sel.sum() >= 8 else glob
    return out


def _lo_power(p, mean_image, ro, radius, dark):
    """(L^2, M, background per pixel, stderr of M) per spot from powers (4, n, n_spots) at the four
    LO phases and the LO-averaged mean image."""
    bg_px = spot_backgrounds(mean_image, ro.centers_px, radius, dark)
    pm = p.mean(axis=1)                                     # (4, n_spots)
    m = pm.mean(axis=0) - bg_px * ro.n_pixels
    q = (pm[0] - pm[2]) ** 2 + (pm[1] - pm[3]) ** 2
    l2 = 0.5 * (m + np.sqrt(np.maximum(m ** 2 - q / 4.0, 0.0)))
    # stderr of M from the frame scatter (Q's share is second order when E << L)
    m_se = np.sqrt(p.var(axis=1, ddof=1).sum(axis=0) / (p.shape[1] * p.shape[0] ** 2))
    return l2, m, bg_px, m_se


def measure_readout(ctx: CalContext, cameras=None, *, n_avg: int = 16, target_rel: float = 1e-3,
                    max_avg: int = 1024, stream: str = "readout") -> list[Fit]:
    """LO amplitude per spot for every camera with an LO channel.

    Parameters
    ----------
    ctx : calibration context with the 'registration' fit (and camera dark maps).
    cameras : camera names (default: every camera of the bench).
    n_avg : frames per LO phase (one round).
    target_rel : LO amplitude precision to reach: a camera whose LO is weak (a short exposure,
        a high gain) gets more rounds of ``n_avg`` frames until the standard error of its
        worst spot is ``target_rel`` of the amplitude, at most ``max_avg`` frames per phase.
    max_avg : see ``target_rel``.
    stream : prefix of the raw streams (``<stream>.<cam>``; a second measurement in the same run,
        e.g. at the operating exposure chosen later, records under another prefix).

    Returns
    -------
    list of Fit('readout.<cam>'), model 'lo-4phase': quantities ``roi_radius_px``,
    ``background_adu_per_px`` (mean laser-on background per pixel), ``residual_field_ratio``
    (largest |E| / |LO| left with the signal blocked); arrays ``lo_amplitude`` (n_spots,) in
    sqrt(readout power) units, ``lo_amplitude_stderr``, ``background_power`` (n_spots,) (the
    background's share of each ROI sum), ``centers_px`` (the ROI centres used); ``info`` with
    the exposure (``exposure_s``) and the bench-clock time (``t_s``) it was measured at.
    """
    bench = ctx.bench
    ctx.need("registration", "registration")
    cams = list(bench.cameras) if cameras is None else list(cameras)
    lo_cams = set(ctx.lo_cameras())
    fits = []
    with ctx.timed("readout"):
        ctx.blank_all()
        t_start = float(bench.timeline.now())
        measured = [c for c in cams if c in lo_cams]
        phases = (0.0, 0.5 * math.pi, math.pi, 1.5 * math.pi)
        powers = {c: [[] for _ in phases] for c in measured}
        sums = {c: 0.0 for c in measured}

        def one_round(round_cams):
            for i, ph in enumerate(phases):
                ctx.set_lo(ph)
                for c in round_cams:
                    stack = ctx.grab_stack(c, n_avg)
                    p = ctx.readout(c).power(stack)                   # (n_avg, n_spots)
                    powers[c][i].append(p)
                    sums[c] = sums[c] + stack.sum(axis=0, dtype=np.float64)
                    ctx.record(f"{stream}.{c}", p, units="adu (ROI sum)", lo_phase_rad=ph, n_frames=int(n_avg))

        def stacked(c):
            p = np.stack([np.concatenate(rows) for rows in powers[c]])     # (4, frames, n_spots)
            return p, sums[c] / (p.shape[0] * p.shape[1])

        one_round(measured)
        rounds = {}
        for c in measured:              # a weak LO (short exposure, high gain): more rounds
            p, mean = stacked(c)
            l2, _, _, m_se = _lo_power(p, mean, ctx.readout(c), ctx.roi_radius_px(c), ctx.dark_map(c))
            rel = float(np.max(0.5 * m_se / np.maximum(l2, 1e-300)))
            rounds[c] = min(math.ceil((rel / target_rel) ** 2), max(int(max_avg) // int(n_avg), 1)) - 1
        for r in range(max(rounds.values(), default=0)):
            one_round([c for c in measured if rounds[c] > r])
        t_mid = 0.5 * (t_start + float(bench.timeline.now()))
        for c in cams:
            ro = ctx.readout(c)
            radius = ctx.roi_radius_px(c)
            if c not in lo_cams:
                fits.append(Fit(name=f"readout.{c}", model="no-lo",
                                quantities={"roi_radius_px": Quantity(radius, float("nan"), "px")},
                                arrays={"centers_px": ro.centers_px},
                                info={"warnings": [f"{c} has no LO channel: no homodyne readout"]}))
                continue
            p, mean = stacked(c)                                    # (4, frames, n_spots)
            l2, m, bg_px, m_se = _lo_power(p, mean, ro, radius, ctx.dark_map(c))
            bg = bg_px * ro.n_pixels
            if np.any(~(l2 > 0)):
                bad = np.flatnonzero(~(l2 > 0)).tolist()
                raise ValueError(f"readout: {c} spot(s) {bad} get no LO light; check the LO path and the registration")
            lo = np.sqrt(l2)
            lo_se = 0.5 * m_se / lo
            e_ratio = np.sqrt(np.maximum(m - l2, 0.0) / l2)
            bg_se = float(bg_px.std(ddof=1) / math.sqrt(len(bg_px))) if len(bg_px) > 1 else float("nan")
            q_ = {"roi_radius_px": Quantity(radius, float("nan"), "px"),
                  "background_adu_per_px": Quantity(float(bg_px.mean()), bg_se, "adu"),
                  "residual_field_ratio": Quantity(float(e_ratio.max()), float("nan"), "")}
            fit = Fit(name=f"readout.{c}", model="lo-4phase", quantities=q_,
                      arrays={"lo_amplitude": lo, "lo_amplitude_stderr": lo_se, "background_power": bg,
                              "centers_px": ro.centers_px},
                      x=np.arange(len(lo), dtype=float), y=lo, y_fit=np.full(len(lo), float(lo.mean())),
                      info={"units": "sqrt(dark-subtracted ADU summed over the ROI)",
                            "frames_per_phase": int(p.shape[1]),
                            "t_s": t_mid,
                            "lo_phases_rad": list(phases), "exposure_s": bench.cameras[c].exposure_s,
                            "homodyne": "h = (P_0 - P_pi) / (4 lo_amplitude), LO levels 0 and 2**(bits-1)"})
            fits.append(fit)
    ctx.add(*fits)
    return fits
