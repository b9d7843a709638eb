"""Optimizers that update a list of weight arrays in place.

When the arrays tile one contiguous buffer (the twin keeps all its weights in one flat
array, see :func:`flat_view`), Adam runs over that buffer in cache-sized blocks with
preallocated work arrays: the same arithmetic, no per-step allocation, a few passes
over data that stays in the CPU cache.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["SGD", "Adam", "make_optimizer", "flat_view"]


def flat_view(arrays) -> np.ndarray | None:
    """The 1-D array the ``arrays`` tile in order, or None.

    Returns a view when the arrays are C-contiguous views of one 1-D buffer, of one
    dtype, lying back to back in the order given (how :class:`twin.network.OpticalNetwork`
    keeps its weights and gradients); otherwise None.
    """
    if not arrays:
        return None
    a0 = arrays[0]
    base = getattr(a0, "base", None)
    if (not isinstance(base, np.ndarray) or base.ndim != 1 or not base.flags.c_contiguous
            or base.dtype != a0.dtype):
        return None
    start = a0.__array_interface__["data"][0]
    pos = start
    for a in arrays:
        if (not isinstance(a, np.ndarray) or a.base is not base or a.dtype != base.dtype
                or not a.flags.c_contiguous or a.__array_interface__["data"][0] != pos):
            return None
        pos += a.nbytes
    offset, rem = divmod(start - base.__array_interface__["data"][0], base.itemsize)
    n = (pos - start) // base.itemsize
    if rem or offset < 0 or offset + n > base.size:
        return None
    return base[offset:offset + n]


class SGD:
    """Stochastic gradient descent with optional momentum."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.0):
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        self.lr, self.momentum = float(lr), float(momentum)
        self._v = None

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        if self.momentum == 0:
            for p, g in zip(params, grads):
                p -= self.lr * g
            return
        if self._v is None:
            self._v = [np.zeros_like(p) for p in params]
        for p, g, v in zip(params, grads, self._v):
            v *= self.momentum
            v += g
            p -= self.lr * v

    def state(self) -> dict:
        return {"v": self._v}

    def load_state(self, state: dict) -> None:
        self._v = state.get("v")


