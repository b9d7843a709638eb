"""Helpers shared by the panel encoders (:mod:`hwio.double_phase`, :mod:`hwio.blazed`, :mod:`hwio.dmd`).

Argument checks (panel shape, weight range, output frame, background), the active-pixel
geometry of a :class:`hwio.layout.BlockLayout`, the panel-row -> pattern-row map every encoder
uses for its final row copy, the layout of isolated blocks for transfer tables, and Bayer ranks.
"""
from __future__ import annotations

import math

import numpy as np

from hwio.layout import BlockLayout
from hwio.response import DoublePhaseRange, InverseLUT

__all__ = ["TWO_PI", "check_shape", "check_phase_args", "check_background", "weight_range", "active_geometry",
           "row_source", "prepare_values", "checked_out", "isolated_layout", "bayer_ranks"]

TWO_PI = 2.0 * math.pi


def check_shape(slm_shape) -> tuple[int, int]:
    """``slm_shape`` as (rows, cols) ints > 0 (px), or a one-line ValueError."""
    if len(slm_shape) != 2 or min(slm_shape) <= 0:
        raise ValueError(f"SLM shape must be (rows, cols) > 0, got {tuple(slm_shape)}")
    return int(slm_shape[0]), int(slm_shape[1])


def check_phase_args(name: str, lut, double_phase) -> DoublePhaseRange:
    """Type checks of a phase encoder's ``lut`` and ``double_phase``; returns the panel's range
    (``double_phase``, or the LUT's when None)."""
    if not isinstance(lut, InverseLUT):
        raise TypeError(f"{name}: lut must be an hwio.response.InverseLUT (build one with "
                        f"PhaseResponse.inverse()), got {type(lut).__name__}")
    if double_phase is not None and not isinstance(double_phase, DoublePhaseRange):
        raise TypeError(f"{name}: double_phase must be an hwio.response.DoublePhaseRange "
                        f"(PhaseResponse.double_phase_range()), got {type(double_phase).__name__}")
    return lut.double_phase if double_phase is None else double_phase


def check_background(name: str, background, bit_depth: int) -> None:
    """A phase encoder's ``background``: ``"zero"`` or a level 0 .. 2**bit_depth - 1, else ValueError."""
    max_level = 2 ** bit_depth - 1
    if isinstance(background, str):
        ok = background == "zero"
    else:
        ok = not isinstance(background, bool) and int(background) == background and 0 <= background <= max_level
    if not ok:
        raise ValueError(f"{name}: background must be 'zero' or a level 0..{max_level}, got {background!r}")


def weight_range(name: str, absw: np.ndarray, w_max) -> float:
    """The weight range of one encode: ``w_max`` checked (finite, > 0, not exceeded by ``absw``),
    or the largest |w| when it is None (1 for all-zero weights).  Non-finite weights raise
    ValueError (the check :func:`prepare_values` skips with ``check_finite=False``)."""
    peak = float(absw.max()) if absw.size else 0.0
    if not math.isfinite(peak):
        raise ValueError(f"{name}: weights contain NaN or inf; fix the source before encoding")
    if w_max is None:
        return peak if peak > 0 else 1.0
    w_max = float(w_max)
    if not (math.isfinite(w_max) and w_max > 0):
        raise ValueError(f"{name}: w_max must be a finite number > 0, got {w_max}")
    if peak > w_max * (1 + 1e-12):
        raise ValueError(f"{name}: |weights| reach {peak:.6g} > w_max = {w_max:.6g}; "
                         f"raise w_max or rescale the weights")
    return w_max


def active_geometry(layout: BlockLayout) -> tuple[int, int, int, int]:
    """(first active row, first active column, active rows, active columns) of block (0, 0), px."""
    g = layout.guard_px
    bh, bw = layout.block_px[0] - 2 * g, layout.block_px[1] - 2 * g
    r0, c0 = layout.origin_px[0] + g, layout.origin_px[1] + g
    return r0, c0, bh, bw


