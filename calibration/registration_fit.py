"""Registration fits (pure functions on numpy arrays): sub-pixel spots and layout -> camera transforms.

Coordinates are (row, col) in pixels everywhere, pixel centres at integers.

Spots
-----
:func:`find_spot` fits a pixel-integrated 2-D Gaussian plus a constant background,

    I(r, c) = A * Pr(r) * Pc(c) + B,   Pr(r) = (erf((r + 1/2 - r0) / (sqrt 2 s)) - erf((r - 1/2 - r0) / (sqrt 2 s))) / 2

to a window around the brightest (smoothed) pixel, by weighted least squares: with a given
per-pixel noise variance, or else a variance that grows linearly with the signal (shot
noise; the two noise coefficients come from the residuals of a first unweighted pass).
Standard errors come from the Jacobian, scaled by the reduced chi-square.
:func:`centroid` is the background-subtracted centre of mass (a start value and a fallback).

Transforms
----------
``dst = T(src)`` maps layout-frame points to camera pixels.

* similarity (4 parameters: scale, rotation, offset) - used when fewer than 3 non-collinear
  spots exist (2 spots determine it exactly);
* affine (6 parameters, 2x3 matrix) - the default;
* homography (8 parameters, 3x3 matrix) - kept only when it fits significantly better than
  the affine one (F-test at ``p < 0.01``) and at least 6 spots exist.

Fits are weighted least squares with the spots' standard errors; the parameter covariance
is scaled by ``max(1, reduced chi-square)`` (so a model that misses by more than the noise
reports honest errors).  With at least 5 spots, RANSAC (:func:`skimage.measure.ransac` with
affine models, collinear samples rejected) first marks outliers (residual above
``outlier_px``), which are left out of the final fit.  The rotation and scale of an affine
or homography matrix are those of its linear part ``L``: ``rotation = atan2(L10 - L01,
L00 + L11)`` (positive turns the row axis towards +col, as
:class:`hwio.sim.truth.RegistrationTruth`), ``scale = sqrt(|det L|)``; for a homography
``L`` is its Jacobian at the centroid of the layout points.

Registration of a camera
------------------------
:func:`spot_image` turns the on/off frames of one lit neuron into its spot image,
:func:`fit_spots` finds every spot of a camera, :func:`register_camera` fits the camera's
transform and derives the quantities the ``registration`` fit stores
(:mod:`calibration.procedures.registration` takes the frames).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.optimize import least_squares
from scipy.special import erf
from scipy.stats import f as f_dist

from calibration.quantities import Quantity

__all__ = ["SpotFit", "centroid", "find_spot", "TransformFit", "fit_similarity", "fit_affine",
           "fit_homography", "fit_transform", "apply_transform", "decompose", "noncollinear", "spot_image",
           "fit_spots", "register_camera"]

_SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------------- spots
@dataclass
class SpotFit:
    """A fitted spot: centre (row, col) px with standard errors, Gaussian sigma (px),
    peak-integral amplitude (flux, image units x pixels), background (image units)."""

    center_px: np.ndarray
    stderr_px: np.ndarray
    sigma_px: float
    sigma_stderr_px: float
    flux: float
    background: float
    redchi: float
    method: str = "gaussian"
    window: tuple = ()


def _check_image(image) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or min(img.shape) < 3:
        raise ValueError(f"spot finding needs a 2-D image of at least 3x3 pixels, got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise ValueError("spot image contains NaN or inf; discard the frame and grab again")
    return img


def centroid(image, background: float | None = None) -> np.ndarray:
    """Background-subtracted centre of mass (row, col) of an image (negative values clipped).

    ``background`` defaults to the median of the image border.

    Parameters
    ----------
    image : 2-D array.
    background : level subtracted first (image units).

    Returns
    -------
    ndarray (2,) : (row, col) in px.
    """
    img = _check_image(image)
    if background is None:
        border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
        background = float(np.median(border))
    w = np.clip(img - background, 0.0, None)
    tot = w.sum()
    if tot <= 0:
        raise ValueError("no signal above the background: the spot is not in the image")
    r, c = np.indices(img.shape)
    return np.array([(w * r).sum() / tot, (w * c).sum() / tot])


def _pixel_profile(x, x0, s):
    a = (x + 0.5 - x0) / (_SQRT2 * s)
    b = (x - 0.5 - x0) / (_SQRT2 * s)
    return 0.5 * (erf(a) - erf(b))


def _spot_model(p, rr, cc):
    amp, r0, c0, s, bg = p
    return amp * _pixel_profile(rr, r0, s)[:, None] * _pixel_profile(cc, c0, s)[None, :] + bg


def find_spot(image, guess_px=None, *, window_px: float | None = None, sigma_px: float | None = None,
              smooth_px: float = 1.0, variance=None) -> SpotFit:
    """Sub-pixel centre of the (single) bright spot of ``image`` near ``guess_px``.

    Parameters
    ----------
    image : 2-D array, background roughly flat (e.g. a difference of spot-on and spot-off frames).
    guess_px : (row, col) start; default the maximum of the image smoothed by ``smooth_px``.
    window_px : half-width of the fitted window (default ``max(4, 3.5 * sigma)``, sigma from
        ``sigma_px`` or 2 px).
    sigma_px : start value of the Gaussian sigma (px).
    smooth_px : Gaussian smoothing used to locate the peak.
    variance : optional per-pixel noise variance of ``image`` (same shape), e.g. from the
        scatter of the averaged frames; then the weights are ``1/sqrt(variance)`` instead of
        the fitted signal-dependent noise model.

    Returns
    -------
    SpotFit.  Raises ValueError when no spot stands out of the noise.
    """
    img = _check_image(image)
    s0 = 2.0 if sigma_px is None else float(sigma_px)
    if not (math.isfinite(s0) and s0 > 0):
        raise ValueError(f"sigma_px must be a positive number of pixels, got {sigma_px}")
    guess = _spot_guess(img, guess_px, smooth_px)
    half = int(math.ceil(window_px if window_px is not None else max(4.0, 3.5 * s0)))
    r_lo = int(np.clip(round(guess[0]) - half, 0, img.shape[0] - 1))
    r_hi = int(np.clip(round(guess[0]) + half + 1, 1, img.shape[0]))
    c_lo = int(np.clip(round(guess[1]) - half, 0, img.shape[1] - 1))
    c_hi = int(np.clip(round(guess[1]) + half + 1, 1, img.shape[1]))
    win = img[r_lo:r_hi, c_lo:c_hi]
    if min(win.shape) < 5:
        raise ValueError(f"spot at {guess.round(1).tolist()} is too close to the image edge to fit")
    rr = np.arange(r_lo, r_hi, dtype=float)
    cc = np.arange(c_lo, c_hi, dtype=float)
    p0 = _spot_start(win, guess, r_lo, c_lo, s0)
    lo = np.array([0.0, r_lo - 0.5, c_lo - 0.5, 0.3, -np.inf])
    hi = np.array([np.inf, r_hi - 0.5, c_hi - 0.5, 3.0 * half, np.inf])
    p0 = np.clip(p0, lo + 1e-9, hi - 1e-9)
    y = win.ravel()

    def run(p_start, w):
        def res(p):
            return (_spot_model(p, rr, cc).ravel() - y) * w
        return least_squares(res, p_start, bounds=(lo, hi), x_scale="jac", method="trf")

    if variance is not None:
        var = np.asarray(variance, dtype=np.float64)
        if var.shape != img.shape or not np.all(np.isfinite(var)):
            raise ValueError(f"variance must be a finite array of the image's shape {img.shape}, got {var.shape}")
        vw = var[r_lo:r_hi, c_lo:c_hi].ravel()
        floor = max(1e-3 * float(np.median(vw)), 1e-300)
        fit = run(p0, 1.0 / np.sqrt(np.maximum(vw, floor)))
    else:
        first = run(p0, np.ones_like(y))
        fit = run(first.x, _shot_noise_weights(first, rr, cc))
    dof = max(y.size - 5, 1)
    redchi = float(fit.fun @ fit.fun) / dof
    try:
        cov = np.linalg.pinv(fit.jac.T @ fit.jac) * max(redchi, 1e-300)
        se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    except np.linalg.LinAlgError:
        se = np.full(5, np.nan)
    p = fit.x
    return SpotFit(center_px=np.array([p[1], p[2]]), stderr_px=np.array([se[1], se[2]]), sigma_px=float(p[3]),
                   sigma_stderr_px=float(se[3]), flux=float(p[0]), background=float(p[4]), redchi=redchi,
                   window=(r_lo, r_hi, c_lo, c_hi))


def _spot_guess(img: np.ndarray, guess_px, smooth_px: float) -> np.ndarray:
    """Start (row, col) in px: ``guess_px`` checked, or the maximum of the smoothed image."""
    if guess_px is None:
        sm = gaussian_filter(img, smooth_px) if smooth_px > 0 else img
        return np.array(np.unravel_index(int(np.argmax(sm)), img.shape), dtype=float)
    guess = np.asarray(guess_px, dtype=float).ravel()
    if guess.shape != (2,) or not np.all(np.isfinite(guess)):
        raise ValueError(f"guess_px must be (row, col), got {guess_px!r}")
    return guess


def _spot_start(win: np.ndarray, guess: np.ndarray, r_lo: int, c_lo: int, s0: float) -> np.ndarray:
    """Start parameters (flux, row, col, sigma, background) of a window; ValueError when no spot stands out."""
    border = np.concatenate([win[0], win[-1], win[1:-1, 0], win[1:-1, -1]])
    bg0 = float(np.median(border))
    noise0 = 1.4826 * float(np.median(np.abs(border - bg0))) or float(np.std(border)) or 1.0
    peak = float(win.max() - bg0)
    if peak < 5.0 * noise0:
        raise ValueError(f"no spot stands out of the noise near {guess.round(1).tolist()} "
                         f"(peak {peak:.3g} vs noise {noise0:.3g}); raise the light or average more frames")
    c_start = centroid(win, bg0) + np.array([r_lo, c_lo])
    return np.array([peak * 2 * math.pi * s0 ** 2, c_start[0], c_start[1], s0, bg0])


def _shot_noise_weights(first, rr: np.ndarray, cc: np.ndarray) -> np.ndarray:
    """Weights 1/sqrt(v0 + q * signal) with the noise model fitted to an unweighted pass's residuals."""
    sig = np.clip(_spot_model(first.x, rr, cc).ravel() - first.x[4], 0.0, None)
    r2 = first.fun ** 2
    a = np.column_stack([np.ones_like(sig), sig])
    coef = np.linalg.lstsq(a, r2, rcond=None)[0]
    v0 = max(float(coef[0]), 1e-3 * float(np.mean(r2)) + 1e-300)
    q = max(float(coef[1]), 0.0)
    return 1.0 / np.sqrt(v0 + q * sig)


