"""Virtual clock of a simulated bench: waiting, settling and exposing cost no wall time."""
from __future__ import annotations

__all__ = ["VirtualClock"]


class VirtualClock:
    """A clock that only moves when told to.

    Plug it into :class:`hwio.devices.Timeline` as ``Timeline(clock=c.now, sleep=c.advance)``:
    every ``timeline.sleep(dt)`` (settle waits, exposures, readouts, timeouts) then advances
    virtual time by ``dt`` seconds instantly.

    Parameters
    ----------
    start_s : initial reading in seconds.
    """

    def __init__(self, start_s: float = 0.0):
        self._t = float(start_s)

    def now(self) -> float:
        """Current virtual time in seconds."""
        return self._t

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (negative values are ignored)."""
        if seconds > 0:
            self._t += float(seconds)

    def __repr__(self):
        return f"VirtualClock(t={self._t:.6f} s)"
