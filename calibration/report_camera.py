"""EMVA 1288 figure of one camera for the calibration report.

:func:`plot_camera` draws, on one page: the photon-transfer curve with its residuals, the
signal-to-noise ratio, the linearity and dark signal against exposure time (these two need the
raw frames), the DSNU/PRNU spectrograms, the dark-offset and response maps and the defect
pixels.  Each panel is drawn by a helper of its own; points left out of the fit are drawn
distinctly from those that entered it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from calibration import report_plots
from calibration.fit_statistics import camera_in_fit
from calibration.quantities import Fit
from calibration.report_plots import label_axes, plot_fit, pyplot

__all__ = ["plot_camera"]

#: quantities the EMVA figure needs; a camera fit without them gets the generic figure
_NEEDED = {"gain_adu_per_e", "read_noise_e", "saturation_e", "dark_offset_adu", "dark_noise_adu"}


class _Curve(NamedTuple):
    """The photon-transfer points of a camera fit, as the panels use them."""

    x: np.ndarray        #: mean signal mu_y - mu_dark per point (DN)
    v: np.ndarray        #: temporal variance per point (DN^2)
    vf: np.ndarray       #: fitted variance per point (DN^2)
    mask: np.ndarray     #: points that entered the photon-transfer fit
    sat: np.ndarray      #: the saturation point (variance maximum)
    rank: int            #: index of the saturation point (len(x) when unknown)
    k_gain: float        #: system gain K (DN per electron)


def plot_camera(fit: Fit, pts, path: Path) -> Path | None:
    """The EMVA 1288 figures of one camera (the generic figure for a fit without them).

    Parameters
    ----------
    fit : the camera fit (``camera`` or ``camera.<cam>``).
    pts : per-point statistics recomputed from the raw frames
        (:func:`calibration.fit_statistics.camera_points`), or None: the linearity and
        dark-signal panels then say that the raw file is needed.
    path : PNG file to write.

    Returns
    -------
    Path or None : ``path``, or None when the fit has nothing to draw.
    """
    if fit.x is None or fit.y is None or fit.y_fit is None or not _NEEDED <= set(fit.quantities):
        return plot_fit(fit, path)
    plt = pyplot()
    cam = fit.info.get("camera", fit.name)
    c = _curve(fit)
    fig = plt.figure(figsize=(14, 13))
    gs = fig.add_gridspec(4, 3, height_ratios=[3, 1.3, 3, 3], hspace=0.55, wspace=0.32)
    _photon_transfer_panels(fig, gs, c, pts)
    _snr_panel(fig.add_subplot(gs[0:2, 2]), fit, c, pts)
    if pts is not None:
        _linearity_panels(fig, gs, fit, c, pts)
    else:
        ax = fig.add_subplot(gs[0, 1])
        ax.text(0.5, 0.5, "raw frames not available:\nlinearity and dark plots need the raw file",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    _spectrogram_panels(fig, gs, fit)
    _map_panels(fig, gs, fit)
    _defect_panel(fig, gs, fit)
    fig.suptitle(f"{cam}: EMVA 1288 camera characterisation", fontsize=12)
    fig.subplots_adjust(top=0.94, bottom=0.05, left=0.07, right=0.97)
    return report_plots.save_figure(fig, path)


def _curve(fit: Fit) -> _Curve:
    """Photon-transfer points of ``fit``, which of them entered the fit and the saturation point."""
    x, v, vf = np.asarray(fit.x, float), np.asarray(fit.y, float), np.asarray(fit.y_fit, float)
    names = fit.info.get("points", [])
    sat = np.array([n == fit.info.get("saturation_point") for n in names]) \
        if len(names) == len(x) else np.zeros(len(x), bool)
    rank = int(np.argmax(sat)) if sat.any() else len(x)
    return _Curve(x, v, vf, camera_in_fit(fit), sat, rank, fit.quantities["gain_adu_per_e"].value)


def _photon_transfer_panels(fig, gs, c: _Curve, pts) -> None:
    """Variance vs mean signal with the fitted line (top left) and its residuals (below it)."""
    x, v, vf, mask, sat = c.x, c.v, c.vf, c.mask, c.sat
    ax = fig.add_subplot(gs[0, 0])
    ax.plot(x[mask], v[mask], "o", ms=4, color="C0", label="in the fit")
    ax.plot(x[~mask], v[~mask], "o", ms=4, mfc="none", color="0.5", label="left out (non-linear / clipped)")
    if sat.any():
        ax.plot(x[sat], v[sat], "v", ms=8, color="C3", label="saturation (variance maximum)")
    xx = np.linspace(0, x[mask].max() * 1.05, 50)
    ax.plot(xx, c.k_gain * xx + (vf[0] - c.k_gain * x[0]), "-", color="C1",
            label=f"fit K = {c.k_gain:.4g} DN/e-")
    label_axes(ax, "mean signal mu_y - mu_dark (DN)", "temporal variance (DN^2)", "photon transfer")
    ax.legend(fontsize=7)
    rx = fig.add_subplot(gs[1, 0])
    if pts is not None:
        r = (pts["v"][mask] - vf[mask]) / np.maximum(pts["v_se"][mask], 1e-12)
        rx.plot(x[mask], r, "o", ms=3)
        label_axes(rx, "mean signal (DN)", "residual / sigma")
    else:
        rx.plot(x[mask], v[mask] - vf[mask], "o", ms=3)
        label_axes(rx, "mean signal (DN)", "residual (DN^2)")
    rx.axhline(0, color="k", lw=0.6)


def _snr_panel(ax, fit: Fit, c: _Curve, pts) -> None:
    """SNR vs signal in electrons, with the read + shot noise model and the saturation capacity."""
    q, x = fit.quantities, c.x
    mu_e = x / c.k_gain
    var_y = pts["var_y"] if pts is not None else c.v + q["dark_noise_adu"].value ** 2
    below = (np.arange(len(x)) <= c.rank) & (mu_e > 0)
    beyond = (np.arange(len(x)) > c.rank) & (mu_e > 0)
    ax.loglog(mu_e[below], x[below] / np.sqrt(var_y[below]), "o", ms=4, label="measured")
    if beyond.any():
        ax.loglog(mu_e[beyond], x[beyond] / np.sqrt(var_y[beyond]), "o", ms=4, mfc="none", color="0.5",
                  label="past saturation (clipped)")
    ee = np.logspace(0, math.log10(max(mu_e.max(), 10)), 100)
    sd = q["read_noise_e"].value
    ax.loglog(ee, ee / np.sqrt(sd ** 2 + ee + 1 / (12 * c.k_gain ** 2)), "-", label="model: read + shot noise")
    ax.loglog(ee, np.sqrt(ee), ":", color="k", label="shot-noise limit sqrt(mu_e)")
    sat_e = q["saturation_e"].value
    ax.axvline(sat_e, color="C3", lw=0.8, ls="--", label=f"saturation capacity {sat_e:.0f} e-")
    label_axes(ax, "signal mu_e (electrons)", "SNR", "signal-to-noise ratio")
    ax.legend(fontsize=7)


def _linearity_panels(fig, gs, fit: Fit, c: _Curve, pts) -> None:
    """Signal vs exposure time with its line, the deviation from it, and dark signal vs exposure."""
    q, x = fit.quantities, c.x
    t = pts["exposure_s"] * 1e3
    ax = fig.add_subplot(gs[0, 1])
    dev = fit.info.get("linearity_deviation_pct")
    x_sat = x[c.sat][0] if c.sat.any() else x.max()
    lin = (np.arange(len(x)) < c.rank) & (x >= 0.05 * x_sat) & (x <= 0.95 * x_sat)
    ax.plot(t[lin], x[lin], "o", ms=4, label="5-95 % of saturation (fitted)")
    ax.plot(t[~lin], x[~lin], "o", ms=4, mfc="none", color="0.5", label="outside the range")
    if lin.sum() >= 2:
        w = 1.0 / x[lin]
        a = np.column_stack([t[lin], np.ones(lin.sum())])
        coef = np.linalg.lstsq(a * w[:, None], x[lin] * w, rcond=None)[0]
        tt = np.linspace(0, t.max(), 50)
        ax.plot(tt, coef[0] * tt + coef[1], "-", color="C1", label="line (least relative deviation)")
    label_axes(ax, "exposure time (ms)", "mean signal mu_y - mu_dark (DN)", "linearity")
    ax.legend(fontsize=7)
    bx = fig.add_subplot(gs[1, 1])
    if dev is not None and len(dev) == lin.sum():
        bx.plot(t[lin], dev, "o-", ms=3)
    bx.axhline(0, color="k", lw=0.6)
    label_axes(bx, "exposure time (ms)", "deviation (%)")
    bx.set_title(f"linearity error {q['linearity_error_pct'].value:.3g} %", fontsize=8)
    ax = fig.add_subplot(gs[2, 0])
    ax.errorbar(t, pts["mu_d"], yerr=pts["mu_d_se"], fmt="o", ms=3, label="dark mean")
    dc = q.get("dark_current_e_per_s")
    slope = dc.value * c.k_gain / 1e3 if dc is not None else 0.0
    tt = np.linspace(0, t.max(), 50)
    ax.plot(tt, q["dark_offset_adu"].value + slope * tt, "-", color="C1",
            label=f"offset {q['dark_offset_adu'].value:.4g} DN" + (f" + {dc.value:.3g} e-/s" if dc else ""))
    label_axes(ax, "exposure time (ms)", "dark signal mu_dark (DN)", "dark signal vs exposure")
    ax.legend(fontsize=7)


def _spectrogram_panels(fig, gs, fit: Fit) -> None:
    """Horizontal and vertical amplitude spectra of the dark-offset (DSNU) and response (PRNU) maps."""
    for col, (key, title, unit, scale) in enumerate((
            ("offset_map_adu", "DSNU spectrogram (dark offset map)", "DN", 1.0),
            ("prnu_map", "PRNU spectrogram (flat, dark-subtracted)", "%", 100.0)), start=1):
        img = fit.arrays.get(key)
        if img is None:
            continue
        ax = fig.add_subplot(gs[2, col])
        good = (np.asarray(fit.arrays.get("defect_mask", np.zeros(np.shape(img))), int) == 0)
        m = np.where(good, np.asarray(img, float), np.nan)
        m = (m - np.nanmean(m)) * scale
        m = np.nan_to_num(m)
        for axis, lab, ls in ((1, "horizontal (along rows)", "-"), (0, "vertical (along columns)", "--")):
            spec = np.abs(np.fft.rfft(m, axis=axis)) ** 2 / m.shape[axis]
            spec = np.sqrt(spec.mean(axis=1 - axis))
            f = np.fft.rfftfreq(m.shape[axis])
            ax.plot(f[1:], spec[1:], ls, label=lab)
        ax.set_ylim(0, None)
        label_axes(ax, "spatial frequency (cycles/pixel)", f"amplitude ({unit})", title)
        ax.legend(fontsize=7)


def _map_panels(fig, gs, fit: Fit) -> None:
    """Images of the dark-offset map (DN) and of the relative response (response - 100 %)."""
    for col, (key, title, unit, scale, cmap) in enumerate((
            ("offset_map_adu", "dark offset map (DSNU)", "DN", 1.0, "viridis"),
            ("prnu_map", "relative response (PRNU)", "%", 100.0, "RdBu_r"))):
        img = fit.arrays.get(key)
        if img is None:
            continue
        ax = fig.add_subplot(gs[3, col])
        m = np.asarray(img, float) * scale
        if key == "prnu_map":
            m = m - 100.0
            lim = np.nanpercentile(np.abs(m), 99.5)
            im = ax.imshow(m, cmap=cmap, vmin=-lim, vmax=lim)
        else:
            lo, hi = np.nanpercentile(m, [0.5, 99.5])
            im = ax.imshow(m, cmap=cmap, vmin=lo, vmax=hi)
        fig.colorbar(im, ax=ax, fraction=0.046, label=unit if key != "prnu_map" else "response - 100 %")
        label_axes(ax, "column (px)", "row (px)", title)


def _defect_panel(fig, gs, fit: Fit) -> None:
    """The defect-pixel mask (bit 1 hot, bit 2 dead) with every defect circled."""
    mask_img = fit.arrays.get("defect_mask")
    if mask_img is None:
        return
    from matplotlib.colors import ListedColormap
    ax = fig.add_subplot(gs[3, 2])
    dm = np.asarray(mask_img, int)
    ax.imshow(np.where(dm & 1, 1, np.where(dm & 2, 2, 0)), cmap=ListedColormap(["#f4f4f4", "#d62728", "#1f77b4"]),
              vmin=0, vmax=2, interpolation="nearest")
    for code, colour, lab in ((1, "#d62728", "hot"), (2, "#1f77b4", "dead")):
        rr, cc = np.nonzero(dm & code)
        ax.plot(cc, rr, "o", ms=9, mfc="none", color=colour, label=f"{lab}: {len(rr)}")
    ax.legend(fontsize=7, loc="upper right")
    label_axes(ax, "column (px)", "row (px)", "defect pixels")