# ----------------------------------------------------------------------------------- transforms
@dataclass
class TransformFit:
    """A fitted layout -> camera transform.

    model : 'similarity', 'affine' or 'homography'.
    matrix : 3x3 homogeneous matrix acting on (row, col, 1).
    params, cov : fitted parameters and their covariance (model-specific order).
    residuals_px : (n, 2) camera-frame residuals (measured - model) of all points.
    inliers : bool (n,) points used in the final fit.
    rotation_deg, scale, offset_px : the decomposition (see the module docstring), with
        ``stderr`` dict of their standard errors (keys rotation_deg, scale, offset_row_px,
        offset_col_px).
    residual_px : rms distance (px) between measured and model points over the inliers.
    redchi : reduced chi-square of the weighted fit (nan with no degrees of freedom).
    """

    model: str
    matrix: np.ndarray
    params: np.ndarray
    cov: np.ndarray
    residuals_px: np.ndarray
    inliers: np.ndarray
    rotation_deg: float
    scale: float
    offset_px: np.ndarray
    stderr: dict
    residual_px: float
    redchi: float
    dof: int
    info: dict = field(default_factory=dict)

    @property
    def matrix_2x3(self) -> np.ndarray:
        return self.matrix[:2, :]

    def apply(self, points) -> np.ndarray:
        return apply_transform(self.matrix, points)


