"""The dithered pattern-row writer against a pixel-by-pixel fill, for every word alignment."""
from __future__ import annotations

import numpy as np
import pytest

from hwio.dither import DitherRowWriter, aligned_rows
from hwio.encoder_common import bayer_ranks


def pixel_fill(rows, fine, pair_rank, g, first_col, pitch, width):
    """Pattern row 2 i + q, pixel b of block j: the level of the plus (q + b even) or minus fine
    position of element (i, j) at the rank of its pixel pair, written pixel by pixel."""
    n_rows, n_cols = g.shape[1:]
    for i in range(n_rows):
        for j in range(n_cols):
            for q in (0, 1):
                for b in range(width):
                    role = (q + b) % 2
                    rows[2 * i + q, first_col + j * pitch + b] = fine[g[role, i, j] % fine.shape[0],
                                                                      pair_rank[q, b // 2]]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("pitch,width", [(28, 28), (28, 26), (29, 29), (17, 15), (9, 7), (6, 2), (5, 1)])
@pytest.mark.parametrize("first_col", [0, 3, 6])
def test_writer_matches_pixel_fill(dtype, pitch, width, first_col):
    rng = np.random.default_rng(pitch * 100 + width + first_col)
    n_fine, n_rows, n_cols = 512, 3, 5
    n_pairs = -(-width // 2)
    n_ranks = min(8, 2 * n_pairs)
    # a piecewise-constant table, as dithering makes: runs of equal rows
    fine = np.repeat(rng.integers(0, np.iinfo(dtype).max, (n_fine // 8, n_ranks)), 8, axis=0).astype(dtype)
    pair_rank = bayer_ranks((2, n_pairs)) * n_ranks // (2 * n_pairs)
    row_px = first_col + n_cols * pitch + 3                   # rows of any length, also not a multiple of 8 bytes
    for shape_cols in (row_px, row_px + (-row_px) % 8):
        rows = aligned_rows((2 * n_rows + 2, shape_cols), dtype, first_col)
        rows[...] = 7
        expected = rows.copy()
        writer = DitherRowWriter(fine, pair_rank, rows, first_col, pitch, width, n_rows, n_cols)
        for _ in range(2):                                   # writes overwrite the previous blocks entirely
            g = rng.integers(0, 3 * n_fine, (2, n_rows, n_cols))
            writer.write(g)
            pixel_fill(expected, fine, pair_rank, g, first_col, pitch, width)
            np.testing.assert_array_equal(rows, expected)   # gaps, margins, background rows untouched


def test_aligned_rows_start_on_a_word():
    for first_col in range(9):
        for dtype in (np.uint8, np.uint16):
            rows = aligned_rows((4, 40), dtype, first_col)
            assert rows.flags.c_contiguous and rows.shape == (4, 40) and rows.dtype == dtype
            assert (rows.ctypes.data + first_col * rows.itemsize) % 8 == 0


def test_writer_needs_a_contiguous_buffer():
    fine = np.zeros((16, 2), np.uint8)
    rows = np.zeros((6, 40), np.uint8)[:, ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        DitherRowWriter(fine, np.zeros((2, 1), int), rows, 0, 4, 2, 2, 2)
