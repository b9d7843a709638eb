"""Photon transfer from per-pixel temporal statistics under non-uniform light (pure functions).

Without a flat lamp the cameras are lit by the laser through the bench: a fixed but far from
uniform light pattern, so the EMVA 1288 spatial means (:mod:`calibration.camera_fit`) do not
apply.  :func:`ptc_pairs` reduces one camera's exposure series to per-pixel offsets (the
zero-exposure intercept of each pixel's mean) and (signal, temporal variance) pairs;
:func:`fit_ptc_per_pixel` fits ``var = K s + var_0 + J^2 s^2`` per camera, with the relative
light jitter ``J`` (the laser's, common to every camera) from the frame-to-frame scatter of
the summed signal.
"""
from __future__ import annotations

import math

import numpy as np

from calibration.quantities import Fit, Quantity

__all__ = ["ptc_pairs", "fit_ptc_per_pixel"]

_QUANT_VAR = 1.0 / 12.0        # DN^2, variance of uniform rounding


def ptc_pairs(exposures_s, stacks, max_adu: int) -> dict:
    """Per-pixel offsets and the (signal, temporal variance) pairs of one camera's series.

    Parameters
    ----------
    exposures_s : (n_points,) exposures (s), increasing.
    stacks : n_points stacks (n_frames, rows, cols) of frames (DN) under a fixed, arbitrary
        (non-uniform) light pattern.
    max_adu : largest pixel value of the camera (clipped pixels are left out).

    Returns
    -------
    dict: ``offset`` (rows, cols) zero-exposure intercept per pixel (DN), ``offset_ok`` (pixels
    with >= 3 points for the line), ``sig``/``var`` (n_points, rows, cols) signal (DN above the
    offset) and temporal variance (DN^2), ``good`` (unclipped, lit), ``n_frames``, and the
    saturation signal ``s_sat`` (DN) at the variance maximum with the chunk curve ``s_ch``/``v_ch``.
    """
    t = np.asarray(exposures_s, dtype=float)
    y = np.stack([np.asarray(st, dtype=np.float64) for st in stacks])        # (P, F, R, C)
    n_f = y.shape[1]
    clipped = (y.max(axis=1) >= max_adu) | (y.min(axis=1) <= 0)               # (P, R, C)
    m = y.mean(axis=1)
    # per-pixel line mean(t) = a + b t over the points below half the ADC range
    w = ((m < 0.5 * max_adu) & ~clipped).astype(float)
    tt = t[:, None, None]
    s0, s1, s2 = w.sum(0), (w * tt).sum(0), (w * tt ** 2).sum(0)
    sy, sty = (w * m).sum(0), (w * m * tt).sum(0)
    det = s0 * s2 - s1 ** 2
    ok = (s0 >= 3) & (det > 0)
    a = np.where(ok, (s2 * sy - s1 * sty) / np.where(ok, det, 1.0), m[0])
    sig = m - a[None]
    var = y.var(axis=1, ddof=1)
    good = ~clipped & (sig > 0)
    order = np.argsort(sig[good])
    s_sorted, v_sorted = sig[good][order], var[good][order]
    chunk = 30
    n_ch = s_sorted.size // chunk
    if n_ch < 10:
        raise ValueError(f"photon transfer: only {s_sorted.size} lit pixel readings; the light pattern is too small")
    s_ch = s_sorted[:n_ch * chunk].reshape(n_ch, chunk).mean(axis=1)
    v_ch = v_sorted[:n_ch * chunk].reshape(n_ch, chunk).mean(axis=1)
    v_sm = np.convolve(np.pad(v_ch, 2, mode="edge"), np.ones(5) / 5, mode="valid")
    k_sat = int(np.argmax(v_sm))
    # per frame: the summed signal of the well-lit linear pixels (the light jitter's common mode)
    sums = np.zeros(y.shape[:2])
    for k in range(y.shape[0]):
        sel = good[k] & (sig[k] > 0.02 * max_adu) & (sig[k] < 0.6 * float(s_ch[k_sat]))
        if sel.any():
            sums[k] = (y[k][:, sel] - a[sel]).sum(axis=1)
    return {"offset": a, "offset_ok": ok, "sig": sig, "var": var, "good": good, "n_frames": n_f, "frame_sums": sums,
            "s_sat": float(s_ch[k_sat]), "s_sat_span": float(np.ptp(s_ch[max(k_sat - 2, 0):k_sat + 3])),
            "s_ch": s_ch, "v_ch": v_ch}