def apply_transform(matrix, points) -> np.ndarray:
    """Apply a 2x3 affine or 3x3 homogeneous matrix to (n, 2) points (row, col).

    Parameters
    ----------
    matrix : 2x3 or 3x3 transform acting on (row, col, 1).
    points : (n, 2) points (row, col) px.

    Returns
    -------
    ndarray (n, 2) : the transformed points (px).
    """
    m = np.asarray(matrix, dtype=float)
    p = np.atleast_2d(np.asarray(points, dtype=float))
    if m.shape == (2, 3):
        m = np.vstack([m, [0.0, 0.0, 1.0]])
    if m.shape != (3, 3):
        raise ValueError(f"transform matrix must be 2x3 or 3x3, got {m.shape}")
    h = np.column_stack([p, np.ones(len(p))]) @ m.T
    return h[:, :2] / h[:, 2:3]


def decompose(matrix, at=None) -> tuple[float, float, np.ndarray]:
    """(rotation_deg, scale, offset_px) of a 2x3/3x3 transform (linear part at point ``at``).

    Parameters
    ----------
    matrix : 2x3 or 3x3 transform.
    at : (row, col) where a homography's Jacobian is taken.

    Returns
    -------
    (float, float, ndarray) : rotation (deg), scale and offset (row, col) px.
    """
    m = np.asarray(matrix, dtype=float)
    if m.shape == (2, 3):
        m = np.vstack([m, [0.0, 0.0, 1.0]])
    p = np.zeros(2) if at is None else np.asarray(at, dtype=float)
    # Jacobian of the projective map at p
    h = m @ np.r_[p, 1.0]
    lin = (m[:2, :2] * h[2] - np.outer(h[:2], m[2, :2])) / h[2] ** 2
    rot = math.degrees(math.atan2(lin[1, 0] - lin[0, 1], lin[0, 0] + lin[1, 1]))
    scale = math.sqrt(abs(float(np.linalg.det(lin))))
    offset = apply_transform(m, np.zeros((1, 2)))[0]
    return rot, scale, offset


