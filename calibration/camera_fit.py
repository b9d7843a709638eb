"""Camera characterisation after the EMVA 1288 method (pure fits on numpy arrays).

Input is a photon-transfer series: operating points (exposure or light level), each
with at least two bright frames and at least two dark frames (``(n, rows, cols)``
arrays in digital numbers, DN = ADU).  :func:`fit_camera` returns a
:class:`~calibration.quantities.Fit` named ``'camera'``.

Method (EMVA 1288 Release 3/4, with the choices below made explicit)
---------------------------------------------------------------------
* Temporal statistics of one point: every frame is shifted by its own spatial mean
  (cancels global flicker), the per-pixel variance across frames (``ddof=1``) is
  averaged over the good pixels.  With two frames this is exactly the EMVA
  ``var(y_A - y_B) / 2`` which cancels the fixed-pattern noise.
* Dark level and dark temporal noise: weighted straight line against exposure time
  when the dark signal grows significantly (> 3 sigma) with exposure (dark current),
  extrapolated to zero exposure; otherwise the weighted mean over points.
* Photon transfer: ``var_y - var_dark = K (mu_y - mu_dark) + c`` fitted with lmfit
  (weights from the per-point variance errors) in the linear range: points below the
  variance maximum (the saturation point) with ``mu_y - mu_dark <= 0.7`` of its value
  and with fewer than 0.1 % clipped pixels.
* Read noise ``sigma_d = sqrt(var_dark - 1/12) / K`` electrons (the 1/12 DN^2
  quantisation term is removed for integer-valued frames).
* Saturation capacity ``(mu_y.sat - mu_y.dark) / K`` electrons at the variance maximum
  (a lower bound, flagged in ``info``, when the series never passes the maximum).
* Linearity error (EMVA 3): straight line ``mu_y - mu_dark = a0 + a1 H`` fitted by
  least relative deviations between 5 % and 95 % of the saturation signal, with ``H``
  the photons per pixel, else the exposure time (or ``irradiance`` if given);
  ``LE = (max(delta) - min(delta)) / 2`` with ``delta`` the relative deviations in %.
* PRNU (%) at the point nearest 50 % of saturation: spatial standard deviation of
  the dark-subtracted mean image, corrected for the temporal noise left in the
  averages, over its mean.  ``prnu_map`` is that image divided by its mean.
* Defects: ``defect_mask`` bit 1 = hot (dark signal at the longest exposure more than
  ``hot_sigma`` robust standard deviations above the median), bit 2 = dead (flat
  response more than ``dead_sigma`` robust standard deviations from the median, either
  side).  Defective pixels are left out of the dark, PTC and PRNU statistics.
* Quantum efficiency (when every point has ``photons_per_pixel``): responsivity
  ``R = d(mu_y - mu_dark)/d mu_p`` over the linear range, ``eta = R / K``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import lmfit
import numpy as np
from scipy.ndimage import uniform_filter

from calibration.quantities import Fit, Quantity, param_stderr

__all__ = ["CameraPoint", "TemporalStats", "temporal_stats", "robust_outliers", "fit_camera"]

_QUANT_VAR = 1.0 / 12.0        # DN^2, variance of uniform rounding
_CLIP_FRACTION = 1e-3          # a point with more clipped pixels is not in the linear range


@dataclass
class CameraPoint:
    """One operating point of a photon-transfer series.

    bright : (n, rows, cols) frames with light, n >= 2, DN.
    dark : (m, rows, cols) frames without light at the same exposure, m >= 2, DN.
    exposure_s : exposure time, seconds.
    photons_per_pixel : mean photons per pixel during one exposure (optional; gives QE).
    name : label used in error messages and the report.
    """

    bright: np.ndarray
    dark: np.ndarray
    exposure_s: float
    photons_per_pixel: float | None = None
    name: str = ""


@dataclass
class TemporalStats:
    """Temporal statistics of one stack of frames (DN)."""

    mean_adu: float           # spatial mean of the mean image over the used pixels
    var_adu2: float           # mean over pixels of the temporal variance
    var_stderr_adu2: float    # standard error of var_adu2
    mean_map_adu: np.ndarray  # (rows, cols) mean image
    n_frames: int
    n_pixels: int


def temporal_stats(frames, good=None) -> TemporalStats:
    """Mean and temporal variance of a frame stack, fixed-pattern noise cancelled.

    Parameters
    ----------
    frames : (n, rows, cols) array, n >= 2, DN.
    good : optional (rows, cols) bool mask of pixels to use.

    Returns
    -------
    TemporalStats with the mean (DN), the pixel-averaged temporal variance (DN^2)
    and its standard error (from the pixel-to-pixel scatter of the variances).
    """
    f = np.asarray(frames, dtype=np.float64)
    if f.ndim != 3 or f.shape[0] < 2:
        raise ValueError(f"temporal_stats needs a (n>=2, rows, cols) stack, got shape {f.shape}")
    mean_map = f.mean(axis=0)
    sel = (slice(None), good) if good is not None else (slice(None), Ellipsis)
    fs = f[sel].reshape(f.shape[0], -1)
    centred = fs - fs.mean(axis=1, keepdims=True)
    var_px = centred.var(axis=0, ddof=1)
    n_pix = var_px.size
    var = float(var_px.mean())
    se = float(var_px.std(ddof=1) / math.sqrt(n_pix)) if n_pix > 1 else float("nan")
    mu = float(mean_map[good].mean() if good is not None else mean_map.mean())
    return TemporalStats(mu, var, se, mean_map, f.shape[0], n_pix)


def robust_outliers(image, n_sigma: float, floor: float = 0.0, side: str = "both") -> np.ndarray:
    """Mask of pixels further than ``n_sigma`` robust standard deviations from the median.

    The robust standard deviation is 1.4826 * MAD, but at least ``floor`` (so a
    quantised, nearly constant image does not flag everything).  ``side`` is 'high',
    'low' or 'both'.
    """
    img = np.asarray(image, dtype=np.float64)
    med = np.median(img)
    sig = max(1.4826 * float(np.median(np.abs(img - med))), float(floor), 1e-300)
    d = (img - med) / sig
    if side == "high":
        return d > n_sigma
    if side == "low":
        return d < -n_sigma
    return np.abs(d) > n_sigma


def _line_fit(x, y, sigma, through_origin: bool = False):
    """Weighted straight line with lmfit; returns (slope, slope_se, icpt, icpt_se, result).

    Standard errors come from lmfit's covariance (scaled by the reduced chi-square);
    where lmfit cannot estimate them, the analytic weighted-least-squares covariance
    is used instead.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    w = 1.0 / np.asarray(sigma, float)
    model = lmfit.Model(lambda x, slope, intercept: slope * x + intercept)
    params = model.make_params(slope=1.0, intercept=0.0)
    if through_origin:
        params["intercept"].set(value=0.0, vary=False)
    a = np.vstack([x, np.ones_like(x)]).T if not through_origin else x[:, None]
    coef = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)[0]
    params["slope"].set(value=coef[0])
    if not through_origin:
        params["intercept"].set(value=coef[1])
    res = model.fit(y, params, x=x, weights=w)
    # analytic fallback covariance (scaled like lmfit's)
    aw = a * w[:, None]
    dof = max(len(x) - a.shape[1], 1)
    r = (y - res.best_fit) * w
    try:
        cov = np.linalg.inv(aw.T @ aw) * max(float(r @ r) / dof, 1e-300)
    except np.linalg.LinAlgError:
        cov = np.full((a.shape[1], a.shape[1]), np.nan)
    sp = res.params["slope"]
    ip = res.params["intercept"]
    s_se = param_stderr(sp, math.sqrt(cov[0, 0]) if cov[0, 0] >= 0 else float("nan"))
    i_se = 0.0 if through_origin else param_stderr(ip, math.sqrt(max(cov[1, 1], 0.0)))
    return float(sp.value), s_se, float(ip.value), i_se, res


