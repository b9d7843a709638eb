"""Weights -> level frames of a phase-only panel by double-phase encoding (:class:`PhaseEncoder`).

Phase-only weight panels (``slm1``, ``slm2``, ``probe_input``)
--------------------------------------------------------------
Element (i, j) of a signed matrix ``w`` with scale ``w_max`` is written into the
active (non-guard) pixels of its block as a checkerboard of two phases::

    pixel (a, b) of the block (block-local row a, column b)
        phase = s + theta   if (a + b) is even
        phase = s - theta   if (a + b) is odd
    s = pi if w < 0 else 0,   theta = arccos(|w| / w_max)

so the zero order of the block is ``exp(i s) cos(theta) = w / w_max`` (times the
illumination).

Panels whose phase range is short of 2 pi (:class:`hwio.response.DoublePhaseRange`, from the
LUT's ``double_phase`` or the ``double_phase`` argument) encode with the largest amplitude the
range allows, ``A_max = cos(g / 2)`` for a gap of ``g = 2 pi - range``, around the offset phase
``phi0`` that centres the gap on one sign's centre phase::

    s = phi0 (w >= 0) or phi0 + pi (w < 0),   theta = arccos(A_max |w| / w_max)

so ``w_max`` shows amplitude ``A_max`` and the block's field is ``exp(i phi0) A_max w / w_max``;
no pixel phase then falls into the gap.  The zero-field background is ``phi0 +- pi/2``.  A
full-range panel has ``A_max = 1``, ``phi0 = 0`` (the rule above).  ``amplitude_max`` and
``phase_offset_rad`` are attributes of the encoder.  Phases go through an :class:`hwio.response.InverseLUT`,
which wraps them modulo 2 pi into ``[phase_min_rad, phase_min_rad + 2 pi)`` and picks the
nearest level.  Guard pixels, gaps between blocks and pixels outside the layout
hold the background: by default a zero-field checkerboard (phases +pi/2, -pi/2 by the
parity of panel row + column), so that crosstalk leaking from them into the blocks adds
no bias field; or a fixed level.  With an odd number of active pixels the two phases
occur n+1 and n times: the real part (what homodyne readout measures) stays
exactly ``w / w_max``, the imaginary part gets ``sin(theta) / n_active``.

Dithering (default, ``dither=True``)
------------------------------------
Nearest-level rounding realises only the amplitudes ``cos(theta)`` of whole levels:
an 8-bit panel spanning 2.2 pi gives about 64 steps per sign, steps of ~0.026 of full
scale near zero.  A dithered encoder instead splits each target phase between the
two levels around it.  The LUT's runs (grid bins mapped to one level) locate the
levels: a level stands at the centre of its run.  A target at fraction ``f`` of the
way from one centre to the next shows the upper level on the pixel pairs of dither
rank ``< rint(f R)``; ranks ``0..R-1`` (``R = min(8, 2 n_pairs)``) go to the block's
pixel pairs ``(local row parity, b // 2)`` by a 2 x n_pairs Bayer order, so the pairs
switched first spread over the block.  The block mean then moves in ``R`` sub-steps
per level (6 on the simulated bench's 6 x 6 active pixels: amplitude steps of
<= 0.005 instead of 0.026).  The target position is resolved to 1/16 of a grid bin
(:data:`hwio.dither.DITHER_SUBBINS`) through a precomputed (grid position, rank) -> level table.
The two levels at the edges of an unreachable gap (short ranges) stand at
their own phases (the gap's edges), not at the centres of their runs, which reach into the gap.
What any encoder really realises, dithered or not, is tabulated by
:func:`hwio.transfer.amplitude_transfer`; the calibration stores that table and whether the
encoder dithered (``encoder_dither``), and the bench system encodes the same way.

Fast paths.  Every block row of the frame holds only two distinct pixel rows (local row
parity even/odd): an encode builds these ``2 * n_rows`` pattern rows (plus two background
rows) and copies whole rows into the frame with one ``np.take``.  Plain: the encoder
precomputes, once per layout, which table entry every panel column takes; an encode
computes ``2 * n_rows * n_block_cols`` levels, packs each element's (plus, minus) pixel pair
into machine words of up to 8 bytes (where the active block width and the pitch are
multiples of the word) and expands them with ``np.repeat`` over runs of identical words.
Odd active widths fall back to a per-pixel gather of the pattern rows.  Dithered
(:class:`hwio.dither.DitherRowWriter`): every block row is cut into aligned words of up to 8
bytes of pixels; a word is ``T_plus[s(g_plus)] | T_minus[s(g_minus)]`` of the dither states of
the element's two fine grid positions, from small tables built once, so an encode gathers one
word per element and distinct word pattern and writes each word position of all blocks with
one strided operation.  ``benchmarks/encode_readout.py`` measures both against a frame copy.

Wavefront correction (``wavefront_rad=``)
-----------------------------------------
A panel's flatness map ``m`` (rad, one value per panel pixel, :mod:`hwio.wavefront`) is
added to the target phase of every pixel before the inverse LUT: pixel ``p`` with target
``phi`` shows ``lut(phi + m[p])``, wrapped modulo one turn (2 pi, the LUT grid) like any
target.  This holds for block pixels (plus and minus phases, each dither rank) and for the
zero-field background (targets +pi/2, -pi/2); a fixed-level background stays at its level.
The map enters at the encoder's phase resolution: it is rounded once, when the encoder is
built, to whole steps of 1/``DITHER_SUBBINS`` of a LUT grid bin (2 pi / 65536 for a
4096-bin LUT); with that rounding the result is exact, for plain and dithered encoders
(the grid position of ``phi + m`` is the target's grid position, floor(16 x), plus an
integer, so floor and wrap commute with the addition).  A zero map gives the same frame as
no map.  Fast path: the map's steps, each pixel's dither rank (or plain / fixed column) and
the zero-field background are folded, once, into one table index per pixel ``K[p]``; an
encode computes the per-element grid positions ``E`` (two pattern rows per block row, as
above), adds them to ``K`` over the block rows in one broadcast add (rows outside the blocks
keep ``K``), and reads every pixel's level from one table: an integer add and a table gather
over the frame instead of one row copy.  The gather (about 2 ns a pixel in numpy) makes a
map-corrected encode of a 1152 x 1920 panel some 4-8 ms, 15-35 frame copies
(``benchmarks/encode_readout.py``, ``encode_map_*``): well under a video frame, but not within
2 copies, which a per-pixel table lookup cannot reach in numpy.  :meth:`PhaseEncoder.decode` and
:func:`hwio.transfer.realised_weights` take the map back out (the panel's own aberration is minus
the map), and :meth:`PhaseEncoder.levels_for` gives the levels of a flat panel.
"""
from __future__ import annotations

