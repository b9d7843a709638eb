"""Camera physics of the simulated bench: spot rendering and the sensor model.

Spots: spot k of a camera sits at ``registration.apply(spot_layout.positions_px)[k]``
(camera (row, col), pixel centres at integers).  Its photons spread by a Gaussian PSF of
sigma ``psf_sigma_px`` integrated exactly over each pixel, so the intensity centroid of
an isolated spot is its position.  Patches are precomputed once as a sparse matrix
(pixels x spots); rendering a frame is one sparse product.

Sensor (linear, emva1288-like): electrons = Poisson(qe * PRNU * photons + dark current *
exposure), clipped at ``full_well_e``; + Gaussian read noise (e-); ADU = round(gain *
electrons + dark_offset_adu), clipped to 0 .. 2**bits - 1 (``bits`` may be below the
camera's container bit depth).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.sparse import csr_matrix
from scipy.special import erf

from hwio.sim.truth import CameraTruth

__all__ = ["psf_matrix", "Sensor"]


def _pixel_integrals(center: float, sigma: float, lo: int, hi: int) -> np.ndarray:
    """Fraction of a 1-D Gaussian falling on pixels lo..hi-1 (pixel p spans p-0.5..p+0.5)."""
    edges = (np.arange(lo, hi + 1) - 0.5 - center) / (math.sqrt(2.0) * sigma)
    return 0.5 * np.diff(erf(edges))


def psf_matrix(positions_px: np.ndarray, sigma_px: float, shape: tuple[int, int]) -> csr_matrix:
    """Sparse (rows*cols, n_spots) matrix of pixel-integrated Gaussian PSF patches (5 sigma half-width)."""
    half = int(math.ceil(5.0 * sigma_px)) + 1
    rows, cols, vals = [], [], []
    for k, (r, c) in enumerate(np.asarray(positions_px, dtype=float)):
        r_lo, r_hi = max(0, int(round(r)) - half), min(shape[0], int(round(r)) + half + 1)
        c_lo, c_hi = max(0, int(round(c)) - half), min(shape[1], int(round(c)) + half + 1)
        if r_lo >= r_hi or c_lo >= c_hi:
            continue
        wr = _pixel_integrals(r, sigma_px, r_lo, r_hi)
        wc = _pixel_integrals(c, sigma_px, c_lo, c_hi)
        patch = np.outer(wr, wc)
        rr, cc = np.meshgrid(np.arange(r_lo, r_hi), np.arange(c_lo, c_hi), indexing="ij")
        rows.append((rr * shape[1] + cc).ravel())
        cols.append(np.full(patch.size, k))
        vals.append(patch.ravel())
    n = len(positions_px)
    if not rows:
        return csr_matrix((shape[0] * shape[1], n))
    return csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(shape[0] * shape[1], n))


class Sensor:
    """Pixel response of one camera; ``expose(photon_flux, exposure_s, rng)`` -> uint image.

    Parameters
    ----------
    truth : the camera's :class:`~hwio.sim.truth.CameraTruth`.
    shape : (rows, cols).
    container_bits : the camera's bit depth (uint8 images up to 8 bit, else uint16).
    rng : generator for the fixed patterns (PRNU, hot pixels).
    """

    def __init__(self, truth: CameraTruth, shape, container_bits: int, rng: np.random.Generator):
        self.truth = truth
        self.shape = tuple(shape)
        self.dtype = np.uint8 if container_bits <= 8 else np.uint16
        self.max_adu = 2 ** truth.bits - 1
        self.prnu_map = 1.0 + truth.prnu * rng.standard_normal(self.shape)
        np.maximum(self.prnu_map, 0.0, out=self.prnu_map)
        hot = rng.random(self.shape) < truth.hot_pixel_fraction
        self.dark_current_map = np.where(hot, truth.hot_pixel_dark_e_per_s, truth.dark_current_e_per_s)
        self._response = truth.qe * self.prnu_map

    def expose(self, photon_flux: np.ndarray, exposure_s: float, rng: np.random.Generator) -> np.ndarray:
        """Digitise one exposure of ``photon_flux`` (photons/s per pixel, image-shaped)."""
        t = self.truth
        mean_e = self._response * photon_flux * exposure_s + self.dark_current_map * exposure_s
        electrons = rng.poisson(mean_e).astype(float)
        np.minimum(electrons, t.full_well_e, out=electrons)
        if t.read_noise_e > 0:
            electrons += t.read_noise_e * rng.standard_normal(self.shape)
        adu = np.rint(t.gain_adu_per_e * electrons + t.dark_offset_adu)
        np.clip(adu, 0, self.max_adu, out=adu)
        return adu.astype(self.dtype)