def _check_stack(a, label: str, kind: str, shape):
    a = np.asarray(a)
    if a.size == 0:
        raise ValueError(f"point {label}: {kind} frames are empty; record frames for every point")
    if a.ndim != 3 or a.shape[0] < 2:
        raise ValueError(f"point {label}: {kind} must be (n>=2, rows, cols) frames, got shape {a.shape}; "
                         "record at least two frames per point")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise TypeError(f"point {label}: {kind} frames must be real numbers, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"point {label}: {kind} frames contain NaN or inf; drop the bad frames and re-record")
    if shape is not None and a.shape[1:] != shape:
        raise ValueError(f"point {label}: {kind} frames are {a.shape[1:]} but earlier frames are {shape}; "
                         "use one region of interest for the whole series")
    return a


def _validate(points) -> list[CameraPoint]:
    if isinstance(points, CameraPoint):
        raise TypeError("fit_camera needs a sequence of CameraPoint (a photon-transfer series), not one point")
    points = list(points)
    if len(points) < 3:
        raise ValueError(f"camera fit needs at least 3 operating points (got {len(points)}): "
                         "record a photon-transfer series from dark to saturation")
    shape = None
    out = []
    for i, p in enumerate(points):
        if not isinstance(p, CameraPoint):
            raise TypeError(f"point {i} is a {type(p).__name__}, expected CameraPoint(bright, dark, exposure_s)")
        label = p.name or f"#{i}"
        bright = _check_stack(p.bright, label, "bright", shape)
        shape = bright.shape[1:]
        dark = _check_stack(p.dark, label, "dark", shape)
        try:
            exposure = float(p.exposure_s)
        except (TypeError, ValueError):
            raise ValueError(f"point {label}: exposure_s must be a number, got {p.exposure_s!r}") from None
        if not (np.isfinite(exposure) and exposure >= 0):
            raise ValueError(f"point {label}: exposure_s must be a finite number >= 0, got {p.exposure_s}")
        ph = p.photons_per_pixel
        if ph is not None:
            ph = float(ph)
            if not (np.isfinite(ph) and ph >= 0):
                raise ValueError(f"point {label}: photons_per_pixel must be finite and >= 0, got {p.photons_per_pixel}")
        out.append(CameraPoint(bright, dark, exposure, ph, p.name))
    if shape[0] * shape[1] < 16:
        raise ValueError(f"frames of {shape} pixels are too small for statistics; use at least 4x4 pixels")
    return out


def _is_integer_valued(points) -> bool:
    a = points[0].dark
    return bool(np.issubdtype(a.dtype, np.integer) or np.all(a[:1] == np.round(a[:1])))


def _dark_level(t, values, errors):
    """Dark quantity at zero exposure: line against t if the slope is significant, else weighted mean.

    Returns (value, stderr, slope per second or 0, slope stderr, used_line).
    """
    t = np.asarray(t, float)
    v = np.asarray(values, float)
    e = np.maximum(np.asarray(errors, float), 1e-12 * np.maximum(np.abs(v), 1e-12))
    if np.unique(t).size >= 3 and t.max() > 1.5 * max(t.min(), 1e-300):
        slope, s_se, icpt, i_se, _ = _line_fit(t, v, e)
        if np.isfinite(s_se) and s_se > 0 and abs(slope) > 3 * s_se:
            return icpt, i_se, slope, s_se, True
    w = 1.0 / e ** 2
    mean = float(np.sum(w * v) / np.sum(w))
    se = float(1.0 / math.sqrt(np.sum(w)))
    if v.size > 1:   # inflate for excess scatter between points
        chi2 = float(np.sum(w * (v - mean) ** 2)) / (v.size - 1)
        se *= math.sqrt(max(chi2, 1.0))
    return mean, se, 0.0, 0.0, False


def fit_camera(points: Sequence[CameraPoint], *, bit_depth: int | None = None,
               irradiance=None, flat: tuple | None = None, hot_sigma: float = 6.0,
               dead_sigma: float = 6.0, flat_highpass_px: int | None = None) -> Fit:
    """EMVA 1288 fit of a photon-transfer series.

    Long only because of this docstring (each option and output quantity is documented); the
    code is about 55 lines of sequential steps that call the module's helpers.

    Parameters
    ----------
    points : sequence of :class:`CameraPoint` (>= 3; order free), from dark (or weak light)
        up to and preferably past saturation; frames in DN, exposures in s.
    bit_depth : ADC bits; pixels at ``2**bit_depth - 1`` DN count as clipped.  Default:
        the largest value seen in the frames, for integer data.
    irradiance : optional sequence (one per point) proportional to photons per pixel,
        used as the x axis of the linearity fit (default: photons_per_pixel, else
        exposure_s).
    flat : optional ``(bright_frames, dark_frames)`` (DN) for PRNU (default: the series point
        nearest 50 % of saturation).
    hot_sigma, dead_sigma : outlier thresholds (robust standard deviations) of the
        defect mask.
    flat_highpass_px : if set, divide the flat image by its box mean of this size (px)
        before PRNU (removes illumination non-uniformity; EMVA 4 uses 5).

    Returns
    -------
    Fit named 'camera', model 'emva1288', quantities (each with its standard error)
    ``gain_adu_per_e`` (DN/e-), ``read_noise_e`` (e-), ``dark_offset_adu`` (DN),
    ``dark_noise_adu`` (DN), ``saturation_e`` (e-), ``linearity_error_pct`` (%),
    ``prnu_pct`` (%) (+ ``quantum_efficiency``, ``dark_current_e_per_s`` (e-/s) when
    measurable), arrays ``offset_map_adu`` (DN), ``prnu_map`` (relative), ``defect_mask``
    (uint8: 1 hot, 2 dead); ``x, y, y_fit`` = signal mean (DN), temporal variance (DN^2), PTC line.
    """
    points = _validate(points)
    n = len(points)
    warnings: list[str] = []
    integer = _is_integer_valued(points)
    clip_value = _clip_value(points, bit_depth, integer)
    irradiance = _check_irradiance(irradiance, n)
    exposures = np.array([p.exposure_s for p in points], float)
    shape = points[0].dark.shape[1:]

    hot = _hot_pixels(points[int(np.argmax(exposures))].dark, integer, clip_value, hot_sigma)
    good = ~hot
    s = _series_stats(points, good, clip_value)
    r = _ptc_ranges(s["x"], s["var_y"], s["clipped"], warnings)
    x, v, lin = s["x"], s["v"], r["lin"]
    gain, gain_se, icpt, icpt_se, ptc = _line_fit(x[lin], v[lin], np.maximum(s["v_se"][lin], 1e-12))
    if not gain > 0:
        raise ValueError(f"photon transfer gave a non-positive gain ({gain:.3g} DN/e-): the variance does not "
                         "grow with the signal; check that the frames are raw (no averaging or denoising)")
    if not np.isfinite(gain_se):
        raise ValueError("photon transfer: could not estimate the gain's uncertainty; record more points")

    quantities, dark_line = _dark_quantities(exposures, s, gain, gain_se, integer, warnings)
    offset_map = temporal_stats(points[int(np.argmin(exposures))].dark).mean_map_adu
    quantities["saturation_e"] = _saturation(s, r, gain, gain_se)
    le, h_name, deviations = _linearity_error(points, exposures, irradiance, s, r, warnings)
    quantities["linearity_error_pct"] = le
    fb, fd = _flat_frames(flat, points, shape, x, lin, r["x_sat"])
    prnu, resp, dead = _flat_field(fb, fd, good, flat_highpass_px, dead_sigma, warnings)
    quantities["prnu_pct"] = prnu
    _dark_current(quantities, dark_line, gain, gain_se)
    _quantum_efficiency(quantities, points, s, lin, gain, gain_se, warnings)

    defect = np.zeros(shape, np.uint8)
    defect[hot] |= 1
    defect[dead] |= 2
    order = r["order"]
    names = [p.name or f"#{i}" for i, p in enumerate(points)]
    info = {
        "points": [names[i] for i in order],
        "linear_range": [names[i] for i in order if lin[i]],
        "saturation_point": names[r["k_sat"]],
        "saturation_reached": bool(r["saturation_reached"]),
        "ptc_intercept_adu2": [icpt, icpt_se],
        "ptc_redchi": float(ptc.redchi),
        "dark_extrapolated_to_zero_exposure": bool(dark_line["offset_line"] or dark_line["var_line"]),
        "linearity_axis": h_name,
        "linearity_deviation_pct": None if deviations is None else [float(d) for d in deviations],
        "n_hot": int(hot.sum()), "n_dead": int(dead.sum()),
        "clip_value_adu": clip_value if np.isfinite(clip_value) else None,
        "warnings": warnings,
    }
    return Fit(name="camera", model="emva1288", quantities=quantities,
               arrays={"offset_map_adu": offset_map, "prnu_map": resp, "defect_mask": defect},
               x=x[order], y=v[order], y_fit=gain * x[order] + icpt, info=info)


def _check_irradiance(irradiance, n: int):
    """``irradiance`` as a float array of one finite value per point (None stays None)."""
    if irradiance is None:
        return None
    irradiance = np.asarray(irradiance, float).ravel()
    if irradiance.size != n or not np.all(np.isfinite(irradiance)):
        raise ValueError(f"irradiance needs one finite value per point ({n}), got {irradiance.size}")
    return irradiance


def _flat_frames(flat, points, shape, x, lin, x_sat):
    """(bright, dark) frames of the flat field: ``flat`` when given, else the linear-range point
    nearest 50 % of the saturation signal ``x_sat`` (DN)."""
    if flat is not None:
        if len(flat) != 2:
            raise ValueError("flat must be a (bright_frames, dark_frames) pair")
        fb = _check_stack(flat[0], "flat", "bright", shape)
        fd = _check_stack(flat[1], "flat", "dark", shape)
        return fb, fd
    cand = np.flatnonzero(lin)
    k_flat = int(cand[np.argmin(np.abs(x[cand] - 0.5 * x_sat))])
    return points[k_flat].bright, points[k_flat].dark


def _clip_value(points, bit_depth, integer: bool) -> float:
    """The value (DN) at which a pixel counts as clipped: ``2**bit_depth - 1``, else the largest
    value in integer frames, else infinity."""
    if bit_depth is not None:
        if int(bit_depth) != bit_depth or not 1 <= bit_depth <= 32:
            raise ValueError(f"bit_depth must be an integer 1..32, got {bit_depth}")
        return float(2 ** int(bit_depth) - 1)
    if integer:
        return float(max(p.bright.max() for p in points))
    return float("inf")


def _hot_pixels(dark_long, integer: bool, clip_value: float, hot_sigma: float) -> np.ndarray:
    """Hot (or clipped) pixels of the dark frames at the longest exposure, (rows, cols) bool."""
    d_long = temporal_stats(dark_long)
    floor = math.sqrt((d_long.var_adu2 + (_QUANT_VAR if integer else 0.0)) / d_long.n_frames)
    hot = robust_outliers(d_long.mean_map_adu, hot_sigma, floor=floor, side="high")
    if clip_value < np.inf:
        hot |= d_long.mean_map_adu >= clip_value
    if hot.mean() > 0.05:
        raise ValueError(f"{hot.mean():.0%} of pixels are hot or saturated in the dark frames: "
                         "check that the light is off and the exposure is within range")
    return hot


def _series_stats(points, good, clip_value: float) -> dict:
    """Temporal statistics of every point over the good pixels.

    Returns a dict of per-point arrays: ``mu_dark``/``mu_dark_se`` (DN), ``var_dark``/
    ``var_dark_se``, ``mu_y``, ``var_y``/``var_y_se`` (DN^2), ``clipped`` (fraction of clipped
    bright pixels), the signal ``x = mu_y - mu_dark`` (DN), its variance ``v`` and ``v_se``
    (DN^2), and ``n_samples`` (frames x pixels of each bright point).
    """
    darks = [temporal_stats(p.dark, good) for p in points]
    brights = [temporal_stats(p.bright, good) for p in points]
    s = {"mu_dark": np.array([d.mean_adu for d in darks]),
         "mu_dark_se": np.array([math.sqrt(d.var_adu2 / (d.n_frames * d.n_pixels)) for d in darks]),
         "var_dark": np.array([d.var_adu2 for d in darks]),
         "var_dark_se": np.array([d.var_stderr_adu2 for d in darks]),
         "mu_y": np.array([b.mean_adu for b in brights]),
         "var_y": np.array([b.var_adu2 for b in brights]),
         "var_y_se": np.array([b.var_stderr_adu2 for b in brights]),
         "clipped": np.array([float(np.mean(p.bright[:, good] >= clip_value)) for p in points]),
         "n_samples": np.array([b.n_frames * b.n_pixels for b in brights])}
    s["x"] = s["mu_y"] - s["mu_dark"]                        # signal, DN
    s["v"] = s["var_y"] - s["var_dark"]                      # signal temporal variance, DN^2
    s["v_se"] = np.sqrt(s["var_y_se"] ** 2 + s["var_dark_se"] ** 2)
    if np.all(s["clipped"] > 0.5):
        raise ValueError("every bright point is saturated: lower the exposure or the light and re-record")
    x = s["x"]
    if np.sum(x > 3 * np.sqrt(np.maximum(s["var_dark"], 1e-12) / good.sum())) < 3 or np.ptp(x) <= 0:
        raise ValueError("bright frames carry no light signal above the dark frames in at least 3 points: "
                         "check the light source and the exposure series")
    return s


def _ptc_ranges(x, var_y, clipped, warnings: list) -> dict:
    """Saturation point (variance maximum) and the linear range of the photon-transfer curve.

    Returns a dict: ``order`` (points by signal), ``k_sat``, ``x_sat`` (DN),
    ``saturation_reached``, ``below`` (points below saturation) and ``lin`` (the linear range:
    below 70 % of saturation and unclipped).
    """
    n = x.size
    order = np.argsort(x, kind="stable")
    # saturation point: maximum of the photon-transfer curve
    k_sat = int(order[np.argmax(var_y[order])])
    x_sat = float(x[k_sat])
    rank_sat = int(np.where(order == k_sat)[0][0])
    saturation_reached = rank_sat < n - 1
    if not saturation_reached:
        warnings.append("the variance never fell after its maximum: the series did not reach "
                        "saturation, saturation_e is a lower bound")
    below = np.zeros(n, bool)
    below[order[:rank_sat + (0 if saturation_reached else 1)]] = True
    lin = below & (x <= 0.7 * x_sat) & (clipped <= _CLIP_FRACTION)
    if lin.sum() < 3:
        raise ValueError(f"photon transfer: only {int(lin.sum())} points lie in the linear range (below 70 % of "
                         "saturation); record at least 3 points at lower exposure or light")
    return {"order": order, "k_sat": k_sat, "x_sat": x_sat, "saturation_reached": saturation_reached,
            "below": below, "lin": lin}


def _dark_quantities(exposures, s, gain, gain_se, integer: bool, warnings: list) -> tuple[dict, dict]:
    """Dark offset, dark noise and read noise at zero exposure.

    Returns (quantities ``gain_adu_per_e``, ``read_noise_e``, ``dark_offset_adu``,
    ``dark_noise_adu``; the dark-offset line: ``slope``/``slope_se`` (DN/s), ``offset_line``
    and ``var_line`` (whether a line against exposure was used)).
    """
    off, off_se, off_slope, off_slope_se, off_line = _dark_level(exposures, s["mu_dark"], s["mu_dark_se"])
    vd, vd_se, _, _, vd_line = _dark_level(exposures, s["var_dark"], s["var_dark_se"])
    q = _QUANT_VAR if integer else 0.0
    if vd - q <= 0:
        warnings.append("dark noise is below the quantisation noise; read noise set from the quantisation floor")
    read_var = max(vd - q, 1e-12)
    dark_noise_adu = math.sqrt(vd)
    read_noise_e = math.sqrt(read_var) / gain
    read_noise_se = read_noise_e * math.sqrt((0.5 * vd_se / read_var) ** 2 + (gain_se / gain) ** 2)
    quantities = {
        "gain_adu_per_e": Quantity(gain, gain_se, "DN/e-"),
        "read_noise_e": Quantity(read_noise_e, read_noise_se, "e-"),
        "dark_offset_adu": Quantity(off, off_se, "DN"),
        "dark_noise_adu": Quantity(dark_noise_adu, 0.5 * vd_se / dark_noise_adu, "DN"),
    }
    return quantities, {"slope": off_slope, "slope_se": off_slope_se, "offset_line": off_line, "var_line": vd_line}


def _saturation(s, r, gain, gain_se) -> Quantity:
    """Saturation capacity (e-): the signal at the variance maximum over the gain."""
    k_sat, x_sat = r["k_sat"], r["x_sat"]
    sat_e = x_sat / gain
    sat_se = sat_e * math.sqrt((gain_se / gain) ** 2
                               + (math.sqrt(s["var_y"][k_sat] / s["n_samples"][k_sat]) / max(x_sat, 1e-12)) ** 2)
    return Quantity(sat_e, sat_se, "e-")


def _linearity_error(points, exposures, irradiance, s, r, warnings: list):
    """EMVA 3 linearity error (%) between 5 % and 95 % of saturation, its standard error from
    200 noise draws (fixed seed).  Returns (Quantity, x-axis name, deviations (%) or None)."""
    photons = [p.photons_per_pixel for p in points]
    if irradiance is not None:
        h, h_name = irradiance, "irradiance"
    elif all(ph is not None for ph in photons):
        h, h_name = np.array(photons, float), "photons_per_pixel"
    else:
        h, h_name = exposures, "exposure_s"
    x, x_sat = s["x"], r["x_sat"]
    le, le_se, deviations = float("nan"), float("nan"), None
    lin_range = r["below"] & (x >= 0.05 * x_sat) & (x <= 0.95 * x_sat)
    if np.unique(h[lin_range]).size >= 3:
        mu_se = np.sqrt(s["var_y"] / s["n_samples"] + s["mu_dark_se"] ** 2)
        le, deviations = _linearity(h[lin_range], x[lin_range])
        rng = np.random.default_rng(12345)
        draws = [_linearity(h[lin_range], x[lin_range] + rng.normal(0, mu_se[lin_range]))[0] for _ in range(200)]
        le_se = float(np.std(draws, ddof=1))
    else:
        warnings.append(f"linearity error not measurable: {h_name} takes fewer than 3 distinct values "
                        "between 5 % and 95 % of saturation (pass irradiance= or photons_per_pixel)")
    return Quantity(le, le_se, "%"), h_name, deviations


def _flat_field(fb, fd, good, flat_highpass_px, dead_sigma: float, warnings: list):
    """PRNU (%) and dead pixels from a flat field (bright and dark frames, DN).

    Returns (Quantity ``prnu_pct``, the relative response map, the dead-pixel mask).
    """
    sb, sd = temporal_stats(fb, good), temporal_stats(fd, good)
    signal_map = sb.mean_map_adu - sd.mean_map_adu
    if flat_highpass_px:
        k = int(flat_highpass_px)
        signal_map = signal_map / np.maximum(uniform_filter(signal_map, size=k, mode="reflect"), 1e-12) \
            * float(signal_map[good].mean())
    mean_signal = float(signal_map[good].mean())
    if mean_signal <= 0:
        raise ValueError("the flat field has no signal above dark; record a flat near 50 % of saturation")
    resp = signal_map / mean_signal
    resp_floor = math.sqrt(sb.var_adu2 / sb.n_frames + sd.var_adu2 / sd.n_frames) / mean_signal
    dead = robust_outliers(np.where(good, resp, 1.0), dead_sigma, floor=resp_floor) & good
    good2 = good & ~dead
    s = signal_map[good2]
    temporal_left = sb.var_adu2 / sb.n_frames + sd.var_adu2 / sd.n_frames
    spatial_var = float(s.var(ddof=1)) - temporal_left
    if flat_highpass_px:
        spatial_var /= max(1.0 - 1.0 / int(flat_highpass_px) ** 2, 1e-6)
    if spatial_var <= 0:
        warnings.append("PRNU is below the temporal noise of the averaged flat: record more flat frames")
    prnu = 100.0 * math.sqrt(max(spatial_var, 0.0)) / mean_signal
    # variance of a sample variance of N values: 2 s^4 / (N - 1), s^2 the measured spatial variance
    spatial_var_se = (spatial_var + temporal_left) * math.sqrt(2.0 / (s.size - 1))
    prnu_se = 100.0 * spatial_var_se / (2.0 * math.sqrt(max(spatial_var, spatial_var_se))) / mean_signal
    return Quantity(prnu, prnu_se, "%"), resp, dead


def _dark_current(quantities: dict, dark_line: dict, gain, gain_se) -> None:
    """Add ``dark_current_e_per_s`` (e-/s) when the dark offset grew with exposure."""
    if dark_line["offset_line"]:
        off_slope, off_slope_se = dark_line["slope"], dark_line["slope_se"]
        quantities["dark_current_e_per_s"] = Quantity(off_slope / gain, abs(off_slope / gain) * math.sqrt(
            (off_slope_se / off_slope) ** 2 + (gain_se / gain) ** 2), "e-/s")


def _quantum_efficiency(quantities: dict, points, s, lin, gain, gain_se, warnings: list) -> None:
    """Add ``quantum_efficiency`` (responsivity over gain) when every point has photons_per_pixel."""
    photons = [p.photons_per_pixel for p in points]
    if not all(ph is not None for ph in photons):
        return
    ph = np.array(photons, float)
    if np.unique(ph[lin]).size >= 2 and np.ptp(ph[lin]) > 0:
        x, var_y = s["x"], s["var_y"]
        resp_slope, resp_se, _, _, _ = _line_fit(ph[lin], x[lin], np.sqrt(var_y[lin] / np.array(
            [s["n_samples"][i] for i in np.flatnonzero(lin)])) + 1e-12)
        eta = resp_slope / gain
        eta_se = abs(eta) * math.sqrt((resp_se / resp_slope) ** 2 + (gain_se / gain) ** 2)
        quantities["quantum_efficiency"] = Quantity(eta, eta_se, "")
    else:
        warnings.append("quantum efficiency not measurable: photons_per_pixel does not vary in the linear range")


def _linearity(h, x):
    """EMVA 3 linearity error (%) and the deviations, line fitted by least relative deviation."""
    w = 1.0 / np.maximum(np.abs(x), 1e-12)
    a = np.vstack([h, np.ones_like(h)]).T
    coef = np.linalg.lstsq(a * w[:, None], x * w, rcond=None)[0]
    fit = a @ coef
    delta = 100.0 * (x - fit) / fit
    return float((delta.max() - delta.min()) / 2.0), delta
