"""Progress of long steps on stderr: a bar on a terminal, periodic log lines otherwise.

On a terminal :func:`progress` shows a tqdm bar.  When stderr is a file or a pipe (a job
under a scheduler, ``2> log``) a bar would print one line for minutes, so it writes plain
lines instead: every ``interval_s`` seconds while it runs (from a background timer, so a
step that reports nothing still shows it is alive), and once that has happened also when a
step starts, changes its name and ends; a run shorter than one interval prints nothing::

    [progress   20 s] calibrate 4/6 (67%) slm > slm1 phase 120/256 (47%), step 8 s

Nested steps (a part of the calibration, the sweep inside it) are shown as one line with
the outer step first.  ``enabled=False`` gives an object that does nothing.
"""
from __future__ import annotations

import sys
import threading
import time

__all__ = ["progress", "Progress", "DEFAULT_INTERVAL_S"]

#: seconds between two log lines when stderr is not a terminal
DEFAULT_INTERVAL_S = 10.0

_active: list["Progress"] = []          # open log-mode steps, outermost first
_lock = threading.Lock()


def _fmt_s(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


class Progress:
    """One step with ``total`` units; see :func:`progress`.

    Use as an iterator wrapper, a context manager, or with :meth:`update` / :meth:`close`.
    """

    def __init__(self, iterable=None, total=None, desc: str = "", unit: str = "step", *, enabled: bool = True,
                 interval_s: float = DEFAULT_INTERVAL_S, stream=None, terminal: bool | None = None):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0 s, got {interval_s}")
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = 0
        self.interval_s = float(interval_s)
        self.stream = sys.stderr if stream is None else stream
        self.t0 = time.monotonic()
        self._bar = None
        self._log = False
        self._closed = not enabled
        self._stop = None
        self._spoke = False
        if not enabled:
            return
        if terminal is None:
            isatty = getattr(self.stream, "isatty", None)
            terminal = bool(isatty and isatty())
        if terminal:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=self.stream)
            return
        self._log = True
        with _lock:
            outermost = not _active
            _active.append(self)
        if outermost:
            self._stop = threading.Event()
            threading.Thread(target=self._heartbeat, name="optwin-progress", daemon=True).start()
        self._emit("started")

    # -- reporting -------------------------------------------------------------------------
    def _state(self) -> str:
        if self.total:
            frac = self.n / self.total
            return f"{self.desc} {self.n}/{self.total} ({frac:.0%})"
        return f"{self.desc} {self.n} {self.unit}"

    def _line(self, note: str = "") -> str:
        with _lock:
            chain = list(_active) if self in _active else [self]
        root = chain[0]
        text = " > ".join(p._state() for p in chain)
        step = f", step {_fmt_s(time.monotonic() - chain[-1].t0)}" if len(chain) > 1 else ""
        return f"[progress {_fmt_s(time.monotonic() - root.t0):>8}] {text}{step}{f' {note}' if note else ''}"

    def _emit(self, note: str = "") -> None:
        with _lock:
            root = _active[0] if _active else self
        if not root._spoke and time.monotonic() - root.t0 < root.interval_s:
            return                          # a step shorter than one interval stays silent
        root._spoke = True
        try:
            print(self._line(note), file=self.stream, flush=True)
        except (ValueError, OSError):       # stream closed under us: progress is never fatal
            pass

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.interval_s):
            with _lock:
                if not _active:
                    return
                innermost = _active[-1]
            innermost._emit()

    # -- the tqdm-like interface ------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)

    def set_description(self, desc: str) -> None:
        """Rename the step (e.g. the part now running)."""
        changed = desc != self.desc
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description(desc)
        elif self._log and changed and not self._closed:
            self._emit()

    def set_postfix(self, **values) -> None:
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def close(self) -> None:
        """End the step (idempotent); in log mode a last line with its time."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
            return
        if self._log:
            self._emit(f"done in {_fmt_s(time.monotonic() - self.t0)}")
            with _lock:
                if self in _active:
                    _active.remove(self)
            if self._stop is not None:
                self._stop.set()

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress(iterable=None, total=None, desc: str = "", unit: str = "step", *, enabled: bool = True,
             interval_s: float = DEFAULT_INTERVAL_S, stream=None, terminal: bool | None = None) -> Progress:
    """Progress of a step on ``stream`` (stderr): a bar on a terminal, log lines otherwise.

    Parameters
    ----------
    iterable : items to wrap (iterate over the returned object), or None and call ``update``.
    total : number of units (default ``len(iterable)``).
    desc, unit : the step's name and its unit.
    enabled : False gives an object that shows nothing.
    interval_s : seconds between log lines when the stream is not a terminal.
    stream : where to write (default ``sys.stderr``).
    terminal : force bar (True) or log lines (False); default: ``stream.isatty()``.
    """
    return Progress(iterable, total, desc, unit, enabled=enabled, interval_s=interval_s, stream=stream,
                    terminal=terminal)
