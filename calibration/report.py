"""Calibration report: fit statistics, figures per device and a self-contained HTML page.

For every fit the page gives the number of points that entered it (N), the number of
free parameters (k), chi^2, the reduced chi^2 = chi^2 / (N - k), AIC and BIC and, where
the fit's design is known, the parameter correlations.  Residual panels show only the
points that entered a fit; points left out (saturated, outside the linear range, outliers)
are drawn distinctly in the data panel.  The camera section has the EMVA 1288 figures
(photon transfer, SNR, linearity, dark signal vs exposure, DSNU/PRNU spectrograms, defect
pixels), recomputed from the frames in the calibration's raw file when it is given.

The HTML embeds the PNGs as base64, so the page is one file that can be mailed or archived.
When the truth of a simulated bench is supplied (tests and demos only), a table of
recovered vs true values with their deviation in standard errors is added; quantities whose
definition differs from the truth's (the EMVA saturation capacity vs the full well) are
marked as such, not as bad fits.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np

from calibration.calset import CalibrationSet
from calibration.quantities import Fit

__all__ = ["plot_fit", "write_report", "html_page", "embed_png", "fit_statistics", "information_criteria",
           "DEFINITIONS"]

#: quantities whose meaning differs from the similarly named truth of a simulated bench
DEFINITIONS = {
    "saturation_e": (
        "EMVA 1288 saturation capacity: the signal (in electrons) at the maximum of the photon-transfer "
        "variance. Pixels clip at the ADC's last code or at the full well, and the variance starts to fall "
        "when the first pixels of the (PRNU- and shot-noise-spread) distribution clip, so the saturation "
        "capacity lies below both the full well and the ADC range by design: a negative deviation from the "
        "true full well / ADC limit is expected, not a bad fit."),
}

#: explanations shown in the report's Definitions section
NOTES = [
    ("N, k, chi^2", "N: points (values) that entered the fit; k: free parameters; chi^2 = sum((data - model) / "
                    "sigma)^2 with the measured sigma of each point; reduced chi^2 = chi^2 / (N - k), about 1 for "
                    "a model that describes the data within their noise."),
    ("AIC, BIC", "Computed here from chi^2 as AIC = chi^2 + 2k and BIC = chi^2 + k ln N (known sigma). The "
                 "absorber's law comparison is the fitting code's own (lmfit: N ln(chi^2/N) + 2k, + k ln N); only "
                 "differences between models fitted to the same data mean something (lower is better)."),
    ("correlation", "Correlation coefficients of the fitted parameters, cov_ij / sqrt(cov_ii cov_jj), from the "
                    "weighted design matrix of the fit (|r| near 1: the data do not separate the two)."),
    ("saturation_e", DEFINITIONS["saturation_e"]),
    ("background_transmission", "T_bg of the absorber fit: P_out = T_bg * T(P_in) with P_in on cam_z1 (before "
                                "the cell) and P_out on cam_a1 (after it), each in its own camera's homodyne "
                                "units. It is the ratio of the two cameras' tap and detection efficiencies (beam "
                                "splitter tap, LO amplitude, gain) times the cell's non-saturable transmission, "
                                "so it can exceed 1; the twin divides it out (a1 = h_a1 / sqrt(i_sat T_bg)), it is "
                                "not an optical gain."),
    ("probe_background_transmission", "The same tap ratio for the backward probe: the probe's amplitude seen on "
                                      "cam_back relative to its programmed amplitude, fitted as the scale of "
                                      "c * t(z1). It carries the probe path's own tap and LO, hence a value "
                                      "different from the pump's."),
    ("readout LO amplitude", "sqrt of the LO power summed over each spot's region of interest (dark-subtracted "
                             "ADU); homodyne values h = (P_0 - P_pi) / (4 * LO amplitude) are in sqrt(ADU)."),
    ("nrmse", "rms error over the rms of the measured values, on held-out probes: systematic (mean of the "
              "repeats vs the model), shot-to-shot (repeat scatter), total; the noise floor is the shot-to-shot "
              "part a perfect model would still show."),
]


def _mpl():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=90)
    _mpl().close(fig)
    return path


# ======================================================================================= statistics
def information_criteria(chi2: float, n: int, k: int) -> tuple[float, float]:
    """AIC = chi^2 + 2k and BIC = chi^2 + k ln N of a weighted least-squares fit (known sigma)."""
    if not math.isfinite(chi2) or n <= 0:
        return float("nan"), float("nan")
    return chi2 + 2 * k, chi2 + k * math.log(n)


def _row(label, n, k, chi2, aic=None, bic=None, note="", corr=None, labels=None) -> dict:
    dof = n - k
    red = chi2 / dof if dof > 0 and math.isfinite(chi2) else float("nan")
    if aic is None:
        aic, bic = information_criteria(chi2, n, k)
    return {"fit": label, "n": int(n), "k": int(k), "chi2": float(chi2), "redchi": float(red), "aic": float(aic),
            "bic": float(bic), "note": note, "corr": corr, "labels": labels}


def _corr_from_design(jac: np.ndarray, sigma: np.ndarray) -> np.ndarray | None:
    """Correlation matrix of a weighted linear(ised) least-squares fit with design ``jac`` (N, k)."""
    w = 1.0 / np.asarray(sigma, float)
    a = np.asarray(jac, float) * w[:, None]
    try:
        cov = np.linalg.inv(a.T @ a)
    except np.linalg.LinAlgError:
        return None
    d = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    return cov / np.outer(d, d)


def _lmfit_chi2(aic: float, bic: float, n: int) -> tuple[float, int]:
    """chi^2 and k of an lmfit result from its AIC and BIC (N ln(chi2/N) + 2k, + k ln N)."""
    k = (aic - bic) / (2.0 - math.log(n))
    return n * math.exp((aic - 2 * k) / n), int(round(k))


# ======================================================================================= raw data
def _raw_streams(raw_path) -> dict:
    """{stream name: (frames, meta dict)} of the camera streams in a raw recording (empty if none)."""
    if raw_path is None or not Path(raw_path).exists():
        return {}
    import h5py
    out = {}
    try:
        with h5py.File(raw_path, "r") as f:
            streams = f.get("streams")
            if streams is None:
                return {}
            for name in streams:
                if not name.startswith("camera."):
                    continue
                g = streams[name]
                n = int(g.attrs.get("committed", g["frames"].shape[0]))
                meta = {k: np.asarray(v[:n]) for k, v in g["meta"].items()} if "meta" in g else {}
                out[name] = (np.asarray(g["frames"][:n]), meta)
    except (OSError, KeyError):
        return {}
    return out


def _camera_points(fit: Fit, stream) -> dict | None:
    """Per-point EMVA statistics of one camera recomputed from its raw frames, in the fit's order."""
    from calibration.camera_fit import temporal_stats
    frames, meta = stream
    if not {"point", "lamp_level", "exposure_s"} <= set(meta):
        return None
    good = (np.asarray(fit.arrays.get("defect_mask", np.zeros(frames.shape[1:], np.uint8))) & 1) == 0
    pts = sorted(int(p) for p in np.unique(meta["point"]) if p >= 0)
    rows = []
    for p in pts:
        sel = meta["point"] == p
        br, dk = frames[sel & (meta["lamp_level"] > 0)], frames[sel & (meta["lamp_level"] == 0)]
        if len(br) < 2 or len(dk) < 2:
            return None
        b, d = temporal_stats(br, good), temporal_stats(dk, good)
        rows.append((float(meta["exposure_s"][sel][0]), b.mean_adu, b.var_adu2, b.var_stderr_adu2, d.mean_adu,
                     d.var_adu2, d.var_stderr_adu2, b.n_frames * b.n_pixels, d.n_frames * d.n_pixels))
    a = np.array(rows)
    x = a[:, 1] - a[:, 4]
    order = np.argsort(x, kind="stable")
    a = a[order]
    res = {"exposure_s": a[:, 0], "mu_y": a[:, 1], "var_y": a[:, 2], "mu_d": a[:, 4], "var_d": a[:, 5],
           "x": a[:, 1] - a[:, 4], "v": a[:, 2] - a[:, 5], "v_se": np.hypot(a[:, 3], a[:, 6]),
           "mu_d_se": np.sqrt(a[:, 5] / a[:, 8]), "var_d_se": a[:, 6]}
    if fit.x is None or len(fit.x) != len(res["x"]) or not np.allclose(res["x"], fit.x, rtol=1e-6, atol=1e-6):
        return None          # frames that do not belong to this fit
    return res


