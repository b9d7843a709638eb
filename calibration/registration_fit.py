"""Registration fits (pure functions on numpy arrays): layout -> camera transforms.

Coordinates are (row, col) in pixels everywhere, pixel centres at integers.

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
:func:`calibration.spot_fit.fit_spots` finds every spot of a camera (sub-pixel centres with
standard errors, see :mod:`calibration.spot_fit`), :func:`register_camera` fits the camera's
transform and derives the quantities the ``registration`` fit stores
(:mod:`calibration.procedures.registration` takes the frames).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares
from scipy.stats import f as f_dist

from calibration.quantities import Quantity
from calibration.spot_fit import SpotFit

__all__ = ["TransformFit", "fit_similarity", "fit_affine", "fit_homography", "fit_transform", "apply_transform",
           "decompose", "noncollinear", "register_camera"]


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

