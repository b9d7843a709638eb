"""Weights -> SLM level frames (double-phase or blazed-grating encoding), DMD inputs, and levels -> realised weights.

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
``phase_offset_rad`` are attributes of the encoder.  Phases go through an :class:`hwio.response.InverseLUT`, which wraps
them modulo 2 pi into ``[phase_min_rad, phase_min_rad + 2 pi)`` and picks the
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
(``DITHER_SUBBINS``) through a precomputed (grid position, rank) -> level table.
The two levels at the edges of an unreachable gap (short ranges) stand at
their own phases (the gap's edges), not at the centres of their runs, which reach into the gap.
What any encoder really realises, dithered or not, is tabulated by
:func:`amplitude_transfer`; the calibration stores that table and whether the
encoder dithered (``encoder_dither``), and the bench system encodes the same way.

Fast paths.  Plain: every block row of the frame holds only two distinct pixel rows
(local row parity even/odd).  :class:`PhaseEncoder` precomputes, once per layout, which
table entry every panel column takes and which pattern row every panel row takes.
An encode then computes ``2 * n_rows * n_block_cols`` levels, packs each element's
(plus, minus) pixel pair into machine words of up to 8 bytes (where the active block
width and the pitch are multiples of the word), expands the ``2 * n_rows`` pattern
rows with ``np.repeat`` over runs of identical words, and copies whole rows into the
frame with one ``np.take``: no Python loop over elements or pixels.  Odd active
widths fall back to a per-pixel gather of the pattern rows (about 1.5x slower).
Dithered: still two pattern rows per block row, but pairs differ along a row; the
pair words (or pixels, for odd widths) are gathered by rank straight into a pattern-row
buffer whose gaps hold the background, then copied into the frame the same way.
``benchmarks/encode_readout.py`` measures both against a frame copy.

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
2 copies, which a per-pixel table lookup cannot reach in numpy.  :meth:`PhaseEncoder.decode` and :func:`realised_weights` take the map
back out (the panel's own aberration is minus the map), and :meth:`PhaseEncoder.levels_for`
gives the levels of a flat panel.

First-order blazed-grating encoding (:class:`BlazedEncoder`)
----------------------------------------------------------
A panel whose optics keep the first diffraction order (bench file ``encoding = "blazed"``,
``grating_period_px``; ``docs/encodings.md``) shows every element as a blazed grating along the
panel's columns: depth ``M`` from an inverse-sinc table (first-order amplitude ``sinc(1 - M)``),
sign and wavefront correction in the grating's offset.  :func:`realised_weights` with
``first_order_period_px`` reads the first order (the field times the conjugate carrier, averaged
over the block), and :func:`amplitude_transfer` tabulates what the encoder realises, as for
double-phase.

DMD input encoder (``input``, bit depth 1)
------------------------------------------
Value ``x`` in [0, 1] switches on ``round(x * n_active)`` pixels of the block, chosen
by ordered dithering: every active pixel has a rank from a Bayer threshold matrix,
and a pixel is on when its rank is below the count, so on-pixels spread evenly
over the block and the fill fraction is exact to ``1 / (2 n_active)``.
"""
from __future__ import annotations

import math

import numpy as np

from hwio.layout import BlockLayout
from hwio.response import DoublePhaseRange, InverseLUT, PhaseResponse

__all__ = ["PhaseEncoder", "BlazedEncoder", "DMDEncoder", "realised_weights", "amplitude_transfer", "bayer_ranks",
           "inverse_sinc_depth", "ENCODINGS"]

