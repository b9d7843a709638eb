"""DMD input encoder (:class:`DMDEncoder`): values in [0, 1] -> binary frames by ordered dithering.

Value ``x`` in [0, 1] switches on ``round(x * n_active)`` pixels of the block, chosen by
ordered dithering: every active pixel has a rank from a Bayer threshold matrix
(:func:`hwio.encoder_common.bayer_ranks`), and a pixel is on when its rank is below the count, so
on-pixels spread evenly over the block and the fill fraction is exact to ``1 / (2 n_active)``.
"""
from __future__ import annotations

import numpy as np

from hwio.encoder_common import active_geometry, bayer_ranks, check_shape, checked_out, prepare_values, row_source
from hwio.layout import BlockLayout

__all__ = ["DMDEncoder"]


class DMDEncoder:
    """Values in [0, 1] -> binary frame: fraction of "on" pixels per block (ordered dithering).

    Parameters
    ----------
    layout : blocks of the input values (``input`` uses 1 x n_in).
    slm_shape : (rows, cols) of the DMD in pixels.
    on_level, off_level : levels of on and off pixels (default 1 and 0 for 1 bit).
    name : device name used in messages.
    """

    def __init__(self, layout: BlockLayout, slm_shape, on_level: int = 1, off_level: int = 0,
                 name: str = "DMD"):
        self.name = name
        self.layout = layout
        self.shape = check_shape(slm_shape)
        layout.check_fits(self.shape, name)
        if on_level == off_level or min(on_level, off_level) < 0:
            raise ValueError(f"{name}: on_level and off_level must differ and be >= 0, got {on_level}, {off_level}")
        self.on_level, self.off_level = int(on_level), int(off_level)
        self.dtype = np.dtype(np.uint8 if max(on_level, off_level) < 256 else np.uint16)
        H, W = self.shape
        _, c0, bh, bw = active_geometry(layout)
        self.n_active = bh * bw
        ranks = bayer_ranks((bh, bw))
        rel = np.arange(W) - c0
        j = rel // layout.pitch_px[1]
        b = rel - j * layout.pitch_px[1]
        inside = (rel >= 0) & (j < layout.n_block_cols) & (b < bw)
        self._col_elem = np.where(inside, j, layout.n_block_cols).astype(np.intp)
        rank_dtype = np.uint16 if self.n_active < 65535 else np.uint32
        sentinel = np.iinfo(rank_dtype).max          # gap columns: never below a count
        self._count_dtype = rank_dtype
        self._rank_rows = np.ascontiguousarray(
            np.where(inside[None, :], ranks[:, np.clip(b, 0, bw - 1)], sentinel), dtype=rank_dtype)
        self._row_src = row_source(layout, H, bh, parity=False)
        self._rows = np.full((layout.n_rows * bh + 1, W), self.off_level, dtype=self.dtype)
        self._binary = (self.on_level, self.off_level) == (1, 0) and self.dtype == np.uint8
        self._on = None if self._binary else np.zeros((layout.n_rows, bh, W), dtype=bool)

    def counts_for(self, values, reference=None) -> np.ndarray:
        """Number of on pixels per block, (n_rows, n_block_cols) int."""
        v = prepare_values(values, self.layout, reference, f"{self.name}: input values", allow_1d=True)
        if v.min() < 0 or v.max() > 1:
            raise ValueError(f"{self.name}: input values must lie in [0, 1], got {v.min():.4g}..{v.max():.4g}; "
                             f"rescale the inputs")
        return np.rint(v * self.n_active).astype(np.int64)

    def realised_values(self, values) -> np.ndarray:
        """Values in [0, 1] (any shape, e.g. a batch of inputs) as the DMD realises them:
        fill fractions, quantised to 1 / (active pixels per block)."""
        return np.rint(np.clip(np.asarray(values, dtype=float), 0.0, 1.0) * self.n_active) / self.n_active

    def fill_fractions(self, values, reference=None) -> np.ndarray:
        """Fill fractions the frame realises for ``values`` (quantised to 1 / n_active)."""
        return self.counts_for(values, reference) / self.n_active

    def encode(self, values, reference=None, out: np.ndarray | None = None) -> np.ndarray:
        """Binary level frame showing ``values``.

        Parameters
        ----------
        values : fill fractions in [0, 1] (dimensionless), (n_rows, n_cols), or (n_cols,) when
            n_rows == 1; values outside [0, 1] raise ValueError.
        reference : (n_rows,) values for the reference column (layouts with ``reference_col``).
        out : optional C-contiguous frame (``shape``, ``dtype``) to write into (every pixel is written).

        Returns
        -------
        (rows, cols) frame of ``on_level`` / ``off_level`` pixels: ``out`` when given.
        """
        counts = self.counts_for(values, reference).astype(self._count_dtype)
        padded = np.zeros((counts.shape[0], counts.shape[1] + 1), dtype=self._count_dtype)
        padded[:, :-1] = counts
        col_counts = padded[:, self._col_elem]                                   # (n_rows, W)
        pat = self._rows[:-1].reshape(self.layout.n_rows, -1, self.shape[1])
        if self._binary:   # on = 1, off = 0: write the comparison straight into the pattern rows
            np.less(self._rank_rows[None, :, :], col_counts[:, None, :], out=pat.view(bool))
        else:
            np.less(self._rank_rows[None, :, :], col_counts[:, None, :], out=self._on)
            pat[...] = np.where(self._on, self.on_level, self.off_level)
        out = checked_out(self.name, out, self.shape, self.dtype)
        np.take(self._rows, self._row_src, axis=0, out=out, mode="clip")
        return out

    def decode(self, levels) -> np.ndarray:
        """Fill fraction of every block of a binary frame, (n_rows, n_block_cols)."""
        lv = np.asarray(levels)
        if lv.shape != self.shape:
            raise ValueError(f"{self.name}: frame has shape {lv.shape}, the DMD is {self.shape}")
        r0, c0, bh, bw = active_geometry(self.layout)
        rows = r0 + np.arange(self.layout.n_rows)[:, None] * self.layout.pitch_px[0] + np.arange(bh)
        cols = c0 + np.arange(self.layout.n_block_cols)[:, None] * self.layout.pitch_px[1] + np.arange(bw)
        blocks = (lv[rows.ravel()][:, cols.ravel()] == self.on_level)
        return blocks.reshape(self.layout.n_rows, bh, self.layout.n_block_cols, bw).mean(axis=(1, 3))
