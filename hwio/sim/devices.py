"""Simulated SLM and camera drivers: thin hooks into the :class:`~hwio.sim.engine.SimEngine`."""
from __future__ import annotations

import numpy as np

from hwio.devices import Camera, SLM

__all__ = ["SimSLM", "SimCamera"]


class SimSLM(SLM):
    """A panel of the simulated bench.  The engine reads ``last_levels`` when a camera exposes."""

    def __init__(self, name, shape, bit_depth, pixel_pitch_m, settle_time_s, timeline, engine):
        super().__init__(name, tuple(shape), bit_depth=bit_depth, pixel_pitch_m=pixel_pitch_m,
                         settle_time_s=settle_time_s, timeline=timeline)
        self._engine = engine

    def _show_hw(self, levels: np.ndarray) -> None:
        self._engine.on_show(self.name)


class SimCamera(Camera):
    """A camera of the simulated bench; a grab costs exposure + readout of virtual time.

    Exposure times are realised in steps of 1 us with a minimum of 10 us (read back
    ``exposure_s`` for the value in use).
    """

    MIN_EXPOSURE_S = 1e-5

    def __init__(self, name, shape, bit_depth, exposure_s, timeout_s, readout_s, max_stale_retries,
                 timeline, engine):
        self._engine = engine
        self.readout_s = float(readout_s)
        super().__init__(name, tuple(shape), bit_depth=bit_depth, exposure_s=exposure_s,
                         timeout_s=timeout_s, timeline=timeline, max_stale_retries=max_stale_retries)
        self._exposure_s = self._set_exposure_hw(exposure_s)

    def _exposure_range_hw(self) -> tuple[float, float]:
        return (self.MIN_EXPOSURE_S, float("inf"))

    def _set_exposure_hw(self, exposure_s: float) -> float:
        return max(self.MIN_EXPOSURE_S, round(exposure_s * 1e6) / 1e6)

    def _grab_hw(self, timeout_s: float):
        return self._engine.grab(self.name, self._exposure_s, self.readout_s, timeout_s)
