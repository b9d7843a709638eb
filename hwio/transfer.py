"""What a level frame realises on a phase panel, and the exact amplitude transfer of an encoder.

:func:`realised_weights` is the forward model of a level frame (zero order, or the first order of a
blazed grating); :func:`amplitude_transfer` tabulates the staircase an encoder realises for every
programmed amplitude fraction.  It works with any encoder that offers ``transfer_codes(a)``
(what it shows for the fractions ``a``, as comparable integer codes), ``isolated_blocks(n,
crosstalk_px)`` (the same encoder for a column of ``n`` isolated blocks), ``encode``, ``layout``,
``phase_offset_rad`` and ``first_order_period_px`` (None: zero order), as
:class:`hwio.double_phase.PhaseEncoder` and :class:`hwio.blazed.BlazedEncoder` do.
"""
from __future__ import annotations

import math

import numpy as np

from hwio.encoder_common import active_geometry
from hwio.layout import BlockLayout
from hwio.response import PhaseResponse

__all__ = ["realised_weights", "amplitude_transfer", "isolated_block_values"]


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
        the columns (:class:`hwio.blazed.BlazedEncoder`): the blurred field is multiplied by the conjugate
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
    r0, c0, bh, bw = active_geometry(layout)
    rows = r0 + np.arange(layout.n_rows)[:, None] * layout.pitch_px[0] + np.arange(bh)[None, :]
    cols = c0 + np.arange(layout.n_block_cols)[:, None] * layout.pitch_px[1] + np.arange(bw)[None, :]
    blocks = field[rows.ravel()][:, cols.ravel()].reshape(layout.n_rows, bh, layout.n_block_cols, bw)
    e = blocks.mean(axis=(1, 3)) * float(w_max)
    if not include_reference:
        e = e[:, :layout.n_cols]
    return e if complex_field else e.real


def amplitude_transfer(encoder, response: PhaseResponse, crosstalk_px: float = 0.0,
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

    Parameters
    ----------
    encoder : a phase encoder (:class:`hwio.double_phase.PhaseEncoder`,
        :class:`hwio.blazed.BlazedEncoder`; module notes).
    response : forward phase response of the panel (true or calibrated).
    crosstalk_px : Gaussian sigma of the pixel crosstalk, px (0 = none).
    n_scan : programmed fractions scanned before bisecting (>= 3).
    tol : width in ``A`` (fraction of full scale) to which every step is located.

    Returns
    -------
    (edges, values) : (m,) increasing step positions in A and (m + 1,) realised fractions;
    ``A`` realises ``values[searchsorted(edges, A, side='right')]``.
    """
    if n_scan < 3:
        raise ValueError(f"n_scan must be >= 3, got {n_scan}")

    pairs = encoder.transfer_codes
    period = encoder.first_order_period_px
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
    enc = encoder.isolated_blocks(chunk, crosstalk_px)
    if period is None:
        cos_level = np.cos(response.phase_rad - encoder.phase_offset_rad)
    else:           # complex pixel fields on the sign axis; the carrier enters the column weights
        cos_level = np.exp(1j * (response.phase_rad - encoder.phase_offset_rad))
    values = np.empty(reps.size)
    padded = np.zeros((chunk, 1))
    for start in range(0, reps.size, chunk):
        part = reps[start:start + chunk]
        padded[:part.size, 0] = part
        frame = enc.encode(padded, w_max=1.0)
        values[start:start + part.size] = isolated_block_values(
            frame, enc.layout, cos_level, crosstalk_px, period)[:part.size]
    return edges, values


def isolated_block_values(levels, layout: BlockLayout, cos_level: np.ndarray, crosstalk_px: float,
                          first_order_period_px: int | None = None) -> np.ndarray:
    """:func:`realised_weights` (real part, ``w_max`` 1) of a column of isolated blocks
    (an encoder's ``isolated_blocks``), one value per block.

    The blurred block mean is linear in the field: every block's value is ``k_r^T F k_c`` over
    its own tile (one pitch), with ``k_r``, ``k_c`` the blur of the active rows' / columns'
    indicator divided by their count (the kernel is symmetric), so no full-frame blur is needed;
    the weights are real, so only ``Re F = cos(phase)`` (``cos_level[level]``) enters.
    First order (``first_order_period_px``): ``cos_level`` holds the complex pixel fields and the
    column weights are the blur of the active columns' conjugate carrier (the real part of the
    product is returned).
    """
    r0, c0, bh, bw = active_geometry(layout)
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