# ======================================================================================= per-kind analysis
def _camera_in_fit(fit: Fit) -> np.ndarray:
    names = fit.info.get("points") or []
    lin = set(fit.info.get("linear_range") or [])
    if len(names) == len(fit.x):
        return np.array([n in lin for n in names])
    return np.ones(len(fit.x), bool)


def _camera_stats(fit: Fit, pts) -> list[dict]:
    if fit.x is None or fit.y is None or fit.y_fit is None:
        return []
    mask = _camera_in_fit(fit)
    n = int(mask.sum())
    red = fit.info.get("ptc_redchi")
    corr = None
    if pts is not None:
        xs, se = pts["x"][mask], np.maximum(pts["v_se"][mask], 1e-12)
        chi2 = float(np.sum(((pts["v"][mask] - np.asarray(fit.y_fit)[mask]) / se) ** 2))
        corr = _corr_from_design(np.column_stack([xs, np.ones_like(xs)]), se)
    elif red is not None and math.isfinite(red):
        chi2 = float(red) * (n - 2)
    else:
        chi2 = float("nan")
    return [_row("photon transfer: var = K mu + c", n, 2, chi2,
                 note=f"points below 70 % of saturation with < 0.1 % clipped pixels; the fit's reduced chi^2 "
                      f"{red:.3g}" if red is not None else "", corr=corr, labels=["K", "c"])]


def _registration_models(fit: Fit):
    from calibration.registration_fit import apply_transform
    k_of = {"similarity": 4, "affine": 6, "homography": 8}
    for cam, model in (fit.info.get("models") or {}).items():
        meas = fit.arrays.get(f"centers_px.{cam}")
        tf = fit.arrays.get(f"transform.{cam}")
        if meas is None or tf is None:
            continue
        yield cam, model, k_of.get(model, 6), np.asarray(meas, float), np.asarray(tf, float), apply_transform


def _registration_stats(fit: Fit, layout: dict) -> list[dict]:
    rows = []
    for cam, model, k, meas, tf, apply in _registration_models(fit):
        info = fit.info.get(f"{cam}.fit") or {}
        outl = set(fit.info.get("outliers", {}).get(cam, []))
        n_pts = int(info.get("n_points", len(meas))) - len(outl)
        chi2 = float(info.get("chi2", float("nan")))
        corr, labels = None, None
        src = layout.get(cam)
        se = fit.arrays.get(f"centers_stderr_px.{cam}")
        if src is not None and se is not None and len(src) == len(meas):
            keep = np.array([i not in outl for i in range(len(src))])
            jac, labels = _transform_jacobian(model, tf, np.asarray(src, float)[keep], apply)
            if jac is not None:
                corr = _corr_from_design(jac, np.asarray(se, float)[keep].T.ravel())
        note = f"{len(outl)} outlier(s) left out" if outl else ""
        p = info.get("homography_f_test_p")
        if p is not None:
            note += ("; " if note else "") + f"homography F-test p = {p:.2f} (affine kept)"
        rows.append(_row(f"{cam}: {model} layout -> camera", 2 * n_pts, k, chi2, note=note, corr=corr,
                         labels=labels))
    return rows


