"""Readout fits: the LO power of every spot from the spot powers at four LO phases.

With the signal blocked each spot holds the LO plus whatever field is left, ``E``.  Spot
powers at the LO phases 0, pi/2, pi, 3 pi/2 (``P(t) = L^2 + |E|^2 + 2 L |E| cos(t - phi) + B``,
B the laser-on background light in the ROI) give the LO power exactly, whatever E is:

    M = mean_t P(t) - B = L^2 + |E|^2,   Q = (P_0 - P_pi)^2 + (P_pi/2 - P_3pi/2)^2 = 16 L^2 |E|^2
    L^2 = (M + sqrt(M^2 - Q/4)) / 2          (the root with L >= |E|)

The background ``B`` is the median per-pixel level, dark-subtracted, of an annulus around
each spot (:func:`spot_backgrounds`), times the ROI's pixel count.  The frames are taken by
:func:`calibration.procedures.readout.measure_readout`.
"""
from __future__ import annotations

import math

import numpy as np

from calibration.quantities import Fit, Quantity

__all__ = ["spot_backgrounds", "lo_power", "lo_relative_stderr", "readout_fit", "no_lo_fit"]


def spot_backgrounds(mean_image, centers_px, roi_radius_px: float, dark_adu=0.0, inner_gap_px: float | None = None,
                     width_px: float = 3.0) -> np.ndarray:
    """Median background level per pixel (ADU) in an annulus around every spot.

    The annulus runs from ``roi_radius_px + inner_gap_px`` (default gap: half the ROI radius,
    i.e. 4.5 PSF sigmas out for a 3-sigma ROI, where the spot's own wings are negligible) to
    that plus ``width_px`` and leaves out pixels that close to any spot; with fewer than 8
    such pixels the median of every pixel away from all spots is used.

    Parameters
    ----------
    mean_image : the mean frame (ADU).
    centers_px : (n_spots, 2) spot centres (row, col) px.
    roi_radius_px : ROI radius (px).
    dark_adu : dark map (ADU) or a scalar, subtracted first.
    inner_gap_px, width_px : gap between the ROI and the annulus, and its width (px).

    Returns
    -------
    ndarray (n_spots,) : background per pixel (ADU).
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


def lo_power(p, mean_image, centers_px, n_pixels, roi_radius_px: float, dark_adu):
    """LO power per spot from the spot powers at the four LO phases.

    Parameters
    ----------
    p : (4, n_frames, n_spots) ROI sums (dark-subtracted ADU) at the LO phases 0, pi/2, pi, 3 pi/2.
    mean_image : the LO-averaged mean frame (ADU).
    centers_px : (n_spots, 2) ROI centres (row, col) px.
    n_pixels : pixels per ROI.
    roi_radius_px : ROI radius (px).
    dark_adu : the camera's dark map (ADU) or a scalar.

    Returns
    -------
    (l2, m, bg_px, m_se) : per spot the LO power L^2 (ADU), M = L^2 + |E|^2 (ADU), the
        background per pixel (ADU) and the standard error of M (ADU).
    """
    bg_px = spot_backgrounds(mean_image, centers_px, roi_radius_px, dark_adu)
    pm = p.mean(axis=1)                                     # (4, n_spots)
    m = pm.mean(axis=0) - bg_px * n_pixels
    q = (pm[0] - pm[2]) ** 2 + (pm[1] - pm[3]) ** 2
    l2 = 0.5 * (m + np.sqrt(np.maximum(m ** 2 - q / 4.0, 0.0)))
    # stderr of M from the frame scatter (Q's share is second order when E << L)
    m_se = np.sqrt(p.var(axis=1, ddof=1).sum(axis=0) / (p.shape[1] * p.shape[0] ** 2))
    return l2, m, bg_px, m_se


def lo_relative_stderr(l2, m_se) -> float:
    """Largest relative standard error of the LO amplitude over the spots (sigma_L / L = sigma_M / (2 L^2)).

    Parameters
    ----------
    l2, m_se : LO power and the standard error of M per spot (ADU), from :func:`lo_power`.

    Returns
    -------
    float : the largest sigma_L / L.
    """
    return float(np.max(0.5 * m_se / np.maximum(l2, 1e-300)))


def readout_fit(cam: str, p, mean_image, centers_px, n_pixels, roi_radius_px: float, dark_adu, *,
                phases, t_s: float, exposure_s: float) -> Fit:
    """The ``readout.<cam>`` fit (model 'lo-4phase') of one camera's spot powers.

    Parameters
    ----------
    cam : camera name.
    p, mean_image, centers_px, n_pixels, roi_radius_px, dark_adu : as for :func:`lo_power`.
    phases : the LO phases (rad) of the first axis of ``p``.
    t_s : bench-clock time of the measurement (s).
    exposure_s : the camera's exposure (s).

    Returns
    -------
    Fit : quantities ``roi_radius_px``, ``background_adu_per_px``, ``residual_field_ratio``;
        arrays ``lo_amplitude`` (sqrt ADU), ``lo_amplitude_stderr``, ``background_power`` (ADU),
        ``centers_px``.  ValueError when a spot gets no LO light.
    """
    l2, m, bg_px, m_se = lo_power(p, mean_image, centers_px, n_pixels, roi_radius_px, dark_adu)
    bg = bg_px * n_pixels
    if np.any(~(l2 > 0)):
        bad = np.flatnonzero(~(l2 > 0)).tolist()
        raise ValueError(f"readout: {cam} spot(s) {bad} get no LO light; check the LO path and the registration")
    lo = np.sqrt(l2)
    lo_se = 0.5 * m_se / lo
    e_ratio = np.sqrt(np.maximum(m - l2, 0.0) / l2)
    bg_se = float(bg_px.std(ddof=1) / math.sqrt(len(bg_px))) if len(bg_px) > 1 else float("nan")
    q_ = {"roi_radius_px": Quantity(roi_radius_px, float("nan"), "px"),
          "background_adu_per_px": Quantity(float(bg_px.mean()), bg_se, "adu"),
          "residual_field_ratio": Quantity(float(e_ratio.max()), float("nan"), "")}
    return Fit(name=f"readout.{cam}", model="lo-4phase", quantities=q_,
               arrays={"lo_amplitude": lo, "lo_amplitude_stderr": lo_se, "background_power": bg,
                       "centers_px": centers_px},
               x=np.arange(len(lo), dtype=float), y=lo, y_fit=np.full(len(lo), float(lo.mean())),
               info={"units": "sqrt(dark-subtracted ADU summed over the ROI)",
                     "frames_per_phase": int(p.shape[1]),
                     "t_s": t_s,
                     "lo_phases_rad": list(phases), "exposure_s": exposure_s,
                     "homodyne": "h = (P_0 - P_pi) / (4 lo_amplitude), LO levels 0 and 2**(bits-1)"})


def no_lo_fit(cam: str, roi_radius_px: float, centers_px) -> Fit:
    """The ``readout.<cam>`` fit (model 'no-lo') of a camera without an LO channel: its ROIs only.

    Parameters
    ----------
    cam : camera name.
    roi_radius_px : ROI radius (px).
    centers_px : (n_spots, 2) ROI centres (px).

    Returns
    -------
    Fit
    """
    return Fit(name=f"readout.{cam}", model="no-lo",
               quantities={"roi_radius_px": Quantity(roi_radius_px, float("nan"), "px")},
               arrays={"centers_px": centers_px},
               info={"warnings": [f"{cam} has no LO channel: no homodyne readout"]})