def row_source(layout: BlockLayout, n_rows_panel: int, rows_per_block: int, parity: bool,
               bg_by_parity: bool = False) -> np.ndarray:
    """Panel row -> pattern row index (intp, ``n_rows_panel``).

    Active row ``a`` of block row ``i`` reads pattern row ``i * rows_per_block + a`` (``a % 2``
    with ``parity``); every other row reads the background row ``n_rows * rows_per_block``
    (+ the panel row's parity with ``bg_by_parity``).
    """
    r0, _, bh, _ = active_geometry(layout)
    n_pat = layout.n_rows * rows_per_block
    src = np.full(n_rows_panel, n_pat, dtype=np.intp)
    if bg_by_parity:
        src += np.arange(n_rows_panel) % 2
    a = np.arange(bh)
    rows = r0 + np.arange(layout.n_rows)[:, None] * layout.pitch_px[0] + a[None, :]
    local = (a % 2) if parity else a
    src[rows.ravel()] = (np.arange(layout.n_rows)[:, None] * rows_per_block + local[None, :]).ravel()
    return src


def prepare_values(values, layout: BlockLayout, reference, what: str, allow_1d: bool = False,
                   check_finite: bool = True) -> np.ndarray:
    """The (n_rows, n_block_cols) float values of one encode: ``values`` checked (shape, finite
    unless ``check_finite`` is False: callers that pass them to :func:`weight_range`, which
    checks) with the ``reference`` column appended on layouts that have one (default 0)."""
    v = np.asarray(values, dtype=float)
    if allow_1d and v.ndim == 1 and layout.n_rows == 1:
        v = v[None, :]
    if v.shape != (layout.n_rows, layout.n_cols):
        raise ValueError(f"{what} have shape {v.shape}, the layout holds ({layout.n_rows}, {layout.n_cols}) "
                         f"(n_rows = outputs, n_cols = inputs); transpose or re-train with matching sizes")
    if check_finite and not np.all(np.isfinite(v)):
        raise ValueError(f"{what} contain NaN or inf; fix the source before encoding")
    if layout.reference_col:
        ref = np.zeros(layout.n_rows) if reference is None else np.asarray(reference, dtype=float).ravel()
        if ref.shape != (layout.n_rows,) or not np.all(np.isfinite(ref)):
            raise ValueError(f"reference must be {layout.n_rows} finite values (one per row), got {ref.shape}")
        v = np.concatenate([v, ref[:, None]], axis=1)
    elif reference is not None:
        raise ValueError("a reference was given but the layout has no reference column (reference_col=False)")
    return v


def checked_out(name: str, out, shape: tuple[int, int], dtype) -> np.ndarray:
    """``out`` when it is a C-contiguous ``dtype`` frame of ``shape``, a new frame when None, else ValueError."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"{name}: out must be a C-contiguous {np.dtype(dtype)} array of shape {shape}, "
                         f"got {out.dtype} {out.shape}")
    return out


def isolated_layout(layout: BlockLayout, n: int, crosstalk_px: float,
                    col_period: int | None = None) -> tuple[BlockLayout, tuple[int, int]]:
    """Layout and panel shape (px) of a column of ``n`` blocks like ``layout``'s, far enough apart
    that a crosstalk of ``crosstalk_px`` (Gaussian sigma, px) does not reach a neighbour.

    The margin is even, so block-local and panel checkerboard parities agree as on ``layout``;
    with ``col_period`` the first active column keeps its alignment modulo that period (px).
    """
    margin = 2 * int(math.ceil(2 + 2 * crosstalk_px))
    margin_c = margin
    if col_period is not None:
        margin_c = margin + (layout.origin_px[1] - margin) % col_period
    pitch = (layout.block_px[0] + 2 * margin, layout.block_px[1] + margin + margin_c)
    single = BlockLayout(n, 1, block_px=layout.block_px, pitch_px=pitch, origin_px=(margin, margin_c),
                         guard_px=layout.guard_px)
    return single, (margin + n * pitch[0], margin_c + pitch[1])


def bayer_ranks(shape: tuple[int, int]) -> np.ndarray:
    """Ranks 0..n-1 (int) of the pixels of a block for ordered dithering.

    Ranks follow a Bayer threshold matrix (cropped to ``shape``), so switching on the
    pixels with rank < k spreads them evenly over the block for every k.

    Parameters
    ----------
    shape : (rows, cols) of the block, px (> 0).

    Returns
    -------
    (rows, cols) int64 array holding every rank 0 .. rows * cols - 1 once.
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
