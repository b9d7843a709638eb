"""Pixel crosstalk of a phase panel (pure functions on numpy arrays).

The fringing field between pixels blurs the complex pixel field with a Gaussian of sigma
``crosstalk_px``.  Two observables give it:

* the first diffraction order of binary gratings of several periods
  (:func:`grating_first_order`, :func:`fit_crosstalk`);
* the zero order of each block (the mean over its active pixels) for patterns whose field
  leaks across the block edges, relative to a uniform frame with the zero-field frame
  subtracted: :func:`model_ratios` (with the separable blur of :class:`BlockBlurMeans`) and
  :func:`fit_zero_order_crosstalk`.
"""
from __future__ import annotations

import math

import lmfit
import numpy as np
from scipy.optimize import minimize_scalar

from calibration.lmfit_stderr import param_se
from calibration.quantities import Fit, Quantity
from calibration.slm_spline_fit import TWO_PI

__all__ = ["grating_first_order", "fit_crosstalk", "BlockBlurMeans", "pixel_fields", "model_ratios",
           "fit_zero_order_crosstalk"]


# ----------------------------------------------------------------------------- grating first order
def _kernel_transfer(freq, sigma_px, kernel):
    freq = np.asarray(freq, float)
    if kernel == "continuous":
        return np.exp(-2.0 * math.pi ** 2 * sigma_px ** 2 * freq ** 2)
    # discrete: normalised sampled Gaussian on integer pixel offsets
    if sigma_px < 1e-6:
        return np.ones_like(freq)
    half = int(math.ceil(6 * sigma_px)) + 1
    k = np.arange(-half, half + 1, dtype=float)
    g = np.exp(-0.5 * (k / sigma_px) ** 2)
    g /= g.sum()
    return np.sum(g[None, :] * np.cos(TWO_PI * freq[..., None] * k[None, :]), axis=-1)


def grating_first_order(period_px, sigma_px: float, dphi_rad: float = math.pi, *,
                        kernel: str = "continuous"):
    """First-order diffracted power of a blurred binary phase grating, per unit incident power.

    Forward model: a grating of integer period ``p`` pixels, ``floor(p/2)`` pixels at phase
    ``dphi`` and the rest at 0, pixel field ``exp(i phi)`` (sharp unit pixels), blurred by a
    Gaussian of ``sigma_px`` (the fringing field).  Its first Fourier coefficient is
    ``c1 = (exp(i dphi) - 1) sin(pi d) / pi * H(1/p)`` with duty ``d = floor(p/2)/p`` and the
    blur's transfer function ``H(f) = exp(-2 pi^2 sigma^2 f^2)`` (``kernel='continuous'``) or
    that of the normalised Gaussian sampled on integer pixel offsets (``'discrete'``), so

        P1(p) = 4 sin^2(dphi/2) sin^2(pi d) / pi^2 * H(1/p)^2.

    The zero order does not depend on the blur (``H(0) = 1``), so the first order is the
    observable; its field modulation depth relative to an unblurred grating is ``H(1/p)``.
    """
    p = np.asarray(period_px, dtype=np.float64)
    d = np.floor(p / 2.0) / p
    h = _kernel_transfer(1.0 / p, sigma_px, kernel)
    return 4.0 * math.sin(dphi_rad / 2.0) ** 2 * np.sin(math.pi * d) ** 2 / math.pi ** 2 * h ** 2


