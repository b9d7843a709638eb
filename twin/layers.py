"""Optical layers: a matrix-vector multiplier with bench imperfections, and the absorber activation.

Arrays are batch-major: inputs ``(batch, n_in)``, outputs ``(batch, n_out)``; weight
matrices are ``(n_out, n_in)`` as programmed on the SLM, in the twin's normalised
field units (output field = W @ input field).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


__all__ = ["Imperfections", "OpticalLinear",
           "gaussian_illumination", "neighbour_crosstalk", "gaussian_noise32"]


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
    w_max : full-scale |weight| for quantisation (needed with ``levels`` or ``transfer``).
    transfer : ``(edges, values)``, the measured amplitude staircase of the SLM encoding:
        (m,) increasing step positions and (m + 1,) realised amplitude fractions (LUT rounding,
        response residuals); a weight w realises
        ``w_max * values[searchsorted(edges, clip(w / w_max, -1, 1), 'right')]``.  Replaces
        ``levels`` (a uniform quantiser is a special staircase).
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
    transfer: np.ndarray | None = None

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
        if self.transfer is not None:
            try:
                e, v = (np.asarray(part, dtype=float) for part in self.transfer)
            except (TypeError, ValueError):
                raise ValueError("transfer must be a pair (edges, values) of 1-D arrays") from None
            if (e.ndim != 1 or v.ndim != 1 or v.size != e.size + 1 or not np.all(np.isfinite(e))
                    or not np.all(np.isfinite(v)) or np.any(np.diff(e) <= 0)):
                raise ValueError(f"transfer must be (edges, values): m increasing finite edges and m + 1 finite "
                                 f"values, got shapes {e.shape} and {v.shape}")
            if self.levels is not None:
                raise ValueError("give either levels (uniform quantiser) or transfer (measured table), not both")
            if self.w_max is None or not self.w_max > 0:
                raise ValueError("a transfer table needs w_max > 0 (the full-scale weight)")
        if not self.readout_noise >= 0:
            raise ValueError(f"readout_noise must be >= 0, got {self.readout_noise}")

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.gain, self.levels, self.stray, self.crosstalk, self.nonreciprocity,
                                           self.backward_gain, self.transfer)) or self.readout_noise > 0


_ANGLE_PER_COUNT = np.float32(2.0 * np.pi / 2.0 ** 32)


def _rank_one(g: np.ndarray, rtol: float = 1e-12):
    """``(col, row)`` with ``outer(col, row)`` equal to ``g`` to ``rtol`` (rounding level), else None.

    A Gaussian illumination is separable, G = g_out g_in^T; the layer then applies it as
    row and column scalings instead of elementwise products with the full matrix.
    """
    if g.size == 0:
        return None
    i0, j0 = np.unravel_index(np.argmax(np.abs(g)), g.shape)
    piv = g[i0, j0]
    if piv == 0:
        return None
    col = g[:, j0].copy()
    row = g[i0, :] / piv
    if np.all(np.abs(np.outer(col, row) - g) <= rtol * np.abs(g) + 1e-15 * abs(piv)):
        return col, row
    return None


def gaussian_noise32(n: int, rng, sigma: float = 1.0) -> np.ndarray:
    """``n`` independent N(0, sigma^2) draws as float32 (float64 for extreme sigma), Box-Muller.

    The Box-Muller transform maps two independent uniforms exactly onto two independent
    normals: radius sigma sqrt(-2 ln u) with u = 1 - (53-bit float64 uniform) in (0, 1]
    (tails out to 8.6 sigma), angle from 32 random bits.  The transcendental steps run
    in float32 (relative precision 6e-8 of each draw); several times faster than
    ziggurat draws in numpy.
    """
    if not 1e-15 < sigma < 1e15:   # sigma^2 outside float32 range: scale in float64
        out = gaussian_noise32(n, rng).astype(np.float64)
        out *= sigma
        return out
    h = (n + 1) // 2
    u = rng.random(h)
    r = np.empty(h, dtype=np.float32)
    np.subtract(1.0, u, out=r, casting="same_kind")
    np.log(r, out=r)
    r *= np.float32(-2.0 * sigma * sigma)
    np.sqrt(r, out=r)
    ang = rng.bit_generator.random_raw((h + 1) // 2).view(np.uint32)[:h].astype(np.float32)
    ang *= _ANGLE_PER_COUNT
    out = np.empty((2, h), dtype=np.float32)
    np.cos(ang, out=out[0])
    np.sin(ang, out=out[1])
    out *= r
    return out.reshape(-1)[:n]


def _add_noise(z: np.ndarray, noise: np.ndarray) -> None:
    """z += noise (any float dtype, same number of elements), in place."""
    if z.flags.c_contiguous:
        zf = z.reshape(-1)
        np.add(zf, noise.reshape(-1), out=zf)
    else:
        z += noise.reshape(z.shape)


class _RowMap:
    """Applies an (n, n) mixing matrix A to the last axis: ``z @ A.T``, or ``z @ A`` (transpose).

    With few nonzero diagonals (the usual neighbour crosstalk) each diagonal costs one
    product of z with an (n,) coefficient vector indexed by the *source* column (zero
    where a shift would cross into the next row) and one shifted add on the flattened
    rows: contiguous passes, no per-row loops, no batch-sized coefficient arrays.
    Tiny or dense matrices use a matrix product.
    """

    max_bands = 7

    def __init__(self, a: np.ndarray, dtype=np.float64):
        self.dtype = np.dtype(dtype)
        self.a = np.array(a, dtype=self.dtype)
        n = self.n = self.a.shape[0]
        offsets = [k for k in range(-(n - 1), n) if k != 0 and np.any(np.diagonal(self.a, k))]
        # tiny maps: one small dense product is cheaper than several shifted passes
        self.banded = n > 16 and len(offsets) + 1 <= self.max_bands
        self._diags = {}    # per direction: (offset k, row-indexed coefficient A'[i, i + k])
        self._src = {}      # per direction: (offset k, source-indexed coefficient A'[q - k, q])
        if self.banded:
            for transpose, m in ((False, self.a), (True, self.a.T)):
                rows, srcs = [], []
                for k in [0] + [-k if transpose else k for k in offsets]:
                    row = np.zeros(n, self.dtype)
                    src = np.zeros(n, self.dtype)
                    if k >= 0:
                        row[:n - k] = np.diagonal(m, k)
                        src[k:] = np.diagonal(m, k)
                    else:
                        row[-k:] = np.diagonal(m, k)
                        src[:n + k] = np.diagonal(m, k)
                    rows.append((k, row))
                    srcs.append((k, src))
                self._diags[transpose] = rows
                self._src[transpose] = srcs

    def left(self, x: np.ndarray, transpose: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        """A @ x (or A.T @ x with ``transpose``) for x of shape (n, m): mixes whole rows."""
        if not self.banded:
            return np.matmul(self.a.T if transpose else self.a, x, out=out)
        n = self.n
        (k0, d0), *rest = self._diags[transpose]
        out = np.multiply(x, d0[:, None], out=out)
        for k, full in rest:
            if k > 0:
                out[:n - k] += x[k:] * full[:n - k, None]
            else:
                out[-k:] += x[:n + k] * full[-k:, None]
        return out

    def apply(self, z: np.ndarray, transpose: bool = False) -> np.ndarray:
        """New array: z @ A.T (or z @ A with ``transpose``), for z of shape (..., n)."""
        if not self.banded:
            return z @ (self.a if transpose else self.a.T)
        if not (z.flags.c_contiguous and z.dtype == self.dtype):
            z = np.ascontiguousarray(z, dtype=self.dtype)
        (k0, d0), *rest = self._src[transpose]
        out = np.multiply(z, d0)
        if z.size == 0:
            return out
        tmp = np.empty_like(z)
        of, tf = out.reshape(-1), tmp.reshape(-1)
        size = of.size
        for k, coef in rest:
            # out[j] += A'[i, i + k] z[j + k], i = column of j; the coefficient goes with z
            np.multiply(z, coef, out=tmp)
            if k > 0:
                np.add(of[:size - k], tf[k:], out=of[:size - k])
            else:
                np.add(of[-k:], tf[:size + k], out=of[-k:])
        return out


def _to_outputs(y: np.ndarray, output_map, row_scale) -> np.ndarray:
    """Rows at the SLM plane to output fields: the crosstalk map (which holds the row scale)
    or, without crosstalk, the row scale in place."""
    if output_map is not None:
        return output_map.apply(y)
    if row_scale is not None:
        y *= row_scale
    return y


class OpticalLinear:
    """One optical MVM, z = C (G * Q(W)) a + stray + noise.

    The backward pass uses the transposed *realised* matrix (reciprocity), plus the
    optional non-reciprocal defect.  The weight gradient is the outer product of the
    backward error at the SLM plane and the forward input, chained through the gain
    (the quantiser passes gradients straight through).

    Internally the SLM matrix is kept factorised, G * Q(W) = diag(g_out) B diag(c_in):
    a separable gain G = g_out g_in^T (e.g. a Gaussian beam) and the quantiser's level
    step act as row and column scalings, so no pass multiplies full matrices
    elementwise by G (a general G is folded into B).  Each pass puts the scalings and
    the crosstalk C on whichever is smaller, the (n_out, n_in) matrix or the
    (batch, n_out) / (batch, n_in) arrays; the results are the same up to rounding.
    The factorisation is set up at construction: of the imperfections only ``stray`` and
    ``readout_noise`` may be changed on a live layer.

    ``dtype`` (float32 or float64) is the precision of the weights, the work arrays and
    the passes; inputs should come in it (others are computed in the wider type).
    ``forward``/``backward`` take optional ``out`` arrays that receive the results where
    the pass produces them directly (the returned arrays are authoritative).
    """

    def __init__(self, n_in: int, n_out: int, weights: np.ndarray | None = None,
                 imperfections: Imperfections | None = None, rng=None, init_scale: float = 1.0,
                 dtype=np.float64):
        if n_in <= 0 or n_out <= 0:
            raise ValueError(f"layer sizes must be > 0, got {n_in} -> {n_out}")
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.imperfections = imperfections or Imperfections()
        self.imperfections.check(self.n_out, self.n_in)
        if weights is None:
            rng = np.random.default_rng(rng)
            weights = rng.normal(0.0, init_scale / np.sqrt(self.n_in), (self.n_out, self.n_in))
        self.dtype = np.dtype(dtype)
        self.weights = np.array(weights, dtype=self.dtype)
        if self.weights.shape != (self.n_out, self.n_in):
            raise ValueError(f"weights have shape {self.weights.shape}, layer is {(self.n_out, self.n_in)}")
        self._input = self._ag = None
        self._mode = "batch"
        self._buf = np.empty_like(self.weights)
        self._buf2 = None
        # row sums as gemv
        self._ones_in, self._ones_out = np.ones(self.n_in, self.dtype), np.ones(self.n_out, self.dtype)
        self._prepare()

    # vector mode when batch < ratio * n_out and n_in > n_out (see forward)
    _vector_batch_ratio = 1.0

    def _prepare(self) -> None:
        """Factorise the imperfections once: gain split, quantiser constants, output maps."""
        imp = self.imperfections
        dt = self.dtype
        go = gi = full = None
        if imp.gain is not None:
            g = np.asarray(imp.gain, dtype=np.float64)
            sep = _rank_one(g)
            if sep is None:
                full = g.astype(dt)
            else:
                go, gi = (v.astype(dt) for v in sep)
        self._row_gain, self._col_gain, self._full_gain = go, gi, full
        self._q = None
        step = 1.0
        if imp.levels is not None:
            levels = int(imp.levels)
            step = 2.0 * float(imp.w_max) / (levels - 1)
            # level values are step * j, j integer (odd levels) or half-integer (even levels):
            # nearest level = floor(w / step) + 1/2 or rint(w / step), clipped to the range
            if levels % 2 == 0:
                self._q = (1.0 / step, -levels / 2, levels / 2 - 1, 0.5)
            else:
                self._q = (1.0 / step, -(levels - 1) / 2, (levels - 1) / 2, 0.0)
        self._t = None
        if imp.transfer is not None:    # staircase: edges in weight units, values in weight units
            e, v = (np.asarray(part, dtype=np.float64) for part in imp.transfer)
            self._t = ((e * imp.w_max).astype(dt), (v * imp.w_max).astype(dt))
        # matrix mode: B = J * inner, G * Q(W) = diag(g_out) B  (J: weights or level values / step)
        inner = gi if gi is not None else full
        if self._q is not None:
            inner = step if inner is None else step * inner
        self._inner = inner
        # vector mode: B = W, or the level indices k with Q(W) = step (k + half), and
        # G * Q(W) = diag(step g_out) (B + half) diag(g_in); needs a separable (or no) gain
        self._vec_ok = full is None and self._t is None and (self._q is not None or gi is not None)
        self._col_step = None if gi is None and step == 1.0 else (step if gi is None else step * gi)
        row_step = None if go is None and step == 1.0 else (step if go is None else step * go)
        self._row_step = row_step
        c = imp.crosstalk
        self._cmap = _RowMap(c, dt) if c is not None else None
        self._emap = self._esmap = None   # C diag(g_out) and C diag(step g_out)
        if c is not None:
            c = np.asarray(c, dtype=np.float64)
            self._emap = self._cmap if go is None else _RowMap(c * go, dt)
            if self._vec_ok:
                self._esmap = self._cmap if row_step is None else _RowMap(c * row_step, dt)
        # backward-path defects in the layer's precision
        self._bgain = None if imp.backward_gain is None else np.asarray(imp.backward_gain, dtype=dt)
        self._nonrec = None if imp.nonreciprocity is None else np.asarray(imp.nonreciprocity, dtype=dt)

    # -- the realised matrix -------------------------------------------------
    def quantised(self) -> np.ndarray:
        """Programmed weights after SLM level quantisation (clipped to +-w_max)."""
        imp = self.imperfections
        if self._t is not None:
            return self._lookup(self.weights, np.empty_like(self.weights))
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

    def _realise(self, vector: bool = False, buf: np.ndarray | None = None) -> np.ndarray:
        """B (matrix mode: G * Q(W) = diag(g_out) B) or, in vector mode, the weights or the
        integer level indices k (Q(W) = step (k + half)), in ``buf`` (default: a reused buffer).

        The hot path of training: a few in-place passes over the matrix.
        """
        w = self.weights
        buf = self._buf if buf is None else buf
        inner = None if vector else self._inner
        if self._t is not None:          # measured transfer table (never vector mode)
            self._lookup(w, buf)
            if inner is not None:
                buf *= inner
            return buf
        if self._q is None:
            return w if inner is None else np.multiply(w, inner, out=buf)
        inv, lo, hi, half = self._q
        np.multiply(w, inv, out=buf)
        if half:
            np.floor(buf, out=buf)
        else:
            np.rint(buf, out=buf)
        np.clip(buf, lo, hi, out=buf)
        if vector:
            return buf
        if half:
            buf += half
        if inner is not None:
            buf *= inner
        return buf

    def _lookup(self, w: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Realised weights from the transfer staircase (beyond +-w_max: the end values)."""
        edges, values = self._t
        np.take(values, np.searchsorted(edges, w, side="right"), out=out)
        return out

    # -- passes --------------------------------------------------------------
    def _mix(self, z: np.ndarray, transpose: bool) -> np.ndarray:
        """Apply the output crosstalk C (or C^T) to rows of z: z @ C.T (or z @ C)."""
        if self._cmap is None:
            return z
        return self._cmap.apply(z, transpose)

    def _row_error(self, delta: np.ndarray) -> np.ndarray:
        """delta C diag(g_out): the error at the SLM plane times the row gain (new array or delta)."""
        if self._emap is not None:
            return self._emap.apply(delta, transpose=True)
        return delta if self._row_gain is None else delta * self._row_gain

    def forward(self, a: np.ndarray, rng=None, keep: bool = True, noise=None, out=None) -> np.ndarray:
        """Output fields (batch, n_out) for input fields ``a`` (batch, n_in).

        ``noise``: readout noise to add, drawn beforehand (e.g. one draw for all layers of a
        network), with the same number of elements as the outputs; by default the layer
        draws N(0, readout_noise^2) values from ``rng``.  Used only when readout_noise > 0.
        ``out``: a (batch, n_out) array of the layer's dtype that may receive the result.
        """
        imp = self.imperfections
        batch = a.shape[0] if a.ndim == 2 else 0
        if out is not None and (a.ndim != 2 or out.shape != (batch, self.n_out) or out.dtype != self.dtype):
            out = None
        # keep=False must not touch the state a later backward() relies on
        buf = self._buf if keep else np.empty_like(self.weights)
        if self._vec_ok and 0 < batch < self._vector_batch_ratio * self.n_out and self.n_in > self.n_out:
            # scalings on the inputs / outputs of a wide layer: (batch, n) arrays much smaller
            # than the matrix (measured: for square layers the matrix passes are cheaper)
            mode = "vector"
            m = self._realise(vector=True, buf=buf)
            ag = a if self._col_gain is None else a * self._col_gain
            y = np.matmul(ag, m.T, out=None if self._esmap is not None else out)
            if self._q is not None and self._q[3]:   # level offset: rank-1 term half * row sums
                y += (self._q[3] * (ag @ self._ones_in))[:, None]
            z = _to_outputs(y, self._esmap, self._row_step)
        elif self._emap is not None and self.n_in < batch:
            # crosstalk folded into the matrix: (n_out, n_in) smaller than (batch, n_out)
            mode, ag = "fold", None
            if self._buf2 is None or not keep:
                mat = np.empty_like(self.weights)
                if keep:
                    self._buf2 = mat
            else:
                mat = self._buf2
            m = self._emap.left(self._realise(buf=buf), out=mat)
            z = np.matmul(a, m.T, out=out)
        else:
            mode, ag = "batch", None
            m = self._realise(buf=buf)
            y = np.matmul(a, m.T, out=None if self._emap is not None else out)
            z = _to_outputs(y, self._emap, self._row_gain)
        if imp.stray is not None:
            z += np.asarray(imp.stray, dtype=z.dtype)
        if imp.readout_noise > 0:
            if noise is None:
                rng = rng if rng is not None else np.random.default_rng()
                noise = gaussian_noise32(z.size, rng, float(imp.readout_noise))
            elif np.size(noise) != z.size:
                raise ValueError(f"noise has {np.size(noise)} values, the outputs {z.size}")
            _add_noise(z, np.asarray(noise))
        if keep:
            self._m, self._mode, self._input, self._ag = m, mode, a, ag
        return z

    def _load(self, a: np.ndarray) -> None:
        """Set the state backward() needs (realised matrix, layer input) without a forward pass."""
        self._m, self._mode = self._realise(), "batch"
        self._input, self._ag = a, None

    def backward(self, delta: np.ndarray, update: str = "gradient", need_input_error: bool = True,
                 out=None, grad_out=None):
        """Propagate the output error ``delta`` (batch, n_out) backward.

        Returns ``(delta_in, grad)``: the error arriving at the input plane (batch, n_in)
        (None when ``need_input_error`` is False, which saves the largest product of the
        first layer) and the weight update (n_out, n_in).  ``update='gradient'`` is the true gradient
        with respect to the programmed weights; ``'optical'`` is the outer product of the
        injected error and the input, as an optical bench measures it.
        ``out`` may receive ``delta_in``; ``grad_out`` (n_out, n_in) always receives the
        update when given (and is returned as ``grad``).
        """
        if self._input is None:
            raise RuntimeError("backward() needs a forward() with keep=True first")
        if update not in ("gradient", "optical"):
            raise ValueError(f"unknown update {update!r}: use 'gradient' or 'optical'")
        a, mode = self._input, self._mode
        if out is not None and (out.shape != (delta.shape[0], self.n_in) or out.dtype != self.dtype):
            out = None
        if grad_out is not None and (grad_out.shape != self.weights.shape
                                     or not np.can_cast(np.result_type(delta, a), grad_out.dtype, "same_kind")):
            raise ValueError(f"grad_out must be a {self.weights.shape} float array")
        d_row = None if mode == "fold" else self._row_error(delta)
        if not need_input_error:
            delta_in = None
        elif self._bgain is not None:
            mat = (self.quantised() * self._bgain).astype(self.dtype, copy=False)
            delta_in = np.matmul(self._mix(delta, transpose=True), mat, out=out)
        elif mode == "fold":     # self._m = C diag(g_out) B
            delta_in = np.matmul(delta, self._m, out=out)
        else:
            delta_in = np.matmul(d_row, self._m, out=out)
            if mode == "vector":
                if self._q is not None and self._q[3]:
                    delta_in += (self._q[3] * (d_row @ self._ones_out))[:, None]
                if self._col_step is not None:
                    delta_in *= self._col_step
        if need_input_error and self._nonrec is not None:
            delta_in += delta @ self._nonrec
        return delta_in, self._weight_update(delta, d_row, a, mode, update, grad_out)

    def _weight_update(self, delta, d_row, a, mode, update, out):
        """The weight update of backward(), in ``out`` when given."""
        if update == "optical":
            return np.matmul(delta.T, a, out=out)
        # dL/dW = G * ((delta C)^T a) = diag(g_out) ((delta C)^T a) diag(g_in)
        if mode == "vector":
            return np.matmul(d_row.T, self._ag, out=out)
        if mode == "fold":
            grad = np.matmul(delta.T, a, out=out)
            mixed = self._emap.left(grad, transpose=True)
            if out is None:
                grad = mixed
            else:
                out[...] = mixed
        elif self._col_gain is not None and a.ndim == 2 and a.shape[0] < self.n_out:
            return np.matmul(d_row.T, a * self._col_gain, out=out)    # (batch, n_in) < (n_out, n_in)
        else:
            grad = np.matmul(d_row.T, a, out=out)
        if self._col_gain is not None:
            grad *= self._col_gain
        elif self._full_gain is not None:
            grad *= self._full_gain
        return grad
