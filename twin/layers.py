"""Optical layers: a matrix-vector multiplier with bench imperfections, and the absorber activation.

Arrays are batch-major: inputs ``(batch, n_in)``, outputs ``(batch, n_out)``; weight
matrices are ``(n_out, n_in)`` as programmed on the SLM, in the twin's normalised
field units (output field = W @ input field).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from twin.absorber import Absorber

__all__ = ["Imperfections", "OpticalLinear", "AbsorberActivation",
           "gaussian_illumination", "neighbour_crosstalk"]


def gaussian_illumination(n_out: int, n_in: int, waist: float) -> np.ndarray:
    """Per-element gain of a Gaussian beam centred on the weight area.

    ``waist`` is the 1/e^2 intensity radius as a fraction of the half-size of the
    area; the field amplitude is exp(-(x^2 + y^2) / waist^2) with x, y in [-1, 1].
    """
    if waist <= 0:
        raise ValueError(f"illumination waist must be > 0, got {waist}")
    y = np.linspace(-1, 1, n_out)[:, None] if n_out > 1 else np.zeros((1, 1))
    x = np.linspace(-1, 1, n_in)[None, :] if n_in > 1 else np.zeros((1, 1))
    return np.exp(-(x ** 2 + y ** 2) / waist ** 2)


def neighbour_crosstalk(n: int, coupling: float) -> np.ndarray:
    """Output mixing matrix C = I + coupling * (shift up + shift down): leakage into neighbouring spots."""
    c = np.eye(n)
    idx = np.arange(n - 1)
    c[idx, idx + 1] = coupling
    c[idx + 1, idx] = coupling
    return c


@dataclass
class Imperfections:
    """Deviations of a realised optical MVM from the programmed matrix (all off by default).

    gain : (n_out, n_in) multiplicative per-element gain (e.g. Gaussian illumination).
    levels : number of SLM levels spanning [-w_max, w_max]; weights are rounded to them.
    w_max : full-scale |weight| for quantisation (needed with ``levels``).
    stray : (n_out,) additive coherent stray field at the outputs.
    crosstalk : (n_out, n_out) output mixing matrix C (finite aperture).
    readout_noise : standard deviation of additive Gaussian noise on each output (field units).
    nonreciprocity : (n_out, n_in) matrix added to the transposed realised matrix in the
        backward pass (a defect: the backward light does not retrace the forward path).
    backward_gain : (n_out, n_in) per-element gain of the backward path, replacing ``gain``
        there (different illumination or detection of the backward beam).
    """

    gain: np.ndarray | None = None
    levels: int | None = None
    w_max: float | None = None
    stray: np.ndarray | None = None
    crosstalk: np.ndarray | None = None
    readout_noise: float = 0.0
    nonreciprocity: np.ndarray | None = None
    backward_gain: np.ndarray | None = None

    def check(self, n_out: int, n_in: int) -> None:
        """Raise ValueError on shapes or values that do not fit an (n_out, n_in) layer."""
        def shape(name, arr, want):
            if arr is not None and np.shape(arr) != want:
                raise ValueError(f"imperfection {name} has shape {np.shape(arr)}, layer needs {want}")
            if arr is not None and not np.all(np.isfinite(arr)):
                raise ValueError(f"imperfection {name} contains NaN or inf")
        shape("gain", self.gain, (n_out, n_in))
        shape("stray", self.stray, (n_out,))
        shape("crosstalk", self.crosstalk, (n_out, n_out))
        shape("nonreciprocity", self.nonreciprocity, (n_out, n_in))
        shape("backward_gain", self.backward_gain, (n_out, n_in))
        if self.levels is not None:
            if int(self.levels) < 2:
                raise ValueError(f"quantisation needs levels >= 2, got {self.levels}")
            if self.w_max is None or not self.w_max > 0:
                raise ValueError("quantisation needs w_max > 0 (the full-scale weight)")
        if not self.readout_noise >= 0:
            raise ValueError(f"readout_noise must be >= 0, got {self.readout_noise}")

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.gain, self.levels, self.stray, self.crosstalk,
                                           self.nonreciprocity, self.backward_gain)) or self.readout_noise > 0


class OpticalLinear:
    """One optical MVM, z = C (G * Q(W)) a + stray + noise.

    The backward pass uses the transposed *realised* matrix (reciprocity), plus the
    optional non-reciprocal defect.  The weight gradient is the outer product of the
    backward error at the SLM plane and the forward input, chained through the gain
    (the quantiser passes gradients straight through).
    """

    def __init__(self, n_in: int, n_out: int, weights: np.ndarray | None = None,
                 imperfections: Imperfections | None = None, rng=None, init_scale: float = 1.0):
        if n_in <= 0 or n_out <= 0:
            raise ValueError(f"layer sizes must be > 0, got {n_in} -> {n_out}")
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.imperfections = imperfections or Imperfections()
        self.imperfections.check(self.n_out, self.n_in)
        if weights is None:
            rng = np.random.default_rng(rng)
            weights = rng.normal(0.0, init_scale / np.sqrt(self.n_in), (self.n_out, self.n_in))
        self.weights = np.array(weights, dtype=np.float64)
        if self.weights.shape != (self.n_out, self.n_in):
            raise ValueError(f"weights have shape {self.weights.shape}, layer is {(self.n_out, self.n_in)}")
        self._input = None
        self._buf = np.empty_like(self.weights)
        self._qconst = None
        self._prepare_bands()

    # -- the realised matrix -------------------------------------------------
    def quantised(self) -> np.ndarray:
        """Programmed weights after SLM level quantisation (clipped to +-w_max)."""
        imp = self.imperfections
        if imp.levels is None:
            return self.weights.copy()
        step = 2.0 * imp.w_max / (int(imp.levels) - 1)
        k = np.clip(np.rint((self.weights + imp.w_max) / step), 0, int(imp.levels) - 1)
        return k * step - imp.w_max

    def slm_matrix(self) -> np.ndarray:
        """G * Q(W): the matrix at the SLM plane, before output crosstalk."""
        q = self.quantised()
        g = self.imperfections.gain
        return q if g is None else q * g

    def realised_matrix(self) -> np.ndarray:
        """C (G * Q(W)): the matrix the optics actually apply."""
        m = self.slm_matrix()
        c = self.imperfections.crosstalk
        return m if c is None else c @ m

    def _slm_matrix_fast(self) -> np.ndarray:
        """Same as :meth:`slm_matrix`, computed into a reused buffer (hot path of training)."""
        imp = self.imperfections
        if imp.levels is None:
            return self.weights if imp.gain is None else np.multiply(self.weights, imp.gain, out=self._buf)
        if self._qconst is None:
            step = 2.0 * imp.w_max / (int(imp.levels) - 1)
            g = 1.0 if imp.gain is None else imp.gain
            self._qconst = (1.0 / step, imp.w_max / step, float(int(imp.levels) - 1),
                            np.broadcast_to(step * g, self.weights.shape).copy(),
                            np.broadcast_to(imp.w_max * g, self.weights.shape).copy())
        inv, off, top, step_gain, offset_gain = self._qconst
        b = np.multiply(self.weights, inv, out=self._buf)
        b += off
        np.rint(b, out=b)
        np.clip(b, 0.0, top, out=b)
        b *= step_gain
        b -= offset_gain
        return b

    # -- passes --------------------------------------------------------------
    def _mix(self, z: np.ndarray, transpose: bool) -> np.ndarray:
        """Apply the output crosstalk C (or C^T) to rows of z; banded C uses shifted diagonals."""
        c = self.imperfections.crosstalk
        if self._bands is None:
            return z @ (c if transpose else c.T)
        out = z * self._bands[0][1]
        tmp = np.empty_like(z)
        for k, diag in self._bands[1:]:
            # z @ C^T: out[:, i] += C[i, i+k] z[:, i+k]; transpose swaps the role of k
            kk = -k if transpose else k
            if kk > 0:
                t = np.multiply(z[:, kk:], diag, out=tmp[:, kk:])
                out[:, :-kk] += t
            else:
                t = np.multiply(z[:, :kk], diag, out=tmp[:, :kk])
                out[:, -kk:] += t
        return out

    def _prepare_bands(self) -> None:
        c = self.imperfections.crosstalk
        self._bands = None
        if c is None:
            return
        n = c.shape[0]
        offsets = [k for k in range(-(n - 1), n) if np.any(np.diagonal(c, k))]
        if len(offsets) > 7:
            return  # dense: plain matrix products
        # (offset k, diagonal C[i, i+k]); the same diagonals serve C^T with k -> -k
        self._bands = [(0, np.diagonal(c, 0).copy())] + [(k, np.diagonal(c, k).copy())
                                                         for k in offsets if k != 0]

    def forward(self, a: np.ndarray, rng=None, keep: bool = True) -> np.ndarray:
        """Output fields (batch, n_out) for input fields ``a`` (batch, n_in)."""
        imp = self.imperfections
        self._m = m = self._slm_matrix_fast()
        z = a @ m.T
        if imp.crosstalk is not None:
            z = self._mix(z, transpose=False)
        if imp.stray is not None:
            z += imp.stray
        if imp.readout_noise > 0:
            rng = rng if rng is not None else np.random.default_rng()
            noise = rng.standard_normal(z.shape, dtype=np.float32)
            noise *= np.float32(imp.readout_noise)
            z += noise
        if keep:
            self._input = a
        return z

    def backward(self, delta: np.ndarray, update: str = "gradient", need_input_error: bool = True):
        """Propagate the output error ``delta`` (batch, n_out) backward.

        Returns ``(delta_in, grad)``: the error arriving at the input plane (batch, n_in)
        (None when ``need_input_error`` is False, which saves the largest product of the
        first layer) and the weight update (n_out, n_in).  ``update='gradient'`` is the true gradient
        with respect to the programmed weights; ``'optical'`` is the outer product of the
        injected error and the input, as an optical bench measures it.
        """
        if self._input is None:
            raise RuntimeError("backward() needs a forward() with keep=True first")
        imp = self.imperfections
        d_slm = delta if imp.crosstalk is None else self._mix(delta, transpose=True)
        if not need_input_error:
            delta_in = None
        elif imp.backward_gain is None:
            delta_in = d_slm @ self._m
        else:
            delta_in = d_slm @ (self.quantised() * imp.backward_gain)
        if need_input_error and imp.nonreciprocity is not None:
            delta_in += delta @ imp.nonreciprocity
        if update == "gradient":
            grad = d_slm.T @ self._input
            if imp.gain is not None:
                grad *= imp.gain
        elif update == "optical":
            grad = delta.T @ self._input
        else:
            raise ValueError(f"unknown update {update!r}: use 'gradient' or 'optical'")
        return delta_in, grad


class AbsorberActivation:
    """The vapour cell: a = g(z); backward multiplies by g'(z) (rule 'exact') or the probe t(z).

    probe_strength : peak probe intensity in units of i_sat (0 = ideal weak probe).  The
        backward error of each sample is scaled so its largest |value| carries that
        intensity, and the probe then sees the pump plus its own intensity
        (self-saturation), which makes the backward map nonlinear.
    """

    def __init__(self, absorber: Absorber, rule: str = "probe", probe_strength: float = 0.0):
        if rule not in ("exact", "probe"):
            raise ValueError(f"unknown backward rule {rule!r}: use 'exact' or 'probe'")
        if not probe_strength >= 0:
            raise ValueError(f"probe_strength must be >= 0, got {probe_strength}")
        self.absorber = absorber
        self.rule = rule
        self.probe_strength = float(probe_strength)
        self._z = self._slope = None

    def forward(self, z: np.ndarray, keep: bool = True) -> np.ndarray:
        out, slope = self.absorber.forward(z, self.rule)
        if keep:
            self._z, self._slope = z, slope
        return out

    def backward(self, delta: np.ndarray) -> np.ndarray:
        if self._slope is None:
            raise RuntimeError("backward() needs a forward() with keep=True first")
        if self.rule == "probe" and self.probe_strength > 0:
            i_sat = getattr(self.absorber, "i_sat", 1.0)
            peak = np.abs(delta).max(axis=1, keepdims=True)
            rel = np.divide(delta, peak, out=np.zeros_like(delta), where=peak > 0)
            z_eff = np.sqrt(self._z ** 2 + self.probe_strength * i_sat * rel ** 2)
            return delta * self.absorber.probe(z_eff)
        return delta * self._slope
