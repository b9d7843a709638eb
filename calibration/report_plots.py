"""Figures of the calibration report, one function per kind of fit (PNG files).

Every figure has labelled axes with units; residual panels show only the points that entered
a fit.  The camera's EMVA 1288 figure is :func:`calibration.report_camera.plot_camera`;
:func:`plot_fit` is the generic figure for a fit without a figure of its own.  Every
function takes the output ``path`` and returns it, or None when the fit has nothing to draw.
:func:`pyplot`, :func:`save_figure` and :func:`label_axes` are the helpers every figure uses.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from calibration.fit_statistics import registration_models
from calibration.quantities import Fit

__all__ = ["plot_registration", "plot_readout", "plot_slm", "plot_absorber", "plot_mvm", "plot_exposure",
           "plot_fit"]


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` (PNG, 90 dpi), close it and return ``path``."""
    fig.savefig(path, dpi=90)
    pyplot().close(fig)
    return path


def label_axes(ax, x: str, y: str, title: str | None = None):
    """Axis labels (with units) and an optional title of one panel."""
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if title:
        ax.set_title(title, fontsize=10)



def plot_registration(fit: Fit, layout: dict, path: Path) -> Path | None:
    """Measured vs fitted spot positions with residual vectors, per camera.

    Parameters
    ----------
    fit : the ``registration`` fit.
    layout : {camera: (n_spots, 2) layout positions (px)}.
    path : PNG file to write.

    Returns
    -------
    Path or None : ``path``, or None when the fit holds no camera's transform.
    """
    plt = pyplot()
    cams = list(registration_models(fit))
    if not cams:
        return None
    fig, axes = plt.subplots(2, len(cams), figsize=(4.2 * len(cams), 8.4), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    for c, (cam, model, k, meas, tf, apply) in enumerate(cams):
        ax, rx = axes[0, c], axes[1, c]
        src = layout.get(cam)
        outl = set(fit.info.get("outliers", {}).get(cam, []))
        if src is None or len(src) != len(meas):
            ax.plot(meas[:, 1], meas[:, 0], "o", label="measured")
            ax.set_title(f"{cam} (layout unknown)", fontsize=10)
            continue
        pred = apply(tf, np.asarray(src, float))
        res = meas - pred
        inl = np.array([i not in outl for i in range(len(meas))])
        mag = float(np.max(np.hypot(*res[inl].T))) if inl.any() else 0.0
        span = float(np.ptp(pred, axis=0).max()) or 10.0
        factor = 0.08 * span / mag if mag > 0 else 1.0
        nice = 10 ** math.floor(math.log10(factor)) if factor > 0 else 1.0
        factor = nice * (5 if factor / nice >= 5 else 2 if factor / nice >= 2 else 1)
        exact = 2 * int(inl.sum()) <= k          # as many parameters as coordinates: no residuals
        outlier = ~inl
        if exact:
            inl = np.zeros(len(meas), bool)
        ax.plot(pred[:, 1], pred[:, 0], "+", ms=10, color="C1", label=f"fitted ({model} of the layout)")
        ax.plot(meas[:, 1], meas[:, 0], "o", ms=4, mfc="none", color="C0", label="measured centre")
        if inl.any():
            ax.quiver(pred[inl, 1], pred[inl, 0], res[inl, 1] * factor, res[inl, 0] * factor, angles="xy",
                      scale_units="xy", scale=1, color="C3", width=0.006, label=f"residual x {factor:g}")
        if outlier.any():
            ax.plot(meas[outlier, 1], meas[outlier, 0], "x", color="k", ms=8, label="outlier (left out)")
        ax.invert_yaxis()
        ax.set_aspect("equal", adjustable="datalim")
        rms = fit.quantities.get(f"{cam}.residual_px")
        label_axes(ax, "camera column (px)", "camera row (px)", f"{cam}: rms {rms.value:.2g} px" if rms else cam)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
        se = fit.arrays.get(f"centers_stderr_px.{cam}")
        if se is not None:
            rx.errorbar(res[inl, 1], res[inl, 0], xerr=np.asarray(se)[inl, 1], yerr=np.asarray(se)[inl, 0],
                        fmt="o", ms=3, lw=0.8)
        else:
            rx.plot(res[inl, 1], res[inl, 0], "o", ms=3)
        if exact:
            rx.text(0.5, 0.5, f"{len(meas)} spots, {k} parameters:\nexactly determined, no residuals",
                    ha="center", va="center", transform=rx.transAxes, fontsize=9)
        rx.axhline(0, color="k", lw=0.5)
        rx.axvline(0, color="k", lw=0.5)
        lim = max(mag, 1e-6) * 1.5
        rx.set_xlim(-lim, lim)
        rx.set_ylim(-lim, lim)
        rx.set_aspect("equal")
        label_axes(rx, "residual column (px)", "residual row (px)", "measured - fitted (spots in the fit)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_readout(fits: list[Fit], path: Path) -> Path | None:
    """LO amplitude per spot (with standard errors) of every readout camera.

    Parameters
    ----------
    fits : the ``readout.<cam>`` fits.
    path : PNG file to write.

    Returns
    -------
    Path or None : ``path``, or None when no fit holds LO amplitudes.
    """
    plt = pyplot()
    fits = [f for f in fits if "lo_amplitude" in f.arrays]
    if not fits:
        return None
    fig, axes = plt.subplots(1, len(fits), figsize=(3.6 * len(fits), 3.4), squeeze=False)
    for ax, f in zip(axes[0], fits):
        lo = np.asarray(f.arrays["lo_amplitude"], float)
        se = np.asarray(f.arrays.get("lo_amplitude_stderr", np.zeros_like(lo)), float)
        ax.errorbar(np.arange(len(lo)), lo, yerr=se, fmt="o", ms=4)
        ax.axhline(lo.mean(), color="0.5", lw=0.8, ls="--", label=f"mean {lo.mean():.3g}")
        ax.set_ylim(0, lo.max() * 1.15)
        ax.xaxis.get_major_locator().set_params(integer=True)
        label_axes(ax, "spot (neuron index)", "LO amplitude (sqrt ADU over ROI)", f.name.split(".", 1)[-1])
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_slm(fit: Fit, path: Path) -> Path | None:
    """Measured phase vs level with the chosen and the alternative law, and residuals in sigma.

    Parameters
    ----------
    fit : an ``slm`` / ``slm.<panel>`` fit (measured phase in rad vs level in DN).
    path : PNG file to write.

    Returns
    -------
    Path or None : ``path``, or None when the fit has nothing to draw.
    """
    a = fit.arrays
    if not {"measured_levels", "measured_phase_rad"} <= set(a):
        return plot_fit(fit, path)
    plt = pyplot()
    lev, meas = np.asarray(a["measured_levels"], float), np.asarray(a["measured_phase_rad"], float)
    se = np.asarray(a.get("measured_phase_stderr_rad", np.full_like(meas, np.nan)), float)
    chosen = fit.info.get("chosen", fit.model)
    fig, (ax, rx) = plt.subplots(2, 1, figsize=(6.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    ax.errorbar(lev, meas, yerr=se, fmt=".", ms=3, lw=0.6, label="measured (interferometric)")
    for model, style in (("gamma", "-"), ("spline", "--")):
        curve = a.get(f"phase_response_{model}_rad")
        if curve is not None:
            ax.plot(np.arange(len(curve)), curve, style, lw=1.3, label=f"{model}" + (" (chosen)" if model == chosen
                                                                                    else ""))
    label_axes(ax, "SLM level (DN)", "phase (rad)", f"{fit.name}: phase response of {fit.info.get('panel', fit.name)}")
    ax.xaxis.label.set_visible(False)          # shared with the residual panel below
    ax.legend(fontsize=8)
    curve = a.get(f"phase_response_{chosen}_rad", a.get("phase_response_rad"))
    if curve is not None:
        c = np.asarray(curve, float)[lev.astype(int)]
        ok = np.isfinite(se) & (se > 0)
        rx.plot(lev[ok], (meas - c)[ok] / se[ok], ".", ms=3)
        rx.axhline(0, color="k", lw=0.6)
        label_axes(rx, "SLM level (DN)", f"residual / sigma\n({chosen})")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_absorber(fit: Fit, path: Path) -> Path | None:
    """Pump sweep: output vs input power, transmission, and relative residuals.

    Parameters
    ----------
    fit : the ``absorber`` fit (powers in homodyne units^2).
    path : PNG file to write.

    Returns
    -------
    Path or None : ``path``, or None when the fit has nothing to draw.
    """
    if fit.x is None or fit.y is None or fit.y_fit is None:
        return None
    plt = pyplot()
    x, y, yf = (np.asarray(v, float) for v in (fit.x, fit.y, fit.y_fit))
    order = np.argsort(x)
    xl = fit.info.get("x_label", "P_in")
    yl = fit.info.get("y_label", "P_out")
    i_sat = fit.quantities.get("i_sat")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    ax = axes[0]
    ax.loglog(x, np.clip(y, 1e-12, None), ".", ms=3, alpha=0.5, label="measured (every neuron)")
    ax.loglog(x[order], np.clip(yf[order], 1e-12, None), "-", color="C1", lw=1.5, label="fit")
    label_axes(ax, f"{xl} (homodyne units^2)", f"{yl} (homodyne units^2)", "pump sweep")
    ax.legend(fontsize=8)
    ax = axes[1]
    pos = x > 0
    s = x / i_sat.value if i_sat is not None and i_sat.value > 0 else x
    ax.semilogx(s[pos], y[pos] / x[pos], ".", ms=3, alpha=0.5, label="measured P_out / P_in")
    o = order[pos[order]]
    ax.semilogx(s[o], yf[o] / x[o], "-", color="C1", lw=1.5, label="fit")
    label_axes(ax, "P_in / i_sat (saturation parameter)", "transmission x T_bg", "saturable transmission")
    ax.legend(fontsize=8)
    ax = axes[2]
    ok = pos & (np.abs(yf) > 0)
    ax.semilogx(s[ok], 100 * (y[ok] - yf[ok]) / yf[ok], ".", ms=3, alpha=0.5)
    ax.axhline(0, color="k", lw=0.6)
    label_axes(ax, "P_in / i_sat", "(measured - fit) / fit (%)", "residuals (every point entered the fit)")
    lim = np.nanpercentile(np.abs(100 * (y[ok] - yf[ok]) / yf[ok]), 99) * 1.3 if ok.any() else 1
    ax.set_ylim(-lim, lim)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_mvm(fit: Fit, path: Path) -> Path | None:
    """Held-out probes: measured mean vs model, residuals in sigma, and the fitted gain matrix.

    Parameters
    ----------
    fit : an MVM fit (``mvm1``, ``mvm2``, ``mvm2_backward``; twin field units).
    path : PNG file to write.

    Returns
    -------
    Path or None : ``path``, or None when the fit has nothing to draw.
    """
    if fit.x is None or fit.y is None:
        return None
    plt = pyplot()
    x, y = np.asarray(fit.x, float), np.asarray(fit.y, float)
    noise = fit.quantities.get("readout_noise")
    reps = fit.info.get("repeats") or 1
    sig = noise.value / math.sqrt(reps) if noise is not None and noise.value > 0 else None
    gain = fit.arrays.get("gain")
    fig, axes = plt.subplots(1, 3 if gain is not None else 2, figsize=(15, 4.3))
    ax = axes[0]
    ax.plot(x, y, ".", ms=3, label="held-out probes (mean of repeats)")
    lim = [min(x.min(), y.min()), max(x.max(), y.max())]
    ax.plot(lim, lim, "k-", lw=0.8, label="measured = model")
    label_axes(ax, "model prediction (twin field units)", "measured (twin field units)", f"{fit.name}: {fit.model}")
    ax.legend(fontsize=8)
    ax = axes[1]
    r = (y - np.asarray(fit.y_fit, float)) / (sig if sig else 1.0)
    ax.plot(x, r, ".", ms=3)
    ax.axhline(0, color="k", lw=0.6)
    label_axes(ax, "model prediction (twin field units)", "residual / sigma" if sig else "residual (twin units)",
           "residuals" + (f" (sigma = readout noise / sqrt({reps}))" if sig else ""))
    if gain is not None:
        ax = axes[2]
        g = np.asarray(gain, float)
        lim = np.abs(g).max() or 1.0
        im = ax.imshow(g, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, label="gain (per twin weight)")
        label_axes(ax, "input index", "output index", "fitted gain G")
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return save_figure(fig, path)


def plot_exposure(fit: Fit, path: Path) -> Path | None:
    """Operating exposure per camera and the brightest signal it sees, against the target fill.

    Parameters
    ----------
    fit : the ``exposure`` fit (exposures in s).
    path : PNG file to write.

    Returns
    -------
    Path or None : ``path``, or None when the fit has nothing to draw.
    """
    cams = [c for c in fit.info.get("cameras", []) if isinstance(fit.info.get(c), dict) and c in fit.quantities]
    if not cams:
        return plot_fit(fit, path)
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax.bar(cams, [fit.quantities[c].value * 1e3 for c in cams], color="C0")
    label_axes(ax, "camera", "operating exposure (ms)", "operating exposures")
    bx.bar(cams, [fit.info[c].get("peak_fraction", float("nan")) for c in cams], color="C0")
    target = fit.info.get("fill_target")
    if target is not None:
        bx.axhline(target, color="C1", ls="--", label=f"target {target:g}")
        bx.legend(fontsize=8, loc="lower right")
    bx.set_ylim(0, 1)
    label_axes(bx, "camera", "brightest signal / room to saturation", "headroom at the operating exposure")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_fit(fit: Fit, path: Path) -> Path | None:
    """Generic figure: data + model (top) and residuals (bottom), or maps with colour bars.

    Parameters
    ----------
    fit : any fit with x/y data or 2-D arrays.
    path : PNG file to write.

    Returns
    -------
    Path or None : ``path``, or None when the fit has nothing to draw.
    """
    plt = pyplot()
    if fit.x is not None and fit.y is not None:
        fig, (ax, rx) = plt.subplots(2, 1, figsize=(6, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        x, y = np.asarray(fit.x), np.asarray(fit.y)
        ax.plot(x, y, ".", ms=3, label="measured")
        if fit.y_fit is not None:
            order = np.argsort(x)
            yf = np.asarray(fit.y_fit)
            ax.plot(x[order], yf[order], "-", lw=1.5, label=f"fit: {fit.model}")
            rx.plot(x, y - yf, ".", ms=3)
            rx.axhline(0, color="k", lw=0.5)
            rx.set_ylabel(f"residual\n(rms {float(np.sqrt(np.mean((y - yf) ** 2))):.3g})")
        ax.set_ylabel(fit.info.get("y_label", f"{fit.name} data"))
        rx.set_xlabel(fit.info.get("x_label", f"{fit.name} abscissa"))
        ax.set_title(fit.name)
        ax.legend(fontsize=8)
    else:
        maps = [(k, v) for k, v in fit.arrays.items() if np.ndim(v) == 2 and min(np.shape(v)) > 1]
        if not maps:
            return None
        fig, axes = plt.subplots(1, len(maps), figsize=(4 * len(maps), 3.5), squeeze=False)
        for ax, (k, v) in zip(axes[0], maps):
            im = ax.imshow(np.asarray(v, dtype=float), cmap="viridis")
            label_axes(ax, "column (index)", "row (index)", k)
            fig.colorbar(im, ax=ax, fraction=0.046, label=k)
        fig.suptitle(fit.name)
    fig.tight_layout()
    return save_figure(fig, path)