def fit_crosstalk(period_px, first_order, *, observable: str = "power", stderr=None,
                  background: bool = False, kernel: str = "continuous") -> Fit:
    """Gaussian crosstalk width (pixels) from first-order signals of gratings of several periods.

    Fits ``S * grating_first_order(p, sigma) [+ B]`` (``observable='power'``) or its square
    root (``'amplitude'``) with unknown scale ``S`` (incident power, ``sin^2(dphi/2)``,
    detector) and, with ``background=True``, an offset ``B``.  Needs at least 3 distinct
    periods including short ones (2-4 px) where the blur matters.  Without ``stderr`` the
    errors are taken as proportional to the signal (floored at 0.1 % of the largest) and
    scaled by the scatter.

    Parameters
    ----------
    period_px : grating periods (integer px >= 2), one per signal.
    first_order : first-order signal per grating (power or amplitude, data units).
    observable : 'power' or 'amplitude'.
    stderr : optional standard errors of ``first_order`` (data units).
    background : fit an offset ``B``.
    kernel : 'continuous' or 'discrete' Gaussian (:func:`grating_first_order`).

    Returns
    -------
    Fit named 'slm.crosstalk', model 'gaussian-blur', quantities ``crosstalk_px`` (sigma, px)
    and ``scale`` (data units), each with its standard error.
    """
    p = np.asarray(period_px, dtype=np.float64).ravel()
    y = np.asarray(first_order, dtype=np.float64).ravel()
    if p.size != y.size:
        raise ValueError(f"crosstalk: {p.size} periods but {y.size} signals; give one signal per grating")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(y))):
        raise ValueError("crosstalk: periods/signals contain NaN or inf")
    if np.any(p < 2) or np.any(p != np.round(p)):
        raise ValueError("crosstalk: periods must be integers >= 2 pixels")
    if np.unique(p).size < 3:
        raise ValueError("crosstalk: measure gratings of at least 3 different periods (e.g. 2, 4, 8, 16 px)")
    if observable not in ("power", "amplitude"):
        raise ValueError(f"observable must be 'power' or 'amplitude', got {observable!r}")
    if kernel not in ("continuous", "discrete"):
        raise ValueError(f"kernel must be 'continuous' or 'discrete', got {kernel!r}")

    def law(period, scale, sigma, offset):
        f = grating_first_order(period, sigma, kernel=kernel)
        return scale * (f if observable == "power" else np.sqrt(f)) + offset

    model = lmfit.Model(law, independent_vars=["period"])
    if stderr is not None:
        s = np.broadcast_to(np.asarray(stderr, float), y.shape)
        if np.any(~np.isfinite(s)) or np.any(s <= 0):
            raise ValueError("crosstalk: stderr must be finite and > 0")
        w = 1.0 / s
    else:   # relative errors (laser power noise), floored at 0.1 % of the largest signal
        if np.max(np.abs(y)) <= 0:
            raise ValueError("crosstalk: all signals are zero; check the detector")
        w = 1.0 / np.maximum(np.abs(y), 1e-3 * np.max(np.abs(y)))
    best = None
    for s0 in (0.1, 0.4, 0.8, 1.5, 3.0):
        base = law(p, 1.0, s0, 0.0)
        sc = float(np.sum(base * y) / np.sum(base * base))
        params = model.make_params(scale=max(sc, 1e-12), sigma=s0, offset=0.0)
        params["sigma"].set(min=0.0, max=50.0)
        params["scale"].set(min=0.0)
        if not background:
            params["offset"].set(value=0.0, vary=False)
        r = model.fit(y, params, period=p, weights=w, scale_covar=stderr is None)
        if best is None or r.chisqr < best.chisqr:
            best = r
    sig, sig_se = best.params["sigma"].value, param_se(best, "sigma")
    return Fit(name="slm.crosstalk", model="gaussian-blur",
               quantities={"crosstalk_px": Quantity(sig, sig_se, "px"),
                           "scale": Quantity(best.params["scale"].value, param_se(best, "scale"), "data units")},
               x=p, y=y, y_fit=best.best_fit,
               info={"observable": observable, "kernel": kernel, "redchi": float(best.redchi)})



