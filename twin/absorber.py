"""Saturable-absorber laws: the hidden activation of the optical network.

Units are normalised: ``z`` is the real, signed field amplitude and
``z**2 / i_sat`` is the saturation parameter I/I_sat.  Every model offers

``transmit(z)``    output field for input field z (odd in z: signs pass the cell),
``derivative(z)``  the exact d transmit / dz,
``probe(z)``       amplitude transmission of a weak counter-propagating probe
                   while the cell is pumped by z (the optical "derivative").

All functions are vectorised, float64, and stable for z -> 0 and z >> 1.
"""
from __future__ import annotations

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.special import wrightomega

__all__ = ["Absorber", "ThinAbsorber", "TwoLevelAbsorber", "DopplerAbsorber", "TabulatedAbsorber",
           "make_absorber", "ABSORBER_MODELS"]


def _as_float(z) -> np.ndarray:
    return np.asarray(z, dtype=np.float64)


class Absorber:
    """Common interface; subclasses implement ``transmit``, ``derivative`` and ``probe``."""

    name = "absorber"

    def transmit(self, z):
        raise NotImplementedError

    def derivative(self, z):
        raise NotImplementedError

    def probe(self, z):
        raise NotImplementedError

    def forward(self, z, rule: str = "exact"):
        """Return ``(transmit(z), slope)`` with slope = derivative (rule 'exact') or probe ('probe').

        Subclasses share intermediate results so training pays for one evaluation.
        """
        out = self.transmit(z)
        return out, self.slope(z, rule)

    def forward_into(self, z: np.ndarray, out: np.ndarray, slope: np.ndarray, rule: str = "exact"):
        """:meth:`forward` into ``out`` and ``slope`` (arrays shaped and typed like ``z``).

        Returns ``(output, slope)``: the two arrays, whose roles a model may swap to save
        a pass.  Models without a dedicated version compute in float64 and copy.
        """
        o, s = self.forward(z, rule)
        out[...] = o
        slope[...] = s
        return out, slope

    def slope(self, z, rule: str):
        if rule == "exact":
            return self.derivative(z)
        if rule == "probe":
            return self.probe(z)
        raise ValueError(f"unknown backward rule {rule!r}: use 'exact' or 'probe'")

    def params(self) -> dict:
        return {}

    def __repr__(self):
        p = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({p})"


class _Parametric(Absorber):
    def __init__(self, alpha0: float, i_sat: float = 1.0):
        alpha0 = float(alpha0)
        i_sat = float(i_sat)
        if not np.isfinite(alpha0) or alpha0 < 0:
            raise ValueError(f"alpha0 (resonant optical depth) must be a finite number >= 0, got {alpha0}")
        if not np.isfinite(i_sat) or i_sat <= 0:
            raise ValueError(f"i_sat must be a finite number > 0, got {i_sat}")
        self.alpha0 = alpha0
        self.i_sat = i_sat

    def params(self) -> dict:
        return {"alpha0": self.alpha0, "i_sat": self.i_sat}

    def _s(self, z):
        z = _as_float(z)
        return z, z * z / self.i_sat


class ThinAbsorber(_Parametric):
    """Thin-absorber model (Spall et al., Eqs. 5-6): g(z) = z exp(-(alpha0/2) / (1 + s)), s = z^2/i_sat."""

    name = "thin"

    def probe(self, z):
        _, s = self._s(z)
        return np.exp(-0.5 * self.alpha0 / (1.0 + s))

    def transmit(self, z):
        z, _ = self._s(z)
        return z * self.probe(z)

    def derivative(self, z):
        z, s = self._s(z)
        return (1.0 + self.alpha0 * s / (1.0 + s) ** 2) * np.exp(-0.5 * self.alpha0 / (1.0 + s))

    def forward(self, z, rule: str = "exact"):
        if rule == "probe":   # training hot path: the same arithmetic as probe(), in place
            z = _as_float(z)
            t = np.multiply(z, z)
            if self.i_sat != 1.0:
                t /= self.i_sat
            t += 1.0
            np.divide(-0.5 * self.alpha0, t, out=t)
            np.exp(t, out=t)
            return z * t, t
        z, s = self._s(z)
        inv = 1.0 / (1.0 + s)
        t = np.exp(-0.5 * self.alpha0 * inv)
        if rule == "exact":
            return z * t, t * (1.0 + self.alpha0 * s * inv * inv)
        raise ValueError(f"unknown backward rule {rule!r}: use 'exact' or 'probe'")

    def forward_into(self, z, out, slope, rule: str = "exact"):
        """In the dtype of ``z`` (float32 or float64), without temporaries."""
        if rule not in ("probe", "exact"):
            raise ValueError(f"unknown backward rule {rule!r}: use 'exact' or 'probe'")
        t = slope
        np.multiply(z, z, out=t)
        if self.i_sat != 1.0:
            t /= self.i_sat
        t += 1.0
        if rule == "probe":      # the arithmetic of forward(): bitwise equal in float64
            np.divide(-0.5 * self.alpha0, t, out=t)
            np.exp(t, out=t)
            np.multiply(z, t, out=out)
            return out, t
        # exact: with inv = 1 / (1 + s), s inv = 1 - inv, so g'/t = 1 + alpha0 (1 - inv) inv
        np.reciprocal(t, out=t)
        r = out
        np.subtract(1.0, t, out=r)
        r *= t
        r *= self.alpha0
        r += 1.0
        t *= -0.5 * self.alpha0
        np.exp(t, out=t)
        r *= t                    # the exact slope
        np.multiply(z, t, out=t)  # the output, in the other array
        return t, r


