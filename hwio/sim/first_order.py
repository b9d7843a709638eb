"""First-order optics of a simulated phase panel (blazed-grating amplitude encoding).

A panel whose bench entry says ``encoding = "blazed"`` sits in front of optics that keep the
first diffraction order of a grating of ``grating_period_px`` along the panel's columns (a
Fourier-plane aperture around that order, then a lens that sums each block onto its spot).
The field reaching element (i, j)'s spot is the block's field projected on the tilted plane
wave of the first order:

    E_ij = illumination_ij x mean over the block's active pixels of
           blur(exp(i phi(level)))[r, X] x exp(-2 pi i X / grating_period_px)

with ``phi`` the panel's true phase law, ``blur`` the fringing-field Gaussian of the complex
pixel field (as for the zero-order panels, :mod:`hwio.sim.slm_physics`) and ``X`` the panel
column, so the carrier's reference phase is the panel's, the same for every block.  What the
aperture passes from a block is the block's spectrum around the first order; the sum over a
block whose active width is a whole number of periods holds no zero-order (uniform) light and
none of the higher orders, a block of another width lets some of its zero order through (both
as the real optics do: a finite block has sinc-broadened orders).  Guard pixels, gaps and the
zero-field background lie outside the summed aperture; their light enters only through the
blur.
"""
from __future__ import annotations

import numpy as np

from hwio.sim.slm_physics import PhasePanel

__all__ = ["FirstOrderPanel", "panel_for"]


class FirstOrderPanel(PhasePanel):
    """Phase-only panel read in the first order of a column grating of ``grating_period_px``.

    Parameters are those of :class:`hwio.sim.slm_physics.PhasePanel` plus
    ``grating_period_px`` (pixels, > 0): the period the first-order aperture is placed for.
    """

    def __init__(self, name, shape, phase_table_rad, crosstalk_px, layout, illumination, grating_period_px):
        super().__init__(name, shape, phase_table_rad, crosstalk_px, layout, illumination)
        p = float(grating_period_px)
        if not p > 0:
            raise ValueError(f"{name}: grating_period_px must be > 0, got {grating_period_px}")
        self.grating_period_px = p
        x = np.arange(self.shape[1])
        self._carrier_conj = np.exp(-2j * np.pi * (x % p) / p)[None, :]

    def element_fields(self, levels: np.ndarray) -> np.ndarray:
        """Complex first-order element fields (n_rows, n_block_cols) for a level frame."""
        return self.illumination * self._sums.mean(self.pixel_field(levels) * self._carrier_conj)


def panel_for(dev: dict, name, shape, phase_table_rad, crosstalk_px, layout, illumination) -> PhasePanel:
    """The simulated panel a bench device entry asks for: first-order optics for
    ``encoding = "blazed"``, else the zero-order :class:`PhasePanel`."""
    if dev.get("encoding", "double_phase") == "blazed":
        return FirstOrderPanel(name, shape, phase_table_rad, crosstalk_px, layout, illumination,
                               dev["grating_period_px"])
    return PhasePanel(name, shape, phase_table_rad, crosstalk_px, layout, illumination)
