"""Spot fits (pure functions on numpy arrays): sub-pixel spot centres in camera images.

Coordinates are (row, col) in pixels everywhere, pixel centres at integers.

:func:`find_spot` fits a pixel-integrated 2-D Gaussian plus a constant background,

    I(r, c) = A * Pr(r) * Pc(c) + B,   Pr(r) = (erf((r + 1/2 - r0) / (sqrt 2 s)) - erf((r - 1/2 - r0) / (sqrt 2 s))) / 2

to a window around the brightest (smoothed) pixel, by weighted least squares: with a given
per-pixel noise variance, or else a variance that grows linearly with the signal (shot
noise; the two noise coefficients come from the residuals of a first unweighted pass).
Standard errors come from the Jacobian, scaled by the reduced chi-square.
:func:`centroid` is the background-subtracted centre of mass (a start value and a fallback).
:func:`spot_image` turns the on/off frames of one lit neuron into its spot image and
:func:`fit_spots` finds every spot of a camera; :mod:`calibration.registration_fit` fits the
layout -> camera transforms to them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.optimize import least_squares
from scipy.special import erf

__all__ = ["SpotFit", "centroid", "find_spot", "spot_image", "fit_spots"]

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


# ----------------------------------------------------------------------------------- spot images of one camera
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
