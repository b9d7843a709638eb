"""Step-by-step recording shared by the sweeping procedures (absorber, MVM).

:class:`StepStore` records every step's raw rows as it is measured and hands back the rows a
previous, interrupted run committed; :func:`repeated_powers` reads spot powers at LO phases
0 and pi, :func:`homodyne_of` turns them into homodyne values; :func:`step_progress` wraps a
step loop in the CLI's progress display.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["StepStore", "repeated_powers", "saturated", "homodyne_of", "step_progress"]


class StepStore:
    """Per-step raw rows of a procedure, recorded as they are measured and reloaded on resume.

    Each step writes one row to every stream ``<prefix>.<part>`` (meta field ``step``).  Rows a
    previous, interrupted run committed are handed to the procedure through
    ``ctx.info['recorded']`` (stream name -> :class:`hwio.recording.RecordedStream`, loaded by
    the orchestrator before it reopens the raw file) and are not measured again.
    """

    def __init__(self, ctx, prefix: str, parts):
        self.ctx = ctx
        self.prefix = prefix
        self.parts = list(parts)
        self.loaded: dict[int, dict] = {}
        self._meta: dict[int, dict] = {}
        recorded = ctx.info.get("recorded", {}) if isinstance(ctx.info, dict) else {}
        for part in self.parts:
            rs = recorded.get(f"{prefix}.{part}")
            if rs is None or "step" not in rs.meta:
                continue
            for i, (data, step) in enumerate(zip(rs.frames, rs.meta["step"])):
                self.loaded.setdefault(int(step), {})[part] = np.asarray(data)
                self._meta.setdefault(int(step), {}).update({k: float(v[i]) for k, v in rs.meta.items()})
        self.n_reused = 0
        self.n_measured = 0

    def get(self, step: int):
        """The rows of ``step`` if every part was recorded, else None."""
        rows = self.loaded.get(int(step))
        if rows is not None and all(p in rows for p in self.parts):
            self.n_reused += 1
            return rows
        return None

    def meta(self, step: int, key: str):
        """A metadata value recorded with ``step`` (None when unknown)."""
        return self._meta.get(int(step), {}).get(key)

    def save(self, step: int, rows: dict, **meta) -> dict:
        """Record the rows (part -> array) and metadata (floats) of ``step``; returns ``rows``."""
        self._meta.setdefault(int(step), {}).update({k: float(v) for k, v in meta.items()})
        self.loaded.setdefault(int(step), {}).update({p: np.asarray(rows[p]) for p in self.parts})
        for part in self.parts:
            self.ctx.record(f"{self.prefix}.{part}", np.asarray(rows[part], dtype=np.float64), step=int(step), **meta)
        rec = getattr(self.ctx, "recorder", None)
        if rec is not None:
            rec.flush()
        self.n_measured += 1
        return rows


def repeated_powers(ctx, cams, repeats: int, peaks: dict | None = None) -> dict:
    """Spot powers at LO phases 0 and pi, ``repeats`` times.

    Parameters
    ----------
    ctx : CalContext
        The bench context.
    cams : sequence of str
        Cameras to read.
    repeats : int
        Frame pairs per camera.
    peaks : dict, optional
        Receives the largest raw pixel value (ADU) seen per camera, for saturation checks
        against ``ctx.saturation_adu``.

    Returns
    -------
    dict
        cam -> (repeats, 2, n_spots) spot powers (camera power units).
    """
    out = {c: [] for c in cams}
    for _ in range(int(repeats)):
        p = ctx.spot_powers(cams, (0.0, math.pi), 1)
        for c in cams:
            out[c].append(p[c])
            if peaks is not None:
                peaks[c] = max(peaks.get(c, 0.0), float(ctx.peak_adu.get(c, 0.0)))
    return {c: np.stack(v) for c, v in out.items()}


def saturated(ctx, peaks: dict) -> bool:
    """Whether any camera in ``peaks`` (cam -> largest pixel, ADU) reached its saturation level."""
    return any(float(v) >= ctx.saturation_adu(c) for c, v in peaks.items())


def homodyne_of(powers, lo_amplitude) -> np.ndarray:
    """Homodyne values ``(P0 - Ppi) / (4 lo)`` of spot powers.

    Parameters
    ----------
    powers : array_like
        (..., 2, n_spots) powers at LO phases 0 and pi (camera power units).
    lo_amplitude : float or array_like
        LO amplitude per spot (square root of camera power units).

    Returns
    -------
    ndarray
        (..., n_spots) homodyne values (square root of camera power units).
    """
    p = np.asarray(powers, float)
    return (p[..., 0, :] - p[..., 1, :]) / (4.0 * np.asarray(lo_amplitude, float))


def step_progress(iterable, total: int, desc: str, enabled: bool):
    """``iterable`` wrapped in the progress display (unit 'step') when ``enabled``, else as is."""
    if not enabled:
        return iterable
    from hwio.progress import progress
    return progress(iterable, total=total, desc=desc, unit="step")
