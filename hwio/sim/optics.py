"""Network physics of the simulated bench: element fields in, fields at the four cameras out.

Forward (all fields complex, normalised cell units, scaled by sqrt(laser power P)):

    z1 = C1 (k1 E1 x + stray1)                       cam_z1 sees z1   (tap before the cell)
    a1 = T(|z1|) z1                                   cam_a1 sees a1   (after the cell)
    z2 = C2 (k2 E2 a1 + stray2)                       cam_out sees z2
    b  = k2 E2^T C2^T d2,  d2 = probe_gain D           backward probe through layer 2 (reciprocal)
    d1 = t(|z1|, |b|) b                               cam_back sees d1 + incoherent pump_leak |a1|^2

``C = I + c (nearest-neighbour mixing)`` models leakage between adjacent output rows.  A
reference block column (``reference_col``) adds its element field with unit input.

The cell: T(r) is the pump amplitude transmission g(r)/r of the truth absorber; t(r, p) is
the weak-probe transmission ``absorber.probe(sqrt(r**2 + probe_saturation p**2))`` (the probe
intensity adds to the saturating intensity).  With ``spot_averaging`` both are averaged over
a Gaussian spot of peak field r and projected on the Gaussian mode:
``T(r) = 2 int_0^1 v tau(r v) dv`` with tau(x) = g(x)/x, and ``t = 2 int_0^1 v probe(s v) dv``
(:func:`twin.spot.spot_average`, the one the absorber fits use).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwio.sim.truth import AbsorberTruth, OpticsTruth
from twin.spot import spot_average

__all__ = ["crosstalk_matrix", "CellModel", "NetworkOptics", "Fields"]


def crosstalk_matrix(n: int, c: float) -> np.ndarray:
    """``I + c`` on the first off-diagonals (leakage into the neighbouring outputs)."""
    m = np.eye(n)
    if n > 1 and c:
        i = np.arange(n - 1)
        m[i, i + 1] = c
        m[i + 1, i] = c
    return m


class CellModel:
    """The vapour cell acting on spot fields (see module docstring)."""

    def __init__(self, truth: AbsorberTruth, n_nodes: int = 24):
        self.truth = truth
        self.n_nodes = int(n_nodes)
        self._absorber = None
        self._alpha0 = None

    def absorber(self, alpha0: float):
        """The truth absorber law at optical depth ``alpha0`` (cached)."""
        if self._absorber is None or (self.truth.model != "tabulated" and alpha0 != self._alpha0):
            self._absorber = self.truth.make(alpha0)
            self._alpha0 = alpha0
            self._slope0 = float(self._absorber.derivative(np.array([0.0]))[0])
        return self._absorber

    def _tau(self, ab, x):
        safe = np.where(x > 0, x, 1.0)
        return np.where(x > 0, ab.transmit(safe) / safe, self._slope0)

    def pump_transmission(self, r: np.ndarray, alpha0: float) -> np.ndarray:
        """Amplitude transmission of the pump for peak field magnitudes ``r`` (real, >= 0)."""
        ab = self.absorber(alpha0)
        r = np.asarray(r, dtype=float)
        if not self.truth.spot_averaging:
            return self._tau(ab, r)
        return spot_average(lambda x: self._tau(ab, x), r, self.n_nodes)

    def probe_transmission(self, r: np.ndarray, p: np.ndarray, alpha0: float) -> np.ndarray:
        """Amplitude transmission of the backward probe (magnitude ``p``) with pump magnitude ``r``."""
        ab = self.absorber(alpha0)
        s = np.sqrt(np.asarray(r, float) ** 2 + self.truth.probe_saturation * np.asarray(p, float) ** 2)
        if not self.truth.spot_averaging:
            return ab.probe(s)
        return spot_average(ab.probe, s, self.n_nodes)


@dataclass
class Fields:
    """Fields of one forward/backward pass (complex arrays) and the pump leak (intensity)."""

    z1: np.ndarray
    a1: np.ndarray
    z2: np.ndarray
    d1: np.ndarray
    leak: np.ndarray


class NetworkOptics:
    """Two-layer optical network with the truth imperfections.

    Parameters
    ----------
    optics, absorber : truth tables.
    n_hidden, n_out : layer sizes.
    rng : generator for the static stray fields.
    """

    def __init__(self, optics: OpticsTruth, absorber: AbsorberTruth, n_hidden: int, n_out: int,
                 rng: np.random.Generator):
        self.k1, self.k2 = optics.layer_gain
        self.probe_gain = optics.probe_gain
        self.c1 = crosstalk_matrix(n_hidden, optics.output_crosstalk[0])
        self.c2 = crosstalk_matrix(n_out, optics.output_crosstalk[1])

        def stray(n, rms):
            return rms * (rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2.0)
        self.stray1 = stray(n_hidden, optics.stray_field[0])
        self.stray2 = stray(n_out, optics.stray_field[1])
        self.cell = CellModel(absorber)
        self.pump_leak = absorber.pump_leak
        self.n_hidden, self.n_out = n_hidden, n_out

    @staticmethod
    def _mvm(e, vec, n_cols, ref=1.0):
        out = e[:, :n_cols] @ vec
        if e.shape[1] > n_cols:      # reference block column, input = the laser field `ref`
            out = out + ref * e[:, n_cols]
        return out

    def run(self, x, e1, e2, d, power: float, alpha0: float, need: str = "all") -> Fields:
        """Propagate one sample.

        Parameters
        ----------
        x : (n_in,) input element fields.
        e1, e2 : complex element fields of slm1 (n_hidden, n_in[+1]) and slm2 (n_out, n_hidden[+1]).
        d : (n_out,) complex element fields of probe_input.
        power : relative laser power (fields scale with its square root).
        alpha0 : optical depth of the cell now.
        need : the field a camera images ('z1', 'a1', 'z2', 'd1') or 'all': fields it does not
            need (and the cell passes they would take) are left None.
        """
        amp = np.sqrt(max(power, 0.0))
        n_in = len(x)
        z1 = amp * (self.c1 @ (self.k1 * self._mvm(e1, np.asarray(x, complex), n_in) + self.stray1))
        if need == "z1":
            return Fields(z1=z1, a1=None, z2=None, d1=None, leak=None)
        r1 = np.abs(z1)
        a1 = self.cell.pump_transmission(r1, alpha0) * z1
        z2 = d1 = leak = None
        if need in ("z2", "all"):
            z2 = self.c2 @ (self.k2 * self._mvm(e2, a1, self.n_hidden, amp) + amp * self.stray2)
        if need in ("d1", "all"):
            d2 = amp * self.probe_gain * np.asarray(d, complex)
            b = self.k2 * (e2[:, :self.n_hidden].T @ (self.c2.T @ d2))
            d1 = self.cell.probe_transmission(r1, np.abs(b), alpha0) * b
            leak = self.pump_leak * np.abs(a1) ** 2
        return Fields(z1=z1, a1=a1, z2=z2, d1=d1, leak=leak)
