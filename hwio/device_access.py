"""One device-access policy: which device errors are retried, how often, and with what timeout.

Every layer that drives a bench (the training system :mod:`hwio.bench_system`, the
calibration procedures' :class:`calibration.procedures.context.CalContext`, ``optwin push``
and the drift watch) goes through :class:`DeviceAccess`:

* a :class:`hwio.devices.DeviceError` whose ``retryable`` is True (a camera timeout, a
  dropped or unusable frame, an SLM write fault) is retried: the call runs at most
  ``retries + 1`` times (:data:`DEFAULT_RETRIES` = 5 retries, 6 attempts) and then fails with
  :class:`DeviceRetriesExhausted`, whose one-line message names the call, the number of
  attempts and the last error;
* any other exception (a non-retryable ``DeviceError``, bad input) propagates at once;
* a grab waits ``grab_timeout_s`` for a frame (None: each camera's own ``timeout_s``).

Stale frames are not handled here: :meth:`hwio.devices.Camera.grab` discards frames older
than the last panel change or not newer than the camera's previous frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from hwio.devices import Camera, CameraFrame, DeviceError, ShowToken, SLM

__all__ = ["DEFAULT_RETRIES", "DeviceAccess", "DeviceRetriesExhausted", "call_with_retries"]

#: retries of a retryable device error before giving up (attempts = retries + 1)
DEFAULT_RETRIES = 5


class DeviceRetriesExhausted(DeviceError):
    """A retryable device error persisted through every attempt (check the device, then retry).

    ``attempts`` is the number of calls made and ``last`` the last error.  Not itself
    retryable, so that nested policies do not multiply the attempts.
    """

    retryable = False

    def __init__(self, message: str, attempts: int, last: DeviceError):
        super().__init__(message)
        self.attempts = attempts
        self.last = last


def call_with_retries(call: Callable, *args, retries: int = DEFAULT_RETRIES, what: str = "device call",
                      on_retry: Callable[[DeviceError], None] | None = None):
    """``call(*args)``, retrying retryable :class:`~hwio.devices.DeviceError` s.

    Parameters
    ----------
    call : the device call (e.g. ``slm.show`` or ``camera.grab``).
    *args : its arguments.
    retries : retries after the first attempt (>= 0); the call runs at most ``retries + 1`` times.
    what : the call in the final message, e.g. ``"grab on cam_z1"``.
    on_retry : called with each retryable error before the call is repeated (counters).

    Returns
    -------
    What ``call`` returns.

    Raises
    ------
    DeviceRetriesExhausted
        After ``retries + 1`` retryable failures in a row.
    DeviceError
        A non-retryable one, at once (as does any other exception).
    """
    retries = int(retries)
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    for attempt in range(retries + 1):
        try:
            return call(*args)
        except DeviceError as exc:
            if not exc.retryable:
                raise
            if attempt == retries:
                raise DeviceRetriesExhausted(
                    f"{what} failed {retries + 1} times in a row ({exc}); check the device and retry",
                    retries + 1, exc) from exc
            if on_retry is not None:
                on_retry(exc)


@dataclass(frozen=True)
class DeviceAccess:
    """The retry and timeout policy of one client of a bench.

    Parameters
    ----------
    retries : retries of a retryable device error (attempts = retries + 1).
    grab_timeout_s : how long a grab waits for a frame (s); None: the camera's ``timeout_s``.
    """

    retries: int = DEFAULT_RETRIES
    grab_timeout_s: float | None = None

    def __post_init__(self):
        if not (isinstance(self.retries, int) and not isinstance(self.retries, bool) and self.retries >= 0):
            raise ValueError(f"retries must be a whole number >= 0, got {self.retries!r}")
        if self.grab_timeout_s is not None and not float(self.grab_timeout_s) > 0:
            raise ValueError(f"grab_timeout_s must be > 0 s (or None for the camera's own), "
                             f"got {self.grab_timeout_s}")

    @property
    def attempts(self) -> int:
        """Most calls made for one request."""
        return self.retries + 1

    def call(self, call: Callable, *args, what: str = "device call",
             on_retry: Callable[[DeviceError], None] | None = None):
        """``call(*args)`` under this policy (:func:`call_with_retries`)."""
        return call_with_retries(call, *args, retries=self.retries, what=what, on_retry=on_retry)

    def show(self, slm: SLM, levels, *, name: str | None = None, on_retry=None) -> ShowToken:
        """``slm.show(levels)`` under this policy; returns the :class:`~hwio.devices.ShowToken`.

        ``name``: the panel's name in messages (default ``slm.name``).
        """
        return self.call(slm.show, levels, what=f"show on {name or slm.name}", on_retry=on_retry)

    def grab(self, camera: Camera, *, name: str | None = None, on_retry=None) -> CameraFrame:
        """One fresh frame of ``camera`` under this policy (each attempt waits ``grab_timeout_s``).

        ``name``: the camera's name in messages (default ``camera.name``).
        """
        args = () if self.grab_timeout_s is None else (float(self.grab_timeout_s),)
        return self.call(camera.grab, *args, what=f"grab on {name or camera.name}", on_retry=on_retry)