TWO_PI = 2.0 * math.pi
_WORD_DTYPES = {1: None, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _check_shape(slm_shape) -> tuple[int, int]:
    if len(slm_shape) != 2 or min(slm_shape) <= 0:
        raise ValueError(f"SLM shape must be (rows, cols) > 0, got {tuple(slm_shape)}")
    return int(slm_shape[0]), int(slm_shape[1])


def _weight_range(name: str, absw: np.ndarray, w_max) -> float:
    """The weight range of one encode: ``w_max`` checked (finite, > 0, not exceeded by ``absw``),
    or the largest |w| when it is None (1 for all-zero weights)."""
    peak = float(absw.max()) if absw.size else 0.0
    if w_max is None:
        return peak if peak > 0 else 1.0
    w_max = float(w_max)
    if not (math.isfinite(w_max) and w_max > 0):
        raise ValueError(f"{name}: w_max must be a finite number > 0, got {w_max}")
    if peak > w_max * (1 + 1e-12):
        raise ValueError(f"{name}: |weights| reach {peak:.6g} > w_max = {w_max:.6g}; "
                         f"raise w_max or rescale the weights")
    return w_max


def _active_geometry(layout: BlockLayout):
    g = layout.guard_px
    bh, bw = layout.block_px[0] - 2 * g, layout.block_px[1] - 2 * g
    r0, c0 = layout.origin_px[0] + g, layout.origin_px[1] + g
    return r0, c0, bh, bw


def _row_source(layout: BlockLayout, n_rows_panel: int, rows_per_block: int, parity: bool,
                bg_by_parity: bool = False) -> np.ndarray:
    """Panel row -> pattern row index; background rows index n_pat (+ row parity with ``bg_by_parity``)."""
    r0, _, bh, _ = _active_geometry(layout)
    n_pat = layout.n_rows * rows_per_block
    src = np.full(n_rows_panel, n_pat, dtype=np.intp)
    if bg_by_parity:
        src += np.arange(n_rows_panel) % 2
    a = np.arange(bh)
    rows = r0 + np.arange(layout.n_rows)[:, None] * layout.pitch_px[0] + a[None, :]
    local = (a % 2) if parity else a
    src[rows.ravel()] = (np.arange(layout.n_rows)[:, None] * rows_per_block + local[None, :]).ravel()
    return src


def _prepare_values(values, layout: BlockLayout, reference, what: str, allow_1d: bool = False) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if allow_1d and v.ndim == 1 and layout.n_rows == 1:
        v = v[None, :]
    if v.shape != (layout.n_rows, layout.n_cols):
        raise ValueError(f"{what} have shape {v.shape}, the layout holds ({layout.n_rows}, {layout.n_cols}) "
                         f"(n_rows = outputs, n_cols = inputs); transpose or re-train with matching sizes")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{what} contain NaN or inf; fix the source before encoding")
    if layout.reference_col:
        ref = np.zeros(layout.n_rows) if reference is None else np.asarray(reference, dtype=float).ravel()
        if ref.shape != (layout.n_rows,) or not np.all(np.isfinite(ref)):
            raise ValueError(f"reference must be {layout.n_rows} finite values (one per row), got {ref.shape}")
        v = np.concatenate([v, ref[:, None]], axis=1)
    elif reference is not None:
        raise ValueError("a reference was given but the layout has no reference column (reference_col=False)")
    return v


class PhaseEncoder:
    """Signed matrix -> level frame of a phase-only panel (double-phase checkerboard).

    Parameters
    ----------
    layout : where the matrix elements sit on the panel.
    slm_shape : (rows, cols) of the panel in pixels.
    lut : inverse response (phase -> level) at the panel's bit depth.
    background : what guard pixels, gaps and pixels outside the layout show: ``"zero"``
        (default) a zero-field checkerboard of phases +pi/2 / -pi/2 (by panel parity of
        row + col), so light leaking into the blocks through crosstalk adds no bias; or a
        fixed level.
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

    Notes
    -----
    An encode costs ``O(n_rows * n_cols * R)`` arithmetic, building
    ``2 * n_rows * cols / pixels_per_word`` words of pattern rows and one row-wise
    copy of the frame.  ``pixels_per_word`` (words of up to 8 bytes) is the largest
    even number of pixels dividing both the active block width and the block pitch
    (dithered: 2, one pixel pair); with 1 (odd active widths) the pattern rows are
    gathered pixel by pixel.
    """

    def __init__(self, layout: BlockLayout, slm_shape, lut: InverseLUT, background: int | str = "zero",
                 name: str = "SLM", dither: bool = True, wavefront_rad=None, double_phase=None):
        if not isinstance(lut, InverseLUT):
            raise TypeError(f"{name}: lut must be an hwio.response.InverseLUT (build one with "
                            f"PhaseResponse.inverse()), got {type(lut).__name__}")
        if double_phase is not None and not isinstance(double_phase, DoublePhaseRange):
            raise TypeError(f"{name}: double_phase must be an hwio.response.DoublePhaseRange "
                            f"(PhaseResponse.double_phase_range()), got {type(double_phase).__name__}")
        self.double_phase = lut.double_phase if double_phase is None else double_phase
        self.amplitude_max = self.double_phase.amplitude_max
        self.phase_offset_rad = phi0 = self.double_phase.phase_offset_rad
        self.name = name
        self.layout = layout
        self.shape = _check_shape(slm_shape)
        layout.check_fits(self.shape, name)
        self.lut = lut
        self.dtype = lut.level_dtype
        max_level = 2 ** lut.bit_depth - 1
        if isinstance(background, str):
            if background != "zero":
                raise ValueError(f"{name}: background must be 'zero' or a level 0..{max_level}, got {background!r}")
            # zero-field checkerboard: phases phi0 + pi/2 where (row + col) is even, phi0 - pi/2 where odd
            bg_even, bg_odd = (int(v) for v in lut(np.array([phi0 + math.pi / 2, phi0 - math.pi / 2])))
        else:
            if isinstance(background, bool) or int(background) != background or not 0 <= background <= max_level:
                raise ValueError(f"{name}: background must be 'zero' or a level 0..{max_level}, got {background!r}")
            bg_even = bg_odd = int(background)
        self.background = background
        self.last_w_max: float | None = None

        H, W = self.shape
        r0, c0, bh, bw = _active_geometry(layout)
        nbc = layout.n_block_cols
        itemsize = self.dtype.itemsize
        # dithering: the pixel pairs of a block (local row parity q, pair b // 2) get dither
        # ranks 0..R-1 (R = min(8, pairs)) from a 2 x n_pairs Bayer order, so the pairs
        # switched first spread evenly over the block
        runs = _dither_tables(lut, self.double_phase) if dither and bh > 1 else None
        self.dither = runs is not None
        n_pairs = -(-bw // 2)
        self.dither_ranks = min(8, 2 * n_pairs) if self.dither else 1
        if self.dither:
            R = self.dither_ranks
            self._fine_levels = _fine_level_table(runs, R).astype(self.dtype)
            self._pair_rank = bayer_ranks((2, n_pairs)) * R // (2 * n_pairs)   # (2, n_pairs)
            # source of pixel (q, b) in the stacked (plus, minus) x rank levels: plus where q + b is even
            q_, b_ = np.indices((2, bw))
            self._pixel_src = np.where((q_ + b_) % 2 == 0, 0, self.dither_ranks) + self._pair_rank[q_, b_ // 2]
        # widest word (<= 8 bytes, even number of pixels) that tiles every active block row;
        # dithered: one pixel pair per word (every pair may differ)
        k = 1
        for cand in ((2,) if self.dither else (8 // itemsize, 4 // itemsize, 2 // itemsize)):
            if cand >= 2 and bw % cand == 0 and layout.pitch_px[1] % cand == 0 and cand * itemsize <= 8:
                k = cand
                break
        self.pixels_per_word = k
        self._word_dtype = np.dtype(_WORD_DTYPES[k * itemsize]) if k > 1 else self.dtype
        if k > 1:
            # a level times these fills the even / odd pixels of a word
            shifts = 8 * itemsize * np.arange(k)
            if not np.little_endian:  # pragma: no cover - big-endian hosts
                shifts = shifts[::-1]
            wdt = self._word_dtype.type
            self._c_even = wdt(sum(1 << int(v) for v in shifts[0::2]))
            self._c_odd = wdt(sum(1 << int(v) for v in shifts[1::2]))
        # pattern rows live in a buffer shifted by `shift` columns so blocks start on word boundaries
        self._shift = (-c0) % k
        wb = -(-(W + self._shift) // k) * k
        bc = np.arange(0, wb, k) - self._shift          # panel column of every word's first pixel
        rel = bc - c0
        j = rel // layout.pitch_px[1]
        b = rel - j * layout.pitch_px[1]                  # block-local column (multiple of k when k > 1)
        inside = (rel >= 0) & (j < nbc) & (b < bw) & (bc >= 0) & (bc + k <= W)
        # global row parity of every pattern row (block row i, local row parity q)
        row_parity = (r0 + np.arange(layout.n_rows)[:, None] * layout.pitch_px[0] + np.arange(2)[None, :]) % 2

        def bg_pixel(row_par, col_par):
            return np.where((row_par + col_par) % 2 == 0, bg_even, bg_odd)

        if self.dither:
            self._init_dither_rows(row_parity, bg_pixel, W)
        elif k > 1:
            # entry j: word starting at an even block-local column; entry nbc: background
            self._col_index = np.where(inside, j, nbc).astype(np.intp)
            n_entries = nbc + 1
            c_even, c_odd = self._c_even, self._c_odd
            first_col_parity = (-self._shift) % 2         # every word starts on this panel column parity
            bg_words = [wdt(int(bg_pixel(g, first_col_parity))) * c_even
                        + wdt(int(bg_pixel(g, first_col_parity + 1))) * c_odd for g in (0, 1)]
            self._table = np.empty((layout.n_rows, 2, n_entries), dtype=self._word_dtype)
            self._table[..., nbc] = np.where(row_parity == 0, bg_words[0], bg_words[1])
            # runs of identical words (a plain block's words): store one word per run, then np.repeat
            starts = np.flatnonzero(np.r_[True, self._col_index[1:] != self._col_index[:-1]])
            self._run_entry = self._col_index[starts]
            self._run_len = np.diff(np.r_[starts, self._col_index.size])
            self._runs = np.empty((2 * layout.n_rows + 2, starts.size), dtype=self._word_dtype)
            self._runs[-2], self._runs[-1] = bg_words     # full background rows, even and odd panel rows
        else:
            # entry 2 j + p: pixel of block column j, block-local column parity p;
            # entry 2 nbc + p: background pixel on a panel column of parity p
            self._col_index = np.where(inside, 2 * j + (b % 2), 2 * nbc + (bc % 2)).astype(np.intp)
            n_entries = 2 * nbc + 2
            self._table = np.empty((layout.n_rows, 2, n_entries), dtype=self.dtype)
            self._table[..., 2 * nbc] = bg_pixel(row_parity, 0)
            self._table[..., 2 * nbc + 1] = bg_pixel(row_parity, 1)
            rows = np.empty((2 * layout.n_rows + 2, wb), dtype=self.dtype)
            cols = np.arange(wb)
            rows[-2], rows[-1] = bg_pixel(0, cols), bg_pixel(1, cols)
            self._rows_words = rows[:-2].reshape(layout.n_rows, 2, wb)
            self._rows = rows
        self._row_src = _row_source(layout, H, 2, parity=True, bg_by_parity=True)
        lut_n = lut.n_bins
        # grid index of phase s +- theta = floor(base_s +- theta * bins_per_rad), base_s > lut_n > theta bins
        self._base0 = (phi0 - lut.phase_min_rad) * lut.bins_per_rad % lut_n + 0.5 + lut_n
        self._base_pi = (phi0 + math.pi - lut.phase_min_rad) * lut.bins_per_rad % lut_n + 0.5 + lut_n
        self.wavefront_rad = None
        if wavefront_rad is not None:
            self._init_wavefront(wavefront_rad, bg_even, bg_odd)

    def _init_wavefront(self, wavefront_rad, bg_even, bg_odd):
        """Precompute the per-pixel table offsets ``K`` and the pattern-row plumbing of the map path."""
        from hwio.wavefront import check_wavefront
        wf = check_wavefront(wavefront_rad, self.shape, self.name)
        lut, layout, S = self.lut, self.layout, DITHER_SUBBINS
        nf = lut.n_bins * S
        H, W = self.shape
        r0, c0, bh, bw = _active_geometry(layout)
        nbc = layout.n_block_cols
        # the map in whole 1/S grid bins, wrapped into one turn
        steps = np.rint(wf * (lut.bins_per_rad * S)).astype(np.int64) % nf
        # table columns: the dither ranks (dithered), the plain LUT, a fixed background level
        cols = [self._fine_levels[:, r] for r in range(self.dither_ranks)] if self.dither else []
        plain_col = len(cols)
        cols.append(lut.levels[np.arange(nf) // S])
        fixed_col = len(cols)
        if not isinstance(self.background, str):
            cols.append(np.full(nf, self.background, dtype=self.dtype))
        n_cols = len(cols)
        table = np.stack(cols, axis=1).astype(self.dtype)                 # (nf, n_cols)
        # twice the turn: E + K indexes up to 2 nf - 1 without a modulo
        self._wf_table = np.ascontiguousarray(np.concatenate([table, table]).ravel())
        self._wf_ncols = n_cols
        # panel geometry: block row / local row of every panel row, block col / local col of every column
        rr, cc = np.arange(H) - r0, np.arange(W) - c0
        ri, ra = rr // layout.pitch_px[0], rr % layout.pitch_px[0]
        cj, cb = cc // layout.pitch_px[1], cc % layout.pitch_px[1]
        row_in = (rr >= 0) & (ri < layout.n_rows) & (ra < bh)
        col_in = (cc >= 0) & (cj < nbc) & (cb < bw)
        inside = row_in[:, None] & col_in[None, :]
        if self.dither:
            col = self._pair_rank[(ra % 2)[:, None], (np.minimum(cb, bw - 1) // 2)[None, :]]
        else:
            col = np.full((H, W), plain_col, dtype=np.int64)
        K = steps * n_cols + col
        if isinstance(self.background, str):
            # zero-field background: +pi/2 / -pi/2 by panel parity, on the same grid as the LUT
            rows_par = np.arange(H)[:, None] + np.arange(W)[None, :]
            g_bg = []
            for phase in (self.phase_offset_rad + math.pi / 2, self.phase_offset_rad - math.pi / 2):
                y = (phase - lut.phase_min_rad) * lut.bins_per_rad + 0.5
                g_bg.append(int(math.floor(y * S)) % nf)
            g = np.where(rows_par % 2 == 0, g_bg[0], g_bg[1])
            K_bg = ((g + steps) % nf) * n_cols + plain_col
        else:
            K_bg = np.full((H, W), fixed_col, dtype=np.int64)
        self._wf_K = np.where(inside, K, K_bg).astype(np.intp)
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
        pairs, rest = divmod(bh, 2)

        def block_rows(a, first, n_local, step):
            return np.lib.stride_tricks.as_strided(
                a[first:], shape=(layout.n_rows, n_local, 2, W),
                strides=(layout.pitch_px[0] * W * item, step * W * item, W * item, item))

        self._wf_views = []
        if pairs:
            self._wf_views.append((block_rows(self._wf_K, r0, pairs, 2), block_rows(self._wf_idx, r0, pairs, 2),
                                   self._wf_rows[:, None, :, :]))
        if rest:   # odd block heights: the last local row (parity 0)
            last = np.lib.stride_tricks.as_strided
            self._wf_views.append((last(self._wf_K[r0 + bh - 1:], shape=(layout.n_rows, W),
                                        strides=(layout.pitch_px[0] * W * item, item)),
                                   last(self._wf_idx[r0 + bh - 1:], shape=(layout.n_rows, W),
                                        strides=(layout.pitch_px[0] * W * item, item)),
                                   self._wf_rows[:, 0, :]))
        self.wavefront_rad = wf
        self.wavefront_rad.setflags(write=False)

    def _wavefront_frame(self, x: np.ndarray, out: np.ndarray) -> None:
        """Write the frame of grid coordinates ``x`` (2, n_rows, n_block_cols) with the map into ``out``."""
        nf = self.lut.n_bins * DITHER_SUBBINS
        g = (x * DITHER_SUBBINS).astype(np.intp)            # floor: x > 0
        if nf & (nf - 1) == 0:
            g &= nf - 1
        else:
            g %= nf
        g *= self._wf_ncols
        nbc = self.layout.n_block_cols
        self._wf_elem[:, 0:2 * nbc:2] = g[0]
        self._wf_elem[:, 1:2 * nbc:2] = g[1]
        n_rows = self.layout.n_rows
        np.take(self._wf_elem, self._wf_entry, axis=1, out=self._wf_rows.reshape(n_rows, -1), mode="clip")
        for k_view, idx_view, pattern in self._wf_views:
            np.add(k_view, pattern, out=idx_view)
        np.take(self._wf_table, self._wf_idx, out=out, mode="clip")

    def _init_dither_rows(self, row_parity, bg_pixel, W):
        """Pattern-row buffer of a dithered encoder: blocks are written in place, gaps keep background.

        Words are pixel pairs (``pixels_per_word`` 2) or single pixels (odd widths); pattern row
        (i, q) holds block row i, local row parity q, laid out as on the panel (shifted by
        ``_shift`` pixels so words start on block boundaries).
        """
        layout, k, wd = self.layout, self.pixels_per_word, self._word_dtype
        _, c0, _, bw = _active_geometry(layout)
        nbc, pitch = layout.n_block_cols, layout.pitch_px[1]
        c0w, pitch_w, n_words_block = (c0 + self._shift) // k, pitch // k, bw // k
        n_words = max(-(-(W + self._shift) // k), c0w + nbc * pitch_w)
        col_parity = (np.arange(n_words) * k - self._shift) % 2        # panel column parity of each word start

        def bg_words(row_par):
            first = bg_pixel(row_par, col_parity).astype(wd)
            if k == 1:
                return first
            return first * self._c_even + bg_pixel(row_par, col_parity + 1).astype(wd) * self._c_odd

        rows = np.empty((2 * layout.n_rows + 2, n_words), dtype=wd)
        pat = rows[:-2].reshape(layout.n_rows, 2, n_words)
        for par in (0, 1):
            pat[row_parity == par] = bg_words(par)
        rows[-2], rows[-1] = bg_words(0), bg_words(1)
        # the active words of every block, (n_rows, 2, n_block_cols, words per block): a view
        blocks = pat[:, :, c0w:c0w + nbc * pitch_w].reshape(layout.n_rows, 2, nbc, pitch_w)
        self._block_words = blocks[..., :n_words_block]
        self._rows = rows.view(self.dtype)[:, self._shift:self._shift + W]

    # ----------------------------------------------------------------------------------
    def _grid(self, w: np.ndarray, w_max):
        """Grid coordinates (2, ...) of the phases s + theta, s - theta of finite ``w`` (> 0), and w_max."""
        absw = np.abs(w)
        w_max = _weight_range(self.name, absw, w_max)
        absw *= self.amplitude_max / w_max
        np.minimum(absw, self.amplitude_max, out=absw)
        theta_bins = np.arccos(absw, out=absw)
        theta_bins *= self.lut.bins_per_rad
        base = (w < 0) * (self._base_pi - self._base0)
        base += self._base0
        x = np.empty((2,) + w.shape)            # grid coordinate of s + theta and s - theta (> 0)
        np.add(base, theta_bins, out=x[0])
        np.subtract(base, theta_bins, out=x[1])
        return x, w_max

    def _levels(self, w: np.ndarray, w_max):
        """Levels (plus, minus) of finite values ``w`` (any shape; + a rank axis), and the w_max used."""
        x, w_max = self._grid(w, w_max)
        n = self.lut.n_bins
        if self.dither:
            # the target's position to 1/DITHER_SUBBINS of a bin -> the level of every dither rank
            x *= DITHER_SUBBINS
            g = x.astype(np.intp)
            nf = n * DITHER_SUBBINS
            if nf & (nf - 1) == 0:
                g &= nf - 1
            else:
                g %= nf
            lv = self._fine_levels.take(g, axis=0)                # (2, n_rows, n_cols, R)
            return lv[0], lv[1], w_max
        g = x.astype(np.intp)                   # floor: the grid bin
        if n & (n - 1) == 0:
            g &= n - 1                          # modulo n for a power of two, much faster than %
        else:
            g %= n
        lv = self.lut.levels.take(g)[..., None]
        return lv[0], lv[1], w_max

    def levels_for(self, weights, w_max: float | None = None, reference=None):
        """Per-element levels ``(plus, minus)``, each (n_rows, n_block_cols, R), and the ``w_max`` used.

        ``plus`` is the level of phase ``s + theta`` (pixels with even ``a + b``), ``minus``
        of ``s - theta``; the last index is the dither rank (``R = dither_ranks``, 1 without
        dithering): the pixel pairs of rank r show levels ``[..., r]``.  With a wavefront
        map these are the levels of a flat panel (the frame adds the map pixel by pixel).
        """
        return self._levels(_prepare_values(weights, self.layout, reference, f"{self.name}: weights"), w_max)

    def encode(self, weights, w_max: float | None = None, reference=None, out: np.ndarray | None = None):
        """Level frame (``shape``, ``lut.level_dtype``) showing ``weights`` (n_rows, n_cols).

        Parameters
        ----------
        weights : signed matrix, any units; element (i, j) -> block (i, j).
        w_max : weight that gets the full amplitude ``amplitude_max`` (theta = arccos of it:
            0 on a full-range panel); default ``max |weights|`` (1 if all are zero).  ``|weights| > w_max`` raises ValueError.  The value
            used is kept in ``last_w_max``.
        reference : (n_rows,) values for the reference column (layouts with
            ``reference_col``; default 0, no field).
        out : optional C-contiguous frame to write into (every pixel is written).
        """
        if out is None:
            out = np.empty(self.shape, dtype=self.dtype)
        elif out.shape != self.shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"{self.name}: out must be a C-contiguous {self.dtype} array of shape {self.shape}, "
                             f"got {out.dtype} {out.shape}")
        values = _prepare_values(weights, self.layout, reference, f"{self.name}: weights")
        if self.wavefront_rad is not None:
            x, w_max = self._grid(values, w_max)
            self._wavefront_frame(x, out)
            self.last_w_max = w_max
            return out
        lp, lm, w_max = self._levels(values, w_max)
        rows = self._dithered_rows(lp, lm) if self.dither else self._plain_rows(lp[..., 0], lm[..., 0])
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

    def _dithered_rows(self, lp, lm):
        """Pattern rows of a dithered encoder for levels (n_rows, n_cols, R) by dither rank."""
        if self.pixels_per_word == 2:
            # one word per pixel pair: (plus, minus) in row parity 0, (minus, plus) in parity 1
            wd = self._word_dtype
            p, m = lp.astype(wd), lm.astype(wd)
            for q, (first, second) in enumerate(((p, m), (m, p))):
                words = first * self._c_even
                words += second * self._c_odd
                self._block_words[:, q] = words[:, :, self._pair_rank[q]]
        else:
            # odd widths: pixel by pixel from the stacked (plus, minus) x rank levels
            stacked = np.concatenate([lp, lm], axis=2)                    # (n_rows, n_cols, 2 R)
            for q in (0, 1):
                self._block_words[:, q] = stacked[:, :, self._pixel_src[q]]
        return self._rows

    def decode(self, levels, response: PhaseResponse, w_max: float = 1.0, crosstalk_px: float = 0.0,
               complex_field: bool = False, include_reference: bool = False) -> np.ndarray:
        """Realised weights of a level frame on this encoder's panel; see :func:`realised_weights`.

        With a wavefront map the panel's aberration (minus the map) is part of the field.
        """
        return realised_weights(levels, self.layout, response, w_max, crosstalk_px, complex_field,
                                include_reference, wavefront_rad=self.wavefront_rad)

    def __repr__(self):
        return (f"PhaseEncoder(name={self.name!r}, shape={self.shape}, matrix=({self.layout.n_rows}, "
                f"{self.layout.n_cols}), bit_depth={self.lut.bit_depth}, pixels_per_word={self.pixels_per_word}, "
                f"dither={self.dither}, wavefront={self.wavefront_rad is not None})")


def _dither_tables(lut: InverseLUT, double_phase: DoublePhaseRange | None = None) -> dict | None:
    """Lookup tables for dithering between neighbouring levels (None: the LUT has one level).

    A run is the stretch of grid bins the LUT maps to one level; its centre stands for that
    level's phase, except for the two runs at the edges of an unreachable gap
    (``double_phase``), which stand at the gap's edges (their levels' phases).  Per bin g (grid coordinates relative to the bin's left edge):
    ``centre[g]`` is the centre of g's run.  Per index 2 g + h (h = 1 when the target lies
    at or above that centre): ``lower`` / ``upper`` levels, the ``start`` (lower centre)
    and ``inv_span`` (1 / distance between the two centres) of the segment between them.
    """
    lv = lut.levels
    n = lv.size
    starts = np.flatnonzero(lv != np.roll(lv, 1))
    if starts.size < 2:
        return None
    lengths = np.diff(np.r_[starts, starts[0] + n])
    centres = starts + 0.5 * lengths                              # unwrapped from starts[0]
    if double_phase is not None and not double_phase.full:
        # the runs holding the gap's edges reach into the gap: put them at the edges themselves
        ends = starts + lengths
        for edge in (double_phase.gap_centre_rad - 0.5 * double_phase.gap_width_rad,
                     double_phase.gap_centre_rad + 0.5 * double_phase.gap_width_rad):
            u = ((edge - lut.phase_min_rad) * lut.bins_per_rad + 0.5 - starts[0]) % n + starts[0]
            k = int(np.clip(np.searchsorted(ends, u, side="right"), 0, starts.size - 1))
            centres[k] = u
    run_level = lv[starts]
    k = np.repeat(np.arange(starts.size), lengths)                # run of bins starts[0], starts[0] + 1, ...
    bins = starts[0] + np.arange(n)                               # unwrapped bin positions
    order = bins % n
    c, c_prev, c_next = centres[k] - bins, np.r_[centres[-1] - n, centres[:-1]][k] - bins, \
        np.r_[centres[1:], centres[0] + n][k] - bins
    lev, lev_prev, lev_next = run_level[k], np.roll(run_level, 1)[k], np.roll(run_level, -1)[k]

    def by_bin(values):
        arr = np.empty(n, dtype=values.dtype)
        arr[order] = values
        return arr

    def by_half(below, above):
        arr = np.empty(2 * n, dtype=below.dtype)
        arr[2 * order], arr[2 * order + 1] = below, above
        return arr

    return {"centre": by_bin(c), "lower": by_half(lev_prev, lev), "upper": by_half(lev, lev_next),
            "start": by_half(c_prev, c), "inv_span": by_half(1.0 / (c - c_prev), 1.0 / (c_next - c))}


DITHER_SUBBINS = 16
"""Sub-positions per LUT grid bin at which a dithered encoder resolves its target phase."""


def _fine_level_table(d: dict, n_ranks: int) -> np.ndarray:
    """Level of every dither rank at every 1/DITHER_SUBBINS of a grid bin, (n_bins * S, R).

    At sub-position i (grid coordinate (i + 1/2) / S) the target lies between the centres of
    two runs at fraction f; ranks r < rint(f R) take the upper level.
    """
    S = DITHER_SUBBINS
    n = d["centre"].size
    i = np.arange(n * S)
    g, frac = i // S, (i % S + 0.5) / S
    h = 2 * g + (frac >= d["centre"][g])
    count = np.rint((frac - d["start"][h]) * d["inv_span"][h] * n_ranks)
    upper = np.arange(n_ranks)[None, :] < count[:, None]
    return np.where(upper, d["upper"][h][:, None], d["lower"][h][:, None])


def realised_weights(levels, layout: BlockLayout, response: PhaseResponse, w_max: float = 1.0,
                     crosstalk_px: float = 0.0, complex_field: bool = False,
                     include_reference: bool = False, wavefront_rad=None,
                     first_order_period_px: float | None = None) -> np.ndarray:
    """Weights a level frame realises on a phase-only panel (model for the twin).

    Element field = ``w_max`` x mean over the block's active pixels of
    ``exp(i phase(level))``, after a Gaussian blur of that complex field with sigma
    ``crosstalk_px`` (fringing-field crosstalk; no field outside the panel).
    Illumination is not included (multiply by it separately).

    Parameters
    ----------
    levels : integer frame (rows, cols) as shown on the panel.
    layout : block layout the frame was encoded with.
    response : forward phase response (true or calibrated).
    w_max : weight scale the frame was encoded with.
    crosstalk_px : Gaussian sigma of the pixel crosstalk, in pixels (0 = none).
    complex_field : return the complex zero-order field instead of its real part
        (the real part is what homodyne readout at LO phase 0 measures).
    include_reference : also return the reference column (layouts with ``reference_col``).
    wavefront_rad : the wavefront-correction map (rad, the frame's shape) the frame was
        encoded with: the panel adds its aberration, minus the map, to every pixel's phase
        (None: a flat panel).
    first_order_period_px : read the first diffraction order of a grating of this period along
        the columns (:class:`BlazedEncoder`): the blurred field is multiplied by the conjugate
        carrier ``exp(-2 pi i X / period)`` (X: panel column) before the block mean.  None: the
        zero order.

    Returns
    -------
    (n_rows, n_cols) array (n_block_cols with ``include_reference``).
    """
    lv = np.asarray(levels)
    if lv.ndim != 2:
        raise ValueError(f"{response.name}: levels must be a 2-D frame (rows, cols), got shape {lv.shape}")
    layout.check_fits(lv.shape, response.name)
    if not (math.isfinite(crosstalk_px) and crosstalk_px >= 0):
        raise ValueError(f"crosstalk_px must be a finite number >= 0, got {crosstalk_px}")
    phase = response.phase(lv)
    if wavefront_rad is not None:
        wf = np.asarray(wavefront_rad, dtype=float)
        if wf.shape != lv.shape:
            raise ValueError(f"{response.name}: wavefront map is {wf.shape}, the frame {lv.shape}; use the panel's map")
        phase = phase - wf
    field = np.exp(1j * phase)
    if crosstalk_px > 0:
        from scipy.ndimage import gaussian_filter
        field = gaussian_filter(field, crosstalk_px, mode="constant", cval=0.0)
    if first_order_period_px is not None:
        p = float(first_order_period_px)
        field = field * np.exp(-2j * np.pi * (np.arange(lv.shape[1]) % p) / p)[None, :]
    r0, c0, bh, bw = _active_geometry(layout)
    rows = r0 + np.arange(layout.n_rows)[:, None] * layout.pitch_px[0] + np.arange(bh)[None, :]
    cols = c0 + np.arange(layout.n_block_cols)[:, None] * layout.pitch_px[1] + np.arange(bw)[None, :]
    blocks = field[rows.ravel()][:, cols.ravel()].reshape(layout.n_rows, bh, layout.n_block_cols, bw)
    e = blocks.mean(axis=(1, 3)) * float(w_max)
    if not include_reference:
        e = e[:, :layout.n_cols]
    return e if complex_field else e.real


def _single_blocks(encoder: "PhaseEncoder", n: int, crosstalk_px: float):
    """An encoder like ``encoder`` for a column of ``n`` isolated blocks (no neighbour leakage).

    A :class:`BlazedEncoder`'s blocks keep the column alignment of block column 0 of its layout
    modulo the grating period (and the checkerboard parity): the same pixel pattern.
    """
    lay = encoder.layout
    margin = 2 * int(math.ceil(2 + 2 * crosstalk_px))         # even: keeps the checkerboard parity
    margin_c = margin
    if isinstance(encoder, BlazedEncoder):
        period = math.lcm(2, encoder.grating_period_px)
        margin_c = margin + (lay.origin_px[1] - margin) % period
    pitch = (lay.block_px[0] + 2 * margin, lay.block_px[1] + margin + margin_c)
    single = BlockLayout(n, 1, block_px=lay.block_px, pitch_px=pitch, origin_px=(margin, margin_c),
                         guard_px=lay.guard_px)
    shape = (margin + n * pitch[0], margin_c + pitch[1])
    if isinstance(encoder, BlazedEncoder):
        return BlazedEncoder(single, shape, encoder.lut, encoder.grating_period_px, background=encoder.background,
                             name=f"{encoder.name} (table)", double_phase=encoder.double_phase)
    return PhaseEncoder(single, shape, encoder.lut, background=encoder.background, name=f"{encoder.name} (table)",
                        dither=encoder.dither, double_phase=encoder.double_phase)


def amplitude_transfer(encoder: "PhaseEncoder", response: PhaseResponse, crosstalk_px: float = 0.0,
                       n_scan: int = 2 ** 16, tol: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """The amplitude an encoder realises for every programmed amplitude fraction, exactly.

    The encoder maps a programmed fraction ``A`` in [-1, 1] to a pair of levels, so what an
    element realises is a staircase in ``A``.  Its steps are located by scanning ``n_scan``
    values with the encoder itself and bisecting every change to ``tol``; the value of each
    step is the realised element field (:func:`realised_weights`) along the encoder's sign axis
    ``exp(i phase_offset_rad)`` (the real part, what homodyne detection at LO phase 0 reads, on a
    full-range panel) for the given phase ``response`` and pixel
    ``crosstalk_px``, with isolated blocks (LUT rounding, response residuals and the fringing
    loss at the block edge; no neighbour leakage).

    On a panel short of 2 pi the programmed fraction ``A`` shows amplitude ``amplitude_max * A``,
    so the values end near ``+-amplitude_max`` (times the fringing loss).

    Returns
    -------
    (edges, values) : (m,) increasing step positions in A and (m + 1,) realised fractions;
    ``A`` realises ``values[searchsorted(edges, A, side='right')]``.
    """
    if n_scan < 3:
        raise ValueError(f"n_scan must be >= 3, got {n_scan}")

    blazed = isinstance(encoder, BlazedEncoder)

    def pairs(a):
        """(len(a), R) codes: the (plus, minus) levels of every dither rank (blazed: the block's levels)."""
        if blazed:
            return encoder._codes(a)
        plus, minus, _ = encoder._levels(a, 1.0)
        return plus.astype(np.int64) * 65536 + minus

    grid = np.linspace(-1.0, 1.0, n_scan)
    code = pairs(grid)
    change = np.flatnonzero(np.any(np.diff(code, axis=0) != 0, axis=1))
    lo, hi = grid[change], grid[change + 1]
    code_lo, code_hi = code[change], code[change + 1]
    while lo.size and np.max(hi - lo) > tol:
        mid = 0.5 * (lo + hi)
        c_mid = pairs(mid)
        left = np.any(c_mid != code_lo, axis=1)         # a change in [lo, mid]
        right = np.any(c_mid != code_hi, axis=1)        # a change in [mid, hi]
        # an interval holding changes on both sides splits in two (dithered rows step apart)
        lo = np.concatenate([lo[left], mid[right]])
        hi = np.concatenate([mid[left], hi[right]])
        code_lo, code_hi = (np.concatenate([code_lo[left], c_mid[right]]),
                            np.concatenate([c_mid[left], code_hi[right]]))
        order = np.argsort(lo, kind="stable")
        lo, hi, code_lo, code_hi = lo[order], hi[order], code_lo[order], code_hi[order]
    edges = np.unique(0.5 * (lo + hi))
    bounds = np.concatenate([[-1.0], edges, [1.0]])
    reps = 0.5 * (bounds[:-1] + bounds[1:])                 # one value inside every step
    reps[0], reps[-1] = -1.0, 1.0                           # the ends: full amplitude
    # realised values, a chunk of isolated blocks at a time (bounded memory)
    chunk = min(reps.size, 1024)
    enc = _single_blocks(encoder, chunk, crosstalk_px)
    cos_level = np.cos(response.phase_rad - encoder.phase_offset_rad)
    if blazed:      # complex pixel fields on the sign axis; the carrier enters the column weights
        cos_level = np.exp(1j * (response.phase_rad - encoder.phase_offset_rad))
    values = np.empty(reps.size)
    padded = np.zeros((chunk, 1))
    for start in range(0, reps.size, chunk):
        part = reps[start:start + chunk]
        padded[:part.size, 0] = part
        frame = enc.encode(padded, w_max=1.0)
        values[start:start + part.size] = _isolated_block_values(
            frame, enc.layout, cos_level, crosstalk_px,
            enc.grating_period_px if blazed else None)[:part.size]
    return edges, values


def _isolated_block_values(levels, layout: BlockLayout, cos_level: np.ndarray, crosstalk_px: float,
                           first_order_period_px: int | None = None):
    """:func:`realised_weights` (real part) of a column of isolated blocks (``_single_blocks``).

    The blurred block mean is linear in the field: every block's value is ``k_r^T F k_c`` over
    its own tile (one pitch), with ``k_r``, ``k_c`` the blur of the active rows' / columns'
    indicator divided by their count (the kernel is symmetric), so no full-frame blur is needed;
    the weights are real, so only ``Re F = cos(phase)`` (``cos_level[level]``) enters.
    First order (``first_order_period_px``): ``cos_level`` holds the complex pixel fields and the
    column weights are the blur of the active columns' conjugate carrier (the real part of the
    product is returned).
    """
    r0, c0, bh, bw = _active_geometry(layout)
    pr, pc = layout.pitch_px
    n = layout.n_rows
    lv = np.asarray(levels)[:n * pr, :pc].reshape(n, pr, pc)   # block i lies inside rows i pr .. (i + 1) pr
    tiles = cos_level.take(lv)
    kr = np.zeros(pr)
    kc = np.zeros(pc)
    kr[r0:r0 + bh] = 1.0 / bh
    kc[c0:c0 + bw] = 1.0 / bw
    if first_order_period_px is not None:
        p = first_order_period_px
        kc = kc * np.exp(-2j * np.pi * (np.arange(pc) % p) / p)     # tile column = panel column mod period
    if crosstalk_px > 0:
        from scipy.ndimage import gaussian_filter1d
        kr = gaussian_filter1d(kr, crosstalk_px, mode="constant", cval=0.0)
        if np.iscomplexobj(kc):
            kc = (gaussian_filter1d(kc.real, crosstalk_px, mode="constant", cval=0.0)
                  + 1j * gaussian_filter1d(kc.imag, crosstalk_px, mode="constant", cval=0.0))
        else:
            kc = gaussian_filter1d(kc, crosstalk_px, mode="constant", cval=0.0)
    return np.einsum("r,nrc,c->n", kr, tiles, kc).real


def bayer_ranks(shape: tuple[int, int]) -> np.ndarray:
    """Ranks 0..n-1 (int) of the pixels of a block for ordered dithering.

    Ranks follow a Bayer threshold matrix (cropped to ``shape``), so switching on the
    pixels with rank < k spreads them evenly over the block for every k.
    """
    h, w = int(shape[0]), int(shape[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"block shape must be > 0, got {shape}")
    m = np.zeros((1, 1), dtype=np.int64)
    while m.shape[0] < max(h, w):
        m = np.block([[4 * m, 4 * m + 2], [4 * m + 3, 4 * m + 1]])
    crop = m[:h, :w].ravel()
    ranks = np.empty(crop.size, dtype=np.int64)
    ranks[np.argsort(crop, kind="stable")] = np.arange(crop.size)
    return ranks.reshape(h, w)



# ======================================================================================
# First-order (blazed-grating) amplitude encoding
# ======================================================================================
ENCODINGS = ("double_phase", "blazed")
"""Amplitude encodings of a phase panel: zero-order double-phase (default), first-order blazed grating."""

_INV_SINC_N = 2 ** 16
_inv_sinc_table: np.ndarray | None = None


def _depth_table() -> np.ndarray:
    """``M`` at the amplitudes ``k / 2**16`` (k = 0 .. 2**16) and one guard entry: the inverse-sinc table."""
    global _inv_sinc_table
    if _inv_sinc_table is None:
        a = np.arange(_INV_SINC_N + 1) / _INV_SINC_N
        # Newton on sinc(x) = a from a start above the root (sinc is concave there): converges monotonically
        x = np.where(a < 1, 1.0 - a, 0.0)
        for _ in range(60):
            px = np.pi * x
            with np.errstate(invalid="ignore", divide="ignore"):
                f = np.where(x > 0, np.sin(px) / np.where(x > 0, px, 1.0), 1.0) - a
                df = np.where(x > 0, (np.cos(px) * px - np.sin(px)) / np.where(x > 0, px * x, 1.0), 0.0)
                step = np.where(df < 0, f / np.where(df < 0, df, -1.0), 0.0)
            x = np.clip(x - step, 0.0, 1.0)
        _inv_sinc_table = np.append(1.0 - x, 1.0)
    return _inv_sinc_table


def inverse_sinc_depth(amplitude) -> np.ndarray:
    """Modulation depth ``M`` in [0, 1] whose blazed grating has first-order amplitude
    ``sinc(1 - M)`` equal to ``amplitude`` (in [0, 1]; textbook continuous grating).

    Tabulated at 2**16 + 1 amplitudes (Newton-solved) and interpolated linearly: error < 1e-7 in
    ``M`` except within 1e-4 of full amplitude, where the square-root shape of the inverse near
    ``M = 1`` costs up to 1e-3 in ``M`` and < 1e-6 in amplitude.
    """
    t = _depth_table()
    a = np.clip(np.asarray(amplitude, dtype=float), 0.0, 1.0) * _INV_SINC_N
    i = a.astype(np.intp)
    a -= i
    lo = t.take(i)
    lo += a * (t.take(i + 1) - lo)
    return lo


DEPTH_STEPS = 2 ** 14
"""Steps per unit modulation depth at which a :class:`BlazedEncoder` resolves ``M``."""


def check_grating_period(period_px, name: str = "SLM") -> int:
    """The grating period as an int >= 3 px, or a one-line ValueError."""
    if isinstance(period_px, bool) or not isinstance(period_px, (int, np.integer, float)) \
            or not float(period_px).is_integer() or int(period_px) < 3:
        raise ValueError(f"{name}: grating_period_px must be a whole number of pixels >= 3 (about 10 is "
                         f"usual), got {period_px!r}")
    return int(period_px)


class BlazedEncoder:
    """Signed matrix -> level frame of a phase-only panel read in the first diffraction order.

    Every weight block holds a blazed grating along the panel's columns (Arrizon-type
    amplitude encoding); the optics keep its first order (see ``docs/encodings.md``).  Pixel
    ``(r, X)`` (panel column ``X``) of block ``(i, j)``, active pixels only::

        u     = frac((X + d) / period_px + s / (2 pi) + 1/2) - 1/2      (in [-1/2, 1/2))
        phase = M 2 pi u + C - 2 pi d / period_px
        M     = 1 - sinc^-1(A_max |w| / w_max)     (inverse-sinc table, sinc(x) = sin(pi x)/(pi x))
                (the amplitude A_max |w| / w_max resolved to 1/2**16, M to 1/DEPTH_STEPS)
        s     = pi if w < 0 else 0

    At ``M = 1`` the block shows ``2 pi X / period_px + s + C``: the carrier with the sign in its
    offset.  For a continuous grating the first order (the field times the conjugate carrier
    ``exp(-2 pi i X / period_px)``, averaged over a period) is ``sinc(1 - M) exp(i (s + C))``:
    amplitude ``A_max |w| / w_max``.  The half-pixel shift ``d`` (1/2, or 0 for positive weights
    at an odd period) makes the sampled sawtooth values symmetric about 0, so the sampled grating's
    first order keeps the phase ``s + C`` at every depth (its amplitude is the sampled sinc,
    ``sin(pi (1 - M)) / (period sin(pi (1 - M) / period))``).  The carrier is the panel's
    (column 0 at phase 0), so every block column reads with the same reference phase whatever
    the pitch.  ``C = phase_offset_rad`` is 0 on a full-range panel; on a panel short of 2 pi
    (gap ``g``, :class:`hwio.response.DoublePhaseRange`) the sawtooth spans ``2 pi M <= 2 pi - g``
    centred opposite the gap (``C = gap centre + pi``), so ``A_max = amplitude_max = sinc(1 - M_max)``
    with ``M_max = 1 - g / 2 pi - 1 / period_px`` (room for the half-pixel shift's phase).
    Pixelation, LUT rounding and the panel's crosstalk make the realised amplitude differ from
    the textbook sinc; :func:`amplitude_transfer` tabulates it exactly.

    Parameters
    ----------
    layout, slm_shape, lut, background, name : as :class:`PhaseEncoder` (background "zero":
        the +-pi/2 checkerboard around ``C``, which has neither a zero nor a first order).
    grating_period_px : grating period along the columns (int >= 3 px).  Blocks whose
        active width is a multiple of it keep the zero order out of the first (else the
        block's own zero order leaks in; the realised transfer includes it).
    wavefront_rad : optional flatness map (rad, ``slm_shape``) ``m``, carried by the first order's
        offset phase, so the first order carries ``exp(i m)`` and cancels the panel's aberration
        ``-m``.  A full-range panel adds ``m`` to every pixel's phase (wrapped by the LUT): the
        aberrated panel then shows exactly the flat panel's field.  A panel short of 2 pi cannot
        wrap: the nearest whole-pixel shift ``q = rint(m period / 2 pi)`` moves the sawtooth
        (``X -> X + q`` above) and only the rest ``m - 2 pi q / period`` (at most pi / period) is
        added to the pixel phase, with the depth limit lowered by 1 / period to make room for it
        (exact for a locally constant map; where ``q`` steps inside a block the first order is off
        by up to a few per cent).  Background pixels show ``lut(C +- pi/2 + m)`` on a full-range
        panel and ``lut(C +- pi/2)`` on a short one (a +-pi/2 pair is zero-field under any smooth
        aberration).
    double_phase : the panel's phase range (default: the LUT's).

    Notes
    -----
    All active rows of a block row are identical: an encode computes one pattern row per block
    row (``n_rows * n_block_cols * active width`` levels, two copies for the background's row
    parity) and copies rows into the frame with one ``np.take``.  With a wavefront map every
    active pixel is computed (a few float passes over them).
    """

    encoding = "blazed"
    dither = False
    dither_ranks = 1

    def __init__(self, layout: BlockLayout, slm_shape, lut: InverseLUT, grating_period_px=10,
                 background: int | str = "zero", name: str = "SLM", wavefront_rad=None, double_phase=None):
        if not isinstance(lut, InverseLUT):
            raise TypeError(f"{name}: lut must be an hwio.response.InverseLUT (build one with "
                            f"PhaseResponse.inverse()), got {type(lut).__name__}")
        if double_phase is not None and not isinstance(double_phase, DoublePhaseRange):
            raise TypeError(f"{name}: double_phase must be an hwio.response.DoublePhaseRange "
                            f"(PhaseResponse.double_phase_range()), got {type(double_phase).__name__}")
        self.name = name
        self.layout = layout
        self.shape = _check_shape(slm_shape)
        layout.check_fits(self.shape, name)
        self.grating_period_px = check_grating_period(grating_period_px, name)
        self.lut = lut
        self.dtype = lut.level_dtype
        self.double_phase = dp = lut.double_phase if double_phase is None else double_phase
        if dp.full:
            self.phase_offset_rad = 0.0
            self.depth_max = 1.0
        else:
            self.phase_offset_rad = float(np.angle(np.exp(1j * (dp.gap_centre_rad + math.pi))))
            # room in the range for the half-pixel shift's phase (pi / period) and a wavefront map's
            # rest (<= pi / period, below)
            self.depth_max = 1.0 - dp.gap_width_rad / TWO_PI - (2.0 if wavefront_rad is not None else 1.0) \
                / self.grating_period_px
            if self.depth_max <= 0:
                raise ValueError(f"{name}: a phase range of {TWO_PI - dp.gap_width_rad:.3f} rad leaves no room for "
                                 f"a blazed grating with a wavefront map; use a panel reaching more than 2 pi / "
                                 f"{self.grating_period_px}")
        self.amplitude_max = float(np.sinc(1.0 - self.depth_max))
        # amplitude index (1 / 2**16) -> depth in steps of 1 / DEPTH_STEPS
        self._depth_steps = np.rint(_depth_table()[:-1] * DEPTH_STEPS).astype(np.intp)
        self._amp_index_max = int(round(self.amplitude_max * _INV_SINC_N))
        C = self.phase_offset_rad
        max_level = 2 ** lut.bit_depth - 1
        if isinstance(background, str):
            if background != "zero":
                raise ValueError(f"{name}: background must be 'zero' or a level 0..{max_level}, got {background!r}")
        elif isinstance(background, bool) or int(background) != background or not 0 <= background <= max_level:
            raise ValueError(f"{name}: background must be 'zero' or a level 0..{max_level}, got {background!r}")
        self.background = background
        self.last_w_max: float | None = None
        H, W = self.shape
        r0, c0, _, bw = _active_geometry(layout)
        nbc, pitch = layout.n_block_cols, layout.pitch_px[1]
        P = self.grating_period_px
        S = DITHER_SUBBINS
        nf = lut.n_bins * S
        self._nf = nf
        # half-pixel shifts d of the sampled sawtooth (positive, negative weights): symmetric values
        self._shift_px = (0.5 if P % 2 == 0 else 0.0, 0.5)
        # grid coordinate x = M * (2 pi bins_per_rad) * u + base_s; base keeps x > 0 (|M u| <= 1/2 turn)
        base = (C - lut.phase_min_rad) * lut.bins_per_rad % lut.n_bins + 0.5 + lut.n_bins
        self._base = [base - d / P * lut.n_bins for d in self._shift_px]
        # every pixel's level is a function of (sign, quantised depth q, panel column mod P): one table
        # of fine grid positions floor(x S) (1/DITHER_SUBBINS of a LUT bin) and one of levels
        q = np.arange(DEPTH_STEPS + 1) / DEPTH_STEPS
        k = np.arange(P)
        tables = []
        for (d, s_turn), b in zip(zip(self._shift_px, (0.0, 0.5)), self._base):
            u = ((k + d) / P + s_turn + 0.5) % 1.0 - 0.5
            x = q[:, None] * (TWO_PI * lut.bins_per_rad) * u[None, :] + b
            tables.append(np.floor(x * S).astype(np.int64) % nf)
        self._grid_table = np.ascontiguousarray(np.stack(tables)).ravel()          # (2, Q + 1, P) flat
        self._level_table = lut.levels[self._grid_table // S]
        # element -> table row (sign, q) x P; active pixel -> + its column class X mod P
        cols = c0 + np.arange(nbc)[:, None] * pitch + np.arange(bw)[None, :]
        self._cls = (cols % P).astype(np.intp)                                       # (nbc, bw)
        # the block's whole row of levels per (alignment of its first column mod P, sign, q): encodes
        # gather rows of bw levels (one alignment when the pitch is a multiple of P)
        aligns, self._align = np.unique(cols[:, 0] % P, return_inverse=True)
        self._align = self._align.astype(np.intp) * (2 * (DEPTH_STEPS + 1))
        block_cls = (aligns[:, None] + np.arange(bw)[None, :]) % P                   # (n_align, bw)
        lt = self._level_table.reshape(2 * (DEPTH_STEPS + 1), P)
        self._block_table = np.ascontiguousarray(lt[:, block_cls].transpose(1, 0, 2)).reshape(-1, bw)
        # background: the +-pi/2 checkerboard around C (fine grid positions) or a fixed level
        rr, cc = np.indices(self.shape)
        parity = (rr + cc) % 2
        g_bg = [int(math.floor(((C + ph - lut.phase_min_rad) * lut.bins_per_rad + 0.5) * S)) % nf
                for ph in (0.5 * math.pi, -0.5 * math.pi)]
        self._bg_grid = np.where(parity == 0, g_bg[0], g_bg[1])
        if isinstance(background, str):
            self._bg_frame = lut.levels[self._bg_grid // S]
        else:
            self._bg_frame = np.full(self.shape, int(background), dtype=self.dtype)
        # pattern rows: 2 per block row (local row parity) + 2 background rows (even, odd panel rows),
        # wide enough that every block column is a slice of (pitch) columns
        wp = max(W, c0 + nbc * pitch)
        row_parity = (r0 + np.arange(layout.n_rows)[:, None] * layout.pitch_px[0] + np.arange(2)[None, :]) % 2

        def pattern_rows(bg, dtype):
            rows = np.zeros((2 * layout.n_rows + 2, wp), dtype=dtype)
            pat = rows[:-2].reshape(layout.n_rows, 2, wp)
            for par in (0, 1):
                pat[row_parity == par, :W] = bg[par]
            rows[-2, :W], rows[-1, :W] = bg[0], bg[1]
            blocks = pat[:, :, c0:c0 + nbc * pitch].reshape(layout.n_rows, 2, nbc, pitch)[..., :bw]
            return rows[:, :W], blocks

        self._rows, self._blocks = pattern_rows(self._bg_frame, self.dtype)
        # local row parity 1 = parity 0 over the block span, with its own background in the gaps
        span = self._rows[:-2].reshape(layout.n_rows, 2, -1) if wp == W else None
        if span is not None and c0 + nbc * pitch <= W:
            self._span = (span[:, 0, c0:c0 + nbc * pitch], span[:, 1, c0:c0 + nbc * pitch])
            gaps = np.flatnonzero(np.arange(nbc * pitch) % pitch >= bw)
            self._span_gaps = (gaps, self._span[1][:, gaps].copy()) if gaps.size else None
        else:
            self._span = None
        self._row_src = _row_source(layout, H, 2, parity=True, bg_by_parity=True)
        self.wavefront_rad = None
        self._wf_mode = None
        if wavefront_rad is not None:
            from hwio.wavefront import check_wavefront
            wf = check_wavefront(wavefront_rad, self.shape, name)
            if dp.full:
                # the map in whole 1/S grid bins, added to every pixel's fine grid position (the LUT wraps)
                self._wf_mode = "phase"
                steps = np.rint(wf * (lut.bins_per_rad * S)).astype(np.int64)
                self._wf_steps = (steps % nf).astype(np.intp)
                self._grid_rows, self._grid_blocks = pattern_rows(self._bg_grid, np.intp)
                self._wf_fine_levels = lut.levels[np.arange(nf) // S]
                self._wf_fixed = None if isinstance(background, str) else layout.element_map(self.shape) < 0
                self._wf_buf = np.empty(self.shape, dtype=np.intp)
                if isinstance(background, str):
                    self._bg_frame = self._wf_fine_levels[(self._bg_grid + self._wf_steps) % nf]
            else:
                # no wrap on a short range: whole-pixel shifts q of the grating carry the map, the rest
                # (|r| <= pi / P) goes into the pixel phase
                self._wf_mode = "shift"
                emap = layout.element_map(self.shape)
                self._wf_index = np.flatnonzero(emap.ravel() >= 0)
                self._wf_elem = emap.ravel()[self._wf_index].astype(np.intp)
                X = self._wf_index % W
                m = wf.ravel()[self._wf_index]
                q_px = np.rint(m * (P / TWO_PI)).astype(np.int64)
                self._wf_rest_bins = (m - q_px * (TWO_PI / P)) * lut.bins_per_rad
                self._wf_turn = [(((X + q_px) % P + d) / P + s_turn + 0.5) % 1.0
                                 for d, s_turn in zip(self._shift_px, (0.0, 0.5))]
                # the background keeps C +- pi/2 without the map: a +-pi/2 pair stays zero-field under
                # any smooth aberration, and adding the map would push it into the gap
            self.wavefront_rad = wf
            self.wavefront_rad.setflags(write=False)

    # ----------------------------------------------------------------------------------
    def depths(self, weights, w_max: float | None = None, reference=None):
        """Modulation depth ``M`` (n_rows, n_block_cols, resolved to 1 / ``DEPTH_STEPS``),
        negative-sign mask and the ``w_max`` used."""
        v = _prepare_values(weights, self.layout, reference, f"{self.name}: weights")
        q, negative, w_max = self._depths(v, w_max)
        return q / DEPTH_STEPS, negative, w_max

    def _depths(self, w: np.ndarray, w_max):
        """Quantised depths (int, in 1 / DEPTH_STEPS), negative mask, w_max."""
        absw = np.abs(w)
        w_max = _weight_range(self.name, absw, w_max)
        # the amplitude to 1 / 2**16 (nearest), then its depth in steps of 1 / DEPTH_STEPS from the table
        absw *= self.amplitude_max * _INV_SINC_N / w_max
        i = np.rint(absw, out=absw).astype(np.intp)
        np.minimum(i, self._amp_index_max, out=i)
        return self._depth_steps.take(i), w < 0, w_max

    def _rows_of(self, q: np.ndarray, negative: np.ndarray) -> np.ndarray:
        """Table rows (flat index of column class 0) for quantised depths and signs (any shape)."""
        row = negative * (DEPTH_STEPS + 1)
        row += q
        row *= self.grating_period_px
        return row

    def _codes(self, amplitudes) -> np.ndarray:
        """(len(a), bw) levels of block column 0 for programmed fractions ``a`` in [-1, 1] (w_max 1)."""
        a = np.asarray(amplitudes, dtype=float)
        q, _, _ = self._depths(a, 1.0)
        idx = self._rows_of(q, a < 0)[:, None] + self._cls[0][None, :]
        return self._level_table.take(idx).astype(np.int64)

    def encode(self, weights, w_max: float | None = None, reference=None, out: np.ndarray | None = None):
        """Level frame (``shape``, ``lut.level_dtype``) showing ``weights`` (n_rows, n_cols); as
        :meth:`PhaseEncoder.encode` (``w_max`` gets amplitude ``amplitude_max``)."""
        if out is None:
            out = np.empty(self.shape, dtype=self.dtype)
        elif out.shape != self.shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"{self.name}: out must be a C-contiguous {self.dtype} array of shape {self.shape}, "
                             f"got {out.dtype} {out.shape}")
        values = _prepare_values(weights, self.layout, reference, f"{self.name}: weights")
        q, negative, w_max = self._depths(values, w_max)
        if self._wf_mode is None:
            row = negative * (DEPTH_STEPS + 1)
            row += q
            row += self._align
            if self._span is None:
                self._blocks[...] = self._block_table.take(row, axis=0)[:, None]  # both local row parities
            else:
                self._blocks[:, 0] = self._block_table.take(row, axis=0)
                np.copyto(self._span[1], self._span[0])
                if self._span_gaps is not None:
                    self._span[1][:, self._span_gaps[0]] = self._span_gaps[1]
            np.take(self._rows, self._row_src, axis=0, out=out, mode="clip")
            self.last_w_max = w_max
            return out
        idx = self._rows_of(q, negative)[..., None] + self._cls                 # (n_rows, nbc, bw)
        if self._wf_mode == "phase":
            self._grid_blocks[...] = self._grid_table.take(idx)[:, None]
            g = self._wf_buf
            np.take(self._grid_rows, self._row_src, axis=0, out=g, mode="clip")
            g += self._wf_steps
            if self._nf & (self._nf - 1) == 0:
                g &= self._nf - 1
            else:
                g %= self._nf
            np.take(self._wf_fine_levels, g, out=out, mode="clip")
            if self._wf_fixed is not None:
                np.copyto(out, self._bg_frame, where=self._wf_fixed)
        else:
            self._shifted_frame(q.ravel(), negative.ravel(), out)
        self.last_w_max = w_max
        return out

    def _shifted_frame(self, q, negative, out):
        """Frame with a wavefront map on a panel short of 2 pi (whole-pixel shifts + rest), pixel by pixel."""
        lut = self.lut
        e = self._wf_elem
        neg = negative[e]
        u = np.where(neg, self._wf_turn[1], self._wf_turn[0])
        u -= 0.5
        u *= (q * (TWO_PI * lut.bins_per_rad / DEPTH_STEPS))[e]
        u += np.where(neg, self._base[1], self._base[0])
        u += self._wf_rest_bins
        g = u.astype(np.intp)
        n = lut.n_bins
        if n & (n - 1) == 0:
            g &= n - 1
        else:
            g %= n
        np.copyto(out, self._bg_frame)
        out.ravel()[self._wf_index] = lut.levels.take(g)

    def uniform_frame(self, phase_rad: float = 0.0) -> np.ndarray:
        """The whole panel (guards, gaps and margins too) as one full-depth grating of first-order
        phase ``phase_rad``: ``lut(2 pi X / period + phase_rad + C)`` (+ the wavefront map).

        The first-order counterpart of a uniform panel: a tilted plane wave, which the pixel
        crosstalk only scales, so every element carries full amplitude with no edge loss.
        """
        X = np.arange(self.shape[1])
        ph = np.broadcast_to(TWO_PI * (X % self.grating_period_px) / self.grating_period_px
                             + float(phase_rad) + self.phase_offset_rad, self.shape)
        if self.wavefront_rad is not None:
            ph = ph + self.wavefront_rad
        return np.ascontiguousarray(self.lut(ph))

    def two_level_frame(self, level: int, reference_level: int = 0) -> np.ndarray:
        """Binary grating of the encoder's period over the whole panel: ``level`` where the carrier
        turn ``frac(X / period)`` is below 1/2, ``reference_level`` elsewhere.

        Its first order is ``c (exp(i phi(level)) - exp(i phi(reference_level)))`` with a
        constant ``c``: over a sweep of ``level`` the field traces a circle, as a uniform panel's
        zero order does (phase-response calibration); its first-order power is
        ``4 |c|^2 sin^2(delta phi / 2)`` (the diffractive method, order 'first').
        """
        max_level = 2 ** self.lut.bit_depth - 1
        for v in (level, reference_level):
            if isinstance(v, bool) or int(v) != v or not 0 <= v <= max_level:
                raise ValueError(f"{self.name}: level must be 0..{max_level}, got {v!r}")
        X = np.arange(self.shape[1])
        row = np.where((X % self.grating_period_px) * 2 < self.grating_period_px, int(level), int(reference_level))
        return np.ascontiguousarray(np.broadcast_to(row.astype(self.dtype), self.shape))

    def crosstalk_patterns(self, lut: InverseLUT | None = None) -> tuple[dict, np.ndarray]:
        """Frames for measuring the pixel crosstalk in the first order, and the reference frame.

        The reference ``U`` is the full-depth grating over the whole panel (:meth:`uniform_frame`,
        which the crosstalk only scales); each pattern keeps that grating on the active pixels
        and shows something else around them: the grating shifted by pi (``frame_pi``) or
        pi/2 (``frame_half_pi``), or a uniform level of phase 0 (``frame_flat``), so the blur
        across the block edges changes the block's first order by an amount that depends on
        the crosstalk.  ``lut``: the inverse response to use (default the encoder's).
        """
        lut = self.lut if lut is None else lut
        X = np.arange(self.shape[1])
        carrier = np.broadcast_to(TWO_PI * (X % self.grating_period_px) / self.grating_period_px, self.shape)

        def ramp(phase):
            return lut(carrier + phase)

        active = self.layout.element_map(self.shape) >= 0
        u = ramp(0.0)
        l0 = lut(np.zeros(self.shape))
        pats = {"frame_pi": np.where(active, u, ramp(math.pi)),
                "frame_half_pi": np.where(active, u, ramp(0.5 * math.pi)),
                "frame_flat": np.where(active, u, l0)}
        return {k: v.astype(self.dtype) for k, v in pats.items()}, u.astype(self.dtype)

    def decode(self, levels, response: PhaseResponse, w_max: float = 1.0, crosstalk_px: float = 0.0,
               complex_field: bool = False, include_reference: bool = False) -> np.ndarray:
        """First-order element fields of a level frame (:func:`realised_weights` with this encoder's
        carrier); with a wavefront map the panel's aberration (minus the map) is part of the field."""
        return realised_weights(levels, self.layout, response, w_max, crosstalk_px, complex_field,
                                include_reference, wavefront_rad=self.wavefront_rad,
                                first_order_period_px=self.grating_period_px)

    @property
    def encoding_record(self) -> dict:
        """What a calibration records about the encoding (``info['encoding']``, ``info['grating_period_px']``)."""
        return {"encoding": self.encoding, "grating_period_px": self.grating_period_px}

    def __repr__(self):
        return (f"BlazedEncoder(name={self.name!r}, shape={self.shape}, matrix=({self.layout.n_rows}, "
                f"{self.layout.n_cols}), bit_depth={self.lut.bit_depth}, grating_period_px={self.grating_period_px}, "
                f"wavefront={self.wavefront_rad is not None})")



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
        self.shape = _check_shape(slm_shape)
        layout.check_fits(self.shape, name)
        if on_level == off_level or min(on_level, off_level) < 0:
            raise ValueError(f"{name}: on_level and off_level must differ and be >= 0, got {on_level}, {off_level}")
        self.on_level, self.off_level = int(on_level), int(off_level)
        self.dtype = np.dtype(np.uint8 if max(on_level, off_level) < 256 else np.uint16)
        H, W = self.shape
        _, c0, bh, bw = _active_geometry(layout)
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
        self._row_src = _row_source(layout, H, bh, parity=False)
        self._rows = np.full((layout.n_rows * bh + 1, W), self.off_level, dtype=self.dtype)
        self._binary = (self.on_level, self.off_level) == (1, 0) and self.dtype == np.uint8
        self._on = None if self._binary else np.zeros((layout.n_rows, bh, W), dtype=bool)

    def counts_for(self, values, reference=None) -> np.ndarray:
        """Number of on pixels per block, (n_rows, n_block_cols) int."""
        v = _prepare_values(values, self.layout, reference, f"{self.name}: input values", allow_1d=True)
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
        """Binary level frame for ``values`` ((n_rows, n_cols), or (n_cols,) when n_rows == 1)."""
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
        if out is None:
            out = np.empty(self.shape, dtype=self.dtype)
        elif out.shape != self.shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"{self.name}: out must be a C-contiguous {self.dtype} array of shape {self.shape}")
        np.take(self._rows, self._row_src, axis=0, out=out, mode="clip")
        return out

    def decode(self, levels) -> np.ndarray:
        """Fill fraction of every block of a binary frame, (n_rows, n_block_cols)."""
        lv = np.asarray(levels)
        if lv.shape != self.shape:
            raise ValueError(f"{self.name}: frame has shape {lv.shape}, the DMD is {self.shape}")
        r0, c0, bh, bw = _active_geometry(self.layout)
        rows = r0 + np.arange(self.layout.n_rows)[:, None] * self.layout.pitch_px[0] + np.arange(bh)
        cols = c0 + np.arange(self.layout.n_block_cols)[:, None] * self.layout.pitch_px[1] + np.arange(bw)
        blocks = (lv[rows.ravel()][:, cols.ravel()] == self.on_level)
        return blocks.reshape(self.layout.n_rows, bh, self.layout.n_block_cols, bw).mean(axis=(1, 3))