def noncollinear(points, tol_px: float = 1e-6) -> bool:
    """Whether ``points`` (n, 2) contain 3 points that are not on one line.

    Parameters
    ----------
    points : (n, 2) points (px).
    tol_px : the spread across the best line (smallest singular value of the centred points)
        must exceed ``tol_px * max(1, spread along it)``.

    Returns
    -------
    bool : at least three points and not all on one line.
    """
    p = np.asarray(points, dtype=float)
    if len(p) < 3:
        return False
    c = p - p.mean(axis=0)
    sv = np.linalg.svd(c, compute_uv=False)
    return bool(sv[-1] > tol_px * max(1.0, sv[0]))


def _check_points(src, dst, stderr):
    s = np.asarray(src, dtype=float)
    d = np.asarray(dst, dtype=float)
    if s.ndim != 2 or s.shape[1] != 2 or d.shape != s.shape:
        raise ValueError(f"layout and camera points must both be (n, 2) (row, col), got {s.shape} and {d.shape}")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(d))):
        raise ValueError("registration points contain NaN or inf; re-measure the spots")
    if stderr is None:
        e = np.ones_like(d)
    else:
        e = np.asarray(stderr, dtype=float)
        if e.ndim == 1 and e.shape[0] == d.shape[0]:
            e = np.repeat(e[:, None], 2, axis=1)
        e = np.broadcast_to(e, d.shape).copy()
        if not np.all(np.isfinite(e)) or np.any(e <= 0):
            raise ValueError("spot standard errors must be finite and > 0")
    return s, d, e


def _design_similarity(s):
    # row' = a r - b c + tr ; col' = b r + a c + tc ; params (a, b, tr, tc)
    n = len(s)
    x = np.zeros((2 * n, 4))
    x[0::2, 0], x[0::2, 1], x[0::2, 2] = s[:, 0], -s[:, 1], 1.0
    x[1::2, 0], x[1::2, 1], x[1::2, 3] = s[:, 1], s[:, 0], 1.0
    return x