# ----------------------------------------------------------------------------- block zero order
class BlockBlurMeans:
    """Element means of a blurred panel field, for many blur widths: the separable form of
    :func:`hwio.encoding.realised_weights` (Gaussian blur with zero field outside the panel,
    ``truncate=4``, optionally the first-order carrier ``exp(-2 pi i X / period)``, then the
    mean over each block's active rectangle).

    ``E = A f B^T`` with ``A[i, r]`` the mean over block row ``i``'s active rows of the 1-D
    kernel at ``r`` and ``B[j, c]`` the same over block column ``j``'s active columns (times the
    carrier): two small matrix products per frame and width instead of a blur of the whole panel.
    """

    def __init__(self, layout, shape, period: float | None = None):
        g = layout.guard_px
        bh, bw = layout.block_px[0] - 2 * g, layout.block_px[1] - 2 * g
        self._rows = layout.origin_px[0] + g + np.arange(layout.n_rows)[:, None] * layout.pitch_px[0] + np.arange(bh)
        self._cols = layout.origin_px[1] + g + np.arange(layout.n_cols)[:, None] * layout.pitch_px[1] + np.arange(bw)
        self.shape = tuple(shape)
        self._carrier = None
        if period is not None:
            p = float(period)
            self._carrier = np.exp(-2j * np.pi * (np.arange(self.shape[1]) % p) / p)
        self._memo: dict = {}

    @staticmethod
    def _kernel_means(idx: np.ndarray, n: int, sigma: float, weight=None) -> np.ndarray:
        if sigma > 0:
            radius = int(4.0 * sigma + 0.5)
            off = np.arange(-radius, radius + 1)
            g = np.exp(-0.5 * off ** 2 / sigma ** 2)
            g /= g.sum()
        else:
            off, g = np.zeros(1, dtype=int), np.ones(1)
        p = idx.ravel()
        wp = np.ones(p.size) if weight is None else weight[p]
        m = np.zeros((idx.shape[0], n), dtype=complex if weight is not None else float)
        e = np.repeat(np.arange(idx.shape[0]), idx.shape[1])
        for o, w in zip(off, g):
            q = p + o
            ok = (q >= 0) & (q < n)
            np.add.at(m, (e[ok], q[ok]), w * wp[ok] / idx.shape[1])
        return m

    def __call__(self, field: np.ndarray, sigma: float) -> np.ndarray:
        """(n_rows, n_cols) complex element means of ``field`` (the panel's complex pixel field)
        blurred with sigma ``sigma`` (px)."""
        key = round(float(sigma), 12)
        ab = self._memo.get(key)
        if ab is None:
            ab = (self._kernel_means(self._rows, self.shape[0], sigma),
                  self._kernel_means(self._cols, self.shape[1], sigma, self._carrier))
            if len(self._memo) > 256:
                self._memo.clear()
            self._memo[key] = ab
        return ab[0] @ field @ ab[1].T


def pixel_fields(frames: dict, response) -> dict:
    """name -> complex pixel field exp(i phi(level)) of each level frame."""
    return {k: np.exp(1j * response.phase(np.asarray(v, np.int64))) for k, v in frames.items()}


def model_ratios(pats, uniform, zero, layout, response, sigma, period=None, means=None, fields=None):
    """Model of ``(E_P - E_Z) / (E_U - E_Z)`` per pattern (element mean) at crosstalk ``sigma``
    (``period``: the first order of a blazed panel's grating).  ``means``
    (:class:`BlockBlurMeans`) and ``fields`` (:func:`pixel_fields` of the patterns, 'uniform'
    and 'zero') may be passed to reuse them between calls."""
    if means is None:
        means = BlockBlurMeans(layout, np.shape(uniform), period)
    if fields is None:
        fields = pixel_fields({**pats, "uniform": uniform, "zero": zero}, response)
    z = means(fields["zero"], sigma)
    u = means(fields["uniform"], sigma) - z
    return {k: complex(np.mean((means(fields[k], sigma) - z) / u)) for k in pats}


