"""Dithering between neighbouring SLM levels: the level tables and the fast pattern-row writer.

A dithered double-phase encoder (:class:`hwio.double_phase.PhaseEncoder`) resolves every
target phase to 1/``DITHER_SUBBINS`` of a LUT grid bin (its *fine grid position* ``g``) and
shows, on the block's pixel pairs of dither rank ``r``, the level ``fine_levels[g, r]``
(:func:`fine_level_table`).  :class:`DitherRowWriter` turns the fine positions of every
element's two phases into the pixels of the encoder's pattern rows.
"""
from __future__ import annotations

import math

import numpy as np

from hwio.response import DoublePhaseRange, InverseLUT

__all__ = ["DITHER_SUBBINS", "dither_tables", "fine_level_table", "aligned_rows", "DitherRowWriter"]

DITHER_SUBBINS = 16
"""Sub-positions per LUT grid bin at which a dithered encoder resolves its target phase."""

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def dither_tables(lut: InverseLUT, double_phase: DoublePhaseRange | None = None) -> dict | None:
    """Lookup tables for dithering between neighbouring levels (None: the LUT has one level).

    A run is the stretch of grid bins the LUT maps to one level; its centre stands for that
    level's phase, except for the two runs at the edges of an unreachable gap
    (``double_phase``), which stand at the gap's edges (their levels' phases).

    Returns
    -------
    dict of arrays, grid coordinates in LUT bins relative to a bin's left edge: per bin g,
    ``centre[g]`` is the centre of g's run; per index ``2 g + h`` (h = 1 when the target lies at
    or above that centre): the ``lower`` / ``upper`` levels, the ``start`` (lower centre) and
    ``inv_span`` (1 / distance between the two centres, 1/bin) of the segment between them.
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


def fine_level_table(d: dict, n_ranks: int) -> np.ndarray:
    """Level of every dither rank at every 1/DITHER_SUBBINS of a grid bin.

    At sub-position i (grid coordinate (i + 1/2) / S) the target lies between the centres of
    two runs at fraction f; ranks r < rint(f R) take the upper level.

    Parameters
    ----------
    d : :func:`dither_tables` of the LUT.
    n_ranks : number of dither ranks R.

    Returns
    -------
    (n_bins * DITHER_SUBBINS, R) levels (the LUT's level values).
    """
    S = DITHER_SUBBINS
    n = d["centre"].size
    i = np.arange(n * S)
    g, frac = i // S, (i % S + 0.5) / S
    h = 2 * g + (frac >= d["centre"][g])
    count = np.rint((frac - d["start"][h]) * d["inv_span"][h] * n_ranks)
    upper = np.arange(n_ranks)[None, :] < count[:, None]
    return np.where(upper, d["upper"][h][:, None], d["lower"][h][:, None])


def aligned_rows(shape: tuple[int, int], dtype, first_col_px: int) -> np.ndarray:
    """An empty C-contiguous array whose column ``first_col_px`` starts at an address that is a
    multiple of 8 bytes in row 0 (and in every row when a row is a multiple of 8 bytes), so
    :class:`DitherRowWriter` can write whole machine words from the first active pixel on."""
    dtype = np.dtype(dtype)
    nbytes = shape[0] * shape[1] * dtype.itemsize
    raw = np.empty(nbytes + 8, dtype=np.uint8)
    off = -(raw.ctypes.data + first_col_px * dtype.itemsize) % 8
    return raw[off:off + nbytes].view(dtype).reshape(shape)


class DitherRowWriter:
    """Writes dithered double-phase blocks into pattern rows, a machine word of pixels at a time.

    Pixel ``b`` (block-local column) of local row parity ``q`` shows the plus phase when
    ``q + b`` is even, the minus phase otherwise, at dither rank ``pair_rank[q, b // 2]``.
    Every block row is cut into aligned chunks of up to 8 bytes of pixels (the same chunks for
    both row parities), as wide as the block pitch keeps every block's chunks aligned (odd
    pitches of one-byte levels: even and odd block columns form two alignment classes).  A
    chunk's bytes are a function of its element's two fine grid positions,
    ``T_plus[s(g_plus)] | T_minus[s(g_minus)]``: ``s`` maps a fine position to its dither state
    (a stretch of fine positions with the same levels), and ``T_role`` holds, per row parity and
    state, the levels of that role's pixels in the chunk shifted to their bytes (tables built
    once from ``fine_levels``, small enough to stay in cache).  An encode maps the positions to
    states once, gathers one word per element, row parity and role for each distinct chunk
    pattern, and ORs the two roles straight into every chunk of that pattern (one strided
    operation over all elements and both parities per chunk): no per-pixel work.  Chunks with
    the same pixel pattern (block rows whose rank order repeats) share their gathers; a shorter
    chunk whose pattern starts a longer one copies that word's first bytes.

    Parameters
    ----------
    fine_levels : (n_fine, R) levels per fine grid position and dither rank.
    pair_rank : (2, n_pairs) dither rank of every pixel pair by local row parity.
    rows : C-contiguous 2-D pattern-row buffer (level dtype); pattern row ``2 i + q`` holds block
        row i, local row parity q.  Only the active block pixels are written.
    first_col_px : buffer column of the first active pixel of block column 0 (px).
    pitch_px : block pitch along the columns (px).
    active_width_px : active pixels per block row (px).
    n_rows, n_block_cols : blocks of the layout.
    max_word_bytes : widest word written (1, 2, 4 or 8 bytes).
    """

    def __init__(self, fine_levels: np.ndarray, pair_rank: np.ndarray, rows: np.ndarray, first_col_px: int,
                 pitch_px: int, active_width_px: int, n_rows: int, n_block_cols: int, max_word_bytes: int = 8):
        if not rows.flags.c_contiguous:
            raise ValueError("the pattern-row buffer must be C-contiguous")
        # fine positions -> dither state (a stretch of fine positions with the same levels): the word
        # tables then have one row per state, small enough to stay in cache
        change = np.r_[True, np.any(fine_levels[1:] != fine_levels[:-1], axis=1)]
        self._fine = fine_levels[change]
        state = np.cumsum(change) - 1
        # a 2-byte state table touches 4x fewer cache lines than an intp one (it is read cold)
        self._state = state.astype(np.uint16 if state[-1] < 2 ** 16 else np.intp)
        self._states_small = np.empty((2, n_rows, n_block_cols), dtype=self._state.dtype)
        self._states = np.empty((2, n_rows, n_block_cols), dtype=np.intp)
        self._itemsize = isz = rows.dtype.itemsize
        rb = rows.strides[0]
        # words as wide as every block start keeps aligned (one alignment class); for odd pitches of
        # one-byte levels, as wide as every other block start keeps aligned (even and odd block columns)
        self._max_bytes = math.gcd(max_word_bytes, pitch_px * isz)
        n_class = 1
        if self._max_bytes < 2:
            self._max_bytes = math.gcd(max_word_bytes, 2 * pitch_px * isz)
            n_class = min(2, n_block_cols)
        self._tables: dict[tuple, np.ndarray] = {}      # (role, patterns) -> (2, n_states) word table
        self._classes = []
        for c in range(n_class):
            cols = slice(c, None, n_class)
            n_c = len(range(n_block_cols)[cols])
            start = rows.ctypes.data + (first_col_px + c * pitch_px) * isz
            chunks = self._chunks(pair_rank, active_width_px, start, rb)
            units: dict[tuple, tuple] = {}
            # distinct chunk patterns, longest first, so a shorter one can reuse a longer word's first bytes
            for pats in sorted({p for _, p in chunks}, key=lambda p: len(p[0]), reverse=True):
                units[pats] = self._unit(pats, units, (n_rows, n_c))
            # words no prefix reads are ORed straight into their chunks (no intermediate copy)
            read = {unit[1] for unit in units.values() if unit[0] == "prefix"}
            units = {p: (u[:3] + (None,) if u[0] == "word" and p not in read else u) for p, u in units.items()}
            dests: dict[tuple, list] = {p: [] for p in units}
            for o, pats in chunks:
                dests[pats].append(np.ndarray((2, n_rows, n_c), dtype=_UINT[len(pats[0]) * isz], buffer=rows,
                                              offset=(first_col_px + c * pitch_px + o) * isz,
                                              strides=(rb, 2 * rb, n_class * pitch_px * isz)))
            g_c = self._states if n_class == 1 else np.empty((2, n_rows, n_c), dtype=np.intp)
            self._classes.append((None if n_class == 1 else cols, g_c, units, dests))
        #: pixels of the widest word written
        self.pixels_per_word = max(len(p[0]) for *_, dests in self._classes for p in dests)

    def _chunks(self, pair_rank: np.ndarray, width: int, start_address: int, row_bytes: int) -> list:
        """(first pixel, patterns) of the aligned chunks of a block row whose first pixel is at
        ``start_address``; a pattern is ((role, rank) per pixel), one for q = 0 and one for 1."""
        chunks = []
        o = 0
        while o < width:
            nbytes = self._max_bytes
            while nbytes > self._itemsize and ((width - o) * self._itemsize < nbytes
                                               or (start_address + o * self._itemsize) % nbytes
                                               or row_bytes % nbytes):
                nbytes //= 2
            npx = nbytes // self._itemsize
            chunks.append((o, tuple(tuple(((q + b) % 2, int(pair_rank[q, b // 2])) for b in range(o, o + npx))
                                    for q in (0, 1))))
            o += npx
        return chunks

    def _unit(self, pats: tuple, units: dict, shape: tuple) -> tuple:
        """How an encode makes the words of chunk patterns ``pats``: ``("prefix", longer, dtype)``,
        the first bytes of a longer word (little-endian hosts), or ``("word", (plus table, plus
        out), (minus table, minus out), out)``, two gathered role words ORed."""
        dtype = _UINT[len(pats[0]) * self._itemsize]
        longer = next((u for u, unit in units.items() if unit[0] == "word" and len(u[0]) > len(pats[0])
                       and all(u[q][:len(pats[q])] == pats[q] for q in (0, 1))), None)
        if longer is not None and np.little_endian:
            return "prefix", longer, dtype
        parts = []
        for role in (0, 1):
            if (role, pats) not in self._tables:
                self._tables[role, pats] = self._role_table(pats, role, dtype)
            parts.append((self._tables[role, pats], np.empty((2,) + shape, dtype)))
        return "word", parts[0], parts[1], np.empty((2,) + shape, dtype)

    def _role_table(self, pats: tuple, role: int, dtype) -> np.ndarray:
        """(2, n_states) words: the levels of the ``role`` pixels of each row parity's chunk, at their bytes."""
        table = np.zeros((2, self._fine.shape[0]), dtype=dtype)
        npx = len(pats[0])
        for q in (0, 1):
            for pos, (r, rank) in enumerate(pats[q]):
                if r == role:
                    shift = 8 * self._itemsize * (pos if np.little_endian else npx - 1 - pos)
                    table[q] |= self._fine[:, rank].astype(dtype) << dtype(shift)
        return table

    def write(self, g: np.ndarray) -> None:
        """Write the blocks of fine grid positions ``g`` ((2, n_rows, n_block_cols) intp, plus and
        minus phase; taken modulo ``n_fine``, so any value >= 0) into the pattern rows."""
        np.take(self._state, g, out=self._states_small, mode="wrap")
        np.copyto(self._states, self._states_small)
        for cols, g_c, units, dests in self._classes:
            if cols is not None:
                np.copyto(g_c, self._states[:, :, cols])
            words = {}
            for pats, unit in units.items():          # longest first: words before their prefixes
                if unit[0] == "word":
                    (t_plus, plus), (t_minus, minus), temp = unit[1:]
                    np.take(t_plus, g_c[0], axis=1, out=plus, mode="clip")
                    np.take(t_minus, g_c[1], axis=1, out=minus, mode="clip")
                    if temp is None:
                        for dest in dests[pats]:
                            np.bitwise_or(plus, minus, out=dest)
                        continue
                    words[pats] = np.bitwise_or(plus, minus, out=temp)
                else:
                    nbytes = len(pats[0]) * self._itemsize
                    whole = words[unit[1]]
                    words[pats] = whole.view(np.uint8).reshape(whole.shape + (-1,))[..., :nbytes] \
                        .view(unit[2])[..., 0]
                for dest in dests[pats]:
                    np.copyto(dest, words[pats])