def _design_affine(s):
    # row' = m00 r + m01 c + m02 ; col' = m10 r + m11 c + m12
    n = len(s)
    x = np.zeros((2 * n, 6))
    x[0::2, 0], x[0::2, 1], x[0::2, 2] = s[:, 0], s[:, 1], 1.0
    x[1::2, 3], x[1::2, 4], x[1::2, 5] = s[:, 0], s[:, 1], 1.0
    return x


def _matrix_from(model, p):
    if model == "similarity":
        a, b, tr, tc = p
        return np.array([[a, -b, tr], [b, a, tc], [0.0, 0.0, 1.0]])
    if model == "affine":
        return np.vstack([np.reshape(p, (2, 3)), [0.0, 0.0, 1.0]])
    return np.append(p, 1.0).reshape(3, 3)


def _linear_wls(x, y, w):
    xw = x * w[:, None]
    yw = y * w
    p, *_ = np.linalg.lstsq(xw, yw, rcond=None)
    r = yw - xw @ p
    try:
        cov0 = np.linalg.inv(xw.T @ xw)
    except np.linalg.LinAlgError:
        cov0 = np.linalg.pinv(xw.T @ xw)
    return p, cov0, float(r @ r)


def _finish(model, p, cov0, chi2, s_all, d_all, e_all, inl, info):
    n_par = p.size
    n_obs = 2 * int(inl.sum())
    dof = n_obs - n_par
    redchi = chi2 / dof if dof > 0 else float("nan")
    cov = cov0 * (max(redchi, 1.0) if dof > 0 else 1.0)
    m = _matrix_from(model, p)
    pred = apply_transform(m, s_all)
    resid = d_all - pred
    rms = float(np.sqrt(np.mean(np.sum(resid[inl] ** 2, axis=1))))
    at = s_all[inl].mean(axis=0) if model == "homography" else None
    rot, scale, off = decompose(m, at)

    def derived(pp):
        r_, s_, o_ = decompose(_matrix_from(model, pp), at)
        return np.array([r_, s_, o_[0], o_[1]])

    base = derived(p)
    jac = np.empty((4, n_par))
    for k in range(n_par):
        h = 1e-7 * max(abs(p[k]), 1e-3)
        pp = p.copy()
        pp[k] += h
        jac[:, k] = (derived(pp) - base) / h
    dcov = jac @ cov @ jac.T
    se = np.sqrt(np.clip(np.diag(dcov), 0.0, None))
    stderr = {"rotation_deg": float(se[0]), "scale": float(se[1]), "offset_row_px": float(se[2]),
              "offset_col_px": float(se[3])}
    return TransformFit(model=model, matrix=m, params=p, cov=cov, residuals_px=resid, inliers=inl,
                        rotation_deg=rot, scale=scale, offset_px=off, stderr=stderr, residual_px=rms,
                        redchi=redchi, dof=dof, info={**info, "chi2": chi2})


def fit_similarity(src, dst, stderr=None, inliers=None) -> TransformFit:
    """Similarity transform (scale, rotation, offset) by weighted least squares (>= 2 points).

    Parameters
    ----------
    src, dst : (n, 2) layout and camera points (px).
    stderr : (n, 2) standard errors of ``dst`` (px) or None (equal weights).
    inliers : bool (n,) points to fit (default all).

    Returns
    -------
    TransformFit
    """
    s, d, e = _check_points(src, dst, stderr)
    inl = np.ones(len(s), bool) if inliers is None else np.asarray(inliers, bool)
    if inl.sum() < 2:
        raise ValueError("a similarity transform needs at least 2 spots")
    x = _design_similarity(s[inl])
    p, cov0, chi2 = _linear_wls(x, d[inl].ravel(), 1.0 / e[inl].ravel())
    return _finish("similarity", p, cov0, chi2, s, d, e, inl, {})


