"""The optical network: optical MVMs with absorber activations between them, linear output.

``OpticalNetwork`` implements the :class:`twin.system.System` protocol, so the
training loop drives it exactly like a bench.
"""
from __future__ import annotations

import numpy as np

from twin.absorber import Absorber, make_absorber
from twin.layers import AbsorberActivation, Imperfections, OpticalLinear, gaussian_noise32
from twin.system import BackwardResult, ForwardResult

__all__ = ["OpticalNetwork"]


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
    """

    def __init__(self, sizes, absorber: Absorber | str | None = "thin", alpha0: float = 10.0,
                 rule: str = "probe", imperfections=None, probe_strength: float = 0.0,
                 update: str = "gradient", init_scale: float = 1.0, seed=0, weights=None):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) <= 0:
            raise ValueError(f"network sizes must be >= 2 positive integers, got {sizes}")
        if update not in ("gradient", "optical"):
            raise ValueError(f"unknown update {update!r}: use 'gradient' or 'optical'")
        self.sizes = sizes
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
                                             rng=rng, init_scale=init_scale))
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
        x = np.asarray(x, dtype=np.float64)
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
        delta = np.asarray(output_error, dtype=np.float64)
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
            post = np.asarray(measured.post[k], dtype=np.float64)
            if post.ndim != 2 or post.shape[1] != layer.n_in:
                raise ValueError(f"measured input of layer {k} has shape {post.shape}, "
                                 f"expected (batch, {layer.n_in})")
            layer._load(post)
        for k, act in enumerate(self.activations):
            if act is not None:
                z = np.asarray(measured.pre[k], dtype=np.float64)
                act._z, act._slope = z, act.absorber.slope(z, act.rule)
        return self.backward(output_error)

    def get_weights(self) -> list[np.ndarray]:
        return [layer.weights for layer in self.layers]

    def set_weights(self, weights) -> None:
        for layer, w in zip(self.layers, weights):
            wm = layer.imperfections.w_max
            if w is layer.weights:
                if wm is not None:   # the SLM cannot hold more: project back (in place)
                    np.clip(w, -wm, wm, out=w)
                continue   # the optimizer updated this layer's own array in place
            w = np.asarray(w, dtype=np.float64)
            if w.shape != layer.weights.shape:
                raise ValueError(f"weights of shape {w.shape} do not fit layer {layer.weights.shape}")
            layer.weights = w.copy()

    # -- conveniences --------------------------------------------------------
    def predict(self, x: np.ndarray, rng=None) -> np.ndarray:
        """Output fields for inputs ``x`` (batch, n_in)."""
        return self.forward(x, rng=rng, check=True).output

    def describe(self) -> dict:
        return {"sizes": self.sizes, "absorber": self.absorber.name if self.absorber else "linear",
                "absorber_params": self.absorber.params() if self.absorber else {},
                "rule": self.rule, "update": self.update}