def fit_zero_order_crosstalk(measured: dict, uniform_field, patterns: dict, uniform, zero, layout, response,
                             period: float | None = None) -> Fit:
    """Crosstalk sigma from measured zero-order field ratios of patterns.

    Fits :func:`model_ratios` to the measured ``(E_P - E_Z) / (E_U - E_Z)`` per spot, weighted
    by the spots' share of the uniform power: a grid over 0 .. 3 px, then a bounded
    minimisation.  The standard error is the larger of the fit's and the scatter of sigma fitted
    to each pattern alone (a model-consistency check).

    Parameters
    ----------
    measured : pattern name -> (n_spots,) complex measured ratios.
    uniform_field : (n_spots,) complex ``E_U - E_Z`` (field units; sets the weights).
    patterns : pattern name -> level frame (panel shape).
    uniform, zero : the uniform and zero-field level frames.
    layout : the panel's block layout.
    response : the panel's calibrated phase response (:class:`hwio.response.PhaseResponse`).
    period : grating period (px) of a blazed panel's first order, or None.

    Returns
    -------
    Fit named 'slm.crosstalk', model 'gaussian-blur zero-order', quantity ``crosstalk_px``
    (px, with its standard error); ``info`` with the measured and model ratios, the sigma of
    each pattern alone and the statistical error ``stderr_statistical_px``.
    """
    meas, pats = measured, patterns
    w = np.abs(uniform_field) ** 2
    w = w / w.sum()
    names = list(pats)
    means = BlockBlurMeans(layout, uniform.shape, period)
    pix = pixel_fields({**pats, "uniform": uniform, "zero": zero}, response)

    def model(sigma, which=None):
        return model_ratios(pats if which is None else {which: pats[which]}, uniform, zero, layout, response,
                            sigma, period, means=means, fields=pix)

    def resid(sigma):
        mod = model(sigma)
        r = [(meas[k] - mod[k]) * np.sqrt(w) for k in names]
        r = np.concatenate(r)
        return np.concatenate([r.real, r.imag])

    sigma, se_stat = _fit_sigma(resid)
    per_pattern = _sigma_per_pattern(model, meas, w, names, sigma)
    spread = np.array(list(per_pattern.values()))
    se = max(se_stat, float(spread.std(ddof=1) / math.sqrt(spread.size))) if spread.size > 1 else se_stat
    mod = model(sigma)
    return Fit(name="slm.crosstalk", model="gaussian-blur zero-order",
               quantities={"crosstalk_px": Quantity(sigma, se, "px")},
               x=np.arange(len(names), dtype=float),
               y=np.array([float(np.sum(np.abs(meas[k]) * w)) for k in names]),
               y_fit=np.array([abs(mod[k]) for k in names]),
               info={"patterns": names, "measured_ratio": {k: [[float(v.real), float(v.imag)] for v in meas[k]]
                                                           for k in names},
                     "model_ratio": {k: [mod[k].real, mod[k].imag] for k in names},
                     "crosstalk_px_per_pattern": per_pattern, "stderr_statistical_px": se_stat})


def _fit_sigma(resid) -> tuple[float, float]:
    """Sigma (px) minimising ``|resid(sigma)|^2`` (grid over 0 .. 3 px, then bounded search) and
    its standard error from a numerical derivative (residuals scaled by their scatter)."""
    grid = np.linspace(0.0, 3.0, 31)
    cost = [float(resid(s) @ resid(s)) for s in grid]
    k0 = int(np.argmin(cost))
    lo, hi = grid[max(k0 - 1, 0)], grid[min(k0 + 1, grid.size - 1)]
    opt = minimize_scalar(lambda s: float(resid(s) @ resid(s)), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-5})
    sigma = float(opt.x)
    r0 = resid(sigma)
    h = 1e-4
    jac = (resid(sigma + h) - resid(max(sigma - h, 0.0))) / (sigma + h - max(sigma - h, 0.0))
    n_eff = r0.size
    # residuals are weighted by spot power fractions: per-point variance = rss / (n - 1) / weight
    dof = max(n_eff - 1, 1)
    se = math.sqrt(float(r0 @ r0) / dof / max(float(jac @ jac), 1e-300))
    return sigma, se


def _sigma_per_pattern(model, meas, w, names, sigma) -> dict:
    """Sigma (px) fitted to each pattern alone, within 0.3 px of the joint fit's."""
    per_pattern = {}
    for k in names:
        def cost_k(sg, k=k):
            m = model(sg, k)[k]
            r = (meas[k] - m) * np.sqrt(w)
            return float(np.sum(np.abs(r) ** 2))
        per_pattern[k] = float(minimize_scalar(cost_k, bounds=(max(sigma - 0.3, 0.0), sigma + 0.3),
                                               method="bounded", options={"xatol": 1e-5}).x)
    return per_pattern