def fit_affine(src, dst, stderr=None, inliers=None) -> TransformFit:
    """Affine transform (2x3) by weighted least squares (>= 3 non-collinear points).

    Parameters
    ----------
    src, dst : (n, 2) layout and camera points (px).
    stderr : (n, 2) standard errors of ``dst`` (px) or None (equal weights).
    inliers : bool (n,) points to fit (default all).

    Returns
    -------
    TransformFit
    """
    s, d, e = _check_points(src, dst, stderr)
    inl = np.ones(len(s), bool) if inliers is None else np.asarray(inliers, bool)
    if not noncollinear(s[inl]):
        raise ValueError("an affine transform needs at least 3 non-collinear spots; use fit_similarity")
    x = _design_affine(s[inl])
    p, cov0, chi2 = _linear_wls(x, d[inl].ravel(), 1.0 / e[inl].ravel())
    return _finish("affine", p, cov0, chi2, s, d, e, inl, {})


def fit_homography(src, dst, stderr=None, inliers=None) -> TransformFit:
    """Homography (3x3, h22 = 1) by weighted least squares on the reprojection error (>= 4 points).

    Parameters
    ----------
    src, dst : (n, 2) layout and camera points (px).
    stderr : (n, 2) standard errors of ``dst`` (px) or None (equal weights).
    inliers : bool (n,) points to fit (default all).

    Returns
    -------
    TransformFit
    """
    s, d, e = _check_points(src, dst, stderr)
    inl = np.ones(len(s), bool) if inliers is None else np.asarray(inliers, bool)
    if inl.sum() < 4 or not noncollinear(s[inl]):
        raise ValueError("a homography needs at least 4 spots, not all on one line")
    start = fit_affine(s, d, e, inl).matrix.ravel()[:8]
    si, di, ei = s[inl], d[inl], e[inl]

    def res(p):
        return ((apply_transform(_matrix_from("homography", p), si) - di) / ei).ravel()

    sol = least_squares(res, start, method="lm" if 2 * len(si) >= 8 else "trf", x_scale="jac")
    j = sol.jac
    try:
        cov0 = np.linalg.inv(j.T @ j)
    except np.linalg.LinAlgError:
        cov0 = np.linalg.pinv(j.T @ j)
    return _finish("homography", sol.x, cov0, float(sol.fun @ sol.fun), s, d, e, inl, {})


def _ransac_inliers(s, d, threshold_px: float, seed: int = 0) -> np.ndarray:
    """Inlier mask from RANSAC with affine models (skimage); all True when too few points."""
    n = len(s)
    if n < 5:
        return np.ones(n, bool)
    from skimage.measure import ransac
    from skimage.transform import AffineTransform

    def valid(src_, dst_):
        return noncollinear(src_, 1e-3)

    try:
        model, inl = ransac((s, d), AffineTransform, min_samples=3, residual_threshold=threshold_px,
                            is_data_valid=valid, max_trials=max(200, 10 * math.comb(n, 3) if n < 40 else 2000),
                            rng=seed)
    except (ValueError, np.linalg.LinAlgError):
        return np.ones(n, bool)
    if inl is None or inl.sum() < 3 or not noncollinear(s[inl]):
        # RANSAC failed: fall back to an exhaustive consensus over non-collinear triples
        best = np.ones(n, bool)
        best_n = -1
        for tri in itertools.combinations(range(n), 3):
            tri = list(tri)
            if not noncollinear(s[tri], 1e-3):
                continue
            m = fit_affine(s[tri], d[tri]).matrix
            ok = np.hypot(*(apply_transform(m, s) - d).T) < threshold_px
            if ok.sum() > best_n:
                best, best_n = ok, int(ok.sum())
        return best
    return np.asarray(inl, bool)


