"""Phase response of a phase-only SLM: the forward table phase(level) and its inverse LUT.

A :class:`PhaseResponse` holds the phase (rad) that every gray level produces, as
measured by calibration or as a nominal curve.  Its :meth:`PhaseResponse.inverse`
builds an :class:`InverseLUT`: a table on a uniform grid of target phases over one
turn, ``phase_min_rad + 2 pi k / n_bins``, holding for every grid phase the level
whose phase is nearest on the circle.  Encoding wraps any target phase modulo
2 pi onto that grid (rounding to the nearest grid point), so a lookup is two
vectorised operations.

Wrapping rule (ranges above 2 pi): targets are taken modulo 2 pi into ``[phase_min_rad,
phase_min_rad + 2 pi)``; when the measured range exceeds 2 pi, a level beyond
``phase_min_rad + 2 pi`` is used where it lies nearer (on the circle) to the target.  Where
two turns of the table overlap their levels interleave on the circle, so the LUT sees up to
twice the phase resolution of one turn (a 4 pi table of 256 levels resolves the circle like
a 2 pi table of 256 levels).  A rule that instead keeps a block's two pixel levels in one
continuous turn (no level jump of a turn inside a block) was measured against this one on
the simulator's crosstalk model (a Gaussian blur of the complex pixel field, where levels a
turn apart give the same field): it realises 1.0-1.5x *larger* weight errors (it loses the
interleaving), so the nearest-on-the-circle rule stays.

Ranges below 2 pi (:class:`DoublePhaseRange`).  A double-phase element shows ``A exp(i s)``
as the two pixel phases ``s +- delta``, ``A = cos(delta)``, with ``s = phi0`` (positive) or
``phi0 + pi`` (negative).  For ``|A| <= A_max`` the pixel phases cover the circle except two
opposite arcs ``(phi0 - d, phi0 + d)`` and ``(phi0 + pi - d, phi0 + pi + d)``, ``d =
arccos(A_max)``.  The panel cannot reach the gap ``(phase_max, phase_min + 2 pi)`` of width
``g = 2 pi - range``; every target stays reachable iff the gap lies inside one of those arcs,
i.e. ``2 d >= g``, so the largest common amplitude range is

    A_max = cos(g / 2),   with the gap centred on one sign's centre phase

(any other offset needs ``d >= g / 2 + |offset from the centre|``).  The offset ``phi0`` is the
gap centre or the gap centre minus pi, whichever lies nearer phase 0 (the panel's level-0
phase: the positive weights keep the phase they have on a full-range panel, up to
``|phi0| <= g / 2``).  Targets with ``|A| <= A_max`` never fall into the gap; the LUT maps
the gap to the nearer end level (level 0 or the top level) like any unreachable phase.  A
range within one level step of 2 pi counts as a full turn (``A_max = 1``, ``phi0 = 0``).

File format (the calibration file stores this under ``/slm/<name>/inverse_lut``):
an integer dataset of ``n_bins`` levels with attributes ``phase_min_rad``,
``bit_depth`` and ``units`` (see :meth:`InverseLUT.to_hdf5`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["PhaseResponse", "InverseLUT", "DoublePhaseRange", "FULL_RANGE"]

TWO_PI = 2.0 * math.pi


def _bit_depth_for(n_levels: int) -> int:
    bits = int(round(math.log2(n_levels)))
    if 2 ** bits != n_levels or not 1 <= bits <= 16:
        raise ValueError(f"a response table needs 2**bit_depth entries (bit_depth 1..16), got {n_levels}")
    return bits


@dataclass(frozen=True)
class DoublePhaseRange:
    """What a panel's phase range leaves for double-phase encoding (module notes).

    Parameters
    ----------
    gap_centre_rad : centre of the unreachable phase arc (rad, in (-pi, pi]).
    gap_width_rad : width ``g`` of that arc (rad, 0 <= g < 2 pi); 0 for a full turn.

    Attributes (derived)
    --------------------
    amplitude_max : ``cos(g / 2)``, the largest ``|A|`` both signs reach.
    phase_offset_rad : ``phi0``, the centre phase of positive weights (rad, ``|phi0| <= pi / 2``).
    """

    gap_centre_rad: float = 0.0
    gap_width_rad: float = 0.0

    def __post_init__(self):
        if not (math.isfinite(self.gap_centre_rad) and math.isfinite(self.gap_width_rad)
                and 0.0 <= self.gap_width_rad < TWO_PI):
            raise ValueError(f"double-phase range needs a finite gap centre and a gap width in [0, 2 pi), "
                             f"got {self.gap_centre_rad}, {self.gap_width_rad}")

    @classmethod
    def of_table(cls, phase_rad) -> "DoublePhaseRange":
        """The range of a non-decreasing phase table (rad per level); a full turn within one
        level step gives :data:`FULL_RANGE`."""
        t = np.asarray(phase_rad, dtype=float)
        span = float(t[-1] - t[0])
        step = float(np.max(np.diff(t))) if t.size > 1 else 0.0
        if span + step >= TWO_PI - 1e-9:
            return FULL_RANGE
        centre = float(np.angle(np.exp(1j * (t[-1] + 0.5 * (TWO_PI - span)))))
        return cls(centre, TWO_PI - span)

    @property
    def full(self) -> bool:
        """Whether every phase is reachable (no gap)."""
        return self.gap_width_rad == 0.0

    @property
    def amplitude_max(self) -> float:
        return math.cos(0.5 * self.gap_width_rad)

    @property
    def phase_offset_rad(self) -> float:
        if self.full:
            return 0.0
        other = float(np.angle(np.exp(1j * (self.gap_centre_rad - math.pi))))
        return self.gap_centre_rad if abs(self.gap_centre_rad) <= abs(other) else other

    def as_dict(self) -> dict:
        """JSON-able record (what a calibration stores under ``info['double_phase']``)."""
        return {"gap_centre_rad": self.gap_centre_rad, "gap_width_rad": self.gap_width_rad,
                "amplitude_max": self.amplitude_max, "phase_offset_rad": self.phase_offset_rad}

    @classmethod
    def from_dict(cls, record) -> "DoublePhaseRange":
        """Inverse of :meth:`as_dict` (only the gap enters; the rest is derived)."""
        return cls(float(record["gap_centre_rad"]), float(record["gap_width_rad"]))


FULL_RANGE = DoublePhaseRange()
"""A panel that reaches every phase: ``amplitude_max`` 1, ``phase_offset_rad`` 0."""


class PhaseResponse:
    """Forward response of a phase-only panel: ``phase_rad[level]``.

    Parameters
    ----------
    phase_rad : 1-D array of ``2**bit_depth`` phases (rad), one per level, non-decreasing
        with ``phase_rad[-1] > phase_rad[0]`` (use :meth:`from_measured` for noisy or
        sparse measurements).
    name : device name used in messages.
    """

    def __init__(self, phase_rad, name: str = "SLM"):
        table = np.asarray(phase_rad, dtype=float)
        if table.ndim != 1:
            raise ValueError(f"{name}: phase table must be 1-D (one phase per level), got shape {table.shape}")
        self.bit_depth = _bit_depth_for(table.size)
        if not np.all(np.isfinite(table)):
            raise ValueError(f"{name}: phase table contains NaN/inf; re-measure or interpolate the gaps")
        if np.any(np.diff(table) < 0) or not table[-1] > table[0]:
            raise ValueError(f"{name}: phase table must be non-decreasing and rising overall; "
                             f"build it with PhaseResponse.from_measured(...) to enforce monotonicity")
        self.name = name
        self.phase_rad = table
        self.phase_rad.setflags(write=False)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def linear(cls, bit_depth: int, phase_range_rad: float = TWO_PI, phase_offset_rad: float = 0.0,
               name: str = "SLM") -> "PhaseResponse":
        """Ideal response ``phase = offset + range * level / max_level`` (rad)."""
        return cls.power_law(bit_depth, phase_range_rad, 1.0, phase_offset_rad, name)

    @classmethod
    def power_law(cls, bit_depth: int, phase_range_rad: float, gamma: float = 1.0,
                  phase_offset_rad: float = 0.0, name: str = "SLM") -> "PhaseResponse":
        """Response ``phase = offset + range * (level / max_level)**gamma`` (rad)."""
        if not (phase_range_rad > 0 and gamma > 0):
            raise ValueError(f"{name}: phase_range_rad and gamma must be > 0, got {phase_range_rad}, {gamma}")
        levels = np.arange(2 ** int(bit_depth), dtype=float)
        return cls(phase_offset_rad + phase_range_rad * (levels / levels[-1]) ** gamma, name)

    @classmethod
    def from_measured(cls, levels, phase_rad, bit_depth: int, name: str = "SLM") -> "PhaseResponse":
        """Table for every level from measured (level, phase) pairs.

        Linear interpolation between measured levels (constant beyond the ends),
        then a running maximum so the table is non-decreasing (noise dips are
        flattened, not inverted).
        """
        lv = np.asarray(levels, dtype=float).ravel()
        ph = np.asarray(phase_rad, dtype=float).ravel()
        if lv.size != ph.size or lv.size < 2:
            raise ValueError(f"{name}: need >= 2 (level, phase) pairs of equal length, got {lv.size}, {ph.size}")
        order = np.argsort(lv)
        full = np.interp(np.arange(2 ** int(bit_depth), dtype=float), lv[order], ph[order])
        return cls(np.maximum.accumulate(full), name)

    # ------------------------------------------------------------------ properties
    @property
    def n_levels(self) -> int:
        return self.phase_rad.size

    @property
    def max_level(self) -> int:
        return self.phase_rad.size - 1

    @property
    def phase_min_rad(self) -> float:
        return float(self.phase_rad[0])

    @property
    def range_rad(self) -> float:
        """Phase span from level 0 to the top level (rad)."""
        return float(self.phase_rad[-1] - self.phase_rad[0])

    @property
    def max_step_rad(self) -> float:
        """Largest phase step between neighbouring levels (rad)."""
        return float(np.max(np.diff(self.phase_rad)))

    def covers_full_turn(self) -> bool:
        """Whether every phase on the circle lies within half a level step of some level."""
        return self.range_rad + self.max_step_rad >= TWO_PI - 1e-9

    def phase(self, levels) -> np.ndarray:
        """Phase (rad) of integer ``levels`` (any shape)."""
        lv = np.asarray(levels)
        if lv.dtype.kind not in "iu":
            raise TypeError(f"{self.name}: levels must be integers, got dtype {lv.dtype}")
        if lv.size and (lv.min() < 0 or lv.max() > self.max_level):
            raise ValueError(f"{self.name}: levels must lie in 0..{self.max_level}, got {lv.min()}..{lv.max()}")
        return self.phase_rad[lv]

    # ------------------------------------------------------------------ inverse
    def inverse(self, n_bins: int | None = None) -> "InverseLUT":
        """Inverse LUT (phase -> nearest level on the circle) on ``n_bins`` grid phases.

        ``n_bins`` defaults to ``max(4096, 8 * n_levels)`` so the grid adds at most
        1/16 of a level step to the quantisation error.  A response spanning less than
        2 pi gives a LUT whose ``double_phase`` (:class:`DoublePhaseRange`) records the gap,
        the reduced amplitude range ``amplitude_max`` and the offset phase the encoder uses
        (module notes); phases in the gap map to the nearer end level.
        """
        n = int(n_bins) if n_bins is not None else max(4096, 8 * self.n_levels)
        if n < 2:
            raise ValueError(f"{self.name}: n_bins must be >= 2, got {n}")
        grid = self.phase_min_rad + TWO_PI * np.arange(n) / n
        table = self.phase_rad
        # nearest level on the circle: candidates around grid - 2pi, grid, grid + 2pi
        best = np.zeros(n, dtype=np.int64)
        best_err = np.full(n, np.inf)
        for shift in (-TWO_PI, 0.0, TWO_PI):
            target = grid + shift
            hi = np.clip(np.searchsorted(table, target), 0, table.size - 1)
            for cand in (hi, np.maximum(hi - 1, 0)):
                err = np.abs(table[cand] - target)
                better = err < best_err
                best[better] = cand[better]
                best_err[better] = err[better]
        return InverseLUT(best, self.phase_min_rad, self.bit_depth, name=self.name,
                          double_phase=self.double_phase_range())

    def double_phase_range(self) -> DoublePhaseRange:
        """The gap, ``amplitude_max`` and offset phase of double-phase encoding on this panel."""
        return DoublePhaseRange.of_table(self.phase_rad)

    def to_hdf5(self, group, name: str = "phase_table_rad"):
        """Store the table as dataset ``name`` of ``group`` (units rad)."""
        d = group.create_dataset(name, data=self.phase_rad)
        d.attrs["units"] = "rad"
        d.attrs["description"] = "phase of every gray level (index = level)"
        return d

    @classmethod
    def from_hdf5(cls, dataset, name: str = "SLM") -> "PhaseResponse":
        return cls(dataset[()], name)

    def __repr__(self):
        return (f"PhaseResponse(name={self.name!r}, bit_depth={self.bit_depth}, "
                f"range_rad={self.range_rad:.4f}, phase_min_rad={self.phase_min_rad:.4f})")


class InverseLUT:
    """Target phase -> level table on a uniform grid of one turn.

    Grid point ``k`` is the phase ``phase_min_rad + 2 pi k / n_bins``; a target phase is
    wrapped modulo 2 pi and rounded to the nearest grid point.

    Parameters
    ----------
    levels : integer array (n_bins,), the level to use at each grid phase.
    phase_min_rad : phase of grid point 0 (rad).
    bit_depth : bit depth of the panel the levels are for.
    double_phase : :class:`DoublePhaseRange` of the panel (default :data:`FULL_RANGE`): a
        panel short of 2 pi encodes with ``amplitude_max`` < 1 around ``phase_offset_rad``
        (:class:`hwio.encoding.PhaseEncoder` reads it from here).
    """

    def __init__(self, levels, phase_min_rad: float = 0.0, bit_depth: int = 8, name: str = "SLM",
                 double_phase: DoublePhaseRange | None = None):
        lv = np.asarray(levels)
        if lv.ndim != 1 or lv.size < 2:
            raise ValueError(f"{name}: inverse LUT must be a 1-D table of >= 2 levels, got shape {lv.shape}")
        if lv.dtype.kind not in "iu":
            raise TypeError(f"{name}: inverse LUT entries must be integer levels, got dtype {lv.dtype}")
        if not 1 <= int(bit_depth) <= 16:
            raise ValueError(f"{name}: bit_depth must be 1..16, got {bit_depth}")
        max_level = 2 ** int(bit_depth) - 1
        if lv.min() < 0 or lv.max() > max_level:
            raise ValueError(f"{name}: inverse LUT levels must lie in 0..{max_level} ({bit_depth} bit), "
                             f"got {lv.min()}..{lv.max()}")
        if not math.isfinite(phase_min_rad):
            raise ValueError(f"{name}: phase_min_rad must be finite, got {phase_min_rad}")
        self.name = name
        self.bit_depth = int(bit_depth)
        self.level_dtype = np.dtype(np.uint8 if self.bit_depth <= 8 else np.uint16)
        self.levels = np.ascontiguousarray(lv, dtype=self.level_dtype)
        self.levels.setflags(write=False)
        self.phase_min_rad = float(phase_min_rad)
        self.bins_per_rad = self.levels.size / TWO_PI
        if double_phase is not None and not isinstance(double_phase, DoublePhaseRange):
            raise TypeError(f"{name}: double_phase must be an hwio.response.DoublePhaseRange, "
                            f"got {type(double_phase).__name__}")
        self.double_phase = FULL_RANGE if double_phase is None else double_phase

    @property
    def n_bins(self) -> int:
        return self.levels.size

    @property
    def bin_width_rad(self) -> float:
        return TWO_PI / self.levels.size

    def grid_index(self, phase_rad) -> np.ndarray:
        """Grid index (int64) of target phases (rad, any shape), wrapped modulo 2 pi."""
        x = (np.asarray(phase_rad, dtype=float) - self.phase_min_rad) * self.bins_per_rad
        k = np.floor(x + 0.5).astype(np.int64)
        k %= self.levels.size
        return k

    def __call__(self, phase_rad) -> np.ndarray:
        """Levels (``level_dtype``) for target phases (rad, any shape)."""
        return self.levels[self.grid_index(phase_rad)]

    def max_phase_error_rad(self, response: PhaseResponse) -> float:
        """Worst phase error (rad, on the circle) of any target phase, given the true response.

        Half a grid bin plus the largest distance between a grid phase and the phase of
        its level.
        """
        if response.bit_depth != self.bit_depth:
            raise ValueError(f"{self.name}: LUT is for {self.bit_depth} bit, response has {response.bit_depth}")
        grid = self.phase_min_rad + TWO_PI * np.arange(self.n_bins) / self.n_bins
        d = np.angle(np.exp(1j * (response.phase_rad[self.levels.astype(np.int64)] - grid)))
        return float(np.max(np.abs(d)) + 0.5 * self.bin_width_rad)

    def to_hdf5(self, group, name: str = "inverse_lut"):
        """Store as dataset ``name`` of ``group`` with attrs phase_min_rad, bit_depth, units."""
        d = group.create_dataset(name, data=self.levels)
        d.attrs["phase_min_rad"] = self.phase_min_rad
        d.attrs["bit_depth"] = self.bit_depth
        d.attrs["units"] = "level"
        d.attrs["description"] = ("level for target phase phase_min_rad + 2*pi*k/n_bins (k = index); "
                                  "targets are wrapped modulo 2*pi and rounded to the nearest k")
        if not self.double_phase.full:
            d.attrs["gap_centre_rad"] = self.double_phase.gap_centre_rad
            d.attrs["gap_width_rad"] = self.double_phase.gap_width_rad
            d.attrs["amplitude_max"] = self.double_phase.amplitude_max
        return d

    @classmethod
    def from_grid(cls, levels, phase_grid_rad, bit_depth: int, name: str = "SLM",
                  double_phase: DoublePhaseRange | None = None) -> "InverseLUT":
        """Table given with its grid of target phases; the grid must be uniform over one turn.

        ``phase_grid_rad[k]`` must equal ``phase_grid_rad[0] + 2 pi k / n`` (a grid spanning
        less than a turn means the response cannot reach every phase: ValueError).
        """
        grid = np.asarray(phase_grid_rad, dtype=float).ravel()
        lv = np.asarray(levels)
        if grid.shape != lv.shape or grid.size < 2:
            raise ValueError(f"{name}: inverse LUT has {lv.size} levels but {grid.size} grid phases")
        expected = grid[0] + TWO_PI * np.arange(grid.size) / grid.size
        if not np.allclose(grid, expected, rtol=0, atol=1e-6 * TWO_PI):
            span = float(grid[-1] - grid[0]) * grid.size / (grid.size - 1)
            raise ValueError(f"{name}: inverse LUT grid covers {span:.3f} rad, not one uniform turn of 2 pi; "
                             f"re-run the SLM calibration ('optwin calibrate --only slm'), which writes a "
                             f"full-turn grid for any phase range")
        return cls(lv, float(grid[0]), bit_depth, name, double_phase)

    @classmethod
    def from_hdf5(cls, dataset, bit_depth: int | None = None, name: str = "SLM") -> "InverseLUT":
        """Read a table written by :meth:`to_hdf5`, or one stored beside its grid.

        Accepted: attrs ``phase_min_rad`` (and ``bit_depth``) on the dataset, or a sibling
        dataset ``<name>_phase_rad`` holding the grid of target phases.  ``bit_depth``
        (the panel's) is used when the file does not store it.
        """
        bits = dataset.attrs.get("bit_depth", dataset.attrs.get("bits", bit_depth))
        if bits is None:
            raise ValueError(f"{name}: inverse LUT {dataset.name} has no bit_depth attribute; "
                             f"pass the panel's bit_depth")
        bits = int(bits)
        if bit_depth is not None and bits != int(bit_depth):
            raise ValueError(f"{name}: inverse LUT {dataset.name} is for {bits} bit, the panel has {bit_depth} bit; "
                             f"use the calibration of this panel")
        if "phase_min_rad" in dataset.attrs:
            dp = None
            if "gap_width_rad" in dataset.attrs:
                dp = DoublePhaseRange(float(dataset.attrs["gap_centre_rad"]), float(dataset.attrs["gap_width_rad"]))
            return cls(dataset[()], float(dataset.attrs["phase_min_rad"]), bits, name, dp)
        grid_name = dataset.name + "_phase_rad"
        parent = dataset.parent
        if grid_name in parent.file:
            return cls.from_grid(dataset[()], parent.file[grid_name][()], bits, name)
        raise ValueError(f"{name}: inverse LUT {dataset.name} has neither a phase_min_rad attribute nor a "
                         f"{grid_name} grid; write it with hwio.response.InverseLUT.to_hdf5")

    def __repr__(self):
        gap = "" if self.double_phase.full else f", amplitude_max={self.double_phase.amplitude_max:.4f}"
        return (f"InverseLUT(name={self.name!r}, n_bins={self.n_bins}, bit_depth={self.bit_depth}, "
                f"phase_min_rad={self.phase_min_rad:.4f}{gap})")