def _transform_jacobian(model, tf, src, apply):
    """Numerical design matrix d(row..., col...)/d(params) of a layout -> camera transform at ``src``."""
    m = np.vstack([tf, [0.0, 0.0, 1.0]]) if tf.shape == (2, 3) else tf.copy()
    if model == "similarity":
        p0 = np.array([m[0, 0], m[1, 0], m[0, 2], m[1, 2]])
        labels = ["s cos", "s sin", "t_row", "t_col"]

        def build(p):
            return np.array([[p[0], -p[1], p[2]], [p[1], p[0], p[3]], [0, 0, 1.0]])
    elif model == "homography":
        p0 = m.ravel()[:8] / m[2, 2]
        labels = ["h11", "h12", "h13", "h21", "h22", "h23", "h31", "h32"]

        def build(p):
            return np.append(p, 1.0).reshape(3, 3)
    else:
        p0 = m[:2].ravel()
        labels = ["a_rr", "a_rc", "t_row", "a_cr", "a_cc", "t_col"]

        def build(p):
            return np.vstack([p.reshape(2, 3), [0, 0, 1.0]])
    if model == "similarity" and not np.allclose(build(p0), m, atol=1e-9):
        return None, None
    base = apply(build(p0), src)
    cols = []
    for i in range(len(p0)):
        h = 1e-6 * max(1.0, abs(p0[i]))
        p = p0.copy()
        p[i] += h
        cols.append(((apply(build(p), src) - base) / h).T.ravel())   # all rows, then all cols
    return np.column_stack(cols), labels


def _slm_stats(fit: Fit) -> list[dict]:
    a = fit.arrays
    if not {"measured_levels", "measured_phase_rad", "measured_phase_stderr_rad"} <= set(a):
        return []
    lev = np.asarray(a["measured_levels"], float)
    meas, se = np.asarray(a["measured_phase_rad"], float), np.asarray(a["measured_phase_stderr_rad"], float)
    ok = np.isfinite(meas) & np.isfinite(se) & (se > 0)
    rows = []
    aic, bic = fit.info.get("aic") or {}, fit.info.get("bic") or {}
    chosen = fit.info.get("chosen", fit.model)
    n = int(ok.sum())
    for model in ("gamma", "spline"):
        curve = a.get(f"phase_response_{model}_rad")
        if curve is None:
            continue
        curve = np.asarray(curve, float)[lev.astype(int)] if len(curve) > lev.max() else np.asarray(curve, float)
        if model in aic and model in bic:
            # the fit's own criteria (sigma known: AIC = chi^2 + 2k, BIC = chi^2 + k ln N)
            k = int(round((aic[model] - bic[model]) / (2.0 - math.log(n))))
            chi2, crit = aic[model] - 2 * k, (aic[model], bic[model])
        else:
            k, crit = 2, (None, None)
            chi2 = float(np.sum(((meas - curve)[ok] / se[ok]) ** 2))
        corr, labels = None, None
        if model == "gamma" and {"phase_range_rad", "gamma"} <= set(fit.quantities):
            r, g = fit.quantities["phase_range_rad"].value, fit.quantities["gamma"].value
            u = np.clip(lev[ok] / max(lev.max(), 1.0), 1e-12, None)
            jac = np.column_stack([u ** g, r * u ** g * np.log(u)])
            corr, labels = _corr_from_design(jac, se[ok]), ["phase range", "gamma"]
        rows.append(_row(f"phase vs level: {model}" + (" (chosen, lower BIC)" if model == chosen else ""), n, k,
                         chi2, aic=crit[0], bic=crit[1], corr=corr, labels=labels,
                         note="chi^2, AIC and BIC as the fit computed them (on the measured homodyne field)"))
    return rows


def _absorber_stats(fit: Fit) -> list[dict]:
    rows = []
    for key, n_key, what in (("table", "pump_points", "pump sweep"), ("probe_table", "probe_points", "probe sweep")):
        table = fit.info.get(key)
        n = fit.info.get(n_key) or (len(fit.x) if fit.x is not None and key == "table" else None)
        if not isinstance(table, dict) or not n:
            continue
        best = min(table, key=lambda m: table[m].get("bic", float("inf")))
        for law, t in sorted(table.items(), key=lambda kv: kv[1].get("bic", float("inf"))):
            if not {"aic", "bic"} <= set(t):
                continue
            chi2, k = _lmfit_chi2(t["aic"], t["bic"], int(n))
            adequate = "adequate" if t.get("adequate") else "not adequate"
            rows.append(_row(f"{what}: {law}" + (" (lowest BIC)" if law == best else ""), int(n), k, chi2,
                             aic=t["aic"], bic=t["bic"],
                             note=f"{adequate} (chi^2/dof limit {t.get('redchi_limit', float('nan')):.3g}, "
                                  f"runs z {np.ravel(t.get('runs_z', [float('nan')]))[0]:.2f}); AIC/BIC lmfit"))
    return rows