def fit_ptc_per_pixel(pairs: list, linear_fraction: float = 0.6) -> list[Fit]:
    """Gain, read noise, offset and saturation of cameras from per-pixel temporal statistics.

    Per camera, the (signal s, variance v) pairs between 2 % and ``linear_fraction`` of its
    saturation signal follow ``v = K s + c + J^2 s^2``, J the relative light jitter per
    exposure (the laser's, the same for every camera).  J^2 comes from the frame-to-frame
    scatter of each point's summed signal S, ``var(S) / S^2 = J^2 + K / S``, over every point
    of every camera (K from a first line over 2 % .. 20 %, where the jitter is small); then a
    weighted straight line ``v - J^2 s^2 = K s + c`` per camera gives the gain K.  The offset
    variance ``var_0`` is the mean of ``v - K s - J^2 s^2`` over the pairs below 0.5 % of
    saturation (dark pixels; an extrapolated intercept would carry the slope's error).

    Parameters
    ----------
    pairs : one :func:`ptc_pairs` dict per camera.
    linear_fraction : upper end of the fit relative to each camera's saturation signal.

    Returns
    -------
    list of Fit 'camera' (model 'ptc-per-pixel'; rename per camera), in the order of ``pairs``:
    quantities ``gain_adu_per_e`` (DN/e-), ``read_noise_e`` (e-), ``dark_offset_adu`` (DN),
    ``dark_noise_adu`` (DN), ``saturation_e`` (e-) with standard errors; arrays
    ``offset_map_adu`` (DN), ``ptc_mean_adu`` / ``ptc_var_adu2`` (binned curve, DN and DN^2).
    """
    # 1. a first gain per camera where the jitter is small against shot noise (2 % .. 20 %)
    k0 = []
    for pr in pairs:
        sx, vy = _lin_pairs(pr, 0.2)
        k0.append(float(_weighted_line(sx, vy, pr["n_frames"])[0][0]))
    # 2. the relative light jitter J^2, common to every camera
    j2 = _jitter_squared(pairs, k0)
    jitter = math.sqrt(j2)
    # 3. per camera: v - J^2 s^2 = K s + c over 2 % .. linear_fraction of saturation
    fits = []
    for pr in pairs:
        sx, vy = _lin_pairs(pr, linear_fraction)
        coef, cov = _weighted_line(sx, vy - j2 * sx ** 2, pr["n_frames"])
        fits.append(_pixel_ptc_fit(pr, coef, cov, j2, jitter))
    return fits


def _weighted_line(sx, vy, nf):
    """Weighted straight line ``vy = K sx + c`` (weights: variance of a sample variance of ``nf``
    frames, iterated with the model's variance); returns (coefficients, covariance scaled by
    the reduced chi-square where that exceeds 1)."""
    a = np.column_stack([sx, np.ones_like(sx)])
    wt = (nf - 1) / (2.0 * np.maximum(vy, 1e-3) ** 2)
    for _ in range(4):                   # reweight with the model's variance (noisy weights bias)
        coef, *_ = np.linalg.lstsq(a * np.sqrt(wt)[:, None], vy * np.sqrt(wt), rcond=None)
        wt = (nf - 1) / (2.0 * np.maximum(a @ coef, 1e-3) ** 2)
    aw = a * np.sqrt(wt)[:, None]
    coef, *_ = np.linalg.lstsq(aw, vy * np.sqrt(wt), rcond=None)
    cov = np.linalg.inv(aw.T @ aw)
    chi2 = float(np.sum(wt * (vy - a @ coef) ** 2)) / max(sx.size - 2, 1)
    return coef, cov * max(chi2, 1.0)


