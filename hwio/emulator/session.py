"""Start and stop a lab emulator: X server, bench file and optics process.

:class:`Emulator` is what ``optwin emulate`` runs and what tests use::

    with Emulator("experiments/benches/emulated_reduced.toml", "/tmp/emu") as emu:
        # emu.env: DISPLAY (the emulator's X server) and PYLON_CAMEMU, for the optwin process
        # emu.bench_file: the bench file with window SLMs and pylon emulated cameras
        ...
"""
from __future__ import annotations

import importlib.util
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from hwio.emulator.bench_file import write_emulated_bench
from hwio.emulator.camera import EMULATED_DEVICES, read_state

__all__ = ["Emulator", "EmulatorError", "missing_tools"]


class EmulatorError(RuntimeError):
    """The emulator could not start (X server, optics process) or stopped unexpectedly."""


def missing_tools() -> list[str]:
    """What the emulator needs and this machine lacks (empty when it can run)."""
    missing = [] if shutil.which("Xvfb") else ["Xvfb (apt install xvfb)"]
    for module, pkg in (("pyglet", "pyglet"), ("mss", "mss"), ("pypylon", "pypylon"), ("cv2", "opencv-python-headless")):
        # found, not imported: pypylon reads PYLON_CAMEMU when it is imported, pyglet fixes its display mode
        if importlib.util.find_spec(module) is None:
            missing.append(f"{module} (pip install {pkg})")
    return missing


class Emulator:
    """A running lab emulator (use as a context manager, or ``start()`` / ``stop()``).

    Parameters
    ----------
    source : simulated bench file (path or built-in name) whose ``[truth.*]`` is the optics.
    folder : where the bench file, images and state files go.
    display : an X display to use (``":1"``); default: start an Xvfb of the needed size.
    latency_frames, refresh_hz, frame_period_s, settle_time_s : see
        :func:`hwio.emulator.bench_file.write_emulated_bench`.
    start_timeout_s : how long the X server and the first frames may take.
    """

    def __init__(self, source, folder, *, display: str | None = None, latency_frames: int = 1,
                 refresh_hz: float = 60.0, frame_period_s: float = 0.005, settle_time_s=None,
                 start_timeout_s: float = 30.0):
        self.folder = Path(folder).resolve()
        self.settings = write_emulated_bench(source, self.folder, latency_frames=latency_frames,
                                             refresh_hz=refresh_hz, frame_period_s=frame_period_s,
                                             settle_time_s=settle_time_s)
        self.bench_file = Path(self.settings["bench_file"])
        self.display = display
        self.start_timeout_s = float(start_timeout_s)
        self._xvfb = None
        self._optics = None
        self._log = None

    @property
    def env(self) -> dict:
        """Environment a process driving the emulated bench needs: DISPLAY and PYLON_CAMEMU."""
        return {"DISPLAY": self.display or "", "PYLON_CAMEMU": str(EMULATED_DEVICES)}

    def start(self) -> "Emulator":
        """Start the X server (unless ``display`` was given) and the optics process; wait for first frames."""
        missing = missing_tools()
        if missing:
            raise EmulatorError(f"the lab emulator needs {', '.join(missing)}")
        for cam in self.settings["cameras"].values():      # a fresh start: no frames of an earlier run
            for suffix in ("", ".state.json", ".exposure.json"):
                Path(cam["image_file"] + suffix).unlink(missing_ok=True)
        try:
            if self.display is None:
                self._start_xvfb()
            self._start_optics()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_xvfb(self) -> None:
        """Start Xvfb on a display number it picks itself (``-displayfd``: parallel emulators never collide)."""
        width, height = self.settings["screen_px"]
        read_fd, write_fd = os.pipe()
        log = open(self.folder / "xvfb.log", "wb")
        # -terminate: the server ends with its last client (the optics process), even if we are killed
        proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24",
                                 "-nolisten", "tcp", "-terminate"],
                                pass_fds=(write_fd,), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        os.close(write_fd)
        self._xvfb = proc
        number = b""
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while not number.endswith(b"\n") and time.monotonic() < deadline:
                ready, _, _ = select.select([read_fd], [], [], max(deadline - time.monotonic(), 0.0))
                chunk = os.read(read_fd, 16) if ready else b""
                if not chunk:
                    break
                number += chunk
        finally:
            os.close(read_fd)
        if not number.strip().isdigit():
            last = (self.folder / "xvfb.log").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise EmulatorError(f"Xvfb did not start ({last[0]}); see {self.folder / 'xvfb.log'}")
        self.display = f":{number.strip().decode()}"

    def _start_optics(self) -> None:
        root = str(Path(__file__).resolve().parents[2])       # the optics process imports this checkout's hwio
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        env = dict(os.environ, DISPLAY=self.display, PYTHONPATH=path, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        self._log = open(self.folder / "optics.log", "wb")
        self._optics = subprocess.Popen([sys.executable, "-m", "hwio.emulator.process", str(self.folder)],
                                        env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        states = [Path(c["image_file"] + ".state.json") for c in self.settings["cameras"].values()]
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self._optics.poll() is not None:
                raise EmulatorError(f"the optics process stopped at start: {self._log_tail()}")
            if all((s := read_state(p)) is not None and int(s["frame"]) >= 0 for p in states):
                return
            if time.monotonic() > deadline:
                raise EmulatorError(f"the optics process wrote no frame within {self.start_timeout_s:g} s: "
                                    f"{self._log_tail()}")
            time.sleep(0.02)

    def _log_tail(self) -> str:
        text = (self.folder / "optics.log").read_text(errors="replace").strip().splitlines()
        return text[-1] if text else "no output"

    def check(self) -> None:
        """Raise :class:`EmulatorError` when the optics process has stopped."""
        if self._optics is not None and self._optics.poll() is not None:
            raise EmulatorError(f"the optics process stopped (exit {self._optics.returncode}): {self._log_tail()}")

    def wait(self) -> None:
        """Block until the optics process ends (``optwin emulate`` in the foreground)."""
        if self._optics is not None:
            self._optics.wait()

    def stop(self) -> int | None:
        """Stop the optics process (SIGTERM, then SIGKILL after 10 s) and the X server we started.

        Returns the optics process's exit code (None if it never started)."""
        code = None
        proc, self._optics = self._optics, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            code = proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        xvfb, self._xvfb = self._xvfb, None
        if xvfb is not None:
            xvfb.terminate()
            try:
                xvfb.wait(5)
            except subprocess.TimeoutExpired:
                xvfb.kill()
                xvfb.wait()
        return code

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