class _FullPropagation(_Parametric):
    """Models solved along the cell: subclasses give the intensity transmission T(I_in) and
    the ratio R = g'/t of the exact derivative to the probe transmission."""

    def intensity_transmission(self, i_in):
        raise NotImplementedError

    def _ratio(self, s, T):
        raise NotImplementedError

    def _state(self, z):
        z, s = self._s(z)
        return z, s, self.intensity_transmission(s)

    def probe(self, z):
        _, _, T = self._state(z)
        return np.sqrt(T)

    def transmit(self, z):
        z, _, T = self._state(z)
        return z * np.sqrt(T)

    def derivative(self, z):
        _, s, T = self._state(z)
        return np.sqrt(T) * self._ratio(s, T)

    def forward(self, z, rule: str = "exact"):
        z, s, T = self._state(z)
        t = np.sqrt(T)
        if rule == "probe":
            return z * t, t
        if rule == "exact":
            return z * t, t * self._ratio(s, T)
        raise ValueError(f"unknown backward rule {rule!r}: use 'exact' or 'probe'")


class TwoLevelAbsorber(_FullPropagation):
    """Full propagation through a homogeneously broadened two-level medium.

    dI/dx = -(alpha0/L) I / (1 + I) gives I_out = W0(I_in exp(I_in - alpha0)),
    evaluated as the Wright omega function omega(ln I_in + I_in - alpha0).
    """

    name = "twolevel"

    def intensity_transmission(self, i_in):
        """Intensity transmission T = I_out/I_in for normalised input intensity ``i_in`` >= 0."""
        i_in = _as_float(i_in)
        t = np.full(i_in.shape, np.exp(-self.alpha0))
        pos = i_in > 0
        if np.any(pos):
            ip = i_in[pos]
            i_out = np.real(wrightomega(np.log(ip) + ip - self.alpha0))
            t[pos] = i_out / ip
        return t

    def _ratio(self, s, T):
        """g'/t = (1 + I_in) / (1 + I_out)."""
        return (1.0 + s) / (1.0 + s * T)


class DopplerAbsorber(_FullPropagation):
    """Full propagation with a Doppler-broadened line at resonance: alpha = alpha0 (1 + I)^(-1/2).

    Integrating dI/dx = -(alpha0/L) I / sqrt(1 + I) gives G(I_out) = G(I_in) - alpha0 with
    G(I) = 2 sqrt(1+I) + ln I - 2 ln(1 + sqrt(1+I)).  Solved for y = ln I_out by Newton's
    method; G is increasing and convex in y (dG/dy = sqrt(1+I)), so starting at y = ln I_in
    the iterates fall monotonically onto the root (relative accuracy ~1e-14).
    """

    name = "doppler"

    @staticmethod
    def _G(i):
        u = np.sqrt(1.0 + i)
        return 2.0 * u + np.log(i) - 2.0 * np.log1p(u)

    def intensity_transmission(self, i_in, tol: float = 1e-13, max_iter: int = 200):
        """Intensity transmission T = I_out/I_in for normalised input intensity ``i_in`` >= 0."""
        i_in = _as_float(i_in)
        T = np.full(i_in.shape, np.exp(-self.alpha0))
        pos = i_in > 0
        if not np.any(pos) or self.alpha0 == 0:
            return np.where(pos, 1.0, T) if self.alpha0 == 0 else T
        ip = i_in[pos]
        target = self._G(ip) - self.alpha0
        y = np.log(ip)
        active = np.ones(y.shape, dtype=bool)
        for _ in range(max_iter):
            ya = y[active]
            ia = np.exp(ya)
            step = (self._G(ia) - target[active]) / np.sqrt(1.0 + ia)
            y[active] = ya - step
            done = np.abs(step) <= tol * np.maximum(1.0, np.abs(ya))
            idx = np.flatnonzero(active)
            active[idx[done]] = False
            if not active.any():
                break
        T[pos] = np.exp(y - np.log(ip))
        return T

    def _ratio(self, s, T):
        """g'/t = f(I_out)/f(I_in) = sqrt((1 + I_in) / (1 + I_out))."""
        return np.sqrt((1.0 + s) / (1.0 + s * T))