def _lin_pairs(pr, hi):
    """(signal, variance) of the good pairs between 2 % and ``hi`` of the saturation signal."""
    sel = pr["good"] & (pr["sig"] >= 0.02 * pr["s_sat"]) & (pr["sig"] <= hi * pr["s_sat"])
    return pr["sig"][sel], pr["var"][sel]


def _jitter_squared(pairs, gains) -> float:
    """Squared relative light jitter J^2 from the frame-to-frame scatter of each point's summed
    signal S: ``var(S) / S^2 = J^2 + K / S`` (shot noise), weighted over every point of every
    camera (``gains`` K per camera, DN/e-)."""
    est, wts = [], []
    for pr, k in zip(pairs, gains):
        sums = pr["frame_sums"]
        mean = sums.mean(axis=1)
        ok = mean > 0
        rel = sums[ok].var(axis=1, ddof=1) / mean[ok] ** 2 - k / mean[ok]
        est.append(rel)
        wts.append(np.broadcast_to(mean[ok] / k, rel.shape))
    est, wts = np.concatenate(est), np.concatenate(wts)
    j2 = 0.0
    for _ in range(5):
        w = 1.0 / (j2 + 1.0 / wts) ** 2
        j2 = max(float(np.sum(w * est) / np.sum(w)), 0.0)
    return j2


def _pixel_ptc_fit(pr, coef, cov, j2, jitter) -> Fit:
    """The Fit of one camera from its pairs ``pr`` and the PTC line (``coef``, ``cov``)."""
    gain, gain_se = float(coef[0]), float(np.sqrt(cov[0, 0]))
    sig, var, good = pr["sig"], pr["var"], pr["good"]
    dim = good & (sig < 0.005 * pr["s_sat"])
    if dim.sum() >= 50:
        rest = var[dim] - gain * sig[dim] - j2 * sig[dim] ** 2
        var0 = float(rest.mean())
        var0_se = float(math.hypot(rest.std(ddof=1) / math.sqrt(rest.size), gain_se * float(sig[dim].mean())))
    else:
        var0, var0_se = float(coef[1]), float(np.sqrt(cov[1, 1]))
    rn_adu2 = max(var0 - _QUANT_VAR, 1e-12)
    read_noise_e = math.sqrt(rn_adu2) / gain
    read_noise_se = read_noise_e * math.hypot(0.5 * var0_se / rn_adu2, gain_se / gain)
    a_ok = pr["offset"][pr["offset_ok"]]
    off = float(np.median(a_ok))
    off_se = float(1.2533 * a_ok.std() / math.sqrt(max(a_ok.size, 1)))
    s_sat = pr["s_sat"]
    sat_e = s_sat / gain
    quantities = {
        "gain_adu_per_e": Quantity(gain, gain_se, "DN/e-"),
        "read_noise_e": Quantity(read_noise_e, read_noise_se, "e-"),
        "dark_offset_adu": Quantity(off, off_se, "DN"),
        "dark_noise_adu": Quantity(math.sqrt(max(var0, 0.0)), 0.5 * var0_se / math.sqrt(max(var0, 1e-12)), "DN"),
        "saturation_e": Quantity(sat_e, math.hypot(0.5 * pr["s_sat_span"] / gain, sat_e * gain_se / gain), "e-"),
    }
    nb = min(64, pr["s_ch"].size)
    per = pr["s_ch"].size // nb
    sbin = pr["s_ch"][:nb * per].reshape(nb, per).mean(axis=1)
    vbin = pr["v_ch"][:nb * per].reshape(nb, per).mean(axis=1)
    return Fit(name="camera", model="ptc-per-pixel", quantities=quantities,
               arrays={"offset_map_adu": pr["offset"], "ptc_mean_adu": sbin, "ptc_var_adu2": vbin},
               x=sbin, y=vbin, y_fit=gain * sbin + var0 + j2 * sbin ** 2,
               info={"saturation_signal_adu": s_sat,
                     "relative_light_jitter": jitter,
                     "method": "per-pixel temporal photon transfer under laser light (non-uniform)",
                     "not_measured": ["prnu_map", "prnu_pct", "dark_current_e_per_s", "defect_mask"]})