import math

import numpy as np

from hwio.dither import DITHER_SUBBINS, DitherRowWriter, aligned_rows, dither_tables, fine_level_table
from hwio.encoder_common import (
    active_geometry,
    bayer_ranks,
    check_background,
    check_phase_args,
    check_shape,
    checked_out,
    isolated_layout,
    prepare_values,
    row_source,
    weight_range,
)
from hwio.layout import BlockLayout
from hwio.response import InverseLUT, PhaseResponse
from hwio.transfer import realised_weights
from hwio.wavefront import check_wavefront

__all__ = ["PhaseEncoder"]

_WORD_DTYPES = {1: None, 2: np.uint16, 4: np.uint32, 8: np.uint64}
# DITHER_SUBBINS is a power of two: scaling grid coordinates by it is exact (the folded constants of _grid)


def _modulo(g: np.ndarray, n: int) -> np.ndarray:
    """``g %= n`` in place (a bit mask when n is a power of two, much faster than %)."""
    if n & (n - 1) == 0:
        g &= n - 1
    else:
        g %= n
    return g


class PhaseEncoder:
    """Signed matrix -> level frame of a phase-only panel (double-phase checkerboard).

    Parameters
    ----------
    layout : where the matrix elements sit on the panel (blocks in px).
    slm_shape : (rows, cols) of the panel, px.
    lut : inverse response (phase in rad -> level) at the panel's bit depth.
    background : what guard pixels, gaps and pixels outside the layout show: ``"zero"``
        (default) a zero-field checkerboard of phases +pi/2 / -pi/2 rad (by panel parity of
        row + col), so light leaking into the blocks through crosstalk adds no bias; or a
        fixed level (0 .. 2**bit_depth - 1).
    name : device name used in messages.
    dither : split each target phase between its two neighbouring levels over the
        block's pixel pairs (module notes), for ~R x finer amplitude steps; the attribute
        ``dither`` is False when it cannot apply (blocks of one active row, a LUT of one
        level).  ``dither_ranks`` is R (1 when plain).
    wavefront_rad : optional wavefront-correction map (rad), shape ``slm_shape``: added to
        every pixel's target phase modulo 2 pi before the LUT (module notes); kept (as
        read, float64) in the attribute ``wavefront_rad``.  Non-finite values or another
        shape raise ValueError.
    double_phase : :class:`hwio.response.DoublePhaseRange` of the panel (default: the LUT's
        ``double_phase``): a range short of 2 pi encodes ``w_max`` as amplitude
        ``amplitude_max`` = cos(gap / 2) around ``phase_offset_rad`` (module notes); both are
        attributes of the encoder.

    Raises
    ------
    TypeError : ``lut`` is not an InverseLUT or ``double_phase`` not a DoublePhaseRange.
    ValueError : a bad shape, a layout that does not fit, a bad background or wavefront map.

    Notes
    -----
    An encode costs ``O(n_rows * n_cols)`` arithmetic (one arccos per element), builds the
    ``2 * n_rows`` pattern rows a machine word at a time and copies rows into the frame.
    ``pixels_per_word`` is the width of those words in pixels: plain, the largest even number
    of pixels (up to 8 bytes) dividing both the active block width and the block pitch (1 for
    odd active widths: pattern rows gathered pixel by pixel); dithered, the pixels of the
    widest word :class:`hwio.dither.DitherRowWriter` writes.
    """

    #: frames are read in the zero order (:func:`hwio.transfer.amplitude_transfer`)
    first_order_period_px = None

    def __init__(self, layout: BlockLayout, slm_shape, lut: InverseLUT, background: int | str = "zero",
                 name: str = "SLM", dither: bool = True, wavefront_rad=None, double_phase=None):
        self.double_phase = check_phase_args(name, lut, double_phase)
        self.amplitude_max = self.double_phase.amplitude_max
        self.phase_offset_rad = self.double_phase.phase_offset_rad
        self.name = name
        self.layout = layout
        self.shape = check_shape(slm_shape)
        layout.check_fits(self.shape, name)
        self.lut = lut
        self.dtype = lut.level_dtype
        check_background(name, background, lut.bit_depth)
        self.background = background
        self._bg_levels = self._background_levels()
        self.last_w_max: float | None = None
        self._init_dither(dither)
        if self.dither:
            self._init_dither_rows()
        else:
            self._init_plain_rows()
        self._row_src = row_source(layout, self.shape[0], 2, parity=True, bg_by_parity=True)
        lut_n, phi0 = lut.n_bins, self.phase_offset_rad
        # grid index of phase s +- theta = floor(base_s +- theta * bins_per_rad), base_s > lut_n > theta bins
        self._base0 = (phi0 - lut.phase_min_rad) * lut.bins_per_rad % lut_n + 0.5 + lut_n
        self._base_pi = (phi0 + math.pi - lut.phase_min_rad) * lut.bins_per_rad % lut_n + 0.5 + lut_n
        self._base_neg = (self._base_pi - self._base0) + self._base0      # as a sign mask times the step gives
        self.wavefront_rad = None
        if wavefront_rad is not None:
            self._init_wavefront(wavefront_rad)

    # ----------------------------------------------------------------------------------
    def _background_levels(self) -> tuple[int, int]:
        """Background levels on pixels of even and odd panel row + column."""
        if isinstance(self.background, str):
            # zero-field checkerboard: phases phi0 + pi/2 where (row + col) is even, phi0 - pi/2 where odd
            phi0 = self.phase_offset_rad
            return tuple(int(v) for v in self.lut(np.array([phi0 + math.pi / 2, phi0 - math.pi / 2])))
        return int(self.background), int(self.background)

    def _bg_pixel(self, row_par, col_par):
        """Background level(s) of pixels with these panel row and column parities."""
        return np.where((row_par + col_par) % 2 == 0, *self._bg_levels)

    def _row_parity(self) -> np.ndarray:
        """(n_rows, 2) panel row parity of every pattern row (block row i, local row parity q)."""
        r0 = active_geometry(self.layout)[0]
        return (r0 + np.arange(self.layout.n_rows)[:, None] * self.layout.pitch_px[0] + np.arange(2)[None, :]) % 2

    def _init_dither(self, dither: bool) -> None:
        """Dither tables: the pixel pairs of a block (local row parity q, pair b // 2) get dither ranks
        0..R-1 (R = min(8, pairs)) from a 2 x n_pairs Bayer order, so the pairs switched first
        spread evenly over the block."""
        _, _, bh, bw = active_geometry(self.layout)
        runs = dither_tables(self.lut, self.double_phase) if dither and bh > 1 else None
        self.dither = runs is not None
        n_pairs = -(-bw // 2)
        self.dither_ranks = min(8, 2 * n_pairs) if self.dither else 1
        if self.dither:
            R = self.dither_ranks
            self._fine_levels = fine_level_table(runs, R).astype(self.dtype)
            self._pair_rank = bayer_ranks((2, n_pairs)) * R // (2 * n_pairs)   # (2, n_pairs)

    def _init_dither_rows(self) -> None:
        """Pattern rows of a dithered encoder, background everywhere but the blocks, and the writer
        that fills the blocks (:class:`hwio.dither.DitherRowWriter`)."""
        layout, W = self.layout, self.shape[1]
        _, c0, _, bw = active_geometry(layout)
        cols = np.arange(W)
        rows = aligned_rows((2 * layout.n_rows + 2, W), self.dtype, c0)
        pat = rows[:-2].reshape(layout.n_rows, 2, W)
        row_parity = self._row_parity()
        for par in (0, 1):
            pat[row_parity == par] = self._bg_pixel(par, cols)
        rows[-2], rows[-1] = self._bg_pixel(0, cols), self._bg_pixel(1, cols)
        self._rows = rows
        self._writer = DitherRowWriter(self._fine_levels, self._pair_rank, rows, c0, layout.pitch_px[1], bw,
                                       layout.n_rows, layout.n_block_cols)
        self.pixels_per_word = self._writer.pixels_per_word

    def _init_plain_rows(self) -> None:
        """Pattern-row tables of a plain encoder: words of ``pixels_per_word`` pixels (module notes)."""
        layout, W = self.layout, self.shape[1]
        _, c0, _, bw = active_geometry(layout)
        itemsize = self.dtype.itemsize
        # widest word (<= 8 bytes, even number of pixels) that tiles every active block row
        k = 1
        for cand in (8 // itemsize, 4 // itemsize, 2 // itemsize):
            if cand >= 2 and bw % cand == 0 and layout.pitch_px[1] % cand == 0:
                k = cand
                break
        self.pixels_per_word = k
        self._word_dtype = np.dtype(_WORD_DTYPES[k * itemsize]) if k > 1 else self.dtype
        # pattern rows live in a buffer shifted by `shift` columns so blocks start on word boundaries
        self._shift = (-c0) % k
        wb = -(-(W + self._shift) // k) * k
        bc = np.arange(0, wb, k) - self._shift          # panel column of every word's first pixel
        rel = bc - c0
        j = rel // layout.pitch_px[1]
        b = rel - j * layout.pitch_px[1]                  # block-local column (multiple of k when k > 1)
        inside = (rel >= 0) & (j < layout.n_block_cols) & (b < bw) & (bc >= 0) & (bc + k <= W)
        if k > 1:
            self._init_word_rows(inside, j)
        else:
            self._init_pixel_rows(inside, j, b, bc, wb)

    def _init_word_rows(self, inside: np.ndarray, j: np.ndarray) -> None:
        """Plain encoder, words of k >= 2 pixels: one word per run of identical words, then np.repeat."""
        layout, nbc, k = self.layout, self.layout.n_block_cols, self.pixels_per_word
        # a level times these fills the even / odd pixels of a word
        shifts = 8 * self.dtype.itemsize * np.arange(k)
        if not np.little_endian:  # pragma: no cover - big-endian hosts
            shifts = shifts[::-1]
        wdt = self._word_dtype.type
        self._c_even = wdt(sum(1 << int(v) for v in shifts[0::2]))
        self._c_odd = wdt(sum(1 << int(v) for v in shifts[1::2]))
        # entry j: word starting at an even block-local column; entry nbc: background
        self._col_index = np.where(inside, j, nbc).astype(np.intp)
        first_col_parity = (-self._shift) % 2         # every word starts on this panel column parity
        bg_words = [wdt(int(self._bg_pixel(g, first_col_parity))) * self._c_even
                    + wdt(int(self._bg_pixel(g, first_col_parity + 1))) * self._c_odd for g in (0, 1)]
        self._table = np.empty((layout.n_rows, 2, nbc + 1), dtype=self._word_dtype)
        self._table[..., nbc] = np.where(self._row_parity() == 0, bg_words[0], bg_words[1])
        # runs of identical words (a plain block's words): store one word per run, then np.repeat
        starts = np.flatnonzero(np.r_[True, self._col_index[1:] != self._col_index[:-1]])
        self._run_entry = self._col_index[starts]
        self._run_len = np.diff(np.r_[starts, self._col_index.size])
        self._runs = np.empty((2 * layout.n_rows + 2, starts.size), dtype=self._word_dtype)
        self._runs[-2], self._runs[-1] = bg_words     # full background rows, even and odd panel rows

    def _init_pixel_rows(self, inside: np.ndarray, j: np.ndarray, b: np.ndarray, bc: np.ndarray,
                         wb: int) -> None:
        """Plain encoder, odd active widths: pattern rows gathered pixel by pixel.

        Entry 2 j + p: pixel of block column j, block-local column parity p; entry 2 nbc + p:
        background pixel on a panel column of parity p.
        """
        layout, nbc = self.layout, self.layout.n_block_cols
        self._col_index = np.where(inside, 2 * j + (b % 2), 2 * nbc + (bc % 2)).astype(np.intp)
        row_parity = self._row_parity()
        self._table = np.empty((layout.n_rows, 2, 2 * nbc + 2), dtype=self.dtype)
        self._table[..., 2 * nbc] = self._bg_pixel(row_parity, 0)
        self._table[..., 2 * nbc + 1] = self._bg_pixel(row_parity, 1)
        rows = np.empty((2 * layout.n_rows + 2, wb), dtype=self.dtype)
        cols = np.arange(wb)
        rows[-2], rows[-1] = self._bg_pixel(0, cols), self._bg_pixel(1, cols)
        self._rows_words = rows[:-2].reshape(layout.n_rows, 2, wb)
        self._rows = rows

    # ----------------------------------------------------------------------------------
    def _init_wavefront(self, wavefront_rad) -> None:
        """Precompute the per-pixel table offsets ``K`` and the pattern-row plumbing of the map path."""
        wf = check_wavefront(wavefront_rad, self.shape, self.name)
        # the map in whole 1/S grid bins, wrapped into one turn
        nf = self.lut.n_bins * DITHER_SUBBINS
        steps = np.rint(wf * (self.lut.bins_per_rad * DITHER_SUBBINS)).astype(np.int64) % nf
        plain_col, fixed_col = self._init_wavefront_table()
        self._wf_K = self._wavefront_offsets(steps, plain_col, fixed_col)
        self._init_wavefront_rows()
        self.wavefront_rad = wf
        self.wavefront_rad.setflags(write=False)

    def _init_wavefront_table(self) -> tuple[int, int]:
        """The level table of the map path, (2 turns of fine positions) x (dither ranks, plain LUT,
        fixed background), flat; returns the plain and fixed columns."""
        lut, S = self.lut, DITHER_SUBBINS
        nf = lut.n_bins * S
        cols = [self._fine_levels[:, r] for r in range(self.dither_ranks)] if self.dither else []
        plain_col = len(cols)
        cols.append(lut.levels[np.arange(nf) // S])
        fixed_col = len(cols)
        if not isinstance(self.background, str):
            cols.append(np.full(nf, self.background, dtype=self.dtype))
        table = np.stack(cols, axis=1).astype(self.dtype)                 # (nf, n_cols)
        # twice the turn: E + K indexes up to 2 nf - 1 without a modulo
        self._wf_table = np.ascontiguousarray(np.concatenate([table, table]).ravel())
        self._wf_ncols = len(cols)
        return plain_col, fixed_col

    def _wavefront_offsets(self, steps: np.ndarray, plain_col: int, fixed_col: int) -> np.ndarray:
        """Per-pixel table index ``K`` (intp, panel shape): the map's steps and the pixel's column
        (dither rank or plain) in the blocks; the background's own fine position (zero field) or
        the fixed column elsewhere."""
        lut, layout, S = self.lut, self.layout, DITHER_SUBBINS
        nf, n_cols = lut.n_bins * S, self._wf_ncols
        H, W = self.shape
        r0, c0, bh, bw = active_geometry(layout)
        # panel geometry: block row / local row of every panel row, block col / local col of every column
        rr, cc = np.arange(H) - r0, np.arange(W) - c0
        ri, ra = rr // layout.pitch_px[0], rr % layout.pitch_px[0]
        cj, cb = cc // layout.pitch_px[1], cc % layout.pitch_px[1]
        self._wf_col_in = col_in = (cc >= 0) & (cj < layout.n_block_cols) & (cb < bw)
        self._wf_cj, self._wf_cb = cj, cb
        inside = ((rr >= 0) & (ri < layout.n_rows) & (ra < bh))[:, None] & col_in[None, :]
        if self.dither:
            col = self._pair_rank[(ra % 2)[:, None], (np.minimum(cb, bw - 1) // 2)[None, :]]
        else:
            col = np.full((H, W), plain_col, dtype=np.int64)
        K = steps * n_cols + col
        if isinstance(self.background, str):
            # zero-field background: +pi/2 / -pi/2 by panel parity, on the same grid as the LUT
            g_bg = []
            for phase in (self.phase_offset_rad + math.pi / 2, self.phase_offset_rad - math.pi / 2):
                y = (phase - lut.phase_min_rad) * lut.bins_per_rad + 0.5
                g_bg.append(int(math.floor(y * S)) % nf)
            g = np.where((np.arange(H)[:, None] + np.arange(W)[None, :]) % 2 == 0, g_bg[0], g_bg[1])
            K_bg = ((g + steps) % nf) * n_cols + plain_col
        else:
            K_bg = np.full((H, W), fixed_col, dtype=np.int64)
        return np.where(inside, K, K_bg).astype(np.intp)

    def _init_wavefront_rows(self) -> None:
        """Element -> pattern-row entries (E) and the strided block-row views that one add fills."""
        layout, W = self.layout, self.shape[1]
        r0, _, bh, _ = active_geometry(layout)
        nbc = layout.n_block_cols
        col_in, cj, cb = self._wf_col_in, self._wf_cj, self._wf_cb
        # E: element grid position x n_cols, spread by two pattern rows per block row
        self._wf_elem = np.zeros((layout.n_rows, 2 * nbc + 1), dtype=np.intp)    # last entry: 0
        entry = np.full((2, W), 2 * nbc, dtype=np.intp)
        for q in (0, 1):
            entry[q, col_in] = 2 * cj[col_in] + (q + cb[col_in]) % 2             # 2 j + (0 plus, 1 minus)
        self._wf_entry = entry.ravel()
        self._wf_rows = np.zeros((layout.n_rows, 2, W), dtype=np.intp)
        # table index E + K: rows outside the blocks have E = 0 and keep K for good; the block rows
        # are strided views (block row, local row pair, parity, col) that one add fills per encode
        self._wf_idx = self._wf_K.copy()
        item = self._wf_idx.itemsize
        row_step = layout.pitch_px[0] * W * item
        pairs, rest = divmod(bh, 2)
        strided = np.lib.stride_tricks.as_strided
        self._wf_views = []
        if pairs:
            def block_rows(a):
                return strided(a[r0:], shape=(layout.n_rows, pairs, 2, W), strides=(row_step, 2 * W * item,
                                                                                     W * item, item))
            self._wf_views.append((block_rows(self._wf_K), block_rows(self._wf_idx), self._wf_rows[:, None, :, :]))
        if rest:   # odd block heights: the last local row (parity 0)
            def last_row(a):
                return strided(a[r0 + bh - 1:], shape=(layout.n_rows, W), strides=(row_step, item))
            self._wf_views.append((last_row(self._wf_K), last_row(self._wf_idx), self._wf_rows[:, 0, :]))

    def _wavefront_frame(self, g: np.ndarray, out: np.ndarray) -> None:
        """Write the frame of fine grid positions ``g`` (2, n_rows, n_block_cols) with the map into ``out``."""
        g = _modulo(g, self.lut.n_bins * DITHER_SUBBINS)
        g *= self._wf_ncols
        nbc = self.layout.n_block_cols
        self._wf_elem[:, 0:2 * nbc:2] = g[0]
        self._wf_elem[:, 1:2 * nbc:2] = g[1]
        n_rows = self.layout.n_rows
        np.take(self._wf_elem, self._wf_entry, axis=1, out=self._wf_rows.reshape(n_rows, -1), mode="clip")
        for k_view, idx_view, pattern in self._wf_views:
            np.add(k_view, pattern, out=idx_view)
        np.take(self._wf_table, self._wf_idx, out=out, mode="clip")

    # ----------------------------------------------------------------------------------
    def _theta_base(self, w: np.ndarray, w_max, subbins: int):
        """``theta`` and the sign's base phase ``s`` of finite ``w`` in grid coordinates (units of
        1/``subbins`` of a LUT bin), and the w_max used.

        ``subbins`` (a power of two) scales the constants, not the sum, with the same rounding:
        ``(b + t) * 16 == 16 b + 16 t`` exactly in floating point.
        """
        absw = np.abs(w)
        w_max = weight_range(self.name, absw, w_max)
        absw *= self.amplitude_max / w_max
        np.minimum(absw, self.amplitude_max, out=absw)
        theta_bins = np.arccos(absw, out=absw)
        theta_bins *= self.lut.bins_per_rad * subbins
        base = np.where(w < 0, self._base_neg * subbins, self._base0 * subbins)
        return theta_bins, base, w_max

    def _grid(self, w: np.ndarray, w_max):
        """Grid coordinates (2, ...) of the phases s + theta, s - theta of finite ``w`` (> 0), and the w_max used."""
        theta_bins, base, w_max = self._theta_base(w, w_max, 1)
        x = np.empty((2,) + w.shape)
        np.add(base, theta_bins, out=x[0])
        np.subtract(base, theta_bins, out=x[1])
        return x, w_max

    def _fine_positions(self, w: np.ndarray, w_max):
        """Fine grid positions (2, ...) intp, not wrapped (>= 0), of the phases of ``w``, and the w_max used."""
        theta, base, w_max = self._theta_base(w, w_max, DITHER_SUBBINS)
        g = np.empty((2,) + w.shape, dtype=np.intp)
        # the float sums cast to intp on the way out: floor, as the sums are > 0
        np.add(base, theta, out=g[0], casting="unsafe")
        np.subtract(base, theta, out=g[1], casting="unsafe")
        return g, w_max

    def _levels(self, w: np.ndarray, w_max):
        """Levels (plus, minus) of finite values ``w`` (any shape; + a rank axis), and the w_max used."""
        if self.dither:
            # the target's position to 1/DITHER_SUBBINS of a bin -> the level of every dither rank
            g, w_max = self._fine_positions(w, w_max)
            lv = self._fine_levels.take(_modulo(g, self._fine_levels.shape[0]), axis=0)   # (2, ..., R)
            return lv[0], lv[1], w_max
        x, w_max = self._grid(w, w_max)
        g = _modulo(x.astype(np.intp), self.lut.n_bins)       # floor: the grid bin
        lv = self.lut.levels.take(g)[..., None]
        return lv[0], lv[1], w_max

    def levels_for(self, weights, w_max: float | None = None, reference=None):
        """Per-element levels of the two phases, and the ``w_max`` used.

        Parameters
        ----------
        weights, w_max, reference : as :meth:`encode`.

        Returns
        -------
        (plus, minus, w_max) : ``plus`` (n_rows, n_block_cols, R) levels of phase ``s + theta``
        (pixels with even ``a + b``), ``minus`` of ``s - theta``; the last index is the dither
        rank (``R = dither_ranks``, 1 without dithering): the pixel pairs of rank r show levels
        ``[..., r]``.  With a wavefront map these are the levels of a flat panel (the frame
        adds the map pixel by pixel).
        """
        return self._levels(prepare_values(weights, self.layout, reference, f"{self.name}: weights"), w_max)

    def encode(self, weights, w_max: float | None = None, reference=None, out: np.ndarray | None = None):
        """Level frame showing ``weights``.

        Parameters
        ----------
        weights : (n_rows, n_cols) signed matrix, any units; element (i, j) -> block (i, j).
        w_max : weight that gets the full amplitude ``amplitude_max`` (theta = arccos of it:
            0 rad on a full-range panel), same units as ``weights``; default ``max |weights|``
            (1 if all are zero).  ``|weights| > w_max`` raises ValueError.  The value used is
            kept in ``last_w_max``.
        reference : (n_rows,) values for the reference column (layouts with
            ``reference_col``; default 0, no field).
        out : optional C-contiguous frame (``shape``, ``lut.level_dtype``) to write into (every
            pixel is written).

        Returns
        -------
        (rows, cols) frame of panel levels (``lut.level_dtype``): ``out`` when given.
        """
        out = checked_out(self.name, out, self.shape, self.dtype)
        values = prepare_values(weights, self.layout, reference, f"{self.name}: weights", check_finite=False)
        if self.wavefront_rad is not None:
            g, w_max = self._fine_positions(values, w_max)
            self._wavefront_frame(g, out)
        else:
            if self.dither:
                g, w_max = self._fine_positions(values, w_max)
                self._writer.write(g)
                rows = self._rows
            else:
                lp, lm, w_max = self._levels(values, w_max)
                rows = self._plain_rows(lp[..., 0], lm[..., 0])
            np.take(rows, self._row_src, axis=0, out=out, mode="clip")
        self.last_w_max = w_max
        return out

    def _plain_rows(self, lp, lm):
        """Pattern rows (2 per block row, + 2 background rows) for element levels (n_rows, n_cols)."""
        nbc = self.layout.n_block_cols
        t = self._table
        if self.pixels_per_word > 1:
            # row parity 0: (plus, minus, plus, ...); row parity 1: (minus, plus, ...)
            wd = self._word_dtype
            p, m = lp.astype(wd), lm.astype(wd)
            np.add(p * self._c_even, m * self._c_odd, out=t[:, 0, :nbc])
            np.add(m * self._c_even, p * self._c_odd, out=t[:, 1, :nbc])
            np.take(t.reshape(-1, t.shape[2]), self._run_entry, axis=1, out=self._runs[:-2], mode="clip")
            words = np.repeat(self._runs, self._run_len, axis=1)       # (2 n_rows + 2, buffer words)
            return words.view(self.dtype)[:, self._shift:self._shift + self.shape[1]]
        t[:, 0, 0:2 * nbc:2] = lp
        t[:, 0, 1:2 * nbc:2] = lm
        t[:, 1, 0:2 * nbc:2] = lm
        t[:, 1, 1:2 * nbc:2] = lp
        np.take(t, self._col_index, axis=2, out=self._rows_words, mode="clip")
        return self._rows

    def transfer_codes(self, amplitudes) -> np.ndarray:
        """(len(a), R) integer codes of the (plus, minus) levels of every dither rank for programmed
        fractions ``a`` in [-1, 1] (``w_max`` 1): what :func:`hwio.transfer.amplitude_transfer`
        compares between fractions."""
        plus, minus, _ = self._levels(np.asarray(amplitudes, dtype=float), 1.0)
        return plus.astype(np.int64) * 65536 + minus

    def isolated_blocks(self, n: int, crosstalk_px: float) -> PhaseEncoder:
        """This encoder for a column of ``n`` isolated blocks (no neighbour leakage under a crosstalk
        of ``crosstalk_px``, px): what :func:`hwio.transfer.amplitude_transfer` renders."""
        layout, shape = isolated_layout(self.layout, n, crosstalk_px)
        return PhaseEncoder(layout, shape, self.lut, background=self.background, name=f"{self.name} (table)",
                            dither=self.dither, double_phase=self.double_phase)

    def decode(self, levels, response: PhaseResponse, w_max: float = 1.0, crosstalk_px: float = 0.0,
               complex_field: bool = False, include_reference: bool = False) -> np.ndarray:
        """Realised weights of a level frame on this encoder's panel; see
        :func:`hwio.transfer.realised_weights` (``crosstalk_px`` in px).

        With a wavefront map the panel's aberration (minus the map) is part of the field.
        """
        return realised_weights(levels, self.layout, response, w_max, crosstalk_px, complex_field,
                                include_reference, wavefront_rad=self.wavefront_rad)

    def __repr__(self):
        return (f"PhaseEncoder(name={self.name!r}, shape={self.shape}, matrix=({self.layout.n_rows}, "
                f"{self.layout.n_cols}), bit_depth={self.lut.bit_depth}, pixels_per_word={self.pixels_per_word}, "
                f"dither={self.dither}, wavefront={self.wavefront_rad is not None})")
