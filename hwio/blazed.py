"""First-order blazed-grating amplitude encoding of a phase panel (:class:`BlazedEncoder`).

A panel whose optics keep the first diffraction order (bench file ``encoding = "blazed"``,
``grating_period_px``; ``docs/encodings.md``) shows every element as a blazed grating along the
panel's columns: depth ``M`` from an inverse-sinc table (first-order amplitude ``sinc(1 - M)``),
sign and wavefront correction in the grating's offset.  :func:`hwio.transfer.realised_weights`
with ``first_order_period_px`` reads the first order (the field times the conjugate carrier,
averaged over the block), and :func:`hwio.transfer.amplitude_transfer` tabulates what the encoder
realises, as for double-phase (:mod:`hwio.double_phase`).
"""
from __future__ import annotations

import math

import numpy as np

from hwio.dither import DITHER_SUBBINS
from hwio.encoder_common import (
    TWO_PI,
    active_geometry,
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

__all__ = ["BlazedEncoder", "inverse_sinc_depth", "check_grating_period", "DEPTH_STEPS"]

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

    Parameters
    ----------
    amplitude : first-order amplitude(s), fraction of full scale (clipped to [0, 1]), any shape.

    Returns
    -------
    Depths ``M`` (fraction of a full 2 pi sawtooth), float array of ``amplitude``'s shape.
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
    layout, slm_shape, lut, background, name : as :class:`hwio.double_phase.PhaseEncoder` (background "zero":
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
        self.double_phase = check_phase_args(name, lut, double_phase)
        self.name = name
        self.layout = layout
        self.shape = check_shape(slm_shape)
        layout.check_fits(self.shape, name)
        self.grating_period_px = check_grating_period(grating_period_px, name)
        self.lut = lut
        self.dtype = lut.level_dtype
        self._init_range(with_map=wavefront_rad is not None)
        check_background(name, background, lut.bit_depth)
        self.background = background
        self.last_w_max: float | None = None
        self._init_tables()
        self._init_background()
        self._init_pattern_rows()
        self.wavefront_rad = None
        self._wf_mode = None
        if wavefront_rad is not None:
            self._init_wavefront(wavefront_rad)

    def _init_range(self, with_map: bool) -> None:
        """Offset phase ``C``, depth limit and largest amplitude the panel's phase range allows."""
        dp = self.double_phase
        if dp.full:
            self.phase_offset_rad = 0.0
            self.depth_max = 1.0
        else:
            self.phase_offset_rad = float(np.angle(np.exp(1j * (dp.gap_centre_rad + math.pi))))
            # room in the range for the half-pixel shift's phase (pi / period) and a wavefront map's
            # rest (<= pi / period, below)
            self.depth_max = 1.0 - dp.gap_width_rad / TWO_PI - (2.0 if with_map else 1.0) / self.grating_period_px
            if self.depth_max <= 0:
                raise ValueError(f"{self.name}: a phase range of {TWO_PI - dp.gap_width_rad:.3f} rad leaves no room "
                                 f"for a blazed grating with a wavefront map; use a panel reaching more than 2 pi / "
                                 f"{self.grating_period_px}")
        self.amplitude_max = float(np.sinc(1.0 - self.depth_max))
        # amplitude index (1 / 2**16) -> depth in steps of 1 / DEPTH_STEPS
        self._depth_steps = np.rint(_depth_table()[:-1] * DEPTH_STEPS).astype(np.intp)
        self._amp_index_max = int(round(self.amplitude_max * _INV_SINC_N))

    def _init_tables(self) -> None:
        """Fine grid positions and levels per (sign, quantised depth, column mod period), and the
        whole active row of levels per (alignment of a block's first column, sign, depth)."""
        lut, layout, P, S = self.lut, self.layout, self.grating_period_px, DITHER_SUBBINS
        self._nf = nf = lut.n_bins * S
        # half-pixel shifts d of the sampled sawtooth (positive, negative weights): symmetric values
        self._shift_px = (0.5 if P % 2 == 0 else 0.0, 0.5)
        # grid coordinate x = M * (2 pi bins_per_rad) * u + base_s; base keeps x > 0 (|M u| <= 1/2 turn)
        base = (self.phase_offset_rad - lut.phase_min_rad) * lut.bins_per_rad % lut.n_bins + 0.5 + lut.n_bins
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
        _, c0, _, bw = active_geometry(layout)
        cols = c0 + np.arange(layout.n_block_cols)[:, None] * layout.pitch_px[1] + np.arange(bw)[None, :]
        self._cls = (cols % P).astype(np.intp)                                       # (nbc, bw)
        # the block's whole row of levels per (alignment of its first column mod P, sign, q): encodes
        # gather rows of bw levels (one alignment when the pitch is a multiple of P)
        aligns, align = np.unique(cols[:, 0] % P, return_inverse=True)
        self._align = align.astype(np.intp) * (2 * (DEPTH_STEPS + 1))
        block_cls = (aligns[:, None] + np.arange(bw)[None, :]) % P                   # (n_align, bw)
        lt = self._level_table.reshape(2 * (DEPTH_STEPS + 1), P)
        self._block_table = np.ascontiguousarray(lt[:, block_cls].transpose(1, 0, 2)).reshape(-1, bw)

    def _init_background(self) -> None:
        """Background frame: the +-pi/2 checkerboard around ``C`` (also as fine grid positions) or a
        fixed level."""
        lut, S = self.lut, DITHER_SUBBINS
        rr, cc = np.indices(self.shape)
        parity = (rr + cc) % 2
        g_bg = [int(math.floor(((self.phase_offset_rad + ph - lut.phase_min_rad) * lut.bins_per_rad + 0.5) * S))
                % self._nf for ph in (0.5 * math.pi, -0.5 * math.pi)]
        self._bg_grid = np.where(parity == 0, g_bg[0], g_bg[1])
        if isinstance(self.background, str):
            self._bg_frame = lut.levels[self._bg_grid // S]
        else:
            self._bg_frame = np.full(self.shape, int(self.background), dtype=self.dtype)

    def _pattern_rows(self, bg: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
        """Pattern rows (2 per block row by local row parity + 2 background rows for even and odd panel
        rows, ``W`` columns) filled with the background ``bg`` (rows by panel parity), and the view of
        the active pixels of every block (n_rows, 2, n_block_cols, active width)."""
        layout = self.layout
        W = self.shape[1]
        r0, c0, _, bw = active_geometry(layout)
        nbc, pitch = layout.n_block_cols, layout.pitch_px[1]
        wp = max(W, c0 + nbc * pitch)         # wide enough that every block column is a slice of (pitch) columns
        row_parity = (r0 + np.arange(layout.n_rows)[:, None] * layout.pitch_px[0] + np.arange(2)[None, :]) % 2
        rows = np.zeros((2 * layout.n_rows + 2, wp), dtype=dtype)
        pat = rows[:-2].reshape(layout.n_rows, 2, wp)
        for par in (0, 1):
            pat[row_parity == par, :W] = bg[par]
        rows[-2, :W], rows[-1, :W] = bg[0], bg[1]
        blocks = pat[:, :, c0:c0 + nbc * pitch].reshape(layout.n_rows, 2, nbc, pitch)[..., :bw]
        return rows[:, :W], blocks

    def _init_pattern_rows(self) -> None:
        """Pattern-row buffer of the plain encode; local row parity 1 copies parity 0 over the block
        span (then restores its own background in the gaps) when the span lies inside the panel."""
        layout, W = self.layout, self.shape[1]
        _, c0, _, bw = active_geometry(layout)
        nbc, pitch = layout.n_block_cols, layout.pitch_px[1]
        self._rows, self._blocks = self._pattern_rows(self._bg_frame, self.dtype)
        self._span = None
        if c0 + nbc * pitch <= W:
            span = self._rows[:-2].reshape(layout.n_rows, 2, -1)
            self._span = (span[:, 0, c0:c0 + nbc * pitch], span[:, 1, c0:c0 + nbc * pitch])
            gaps = np.flatnonzero(np.arange(nbc * pitch) % pitch >= bw)
            self._span_gaps = (gaps, self._span[1][:, gaps].copy()) if gaps.size else None
        self._row_src = row_source(layout, self.shape[0], 2, parity=True, bg_by_parity=True)

    def _init_wavefront(self, wavefront_rad) -> None:
        """Checks and keeps the wavefront map and precomputes the map path (module notes)."""
        wf = check_wavefront(wavefront_rad, self.shape, self.name)
        if self.double_phase.full:
            self._init_wavefront_phase(wf)
        else:
            self._init_wavefront_shift(wf)
        self.wavefront_rad = wf
        self.wavefront_rad.setflags(write=False)

    def _init_wavefront_phase(self, wf: np.ndarray) -> None:
        """Full-range panel: the map in whole 1/S grid bins, added to every pixel's fine grid
        position (the LUT wraps)."""
        lut, S, nf = self.lut, DITHER_SUBBINS, self._nf
        self._wf_mode = "phase"
        steps = np.rint(wf * (lut.bins_per_rad * S)).astype(np.int64)
        self._wf_steps = (steps % nf).astype(np.intp)
        self._grid_rows, self._grid_blocks = self._pattern_rows(self._bg_grid, np.intp)
        self._wf_fine_levels = lut.levels[np.arange(nf) // S]
        fixed = not isinstance(self.background, str)
        self._wf_fixed = self.layout.element_map(self.shape) < 0 if fixed else None
        self._wf_buf = np.empty(self.shape, dtype=np.intp)
        if not fixed:
            self._bg_frame = self._wf_fine_levels[(self._bg_grid + self._wf_steps) % nf]

    def _init_wavefront_shift(self, wf: np.ndarray) -> None:
        """Panel short of 2 pi (no wrap): whole-pixel shifts q of the grating carry the map, the rest
        (|r| <= pi / P) goes into the pixel phase."""
        P, W = self.grating_period_px, self.shape[1]
        self._wf_mode = "shift"
        emap = self.layout.element_map(self.shape)
        self._wf_index = np.flatnonzero(emap.ravel() >= 0)
        self._wf_elem = emap.ravel()[self._wf_index].astype(np.intp)
        X = self._wf_index % W
        m = wf.ravel()[self._wf_index]
        q_px = np.rint(m * (P / TWO_PI)).astype(np.int64)
        self._wf_rest_bins = (m - q_px * (TWO_PI / P)) * self.lut.bins_per_rad
        self._wf_turn = [(((X + q_px) % P + d) / P + s_turn + 0.5) % 1.0
                         for d, s_turn in zip(self._shift_px, (0.0, 0.5))]
        # the background keeps C +- pi/2 without the map: a +-pi/2 pair stays zero-field under any
        # smooth aberration, and adding the map would push it into the gap

    # ----------------------------------------------------------------------------------
    def depths(self, weights, w_max: float | None = None, reference=None):
        """Modulation depth ``M`` (n_rows, n_block_cols, resolved to 1 / ``DEPTH_STEPS``),
        negative-sign mask and the ``w_max`` used."""
        v = prepare_values(weights, self.layout, reference, f"{self.name}: weights")
        q, negative, w_max = self._depths(v, w_max)
        return q / DEPTH_STEPS, negative, w_max

    def _depths(self, w: np.ndarray, w_max):
        """Quantised depths (int, in 1 / DEPTH_STEPS), negative mask, w_max."""
        absw = np.abs(w)
        w_max = weight_range(self.name, absw, w_max)
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

    def transfer_codes(self, amplitudes) -> np.ndarray:
        """Levels (len(a), active width) of block column 0 for programmed fractions ``a`` in [-1, 1]
        (``w_max`` 1): what :func:`hwio.transfer.amplitude_transfer` compares between fractions."""
        a = np.asarray(amplitudes, dtype=float)
        q, _, _ = self._depths(a, 1.0)
        idx = self._rows_of(q, a < 0)[:, None] + self._cls[0][None, :]
        return self._level_table.take(idx).astype(np.int64)

    def encode(self, weights, w_max: float | None = None, reference=None, out: np.ndarray | None = None):
        """Level frame showing ``weights``.

        Parameters
        ----------
        weights : (n_rows, n_cols) signed matrix, any units; element (i, j) -> block (i, j).
        w_max : weight shown with the full first-order amplitude ``amplitude_max`` (same units as
            ``weights``); default ``max |weights|`` (1 if all are zero).  ``|weights| > w_max``
            raises ValueError.  The value used is kept in ``last_w_max``.
        reference : (n_rows,) values for the reference column (layouts with ``reference_col``;
            default 0).
        out : optional C-contiguous frame (``shape``, ``lut.level_dtype``) to write into (every
            pixel is written).

        Returns
        -------
        (rows, cols) frame of panel levels (``lut.level_dtype``): ``out`` when given.
        """
        out = checked_out(self.name, out, self.shape, self.dtype)
        values = prepare_values(weights, self.layout, reference, f"{self.name}: weights", check_finite=False)
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

    @property
    def first_order_period_px(self) -> int:
        """The grating period (px): frames are read in the first order of this carrier."""
        return self.grating_period_px

    def isolated_blocks(self, n: int, crosstalk_px: float) -> BlazedEncoder:
        """This encoder for a column of ``n`` isolated blocks (no neighbour leakage under a crosstalk
        of ``crosstalk_px``, px) that keep block column 0's alignment modulo the grating period
        and the checkerboard parity: the same pixel pattern."""
        layout, shape = isolated_layout(self.layout, n, crosstalk_px, math.lcm(2, self.grating_period_px))
        return BlazedEncoder(layout, shape, self.lut, self.grating_period_px, background=self.background,
                             name=f"{self.name} (table)", double_phase=self.double_phase)

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
