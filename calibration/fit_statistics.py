"""Fit statistics of the calibration report: N, k, chi^2, AIC/BIC and parameter correlations.

One function per kind of fit (camera photon transfer, registration transforms, SLM phase laws,
absorber laws, MVM validation) turns a stored :class:`~calibration.quantities.Fit` into rows of
``fit, n, k, chi2, redchi, aic, bic, note, corr, labels``; :func:`fit_statistics` picks the one a
fit needs.  The camera rows use per-point statistics recomputed from the raw frames
(:func:`raw_streams`, :func:`camera_points`) when the calibration's raw file is at hand.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from calibration.quantities import Fit

__all__ = ["fit_statistics", "information_criteria", "raw_streams", "camera_points", "camera_in_fit",
           "registration_models"]


# ======================================================================================= statistics
def information_criteria(chi2: float, n: int, k: int) -> tuple[float, float]:
    """AIC = chi^2 + 2k and BIC = chi^2 + k ln N of a weighted least-squares fit (known sigma).

    Parameters
    ----------
    chi2 : chi^2 of the fit.
    n : points that entered it.
    k : free parameters.

    Returns
    -------
    (float, float) : AIC and BIC (nan for a non-finite chi^2 or no points).
    """
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
def raw_streams(raw_path) -> dict:
    """{stream name: (frames, meta dict)} of the camera streams in a raw recording (empty if none).

    Parameters
    ----------
    raw_path : the calibration's raw recording (``<cal>.raw.h5``) or None.

    Returns
    -------
    dict : ``camera.<cam>`` -> (frames (n, rows, cols) in ADU, {meta key: (n,) array}).
    """
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


def camera_points(fit: Fit, stream) -> dict | None:
    """Per-point EMVA statistics of one camera recomputed from its raw frames, in the fit's order.

    Parameters
    ----------
    fit : a camera fit (its x are the mean signals the points must reproduce).
    stream : (frames, meta) of the camera from :func:`raw_streams`.

    Returns
    -------
    dict or None : arrays per point, sorted by signal: ``exposure_s`` (s), ``mu_y``, ``mu_d``,
        ``x`` (mean signal), ``mu_d_se`` (DN), ``var_y``, ``var_d``, ``v`` (temporal variance),
        ``v_se``, ``var_d_se`` (DN^2); None when the frames do not belong to this fit.
    """
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
def camera_in_fit(fit: Fit) -> np.ndarray:
    """Bool per photon-transfer point of a camera fit: whether it entered the fit (its linear range)."""
    names = fit.info.get("points") or []
    lin = set(fit.info.get("linear_range") or [])
    if len(names) == len(fit.x):
        return np.array([n in lin for n in names])
    return np.ones(len(fit.x), bool)


def _camera_stats(fit: Fit, pts) -> list[dict]:
    if fit.x is None or fit.y is None or fit.y_fit is None:
        return []
    mask = camera_in_fit(fit)
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


def registration_models(fit: Fit):
    """Per registered camera: (camera, model, k parameters, measured centres (n, 2) px, transform, apply)."""
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
    for cam, model, k, meas, tf, apply in registration_models(fit):
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

    Parameters
    ----------
    fit : any fit of a calibration set.
    layout : {camera: (n_spots, 2) layout positions (px)} for the registration's correlations.
    camera_points : per-point statistics recomputed from raw frames (camera fits,
        :func:`camera_points`).

    Returns
    -------
    list of dict : one row per model fitted (empty for kinds without statistics).
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
