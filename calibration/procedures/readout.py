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
centres.  The fits are :mod:`calibration.readout_fit`.
"""
from __future__ import annotations

import math

import numpy as np

from calibration.procedures.context import CalContext
from calibration.quantities import Fit
from calibration.readout_fit import lo_power, lo_relative_stderr, no_lo_fit, readout_fit

__all__ = ["measure_readout"]

_PHASES = (0.0, 0.5 * math.pi, math.pi, 1.5 * math.pi)


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
        rec = _PowerRecord(ctx, [c for c in cams if c in lo_cams], int(n_avg), stream)
        rec.round(rec.cams)
        rounds = {}
        for c in rec.cams:              # a weak LO (short exposure, high gain): more rounds
            p, mean = rec.stacked(c)
            ro = ctx.readout(c)
            l2, _, _, m_se = lo_power(p, mean, ro.centers_px, ro.n_pixels, ctx.roi_radius_px(c), ctx.dark_map(c))
            rel = lo_relative_stderr(l2, m_se)
            rounds[c] = min(math.ceil((rel / target_rel) ** 2), max(int(max_avg) // int(n_avg), 1)) - 1
        for r in range(max(rounds.values(), default=0)):
            rec.round([c for c in rec.cams if rounds[c] > r])
        t_mid = 0.5 * (t_start + float(bench.timeline.now()))
        for c in cams:
            ro = ctx.readout(c)
            radius = ctx.roi_radius_px(c)
            if c not in lo_cams:
                fits.append(no_lo_fit(c, radius, ro.centers_px))
                continue
            p, mean = rec.stacked(c)                                # (4, frames, n_spots)
            fits.append(readout_fit(c, p, mean, ro.centers_px, ro.n_pixels, radius, ctx.dark_map(c),
                                    phases=_PHASES, t_s=t_mid, exposure_s=bench.cameras[c].exposure_s))
    ctx.add(*fits)
    return fits


class _PowerRecord:
    """Spot powers of some cameras at the four LO phases, taken in rounds of ``n_avg`` frames per phase."""

    def __init__(self, ctx: CalContext, cams: list, n_avg: int, stream: str):
        self.ctx, self.cams, self.n_avg, self.stream = ctx, cams, n_avg, stream
        self.powers = {c: [[] for _ in _PHASES] for c in cams}
        self.sums = {c: 0.0 for c in cams}

    def round(self, cams) -> None:
        """One round: at each LO phase, ``n_avg`` frames of every camera in ``cams`` (recorded raw)."""
        ctx = self.ctx
        for i, ph in enumerate(_PHASES):
            ctx.set_lo(ph)
            for c in cams:
                stack = ctx.grab_stack(c, self.n_avg)
                p = ctx.readout(c).power(stack)                   # (n_avg, n_spots)
                self.powers[c][i].append(p)
                self.sums[c] = self.sums[c] + stack.sum(axis=0, dtype=np.float64)
                ctx.record(f"{self.stream}.{c}", p, units="adu (ROI sum)", lo_phase_rad=ph, n_frames=self.n_avg)

    def stacked(self, c: str):
        """(powers (4, frames, n_spots) in ADU, the LO-averaged mean frame in ADU) of camera ``c``."""
        p = np.stack([np.concatenate(rows) for rows in self.powers[c]])
        return p, self.sums[c] / (p.shape[0] * p.shape[1])