def fit_transform(src, dst, stderr=None, *, model: str = "auto", outlier_px: float = 1.0,
                  f_test_p: float = 0.01) -> TransformFit:
    """Layout -> camera transform with model choice and RANSAC outlier rejection.

    Parameters
    ----------
    src : (n, 2) layout-frame points (row, col).
    dst : (n, 2) measured camera points (row, col), px.
    stderr : (n,) or (n, 2) standard errors of ``dst`` (px); default 1 (then the covariance
        comes from the residual scatter alone).
    model : 'auto' (similarity below 3 non-collinear points, else affine, homography when
        significantly better), or 'similarity', 'affine', 'homography'.
    outlier_px : RANSAC residual threshold (px).
    f_test_p : significance level for preferring the homography.

    Returns
    -------
    TransformFit; ``info`` holds the alternatives' residuals and the F-test.
    """
    s, d, e = _check_points(src, dst, stderr)
    if model not in ("auto", "similarity", "affine", "homography"):
        raise ValueError(f"model must be 'auto', 'similarity', 'affine' or 'homography', got {model!r}")
    if len(s) < 2:
        raise ValueError(f"registration needs at least 2 spots, got {len(s)}")
    inl = _ransac_inliers(s, d, float(outlier_px)) if noncollinear(s) else np.ones(len(s), bool)
    n_out = int((~inl).sum())
    info = {"n_points": len(s), "n_outliers": n_out}
    if model == "similarity" or (model == "auto" and not noncollinear(s[inl])):
        fit = fit_similarity(s, d, e, inl)
    elif model == "homography":
        fit = fit_homography(s, d, e, inl)
    else:
        fit = fit_affine(s, d, e, inl)
        if model == "auto" and inl.sum() >= 6:
            hom = fit_homography(s, d, e, inl)
            chi_a, chi_h = fit.info["chi2"], hom.info["chi2"]
            dof_h = hom.dof
            if dof_h > 0 and chi_h > 0:
                fstat = ((chi_a - chi_h) / 2.0) / (chi_h / dof_h)
                p = float(f_dist.sf(max(fstat, 0.0), 2, dof_h))
            else:
                p = 1.0
            info["homography_f_test_p"] = p
            info["homography_residual_px"] = hom.residual_px
            if p < f_test_p:
                info["affine_residual_px"] = fit.residual_px
                fit = hom
    fit.info.update(info)
    return fit


