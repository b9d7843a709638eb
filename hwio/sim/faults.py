"""Faults and drift of the simulated bench (seeded, so a run is reproducible).

Faults (probabilities from ``[truth.faults]``; each device has its own random stream and
draws the same number of numbers per call, so a fault never shifts another device's noise):

- camera timeout  -> :class:`hwio.devices.DeviceTimeout` after the grab timeout has elapsed
- dropped frame   -> :class:`hwio.devices.FrameError` (incomplete transfer), retryable
- stale frame     -> the previous frame with its old timestamp is delivered again; the
  Camera base class discards it if an SLM changed since (and grabs again)
- SLM write error -> :class:`hwio.devices.SLMWriteError`; the panel keeps its old frame

Drift (virtual time t since the bench opened, from ``[truth.drift]``): relative laser power
``P(t) = max(0, 1 + laser_power_per_hour * t_h) * (1 + power_jitter * N(0, 1))`` (jitter
drawn per exposure) and ``alpha0(t) = max(0, alpha0 + alpha0_per_hour * t_h)``.
"""
from __future__ import annotations

import numpy as np

from hwio.devices import DeviceTimeout, FrameError, SLMWriteError
from hwio.sim.truth import DriftTruth, FaultTruth

__all__ = ["FaultInjector", "Drift"]


class FaultInjector:
    """Decides, per call, whether a simulated device fails."""

    def __init__(self, truth: FaultTruth, rngs: dict[str, np.random.Generator]):
        self.truth = truth
        self._rngs = rngs
        self.counts = {"timeout": 0, "dropped": 0, "stale": 0, "slm_write": 0}

    def check_show(self, name: str) -> None:
        """Raise SLMWriteError at the configured rate."""
        if self._rngs[name].random() < self.truth.slm_write_failure_rate:
            self.counts["slm_write"] += 1
            raise SLMWriteError(f"{name}: frame write failed (link error); the panel still shows its "
                                f"previous frame; call show() again")

    def draw_grab(self, name: str) -> str | None:
        """One of 'timeout', 'dropped', 'stale' or None for a grab of camera ``name``."""
        u = self._rngs[name].random(3)
        t = self.truth
        if u[0] < t.camera_timeout_rate:
            kind = "timeout"
        elif u[1] < t.dropped_frame_rate:
            kind = "dropped"
        elif u[2] < t.stale_frame_rate:
            kind = "stale"
        else:
            return None
        self.counts[kind] += 1
        return kind

    @staticmethod
    def timeout_error(name: str, timeout_s: float) -> DeviceTimeout:
        return DeviceTimeout(f"{name}: no frame within {timeout_s:g} s (camera did not answer); retry the "
                             f"grab, and check cabling/trigger if it persists")

    @staticmethod
    def dropped_error(name: str) -> FrameError:
        return FrameError(f"{name}: frame dropped (incomplete transfer); retry the grab")


class Drift:
    """Laser power and optical depth as functions of virtual time."""

    def __init__(self, truth: DriftTruth, alpha0: float, t0_s: float):
        self.truth = truth
        self.alpha0 = alpha0
        self.t0_s = t0_s

    def power(self, t_s: float, rng: np.random.Generator | None = None) -> float:
        """Relative laser power at time ``t_s`` (1 at t0), with per-exposure jitter if ``rng``."""
        hours = (t_s - self.t0_s) / 3600.0
        p = max(0.0, 1.0 + self.truth.laser_power_per_hour * hours)
        if rng is not None and self.truth.power_jitter > 0:
            p *= max(0.0, 1.0 + self.truth.power_jitter * rng.standard_normal())
        return p

    def alpha0_at(self, t_s: float) -> float:
        """Optical depth of the cell at time ``t_s``."""
        hours = (t_s - self.t0_s) / 3600.0
        return max(0.0, self.alpha0 + self.truth.alpha0_per_hour * hours)