class Adam:
    """Adam (Kingma & Ba) with bias correction.

    State (``m``, ``v``) has the dtype of the weights.  Weights that tile one flat buffer
    (:func:`flat_view`) are updated block by block over that buffer, with the moments kept
    as m / (1 - beta1) and v / (1 - beta2) (two fewer passes; ``state()`` reports m and v);
    any other list of arrays is updated array by array.  Both compute
    ``p -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps sqrt(1 - b2^t))``.
    """

    block = 65536   # elements per block of the flat update: the work arrays stay in cache

    def __init__(self, lr: float = 5e-4, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        self.lr, self.beta1, self.beta2, self.eps = float(lr), float(beta1), float(beta2), float(eps)
        self.t = 0
        self._m = self._v = None
        self._flat = None        # (m / c1, v / c2, work, work) while stepping a flat weight buffer
        self._gbuf = None        # gradients gathered into one buffer when they do not tile one
        self._seen = {}          # "p"/"g" -> (the arrays of the last step, their flat view or None)

    def _flat_of(self, kind: str, arrays) -> np.ndarray | None:
        """flat_view(arrays), remembered while the same array objects come back (held here,
        so they cannot be replaced by others at the same address)."""
        seen = self._seen.get(kind)
        if seen is not None and len(seen[0]) == len(arrays) and all(a is b for a, b in zip(arrays, seen[0])):
            return seen[1]
        fv = flat_view(arrays)
        self._seen[kind] = (list(arrays), fv)
        return fv

    def _constants(self):
        self.t += 1
        c2 = math.sqrt(1 - self.beta2 ** self.t)   # python floats: no upcast of float32 arrays
        return self.lr * c2 / (1 - self.beta1 ** self.t), self.eps * c2

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        pf = self._flat_of("p", params)
        if pf is not None and pf.flags.writeable:
            self._step_flat(pf, params, grads)
            return
        self._unflatten()
        if self._m is None:
            self._m = [np.zeros_like(p) for p in params]
            self._v = [np.zeros_like(p) for p in params]
        lr_t, eps_t = self._constants()
        b1, b2 = self.beta1, self.beta2
        for p, g, m, v in zip(params, grads, self._m, self._v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            p -= lr_t * m / (np.sqrt(v) + eps_t)

    def _unflatten(self) -> None:
        """Leave flat mode: m and v as plain per-array state."""
        if self._flat is not None:
            m, v = self.state()["m"], self.state()["v"]
            self._flat = None
            self._m, self._v = m, v

    def _flat_state(self, pf: np.ndarray, params) -> tuple:
        """Flat scaled moments and work buffers for weights ``pf`` (from the per-array state)."""
        st = self._flat
        if st is not None and st[0].size == pf.size and st[0].dtype == pf.dtype:
            return st
        self._unflatten()
        n, dt = pf.size, pf.dtype
        m, v = np.zeros(n, dt), np.zeros(n, dt)
        if self._m is not None:     # loaded (or list-mode) state: copy it over, scaled
            if sum(np.size(a) for a in self._m) != n:
                raise ValueError(f"optimizer state holds {sum(np.size(a) for a in self._m)} values, "
                                 f"the weights {n}; load the state of a run with the same network")
            m[...] = np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in self._m]) / (1 - self.beta1)
            v[...] = np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in self._v]) / (1 - self.beta2)
        b = min(self.block, n)
        self._flat = (m, v, np.empty(b, dt), np.empty(b, dt))
        self._shapes = [p.shape for p in params]
        self._m = self._v = None
        return self._flat

    def _step_flat(self, pf: np.ndarray, params, grads) -> None:
        mf, vf, w1, w2 = self._flat_state(pf, params)
        gf = self._flat_of("g", grads)
        if gf is None or gf.size != pf.size:
            if self._gbuf is None or self._gbuf.size != pf.size or self._gbuf.dtype != pf.dtype:
                self._gbuf = np.empty(pf.size, pf.dtype)
            gf = self._gbuf
            np.concatenate([np.ravel(g) for g in grads], out=gf, casting="same_kind")
        lr_t, eps_t = self._constants()
        b1, b2 = self.beta1, self.beta2
        # m = c1 M, v = c2 V:  lr_t m / (sqrt(v) + eps_t) = lr_s M / (sqrt(V) + eps_s)
        s2 = math.sqrt(1 - b2)
        lr_s, eps_s = lr_t * (1 - b1) / s2, eps_t / s2
        n, blk = pf.size, w1.size
        for i in range(0, n, blk):
            j = min(i + blk, n)
            p, g, mb, vb = pf[i:j], gf[i:j], mf[i:j], vf[i:j]
            t1, t2 = (w1, w2) if j - i == blk else (w1[:j - i], w2[:j - i])
            mb *= b1
            mb += g
            vb *= b2
            np.multiply(g, g, out=t2)
            vb += t2
            np.sqrt(vb, out=t2)
            t2 += eps_s
            np.divide(mb, t2, out=t1)
            t1 *= lr_s
            p -= t1

    def state(self) -> dict:
        """{"t", "m", "v"}: the step count and the moments, one array per weight array.

        In flat mode m and v are float64 products of the kept scaled moments, so that
        ``load_state`` restores float32 state bit for bit (float64 state to an ulp).
        """
        if self._flat is None:
            return {"t": self.t, "m": self._m, "v": self._v}
        mf, vf = self._flat[:2]
        out = {"t": self.t, "m": [], "v": []}
        pos = 0
        for shape in self._shapes:
            n = int(np.prod(shape))
            out["m"].append((mf[pos:pos + n].astype(np.float64) * (1 - self.beta1)).reshape(shape))
            out["v"].append((vf[pos:pos + n].astype(np.float64) * (1 - self.beta2)).reshape(shape))
            pos += n
        return out

    def load_state(self, state: dict) -> None:
        self.t = int(state.get("t", 0))
        self._m, self._v = state.get("m"), state.get("v")
        self._flat = None


def make_optimizer(name: str, lr: float):
    """'adam' or 'sgd'."""
    if name == "adam":
        return Adam(lr)
    if name == "sgd":
        return SGD(lr)
    raise ValueError(f"unknown optimizer {name!r}: use 'adam' or 'sgd'")
