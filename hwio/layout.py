"""Geometry of a bench: where matrix elements sit on an SLM, where output spots sit.

Coordinates are (row, col) in pixels, row first, as everywhere in optwin.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["BlockLayout", "SpotLayout"]


def _pair(value, name) -> tuple[int, int]:
    arr = np.broadcast_to(np.asarray(value, dtype=int), (2,))
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(arr[0]), int(arr[1])


@dataclass(frozen=True)
class BlockLayout:
    """Pixel blocks that hold an ``n_rows x n_cols`` matrix on an SLM.

    Element (i, j) occupies the block whose top-left pixel is
    ``origin_px + (i * pitch_px[0], j * pitch_px[1])`` and whose size is
    ``block_px``; the outer ``guard_px`` pixels of every block are not
    modulated (they hold the background level).  With ``reference_col`` an
    extra block column (index ``n_cols``) carries one homodyne reference field
    per row.

    Parameters
    ----------
    n_rows, n_cols : matrix shape (outputs, inputs).
    block_px : (height, width) of one block in pixels.
    pitch_px : (row, col) distance between neighbouring block origins in pixels.
    origin_px : (row, col) of the top-left pixel of block (0, 0).
    guard_px : unmodulated border of each block, in pixels.
    reference_col : whether a reference block column follows the matrix.
    """

    n_rows: int
    n_cols: int
    block_px: tuple[int, int] = (8, 8)
    pitch_px: tuple[int, int] = (8, 8)
    origin_px: tuple[int, int] = (0, 0)
    guard_px: int = 0
    reference_col: bool = False

    def __post_init__(self):
        if self.n_rows <= 0 or self.n_cols <= 0:
            raise ValueError(f"layout needs n_rows, n_cols > 0, got {self.n_rows}, {self.n_cols}")
        object.__setattr__(self, "block_px", _pair(self.block_px, "block_px"))
        object.__setattr__(self, "pitch_px", _pair(self.pitch_px, "pitch_px"))
        object.__setattr__(self, "origin_px", _pair(self.origin_px, "origin_px"))
        if self.pitch_px[0] < self.block_px[0] or self.pitch_px[1] < self.block_px[1]:
            raise ValueError(f"pitch_px {self.pitch_px} must be >= block_px {self.block_px} (blocks overlap)")
        if 2 * self.guard_px >= min(self.block_px):
            raise ValueError(f"guard_px {self.guard_px} leaves no active pixels in blocks of {self.block_px}")

    @property
    def n_block_cols(self) -> int:
        """Block columns including the reference column."""
        return self.n_cols + (1 if self.reference_col else 0)

    @property
    def extent_px(self) -> tuple[int, int]:
        """(rows, cols) of the smallest panel that holds the layout."""
        return (self.origin_px[0] + (self.n_rows - 1) * self.pitch_px[0] + self.block_px[0],
                self.origin_px[1] + (self.n_block_cols - 1) * self.pitch_px[1] + self.block_px[1])

    def check_fits(self, slm_shape: tuple[int, int], name: str = "SLM") -> None:
        """Raise ValueError if the layout does not fit a panel of ``slm_shape``."""
        ext = self.extent_px
        if ext[0] > slm_shape[0] or ext[1] > slm_shape[1]:
            raise ValueError(f"{name}: layout of {self.n_rows}x{self.n_cols} blocks needs {ext} pixels, "
                             f"the panel has {tuple(slm_shape)}; reduce block_px/pitch_px or the matrix size")

    def block_origin(self, i: int, j: int) -> tuple[int, int]:
        """Top-left pixel of block (i, j); j == n_cols is the reference block."""
        return (self.origin_px[0] + i * self.pitch_px[0], self.origin_px[1] + j * self.pitch_px[1])

    def active_slices(self, i: int, j: int) -> tuple[slice, slice]:
        """Slices of the modulated (non-guard) pixels of block (i, j)."""
        r0, c0 = self.block_origin(i, j)
        g = self.guard_px
        return (slice(r0 + g, r0 + self.block_px[0] - g), slice(c0 + g, c0 + self.block_px[1] - g))

    def element_map(self, slm_shape: tuple[int, int]) -> np.ndarray:
        """Integer map (rows, cols): flat element index ``i * n_block_cols + j`` of every active pixel, else -1."""
        self.check_fits(slm_shape)
        out = np.full(slm_shape, -1, dtype=np.int32)
        g = self.guard_px
        bh, bw = self.block_px[0] - 2 * g, self.block_px[1] - 2 * g
        rows = (self.origin_px[0] + g + np.arange(self.n_rows)[:, None] * self.pitch_px[0]
                + np.arange(bh)[None, :]).ravel()
        cols = (self.origin_px[1] + g + np.arange(self.n_block_cols)[:, None] * self.pitch_px[1]
                + np.arange(bw)[None, :]).ravel()
        ii = np.repeat(np.arange(self.n_rows), bh)
        jj = np.repeat(np.arange(self.n_block_cols), bw)
        out[np.ix_(rows, cols)] = ii[:, None] * self.n_block_cols + jj[None, :]
        return out

    def block_centers_px(self) -> np.ndarray:
        """(n_rows, n_block_cols, 2) array of block centres (row, col) in pixels."""
        i = np.arange(self.n_rows)[:, None]
        j = np.arange(self.n_block_cols)[None, :]
        r = self.origin_px[0] + i * self.pitch_px[0] + (self.block_px[0] - 1) / 2.0
        c = self.origin_px[1] + j * self.pitch_px[1] + (self.block_px[1] - 1) / 2.0
        return np.stack(np.broadcast_arrays(r, c), axis=-1).astype(float)

    def to_dict(self) -> dict:
        return {"n_rows": self.n_rows, "n_cols": self.n_cols, "block_px": list(self.block_px),
                "pitch_px": list(self.pitch_px), "origin_px": list(self.origin_px),
                "guard_px": self.guard_px, "reference_col": self.reference_col}


@dataclass(frozen=True)
class SpotLayout:
    """Nominal positions of ``n`` output spots in the layout frame (pixels, row first).

    The camera sees spot k at ``T(positions_px[k])`` where ``T`` is the
    layout-to-camera registration (rotation, scale, offset) that calibration
    measures.  Spots sit on a grid of ``grid`` = (rows, cols) with ``pitch_px``
    spacing starting at ``origin_px``; the grid is 2-D whenever ``n`` > cols so
    that an affine registration is well determined.
    """

    n: int
    grid: tuple[int, int]
    pitch_px: float = 24.0
    origin_px: tuple[float, float] = (0.0, 0.0)
    positions_px: np.ndarray = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        gr, gc = int(self.grid[0]), int(self.grid[1])
        if self.n <= 0 or gr * gc < self.n:
            raise ValueError(f"spot grid {self.grid} cannot hold {self.n} spots")
        k = np.arange(self.n)
        pos = np.stack([self.origin_px[0] + (k // gc) * self.pitch_px,
                        self.origin_px[1] + (k % gc) * self.pitch_px], axis=1).astype(float)
        object.__setattr__(self, "grid", (gr, gc))
        object.__setattr__(self, "positions_px", pos)

    @classmethod
    def square(cls, n: int, pitch_px: float = 24.0, origin_px=(0.0, 0.0)) -> "SpotLayout":
        """A near-square grid (at least 2 rows when n >= 3)."""
        cols = max(1, int(np.ceil(np.sqrt(n))))
        rows = int(np.ceil(n / cols))
        if rows == 1 and n >= 3:
            cols = int(np.ceil(n / 2))
            rows = 2
        return cls(n=n, grid=(rows, cols), pitch_px=pitch_px, origin_px=tuple(origin_px))

    def to_dict(self) -> dict:
        return {"n": self.n, "grid": list(self.grid), "pitch_px": self.pitch_px,
                "origin_px": list(self.origin_px)}