class TabulatedAbsorber(Absorber):
    """Absorber built from measured curves (the fallback for real cells).

    Parameters
    ----------
    z_in, z_out : pump input and output field amplitudes (normalised units, z_in >= 0,
        strictly increasing after sorting; z_out monotone).  The law is extended to
        negative z by odd symmetry.  Below the first point the transmission
        z_out/z_in of the first point is used; above the last point the last
        transmission is held (a bleached cell).
    probe_z, probe_t : pump field and weak-probe amplitude transmission.  Without
        them the probe reads the pump's amplitude transmission z_out/z_in (exact for
        any local saturation law).

    Curves are interpolated with monotone cubic (PCHIP) splines; ``derivative`` is
    the derivative of that interpolant.
    """

    name = "tabulated"

    def __init__(self, z_in, z_out, probe_z=None, probe_t=None):
        z_in = _as_float(z_in).ravel()
        z_out = _as_float(z_out).ravel()
        if z_in.shape != z_out.shape or z_in.size < 3:
            raise ValueError(f"tabulated absorber needs matching z_in/z_out with >= 3 points, got "
                             f"{z_in.size} and {z_out.size}")
        if not (np.all(np.isfinite(z_in)) and np.all(np.isfinite(z_out))):
            raise ValueError("tabulated absorber: z_in/z_out contain NaN or inf; remove bad points")
        if np.any(z_in < 0):
            raise ValueError("tabulated absorber: z_in must be >= 0 (the law is extended by odd symmetry)")
        order = np.argsort(z_in)
        z_in, z_out = z_in[order], z_out[order]
        if np.any(np.diff(z_in) <= 0):
            raise ValueError("tabulated absorber: z_in has repeated values; average repeats first")
        if z_in[0] > 0:
            t0 = z_out[0] / z_in[0]
            z_in = np.concatenate([[0.0], z_in])
            z_out = np.concatenate([[0.0], z_out])
        else:
            t0 = None
        self.z_in, self.z_out = z_in, z_out
        self._pump = PchipInterpolator(z_in, z_out, extrapolate=False)
        self._dpump = self._pump.derivative()
        self._t_last = z_out[-1] / z_in[-1]
        if t0 is None:
            t0 = float(self._dpump(0.0))
        self._t_first = t0
        if (probe_z is None) != (probe_t is None):
            raise ValueError("tabulated absorber: give both probe_z and probe_t, or neither")
        if probe_z is not None:
            pz = np.abs(_as_float(probe_z).ravel())
            pt = _as_float(probe_t).ravel()
            if pz.shape != pt.shape or pz.size < 2:
                raise ValueError("tabulated absorber: probe_z and probe_t must match, >= 2 points")
            o = np.argsort(pz)
            pz, pt = pz[o], pt[o]
            self._probe = PchipInterpolator(pz, pt, extrapolate=False)
            self._probe_range = (pz[0], pz[-1], pt[0], pt[-1])
            self.probe_z, self.probe_t = pz, pt
        else:
            self._probe = None
            self.probe_z = self.probe_t = None

    def transmit(self, z):
        z = _as_float(z)
        a = np.abs(z)
        out = self._pump(np.minimum(a, self.z_in[-1]))
        out = np.where(a > self.z_in[-1], a * self._t_last, out)
        return np.sign(z) * out

    def derivative(self, z):
        a = np.abs(_as_float(z))
        d = self._dpump(np.minimum(a, self.z_in[-1]))
        return np.where(a > self.z_in[-1], self._t_last, d)

    def probe(self, z):
        a = np.abs(_as_float(z))
        if self._probe is None:
            safe = np.where(a > 0, a, 1.0)
            return np.where(a > 0, self.transmit(safe) / safe, self._t_first)
        lo, hi, tlo, thi = self._probe_range
        t = self._probe(np.clip(a, lo, hi))
        return np.where(a < lo, tlo, np.where(a > hi, thi, t))

    def params(self) -> dict:
        return {"points": int(self.z_in.size)}

    @classmethod
    def from_model(cls, model: Absorber, z_max: float = 10.0, n: int = 400) -> "TabulatedAbsorber":
        """Tabulate a parametric model (pump and probe) on a grid denser at small z."""
        z = z_max * np.linspace(0.0, 1.0, n) ** 2
        return cls(z, model.transmit(z), probe_z=z, probe_t=model.probe(z))


ABSORBER_MODELS = {"thin": ThinAbsorber, "twolevel": TwoLevelAbsorber, "doppler": DopplerAbsorber}


def make_absorber(model: str, **params) -> Absorber:
    """Build an absorber by name: 'thin', 'twolevel', 'doppler' (alpha0, i_sat) or 'tabulated'
    (z_in, z_out, probe_z, probe_t)."""
    if model == "tabulated":
        return TabulatedAbsorber(**params)
    try:
        cls = ABSORBER_MODELS[model]
    except KeyError:
        raise ValueError(f"unknown absorber model {model!r}: choose one of "
                         f"{', '.join(list(ABSORBER_MODELS) + ['tabulated'])}") from None
    return cls(**params)