# ----------------------------------------------------------------------------------- one camera
def spot_image(on: dict, off: dict, smooth_px: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(image, variance) of one neuron's spot from the on/off state images.

    With an LO: the homodyne difference images dI, dQ projected on their dominant direction
    (the interference term ``4 |LO| |E_on - E_off|`` spread by the spot), else the intensity
    difference.  The variance map is the shot-noise model ``a + b T`` (T: the summed frame
    means entering the image, a and b fitted to the frame scatter of every pixel), which is
    smooth where the raw scatter of a few frames is not.

    Parameters
    ----------
    on, off : per state ``{"m": mean images, "v": their variances, "lo": bool}``, one image
        per LO phase 0, pi/2, pi, 3 pi/2 (ADU, ADU^2) with an LO, else any number.
    smooth_px : Gaussian smoothing (px) used to find the dominant (I, Q) direction.

    Returns
    -------
    (ndarray, ndarray) : the spot image (ADU) and its per-pixel variance (ADU^2).
    """
    mo, vo, mf, vf = on["m"], on["v"], off["m"], off["v"]
    if on["lo"]:
        di, dq = (mo[0] - mo[2]) - (mf[0] - mf[2]), (mo[1] - mo[3]) - (mf[1] - mf[3])
        si, sq = gaussian_filter(di, smooth_px), gaussian_filter(dq, smooth_px)
        k = np.unravel_index(int(np.argmax(si ** 2 + sq ** 2)), di.shape)
        phi = math.atan2(sq[k], si[k])
        ci, cq = math.cos(phi) ** 2, math.sin(phi) ** 2
        img = math.cos(phi) * di + math.sin(phi) * dq
        raw = ci * (vo[0] + vo[2] + vf[0] + vf[2]) + cq * (vo[1] + vo[3] + vf[1] + vf[3])
        total = ci * (mo[0] + mo[2] + mf[0] + mf[2]) + cq * (mo[1] + mo[3] + mf[1] + mf[3])
    else:
        img = sum(mo) / len(mo) - sum(mf) / len(mf)
        raw = (sum(vo) + sum(vf)) / len(mo) ** 2
        total = (sum(mo) + sum(mf)) / len(mo) ** 2
    a = np.column_stack([np.ones(total.size), total.ravel()])
    coef = np.linalg.lstsq(a, raw.ravel(), rcond=None)[0]
    var = coef[0] + max(coef[1], 0.0) * total
    floor = max(1e-6 * float(np.median(raw)), 1e-12)
    return img, np.maximum(var, floor)


def fit_spots(imgs, flat=None, cam: str = "camera") -> list[SpotFit]:
    """Sub-pixel spot fits of one camera's spot images, neuron by neuron.

    Parameters
    ----------
    imgs : list of (image, variance) per neuron (ADU, ADU^2), as :func:`spot_image` gives them.
    flat : the camera's relative pixel response (PRNU map) or None; images are divided by it
        (the pixel response pattern biases centres).
    cam : camera name for messages.

    Returns
    -------
    list of SpotFit : refitted with the camera's median sigma as start (window 3.5 sigma).
    """
    if flat is not None:
        imgs = [(img / flat, var / flat ** 2) for img, var in imgs]
    spots = []
    for k, (img, var) in enumerate(imgs):
        try:
            spots.append(find_spot(img, variance=var))
        except ValueError as exc:
            raise ValueError(f"registration: neuron {k} on {cam}: {exc}") from None
    sig = float(np.median([s.sigma_px for s in spots]))
    return [find_spot(img, s.center_px, sigma_px=sig, variance=var) for (img, var), s in zip(imgs, spots)]


def register_camera(cam: str, spots: list[SpotFit], src, *, model: str = "auto",
                    outlier_px: float = 1.0) -> tuple[TransformFit, dict, dict, dict]:
    """Fit one camera's layout -> camera transform to its spots and derive what the fit stores.

    Parameters
    ----------
    cam : camera name (prefix of the keys).
    spots : the camera's spots, neuron order.
    src : (n, 2) layout positions of the spots (px).
    model, outlier_px : as for :func:`fit_transform` (RANSAC threshold in px).

    Returns
    -------
    (TransformFit, quantities, arrays, info) : quantities ``<cam>.rotation_deg`` (deg),
        ``.scale``, ``.offset_row_px``, ``.offset_col_px``, ``.residual_px``, ``.psf_sigma_px``,
        ``.roi_radius_px`` (3 PSF sigmas, at most 0.45 of the closest spot spacing; px); arrays
        ``centers_px.<cam>``, ``centers_stderr_px.<cam>`` (n, 2; px) and ``transform.<cam>``;
        info ``<cam>.fit`` and ``<cam>.redchi``.
    """
    centers = np.array([s.center_px for s in spots])
    stderr = np.maximum(np.array([s.stderr_px for s in spots]), 1e-4)
    tf = fit_transform(src, centers, stderr, model=model, outlier_px=outlier_px)
    sig = float(np.median([s.sigma_px for s in spots]))
    sig_se = float(np.median([s.sigma_stderr_px for s in spots])) / math.sqrt(len(spots))
    if len(centers) > 1:
        d = np.hypot(*(centers[:, None, :] - centers[None, :, :]).transpose(2, 0, 1))
        closest = float(np.min(d[np.triu_indices(len(centers), 1)]))
    else:
        closest = np.inf
    roi = float(min(3.0 * sig, 0.45 * closest))
    se = tf.stderr
    res_se = tf.residual_px / math.sqrt(2 * tf.dof) if tf.dof > 0 else float("nan")
    quantities = {
        f"{cam}.rotation_deg": Quantity(tf.rotation_deg, se["rotation_deg"], "deg"),
        f"{cam}.scale": Quantity(tf.scale, se["scale"], ""),
        f"{cam}.offset_row_px": Quantity(float(tf.offset_px[0]), se["offset_row_px"], "px"),
        f"{cam}.offset_col_px": Quantity(float(tf.offset_px[1]), se["offset_col_px"], "px"),
        f"{cam}.residual_px": Quantity(tf.residual_px, res_se, "px"),
        f"{cam}.psf_sigma_px": Quantity(sig, sig_se, "px"),
        f"{cam}.roi_radius_px": Quantity(roi, float("nan"), "px"),
    }
    arrays = {f"centers_px.{cam}": centers, f"centers_stderr_px.{cam}": stderr,
              f"transform.{cam}": tf.matrix if tf.model == "homography" else tf.matrix[:2, :]}
    info = {f"{cam}.fit": {k: v for k, v in tf.info.items()}, f"{cam}.redchi": tf.redchi}
    return tf, quantities, arrays, info