def _mvm_stats(fit: Fit) -> list[dict]:
    if fit.x is None or fit.y is None:
        return []
    noise = fit.quantities.get("readout_noise")
    reps = fit.info.get("repeats") or fit.info.get("stats_vs_model", {}).get("n_repeats")
    rows = []
    if noise is not None and reps and noise.value > 0:
        sig = noise.value / math.sqrt(reps)
        chi2 = float(np.sum(((np.asarray(fit.y) - np.asarray(fit.y_fit)) / sig) ** 2))
        rows.append(_row("held-out probes vs model", len(fit.y), 0, chi2, aic=float("nan"), bic=float("nan"),
                         note=f"validation: {fit.info.get('n_test_probes', '?')} probes not used by the fit, sigma = "
                              f"readout noise / sqrt({reps} repeats); the fit itself: "
                              f"{fit.info.get('n_fit_probes', '?')} probes, {fit.info.get('dof', '?')} dof, "
                              f"residual rms {fit.info.get('residual_rms', float('nan')):.3g}; no model choice, "
                              f"hence no AIC/BIC"))
    return rows


def fit_statistics(fit: Fit, layout: dict | None = None, camera_points=None) -> list[dict]:
    """Statistics rows of one fit: ``fit, n, k, chi2, redchi, aic, bic, note, corr, labels``.

    layout : {camera: (n_spots, 2) layout positions} for the registration's correlations.
    camera_points : per-point statistics recomputed from raw frames (camera fits).
    """
    kind = fit.name.split(".")[0]
    if kind == "camera":
        return _camera_stats(fit, camera_points)
    if kind == "registration":
        return _registration_stats(fit, layout or {})
    if kind == "slm":
        return _slm_stats(fit)
    if kind == "absorber":
        return _absorber_stats(fit)
    if kind.startswith("mvm"):
        return _mvm_stats(fit)
    return []


# ======================================================================================= figures
def _label(ax, x: str, y: str, title: str | None = None):
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if title:
        ax.set_title(title, fontsize=10)


