"""The optical network: optical MVMs with absorber activations between them, linear output.

``OpticalNetwork`` implements the :class:`twin.system.System` protocol, so the
training loop drives it exactly like a bench.
"""
from __future__ import annotations

import numpy as np

from twin.absorber import Absorber, make_absorber
from twin.activation import AbsorberActivation
from twin.layers import Imperfections, OpticalLinear, gaussian_noise32
from twin.losses import LOSSES
from twin.system import BackwardResult, ForwardResult

__all__ = ["OpticalNetwork", "DTYPES"]

DTYPES = ("float32", "float64")


def _check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise ValueError(f"dtype must be float32 (training) or float64 (gradient checks), got {dtype!r}")
    return dt


class OpticalNetwork:
    """Fully connected optical network without biases.

    Parameters
    ----------
    sizes : layer widths, e.g. [784, 128, 128, 10].
    absorber : an :class:`Absorber` (or a model name with ``alpha0``) used after every
        hidden layer; ``None`` makes a linear network.
    rule : backward rule at the cell: 'exact' (g'(z)) or 'probe' (probe transmission).
    imperfections : one :class:`Imperfections` per layer (or None).
    probe_strength : probe self-saturation (see :class:`AbsorberActivation`).
    update : 'gradient' (true gradient w.r.t. programmed weights) or 'optical'
        (outer product of the injected error and the forward input, as a bench measures).
    init_scale : weights start as N(0, init_scale^2 / n_in).
    seed : seeds the weights; noise draws use the generator passed to forward().
    dtype : precision of weights and passes: float32 (default; training) or float64
        (gradient checks, reference values).  float32 gradients agree with float64 ones to
        ~1e-5 of their norm; the draws of the initial weights do not depend on it.

    All weights live in one flat array (``get_weights`` returns views of it, in layer
    order), so an optimizer can update them in one pass; :meth:`train_step` runs a whole
    training step in preallocated work arrays.
    """

    def __init__(self, sizes, absorber: Absorber | str | None = "thin", alpha0: float = 10.0,
                 rule: str = "probe", imperfections=None, probe_strength: float = 0.0,
                 update: str = "gradient", init_scale: float = 1.0, seed=0, weights=None, dtype="float32"):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) <= 0:
            raise ValueError(f"network sizes must be >= 2 positive integers, got {sizes}")
        if update not in ("gradient", "optical"):
            raise ValueError(f"unknown update {update!r}: use 'gradient' or 'optical'")
        self.sizes = sizes
        self.dtype = dt = _check_dtype(dtype)
        if isinstance(absorber, str):
            absorber = make_absorber(absorber, alpha0=alpha0)
        self.absorber = absorber
        n_layers = len(sizes) - 1
        imperfections = list(imperfections) if imperfections is not None else [None] * n_layers
        if len(imperfections) != n_layers:
            raise ValueError(f"need {n_layers} imperfection entries, got {len(imperfections)}")
        rng = np.random.default_rng(seed)
        self.layers = []
        for k in range(n_layers):
            w = None if weights is None else weights[k]
            self.layers.append(OpticalLinear(sizes[k], sizes[k + 1], weights=w,
                                             imperfections=imperfections[k] or Imperfections(),
                                             rng=rng, init_scale=init_scale, dtype=dt))
        # one flat buffer for all weights (and one for the gradients of train_step)
        total = sum(layer.weights.size for layer in self.layers)
        self._wflat, self._gflat = np.empty(total, dt), np.zeros(total, dt)
        self._grads, pos = [], 0
        for layer in self.layers:
            n = layer.weights.size
            view = self._wflat[pos:pos + n].reshape(layer.weights.shape)
            view[...] = layer.weights
            layer.weights = view
            self._grads.append(self._gflat[pos:pos + n].reshape(view.shape))
            pos += n
        self._work = {}      # batch size -> work arrays of train_step
        self.activations = [AbsorberActivation(absorber, rule, probe_strength) if absorber else None
                            for _ in range(n_layers - 1)]
        self.rule = rule
        self.update = update

    # -- System protocol -----------------------------------------------------
    def forward(self, x: np.ndarray, rng=None, check: bool = False) -> ForwardResult:
        """Run inputs (batch, n_in) through the network; keeps what backward needs.

        ``check=True`` scans the inputs for NaN/inf (``predict`` does; the training loop
        validates its data once and stops on a non-finite loss instead).  The readout
        noise of all layers is drawn from ``rng`` in one go before the pass.
        """
        x = np.asarray(x, dtype=self.dtype)
        if x.ndim != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"inputs must have shape (batch, {self.sizes[0]}), got {x.shape}")
        if check and not np.isfinite(np.sum(x)):
            raise ValueError("inputs contain NaN or inf; clean or rescale the data")
        pre, post = [], [x]
        noise = self._draw_noise(len(x), rng)
        a = x
        for k, layer in enumerate(self.layers):
            z = layer.forward(a, rng=rng, noise=noise[k])
            pre.append(z)
            if k < len(self.activations):
                act = self.activations[k]
                a = act.forward(z) if act is not None else z
                post.append(a)
        return ForwardResult(pre=pre, post=post, output=pre[-1])

    def _draw_noise(self, batch: int, rng) -> list:
        """Readout noise of every layer for one forward pass, drawn at once (None per quiet layer)."""
        sigmas = [float(layer.imperfections.readout_noise) for layer in self.layers]
        counts = [batch * layer.n_out if s > 0 else 0 for layer, s in zip(self.layers, sigmas)]
        if not any(counts):
            return [None] * len(self.layers)
        rng = rng if rng is not None else np.random.default_rng()
        loud = {s for s in sigmas if s > 0}
        common = loud.pop() if len(loud) == 1 else 1.0   # one sigma: scaled in the draw
        block = gaussian_noise32(sum(counts), rng, common)
        out, start = [], 0
        for s, n in zip(sigmas, counts):
            seg = block[start:start + n] if n else None
            if n and s != common:
                if 1e-15 < s < 1e15:
                    seg *= np.float32(s)
                else:
                    seg = seg * np.float64(s)
            out.append(seg)
            start += n
        return out

    def backward(self, output_error: np.ndarray) -> BackwardResult:
        """Propagate dL/d(output) back; returns per-layer errors and weight updates."""
        delta = np.asarray(output_error, dtype=self.dtype)
        errors = [None] * len(self.layers)
        grads = [None] * len(self.layers)
        for k in range(len(self.layers) - 1, -1, -1):
            errors[k] = delta
            delta_in, grads[k] = self.layers[k].backward(delta, self.update, need_input_error=k > 0)
            if k > 0:
                act = self.activations[k - 1]
                delta = act.backward(delta_in) if act is not None else delta_in
        return BackwardResult(errors=errors, grads=grads)

    def backward_at(self, measured: ForwardResult, output_error: np.ndarray) -> BackwardResult:
        """Backward pass of this twin evaluated at another system's measured forward values.

        Physics-aware ("hybrid") training: the layer inputs and the cell's pre-activations
        come from ``measured`` (e.g. a bench), the matrices and the backward rule from the twin.
        """
        if len(measured.pre) != len(self.layers) or len(measured.post) != len(self.layers):
            raise ValueError(f"measured forward values cover {len(measured.pre)} layers, "
                             f"the twin has {len(self.layers)}")
        for k, layer in enumerate(self.layers):
            post = np.asarray(measured.post[k], dtype=self.dtype)
            if post.ndim != 2 or post.shape[1] != layer.n_in:
                raise ValueError(f"measured input of layer {k} has shape {post.shape}, "
                                 f"expected (batch, {layer.n_in})")
            layer._load(post)
        for k, act in enumerate(self.activations):
            if act is not None:
                z = np.asarray(measured.pre[k], dtype=self.dtype)
                act._z, act._slope = z, np.asarray(act.absorber.slope(z, act.rule), dtype=self.dtype)
        return self.backward(output_error)

    def get_weights(self) -> list[np.ndarray]:
        return [layer.weights for layer in self.layers]

    def set_weights(self, weights) -> None:
        """Program new weights (copied into the network's own arrays).

        Arrays that *are* the network's (from :meth:`get_weights`, updated in place by an
        optimizer) are projected onto +-w_max where a layer has one (the SLM cannot hold more).
        """
        weights = list(weights)
        if len(weights) != len(self.layers):
            raise ValueError(f"need {len(self.layers)} weight arrays, got {len(weights)}")
        for layer, w in zip(self.layers, weights):
            if w is layer.weights:
                self._clip(layer)
                continue
            w = np.asarray(w)
            if w.shape != layer.weights.shape:
                raise ValueError(f"weights of shape {w.shape} do not fit layer {layer.weights.shape}")
            layer.weights[...] = w

    @staticmethod
    def _clip(layer) -> None:
        wm = layer.imperfections.w_max
        if wm is not None:
            np.clip(layer.weights, -wm, wm, out=layer.weights)

    # -- the fused training step ---------------------------------------------
    def _work_arrays(self, batch: int) -> dict:
        """Preallocated arrays of train_step for one batch size (the last two sizes kept)."""
        ws = self._work.get(batch)
        if ws is None:
            dt, outs = self.dtype, self.sizes[1:]
            ws = {"z": [np.empty((batch, n), dt) for n in outs],
                  "a": [np.empty((batch, n), dt) for n in outs[:-1]],
                  "s": [np.empty((batch, n), dt) for n in outs[:-1]],
                  "d": [np.empty((batch, n), dt) for n in self.sizes[1:-1]],
                  "dout": np.empty((batch, outs[-1]), dt)}
            if len(self._work) >= 2:
                self._work.pop(next(iter(self._work)))
            self._work[batch] = ws
        return ws

    def train_step(self, x: np.ndarray, targets: np.ndarray, optimizer, loss: str = "mse", rng=None,
                   error_scale: float = 1.0) -> tuple[float, np.ndarray]:
        """One training step on a batch: forward, loss, backward, optimizer step, w_max clip.

        The same arithmetic as ``forward`` / the loss / ``backward`` / ``optimizer.step`` /
        ``set_weights`` in a row (identical noise draws from ``rng``), with the activations,
        errors and gradients in preallocated arrays and the gradients in one flat buffer.
        ``x`` (batch, n_in) and ``targets`` (batch, n_out) should have the network's dtype.
        Returns ``(loss value, outputs)``; the outputs array is reused by the next step.
        A non-finite loss returns before the update (the weights stay as they were).
        """
        x = np.asarray(x, dtype=self.dtype)
        batch = x.shape[0]
        if x.ndim != 2 or x.shape[1] != self.sizes[0] or np.shape(targets) != (batch, self.sizes[-1]):
            raise ValueError(f"train_step needs inputs (batch, {self.sizes[0]}) and targets (batch, "
                             f"{self.sizes[-1]}), got {x.shape} and {np.shape(targets)}")
        ws = self._work_arrays(batch)
        noise = self._draw_noise(batch, rng)
        acts, layers = self.activations, self.layers
        a = x
        for k, layer in enumerate(layers):
            z = layer.forward(a, rng=rng, noise=noise[k], out=ws["z"][k])
            if k < len(acts):
                act = acts[k]
                if act is None:
                    a = z
                else:
                    a = act.forward(z, out=ws["a"][k], slope=ws["s"][k])
                    ws["a"][k], ws["s"][k] = a, act._slope    # the model may swap the roles
        out = z
        if loss == "mse":          # as twin.losses.mse_loss, in place
            d = ws["dout"]
            np.subtract(out, targets, out=d)
            lv = 0.5 * float(np.einsum("ij,ij->", d, d)) / batch
            d /= batch
        else:
            lv, d = LOSSES[loss](out, targets)
            d = np.asarray(d, dtype=self.dtype)
        if not np.isfinite(lv):
            return lv, out
        if error_scale != 1.0:
            d *= error_scale
        for k in range(len(layers) - 1, -1, -1):
            d_in, _ = layers[k].backward(d, self.update, need_input_error=k > 0,
                                         out=ws["d"][k - 1] if k > 0 else None, grad_out=self._grads[k])
            if k > 0:
                act = acts[k - 1]
                d = act.backward(d_in, out=d_in) if act is not None else d_in
        if error_scale != 1.0:
            self._gflat /= error_scale
        weights = self.get_weights()
        optimizer.step(weights, self._grads)
        for layer in layers:
            self._clip(layer)
        return lv, out

    # -- conveniences --------------------------------------------------------
    def predict(self, x: np.ndarray, rng=None) -> np.ndarray:
        """Output fields for inputs ``x`` (batch, n_in)."""
        return self.forward(x, rng=rng, check=True).output

    def describe(self) -> dict:
        return {"sizes": self.sizes, "absorber": self.absorber.name if self.absorber else "linear",
                "absorber_params": self.absorber.params() if self.absorber else {},
                "rule": self.rule, "update": self.update}
