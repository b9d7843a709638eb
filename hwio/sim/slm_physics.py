"""Pixel physics of the simulated panels: level frame -> complex field of every layout element.

Phase-only panels (slm1, slm2, probe_input): level L -> phase phi(L) from the truth table;
the fringing field blurs the complex pixel field exp(i phi) with a Gaussian of sigma
``crosstalk_px`` (pixels, zero field outside the panel); the summing optics keep the zero
order of each block, i.e. the mean of the blurred field over the block's active pixels
(guard pixels and gaps are outside the aperture).  Each element is then multiplied by the
Gaussian illumination at its block centre.

The input DMD is a binary amplitude modulator: element field = illumination x mean of
``level / max_level`` over the active pixels (the fill fraction), no phase, no blur.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.sparse import csr_matrix

from hwio.layout import BlockLayout

__all__ = ["gaussian_illumination", "PhasePanel", "AmplitudePanel"]


def gaussian_illumination(layout: BlockLayout, waist: float) -> np.ndarray:
    """Field illumination at the block centres, shape (n_rows, n_block_cols).

    The beam is centred on the layout's block area; ``waist`` is its 1/e field radius
    (1/e**2 intensity) as a fraction of the area's extent along each axis.
    ``waist = inf`` gives uniform illumination (1 everywhere).
    """
    centers = layout.block_centers_px()
    if not np.isfinite(waist):
        return np.ones(centers.shape[:2])
    lo = np.asarray(layout.origin_px, dtype=float)
    hi = np.asarray(layout.extent_px, dtype=float)
    mid = (lo + hi - 1.0) / 2.0
    radius = waist * (hi - lo)
    d = (centers - mid) / radius
    return np.exp(-np.sum(d * d, axis=-1))


class _BlockSums:
    """Vectorised per-element means over a layout's active pixels."""

    def __init__(self, layout: BlockLayout, shape: tuple[int, int], name: str):
        emap = layout.element_map(shape)
        active = emap.ravel() >= 0
        self.index = np.flatnonzero(active)
        self.element = emap.ravel()[active]
        self.n = layout.n_rows * layout.n_block_cols
        self.counts = np.bincount(self.element, minlength=self.n).astype(float)
        self.out_shape = (layout.n_rows, layout.n_block_cols)
        if np.any(self.counts == 0):
            raise ValueError(f"{name}: a layout block has no active pixels")

    def mean(self, values: np.ndarray) -> np.ndarray:
        v = values.ravel()[self.index]
        if np.iscomplexobj(v):
            s = (np.bincount(self.element, v.real, self.n) + 1j * np.bincount(self.element, v.imag, self.n))
        else:
            s = np.bincount(self.element, v, self.n)
        return (s / self.counts).reshape(self.out_shape)


class PhasePanel:
    """Phase-only LCoS panel: ``element_fields(levels)`` -> complex (n_rows, n_block_cols).

    Parameters
    ----------
    name : device name.
    shape : panel (rows, cols).
    phase_table_rad : phase of every level (rad).
    crosstalk_px : sigma of the Gaussian blur of the complex pixel field (pixels); 0 = none.
    layout : where the elements sit.
    illumination : (n_rows, n_block_cols) field illumination per element.
    """

    def __init__(self, name, shape, phase_table_rad, crosstalk_px, layout: BlockLayout, illumination):
        self.name = name
        self.shape = tuple(shape)
        self.phase_table_rad = np.asarray(phase_table_rad, dtype=float)
        self._lut = np.exp(1j * self.phase_table_rad)
        self.crosstalk_px = float(crosstalk_px)
        self.layout = layout
        self.illumination = np.asarray(illumination, dtype=float)
        self._sums = _BlockSums(layout, self.shape, name)
        if self.crosstalk_px > 0:
            # Blur only the bounding box of the layout plus a 4-sigma margin: the rest never reaches
            # an active pixel.
            m = int(np.ceil(4 * self.crosstalk_px)) + 1
            r0, c0 = layout.origin_px
            r1, c1 = layout.extent_px
            self._box = (slice(max(0, r0 - m), min(self.shape[0], r1 + m)),
                         slice(max(0, c0 - m), min(self.shape[1], c1 + m)))
        else:
            self._box = None

    def pixel_field(self, levels: np.ndarray) -> np.ndarray:
        """Complex field just after the panel, blurred by the fringing field."""
        field = self._lut[levels]
        if self._box is not None:
            sub = field[self._box]
            field = np.zeros(self.shape, dtype=complex)
            field[self._box] = gaussian_filter(sub, self.crosstalk_px, mode="constant", cval=0.0, truncate=4.0)
        return field

    def _operator(self):
        """Sparse (n_elements, box pixels) matrix: blur then block mean, as one linear map.

        Row e holds ``sum over the block's active pixels p of g(p - q) / count_e`` for every pixel q
        of the blurred box (the separable, normalised Gaussian of ``gaussian_filter`` with
        ``truncate=4`` and zero field outside the box), so ``op @ exp(i phi)[box]`` equals the mean
        of :meth:`pixel_field` over each block.
        """
        if getattr(self, "_op", None) is not None:
            return self._op, self._op_box
        box = self._box if self._box is not None else (slice(0, self.shape[0]), slice(0, self.shape[1]))
        r0, c0 = box[0].start, box[1].start
        nbr, nbc = box[0].stop - r0, box[1].stop - c0
        sums = self._sums
        pr, pc = np.divmod(sums.index, self.shape[1])
        pr, pc = pr - r0, pc - c0
        if self.crosstalk_px > 0:
            radius = int(4.0 * self.crosstalk_px + 0.5)
            off = np.arange(-radius, radius + 1)
            g = np.exp(-0.5 * off ** 2 / self.crosstalk_px ** 2)
            g /= g.sum()
        else:
            off, g = np.zeros(1, dtype=int), np.ones(1)
        rows, cols, vals = [], [], []
        w_el = 1.0 / sums.counts[sums.element]
        for dr, gr in zip(off, g):
            for dc, gc in zip(off, g):
                qr, qc = pr - dr, pc - dc
                ok = (qr >= 0) & (qr < nbr) & (qc >= 0) & (qc < nbc)
                rows.append(sums.element[ok])
                cols.append(qr[ok] * nbc + qc[ok])
                vals.append(gr * gc * w_el[ok])
        op = csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(sums.n, nbr * nbc))
        op.sum_duplicates()
        self._op, self._op_box = op, box
        return op, box

    def element_fields(self, levels: np.ndarray) -> np.ndarray:
        """Complex element fields (n_rows, n_block_cols) for a level frame."""
        op, box = self._operator()
        v = self._lut[np.asarray(levels)[box]].ravel()
        return self.illumination * (op @ v).reshape(self._sums.out_shape)


class AmplitudePanel:
    """Binary-amplitude input encoder (DMD): element field = illumination x fill fraction."""

    def __init__(self, name, shape, max_level: int, layout: BlockLayout, illumination):
        self.name = name
        self.shape = tuple(shape)
        self.max_level = int(max_level)
        self.layout = layout
        self.illumination = np.asarray(illumination, dtype=float)
        self._sums = _BlockSums(layout, self.shape, name)

    def element_fields(self, levels: np.ndarray) -> np.ndarray:
        """Real element fields (n_rows, n_block_cols) for a level frame."""
        return self.illumination * self._sums.mean(levels.astype(float) / self.max_level)