def plot_camera(fit: Fit, pts, path: Path) -> Path | None:
    """The EMVA 1288 figures of one camera (the generic figure for a fit without them)."""
    need = {"gain_adu_per_e", "read_noise_e", "saturation_e", "dark_offset_adu", "dark_noise_adu"}
    if fit.x is None or fit.y is None or fit.y_fit is None or not need <= set(fit.quantities):
        return plot_fit(fit, path)
    plt = _mpl()
    cam = fit.info.get("camera", fit.name)
    q = fit.quantities
    k_gain = q["gain_adu_per_e"].value
    mask = _camera_in_fit(fit)
    x, v, vf = np.asarray(fit.x, float), np.asarray(fit.y, float), np.asarray(fit.y_fit, float)
    fig = plt.figure(figsize=(14, 13))
    gs = fig.add_gridspec(4, 3, height_ratios=[3, 1.3, 3, 3], hspace=0.55, wspace=0.32)
    # photon transfer
    ax = fig.add_subplot(gs[0, 0])
    sat = np.array([n == fit.info.get("saturation_point") for n in fit.info.get("points", [])]) \
        if len(fit.info.get("points", [])) == len(x) else np.zeros(len(x), bool)
    ax.plot(x[mask], v[mask], "o", ms=4, color="C0", label="in the fit")
    ax.plot(x[~mask], v[~mask], "o", ms=4, mfc="none", color="0.5", label="left out (non-linear / clipped)")
    if sat.any():
        ax.plot(x[sat], v[sat], "v", ms=8, color="C3", label="saturation (variance maximum)")
    xx = np.linspace(0, x[mask].max() * 1.05, 50)
    ax.plot(xx, k_gain * xx + (vf[0] - k_gain * x[0]), "-", color="C1", label=f"fit K = {k_gain:.4g} DN/e-")
    _label(ax, "mean signal mu_y - mu_dark (DN)", "temporal variance (DN^2)", "photon transfer")
    ax.legend(fontsize=7)
    rx = fig.add_subplot(gs[1, 0])
    if pts is not None:
        r = (pts["v"][mask] - vf[mask]) / np.maximum(pts["v_se"][mask], 1e-12)
        rx.plot(x[mask], r, "o", ms=3)
        _label(rx, "mean signal (DN)", "residual / sigma")
    else:
        rx.plot(x[mask], v[mask] - vf[mask], "o", ms=3)
        _label(rx, "mean signal (DN)", "residual (DN^2)")
    rx.axhline(0, color="k", lw=0.6)
    # SNR vs signal in electrons
    ax = fig.add_subplot(gs[0:2, 2])
    mu_e = x / k_gain
    var_y = pts["var_y"] if pts is not None else v + q["dark_noise_adu"].value ** 2
    rank = int(np.argmax(sat)) if sat.any() else len(x)
    below = (np.arange(len(x)) <= rank) & (mu_e > 0)
    beyond = (np.arange(len(x)) > rank) & (mu_e > 0)
    ax.loglog(mu_e[below], x[below] / np.sqrt(var_y[below]), "o", ms=4, label="measured")
    if beyond.any():
        ax.loglog(mu_e[beyond], x[beyond] / np.sqrt(var_y[beyond]), "o", ms=4, mfc="none", color="0.5",
                  label="past saturation (clipped)")
    ee = np.logspace(0, math.log10(max(mu_e.max(), 10)), 100)
    sd = q["read_noise_e"].value
    ax.loglog(ee, ee / np.sqrt(sd ** 2 + ee + 1 / (12 * k_gain ** 2)), "-", label="model: read + shot noise")
    ax.loglog(ee, np.sqrt(ee), ":", color="k", label="shot-noise limit sqrt(mu_e)")
    sat_e = q["saturation_e"].value
    ax.axvline(sat_e, color="C3", lw=0.8, ls="--", label=f"saturation capacity {sat_e:.0f} e-")
    _label(ax, "signal mu_e (electrons)", "SNR", "signal-to-noise ratio")
    ax.legend(fontsize=7)
    # linearity
    if pts is not None:
        t = pts["exposure_s"] * 1e3
        ax = fig.add_subplot(gs[0, 1])
        dev = fit.info.get("linearity_deviation_pct")
        x_sat = x[sat][0] if sat.any() else x.max()
        lin = (np.arange(len(x)) < rank) & (x >= 0.05 * x_sat) & (x <= 0.95 * x_sat)
        ax.plot(t[lin], x[lin], "o", ms=4, label="5-95 % of saturation (fitted)")
        ax.plot(t[~lin], x[~lin], "o", ms=4, mfc="none", color="0.5", label="outside the range")
        if lin.sum() >= 2:
            w = 1.0 / x[lin]
            a = np.column_stack([t[lin], np.ones(lin.sum())])
            coef = np.linalg.lstsq(a * w[:, None], x[lin] * w, rcond=None)[0]
            tt = np.linspace(0, t.max(), 50)
            ax.plot(tt, coef[0] * tt + coef[1], "-", color="C1", label="line (least relative deviation)")
        _label(ax, "exposure time (ms)", "mean signal mu_y - mu_dark (DN)", "linearity")
        ax.legend(fontsize=7)
        bx = fig.add_subplot(gs[1, 1])
        if dev is not None and len(dev) == lin.sum():
            bx.plot(t[lin], dev, "o-", ms=3)
        bx.axhline(0, color="k", lw=0.6)
        _label(bx, "exposure time (ms)", "deviation (%)")
        bx.set_title(f"linearity error {q['linearity_error_pct'].value:.3g} %", fontsize=8)
        # dark signal vs exposure
        ax = fig.add_subplot(gs[2, 0])
        ax.errorbar(t, pts["mu_d"], yerr=pts["mu_d_se"], fmt="o", ms=3, label="dark mean")
        dc = q.get("dark_current_e_per_s")
        slope = dc.value * k_gain / 1e3 if dc is not None else 0.0
        tt = np.linspace(0, t.max(), 50)
        ax.plot(tt, q["dark_offset_adu"].value + slope * tt, "-", color="C1",
                label=f"offset {q['dark_offset_adu'].value:.4g} DN" + (f" + {dc.value:.3g} e-/s" if dc else ""))
        _label(ax, "exposure time (ms)", "dark signal mu_dark (DN)", "dark signal vs exposure")
        ax.legend(fontsize=7)
    else:
        ax = fig.add_subplot(gs[0, 1])
        ax.text(0.5, 0.5, "raw frames not available:\nlinearity and dark plots need the raw file",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    # spectrograms
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
        _label(ax, "spatial frequency (cycles/pixel)", f"amplitude ({unit})", title)
        ax.legend(fontsize=7)
    # maps
    for col, (key, title, unit, scale, cmap) in enumerate((("offset_map_adu", "dark offset map (DSNU)", "DN", 1.0,
                                                             "viridis"),
                                                            ("prnu_map", "relative response (PRNU)", "%", 100.0,
                                                             "RdBu_r"))):
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
        _label(ax, "column (px)", "row (px)", title)
    mask_img = fit.arrays.get("defect_mask")
    if mask_img is not None:
        ax = fig.add_subplot(gs[3, 2])
        dm = np.asarray(mask_img, int)
        from matplotlib.colors import ListedColormap
        ax.imshow(np.where(dm & 1, 1, np.where(dm & 2, 2, 0)), cmap=ListedColormap(["#f4f4f4", "#d62728", "#1f77b4"]),
                  vmin=0, vmax=2, interpolation="nearest")
        for code, colour, lab in ((1, "#d62728", "hot"), (2, "#1f77b4", "dead")):
            rr, cc = np.nonzero(dm & code)
            ax.plot(cc, rr, "o", ms=9, mfc="none", color=colour, label=f"{lab}: {len(rr)}")
        ax.legend(fontsize=7, loc="upper right")
        _label(ax, "column (px)", "row (px)", "defect pixels")
    fig.suptitle(f"{cam}: EMVA 1288 camera characterisation", fontsize=12)
    fig.subplots_adjust(top=0.94, bottom=0.05, left=0.07, right=0.97)
    return _save(fig, path)


def plot_registration(fit: Fit, layout: dict, path: Path) -> Path | None:
    """Measured vs fitted spot positions with residual vectors, per camera."""
    plt = _mpl()
    cams = list(_registration_models(fit))
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
        _label(ax, "camera column (px)", "camera row (px)", f"{cam}: rms {rms.value:.2g} px" if rms else cam)
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
        _label(rx, "residual column (px)", "residual row (px)", "measured - fitted (spots in the fit)")
    fig.tight_layout()
    return _save(fig, path)


def plot_readout(fits: list[Fit], path: Path) -> Path | None:
    """LO amplitude per spot (with standard errors) of every readout camera."""
    plt = _mpl()
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
        _label(ax, "spot (neuron index)", "LO amplitude (sqrt ADU over ROI)", f.name.split(".", 1)[-1])
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def plot_slm(fit: Fit, path: Path) -> Path | None:
    """Measured phase vs level with the chosen and the alternative law, and residuals in sigma."""
    a = fit.arrays
    if not {"measured_levels", "measured_phase_rad"} <= set(a):
        return plot_fit(fit, path)
    plt = _mpl()
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
    _label(ax, "SLM level (DN)", "phase (rad)", f"{fit.name}: phase response of {fit.info.get('panel', fit.name)}")
    ax.xaxis.label.set_visible(False)          # shared with the residual panel below
    ax.legend(fontsize=8)
    curve = a.get(f"phase_response_{chosen}_rad", a.get("phase_response_rad"))
    if curve is not None:
        c = np.asarray(curve, float)[lev.astype(int)]
        ok = np.isfinite(se) & (se > 0)
        rx.plot(lev[ok], (meas - c)[ok] / se[ok], ".", ms=3)
        rx.axhline(0, color="k", lw=0.6)
        _label(rx, "SLM level (DN)", f"residual / sigma\n({chosen})")
    fig.tight_layout()
    return _save(fig, path)


def plot_absorber(fit: Fit, path: Path) -> Path | None:
    """Pump sweep: output vs input power, transmission, and relative residuals."""
    if fit.x is None or fit.y is None or fit.y_fit is None:
        return None
    plt = _mpl()
    x, y, yf = (np.asarray(v, float) for v in (fit.x, fit.y, fit.y_fit))
    order = np.argsort(x)
    xl = fit.info.get("x_label", "P_in")
    yl = fit.info.get("y_label", "P_out")
    i_sat = fit.quantities.get("i_sat")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    ax = axes[0]
    ax.loglog(x, np.clip(y, 1e-12, None), ".", ms=3, alpha=0.5, label="measured (every neuron)")
    ax.loglog(x[order], np.clip(yf[order], 1e-12, None), "-", color="C1", lw=1.5, label="fit")
    _label(ax, f"{xl} (homodyne units^2)", f"{yl} (homodyne units^2)", "pump sweep")
    ax.legend(fontsize=8)
    ax = axes[1]
    pos = x > 0
    s = x / i_sat.value if i_sat is not None and i_sat.value > 0 else x
    ax.semilogx(s[pos], y[pos] / x[pos], ".", ms=3, alpha=0.5, label="measured P_out / P_in")
    o = order[pos[order]]
    ax.semilogx(s[o], yf[o] / x[o], "-", color="C1", lw=1.5, label="fit")
    _label(ax, "P_in / i_sat (saturation parameter)", "transmission x T_bg", "saturable transmission")
    ax.legend(fontsize=8)
    ax = axes[2]
    ok = pos & (np.abs(yf) > 0)
    ax.semilogx(s[ok], 100 * (y[ok] - yf[ok]) / yf[ok], ".", ms=3, alpha=0.5)
    ax.axhline(0, color="k", lw=0.6)
    _label(ax, "P_in / i_sat", "(measured - fit) / fit (%)", "residuals (every point entered the fit)")
    lim = np.nanpercentile(np.abs(100 * (y[ok] - yf[ok]) / yf[ok]), 99) * 1.3 if ok.any() else 1
    ax.set_ylim(-lim, lim)
    fig.tight_layout()
    return _save(fig, path)


def plot_mvm(fit: Fit, path: Path) -> Path | None:
    """Held-out probes: measured mean vs model, residuals in sigma, and the fitted gain matrix."""
    if fit.x is None or fit.y is None:
        return None
    plt = _mpl()
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
    _label(ax, "model prediction (twin field units)", "measured (twin field units)", f"{fit.name}: {fit.model}")
    ax.legend(fontsize=8)
    ax = axes[1]
    r = (y - np.asarray(fit.y_fit, float)) / (sig if sig else 1.0)
    ax.plot(x, r, ".", ms=3)
    ax.axhline(0, color="k", lw=0.6)
    _label(ax, "model prediction (twin field units)", "residual / sigma" if sig else "residual (twin units)",
           "residuals" + (f" (sigma = readout noise / sqrt({reps}))" if sig else ""))
    if gain is not None:
        ax = axes[2]
        g = np.asarray(gain, float)
        lim = np.abs(g).max() or 1.0
        im = ax.imshow(g, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, label="gain (per twin weight)")
        _label(ax, "input index", "output index", "fitted gain G")
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _save(fig, path)


def plot_exposure(fit: Fit, path: Path) -> Path | None:
    """Operating exposure per camera and the brightest signal it sees, against the target fill."""
    cams = [c for c in fit.info.get("cameras", []) if isinstance(fit.info.get(c), dict) and c in fit.quantities]
    if not cams:
        return plot_fit(fit, path)
    plt = _mpl()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax.bar(cams, [fit.quantities[c].value * 1e3 for c in cams], color="C0")
    _label(ax, "camera", "operating exposure (ms)", "operating exposures")
    bx.bar(cams, [fit.info[c].get("peak_fraction", float("nan")) for c in cams], color="C0")
    target = fit.info.get("fill_target")
    if target is not None:
        bx.axhline(target, color="C1", ls="--", label=f"target {target:g}")
        bx.legend(fontsize=8, loc="lower right")
    bx.set_ylim(0, 1)
    _label(bx, "camera", "brightest signal / room to saturation", "headroom at the operating exposure")
    fig.tight_layout()
    return _save(fig, path)


def plot_fit(fit: Fit, path: Path) -> Path | None:
    """Generic figure: data + model (top) and residuals (bottom), or maps with colour bars."""
    plt = _mpl()
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
            _label(ax, "column (index)", "row (index)", k)
            fig.colorbar(im, ax=ax, fraction=0.046, label=k)
        fig.suptitle(fit.name)
    fig.tight_layout()
    return _save(fig, path)


# ======================================================================================= HTML
def embed_png(path: Path) -> str:
    """An <img> tag holding the PNG as base64 data."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def _fmt(x, spec: str = ".5g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def html_page(title: str, sections: list[tuple[str, str]]) -> str:
    """A self-contained page from (heading, inner-HTML) sections."""
    body = "\n".join(f"<section><h2>{html.escape(h)}</h2>\n{inner}</section>" for h, inner in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1300px;margin:2em auto;color:#222;line-height:1.35}}
table{{border-collapse:collapse;margin:0.6em 0}}td,th{{border:1px solid #bbb;padding:2px 7px;text-align:right;
font-size:0.92em}}th{{background:#eee}}td.l{{text-align:left}}img{{max-width:100%;margin:0.5em 0}}
.bad{{background:#fdd}}.ok{{background:#dfd}}.def{{background:#e6ecf7}}.warn{{background:#fff4d6;
border-left:4px solid #e0a000;padding:0.4em 0.8em}}dt{{font-weight:bold;margin-top:0.4em}}
.note{{color:#555;font-size:0.9em}}</style></head>
<body><h1>{html.escape(title)}</h1>
{body}
</body></html>
"""


def _stats_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    head = ("<tr><th>fit</th><th>N</th><th>k</th><th>chi^2</th><th>chi^2/(N-k)</th><th>AIC</th><th>BIC</th>"
            "<th>note</th></tr>")
    body = "".join(
        f'<tr><td class="l">{html.escape(r["fit"])}</td><td>{r["n"]}</td><td>{r["k"]}</td><td>{_fmt(r["chi2"], ".4g")}'
        f'</td><td>{_fmt(r["redchi"], ".3g")}</td><td>{_fmt(r["aic"], ".5g")}</td><td>{_fmt(r["bic"], ".5g")}</td>'
        f'<td class="l note">{html.escape(r["note"])}</td></tr>' for r in rows)
    out = f"<table>{head}{body}</table>"
    corr = [f"<div><p class=\"note\">parameter correlations, {html.escape(r['fit'])}:</p>"
            f"{_corr_table(r['labels'], r['corr'])}</div>"
            for r in rows if r.get("corr") is not None and r.get("labels")]
    if corr:
        out += f'<div style="display:flex;flex-wrap:wrap;gap:2em">{"".join(corr)}</div>'
    return out


def _corr_table(labels, corr) -> str:
    c = np.asarray(corr, float)
    head = "<tr><th></th>" + "".join(f"<th>{html.escape(lab)}</th>" for lab in labels) + "</tr>"
    rows = []
    for i, lab in enumerate(labels):
        cells = []
        for j in range(len(labels)):
            v = c[i, j]
            shade = int(255 - 120 * min(abs(v), 1.0)) if i != j else 235
            colour = f"rgb(255,{shade},{shade})" if v > 0 else f"rgb({shade},{shade},255)"
            cells.append(f'<td style="background:{colour}">{v:+.2f}</td>')
        rows.append(f"<tr><th>{html.escape(lab)}</th>{''.join(cells)}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _quantity_table(fits: list[Fit], truth: dict | None) -> str:
    rows = []
    for fit in fits:
        for q, val in fit.quantities.items():
            key = f"{fit.name}.{q}"
            cells = [f'<td class="l">{html.escape(key)}</td>', f"<td>{_fmt(val.value)}</td>",
                     f"<td>{_fmt(val.stderr, '.2g')}</td>", f'<td class="l">{html.escape(val.units)}</td>']
            if truth is not None:
                t = truth.get(key)
                if t is None:
                    cells += ["<td>-</td>", "<td>-</td>"]
                else:
                    ok_se = val.stderr and math.isfinite(val.stderr)
                    dev = (val.value - t) / val.stderr if ok_se else float("nan")
                    if q in DEFINITIONS:
                        tip = html.escape(DEFINITIONS[q])
                        cells += [f"<td>{_fmt(float(t))}</td>", f'<td class="def" title="{tip}">'
                                  f'{_fmt(dev, ".3g")} (definition differs, see Definitions)</td>']
                    else:
                        cls = "ok" if math.isfinite(dev) and abs(dev) <= 3 else "bad"
                        cells += [f"<td>{_fmt(float(t))}</td>", f'<td class="{cls}">{_fmt(dev, ".3g")}</td>']
            rows.append("<tr>" + "".join(cells) + "</tr>")
    if not rows:
        return ""
    head = "<tr><th>quantity</th><th>value</th><th>std. error</th><th>units</th>"
    head += "<th>true value</th><th>(value - true)/stderr</th></tr>" if truth is not None else "</tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _layout(cal: CalibrationSet) -> dict:
    spots = (cal.bench_config or {}).get("spots") or {}
    out = {}
    for cam, s in spots.items():
        if not isinstance(s, dict):
            continue
        pos = s.get("positions_px")
        if pos is None:
            from hwio.layout import SpotLayout
            try:
                pos = SpotLayout(int(s["n"]), tuple(s["grid"]), float(s.get("pitch_px", 24.0)),
                                 tuple(s.get("origin_px", (0.0, 0.0)))).positions_px
            except (KeyError, TypeError, ValueError):
                continue
        out[cam] = np.asarray(pos, float)
    return out


def _groups(cal: CalibrationSet) -> list[tuple[str, list[Fit]]]:
    order = [("Cameras (EMVA 1288)", "camera"), ("Registration", "registration"), ("Readout", "readout"),
             ("Phase panels (SLM)", "slm"), ("Absorber", "absorber"), ("Matrix-vector multiplications", "mvm"),
             ("Scale", "scale"), ("Operating exposures", "exposure")]
    used, out = set(), []
    for title, prefix in order:
        fits = [f for n, f in sorted(cal.fits.items()) if n.split(".")[0].startswith(prefix) and n not in used]
        if prefix == "camera":      # the reference camera (cam_out, fit 'camera') after the others is odd: by name
            fits.sort(key=lambda f: f.info.get("camera", f.name))
        used.update(f.name for f in fits)
        if fits:
            out.append((title, fits))
    rest = [f for n, f in sorted(cal.fits.items()) if n not in used]
    if rest:
        out.append(("Other fits", rest))
    return out


def write_report(cal: CalibrationSet, out_dir, truth: dict | None = None, raw_path=None) -> Path:
    """Write PNGs and ``report.html`` into ``out_dir``; returns the HTML path.

    truth : optional {'camera.gain_adu_per_e': value, ...} of a simulated bench.
    raw_path : the calibration's raw recording (``<cal>.raw.h5``); the camera figures are
        recomputed from its frames (without it they show what the fit kept).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = _layout(cal)
    raw = _raw_streams(raw_path)
    try:
        import json
        run = json.loads(bytes(np.asarray(cal.raw["run_info"]).item()).decode()) if "run_info" in cal.raw else {}
    except (ValueError, TypeError, AttributeError):
        run = {}
    warnings = list(run.get("warnings", []) or [])
    for name, fit in sorted(cal.fits.items()):
        warnings += [f"{name}: {w}" for w in fit.info.get("warnings", []) or []]
    all_rows: list[dict] = []
    device_sections = []
    for title, fits in _groups(cal):
        inner = []
        if title.startswith("Cameras"):
            inner.append("<p class=\"note\">saturation_e is the EMVA 1288 saturation capacity (signal at the "
                         "photon-transfer variance maximum), below the full well by definition. Figures recomputed "
                         "from the recorded frames" + ("" if raw else " (raw file not available: figures show what "
                                                                       "the fit kept)") + ".</p>")
            for fit in fits:
                cam = fit.info.get("camera", fit.name)
                pts = _camera_points(fit, raw[f"camera.{cam}"]) if f"camera.{cam}" in raw else None
                rows = fit_statistics(fit, camera_points=pts)
                for r in rows:
                    r["fit"] = f"{cam}: {r['fit']}"
                all_rows += rows
                png = plot_camera(fit, pts, out / f"{fit.name.replace('.', '_')}.png")
                inner.append(f"<h3>{html.escape(cam)} (fit <code>{html.escape(fit.name)}</code>)</h3>"
                             + _stats_table(rows) + (embed_png(png) if png else ""))
        elif title == "Readout":
            png = plot_readout(fits, out / "readout.png")
            inner.append("<p class=\"note\">Not a fit: the LO amplitude of each spot measured with the signal "
                         "blocked (four LO phases); the spread between spots is the LO's illumination profile.</p>"
                         + (embed_png(png) if png else ""))
        else:
            for fit in fits:
                rows = fit_statistics(fit, layout=layout)
                all_rows += [dict(r, fit=f"{fit.name}: {r['fit']}") for r in rows]
                kind = fit.name.split(".")[0]
                stem = out / f"{fit.name.replace('.', '_')}.png"
                png = {"registration": lambda: plot_registration(fit, layout, stem), "slm": lambda: plot_slm(fit, stem),
                       "absorber": lambda: plot_absorber(fit, stem),
                       "exposure": lambda: plot_exposure(fit, stem)}.get(kind, lambda: (
                    plot_mvm(fit, stem) if kind.startswith("mvm") else plot_fit(fit, stem)))()
                info = ""
                if kind == "absorber":
                    info = ("<p class=\"note\">background_transmission and probe_background_transmission are camera "
                            "tap ratios (after / before the cell, each camera in its own homodyne units), not optical "
                            "gains: values above 1 are normal. See Definitions.</p>")
                if kind == "scale":
                    info = "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>"
                                            for k, v in fit.info.items()) + "</dl>"
                inner.append(f"<h3>{html.escape(fit.name)} <span class=\"note\">model {html.escape(fit.model)}"
                             f"</span></h3>" + _stats_table(rows) + info + (embed_png(png) if png else ""))
        inner.append("<details><summary>quantities</summary>" + _quantity_table(fits, truth) + "</details>")
        device_sections.append((title, "\n".join(inner)))

    summary = (f"<p>bench <b>{html.escape(cal.bench_name)}</b>, calibrated {html.escape(cal.created_utc)}, "
               f"optwin {html.escape(cal.software_version)}, schema {cal.schema_version}"
               + (f", {run['wall_s']:.0f} s" if isinstance(run.get("wall_s"), (int, float)) else "")
               + (f", raw data <code>{html.escape(str(run.get('raw_file')))}</code>" if run.get("raw_file") else "")
               + "</p>")
    summary += ("<div class=\"warn\"><b>Warnings</b><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
                + "</ul></div>") if warnings else "<p>No warnings.</p>"
    summary += "<h3>Fit statistics</h3>" + _stats_table([dict(r, corr=None) for r in all_rows])
    sections = [("Summary", summary)]
    if truth is not None:
        sections.append(("Recovered vs true (simulated bench)",
                         "<p class=\"note\">Deviation in standard errors; |dev| &le; 3 green, else red. Quantities "
                         "whose definition differs from the truth's name are blue and explained under "
                         "Definitions.</p>" + _quantity_table([f for _, fs in _groups(cal) for f in fs], truth)))
    sections += device_sections
    sections.append(("Definitions", "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                                                     for k, v in NOTES) + "</dl>"))
    page = out / "report.html"
    page.write_text(html_page(f"optwin calibration: {cal.bench_name}", sections))
    return page
