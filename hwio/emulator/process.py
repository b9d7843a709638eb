"""The optics process of the lab emulator: screen -> simulated optics -> camera images.

Run as ``python -m hwio.emulator.process FOLDER`` (``optwin emulate`` starts it) with
``DISPLAY`` set to the emulator's X server.  Every camera frame period it

1. captures the SLM windows from the screen (``mss``: what the display really shows, not
   the levels optwin meant to send) and unpacks their gray levels;
2. takes as *shown* the newest capture that is at least the display latency
   (``latency_frames / refresh_hz``) old, and puts its levels on the simulated bench's
   panels (:mod:`hwio.sim`: the source bench file's ``[truth.*]`` optics, camera sensor
   and noise, with the fault injector off: faults now come from the real drivers);
3. reads each camera's exposure register (``<image>.exposure.json``), renders one frame
   per physical camera with the simulator and writes it as a 16-bit PNG (value << (16 -
   bits), as pylon's emulated ``MonoN`` reads it) by an atomic rename, then its state
   (``<image>.state.json``: frame number, exposure start, exposure and the checksum of
   the levels the frame shows).

SIGTERM or SIGINT ends the loop after the current frame (so does the end of the process that
started it); the process exits 0.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import zlib
from collections import deque
from pathlib import Path

import numpy as np

from hwio.emulator.bench_file import EMULATOR_FILE
from hwio.emulator.camera import read_state, write_json_atomic

__all__ = ["OpticsLoop", "main", "levels_crc"]


def levels_crc(levels: np.ndarray) -> int:
    """CRC-32 of a level frame as ``uint16`` (how the state file names what a frame shows)."""
    return int(zlib.crc32(np.ascontiguousarray(levels, dtype=np.uint16).tobytes()))


class OpticsLoop:
    """Screen capture, latency queue, simulated optics and image writing of one emulator.

    Parameters
    ----------
    settings : the contents of ``emulator.json`` (:func:`hwio.emulator.bench_file.write_emulated_bench`).
    """

    def __init__(self, settings: dict):
        import cv2
        import mss
        from hwio.sim.testing import open_with
        self._cv2 = cv2
        self.settings = settings
        self.latency_s = settings["latency_frames"] / settings["refresh_hz"]
        self.frame_period_s = float(settings["frame_period_s"])
        # the optics: the source bench, simulated, without injected faults
        self.sim = open_with(settings["source"], {"truth": {"faults": None}})
        self._t0 = time.monotonic()
        self._t0_virtual = self.sim.timeline.now()
        self.windows = settings["windows"]
        xs = [w["x"] + w["width"] for w in self.windows.values()]
        ys = [w["y"] + w["height"] for w in self.windows.values()]
        self._box = {"left": 0, "top": 0, "width": max(xs), "height": max(ys)}
        factory = getattr(mss, "MSS", None) or mss.mss
        self._grabber = factory()
        self._history: deque = deque()
        self._applied: dict[str, np.ndarray] = {}
        self._applied_t = None
        self._panels = {n: self.sim.slms.get(n) or self.sim.physical[n] for n in self.windows}
        self.cameras = {}
        for name, c in settings["cameras"].items():
            image = Path(c["image_file"])
            self.cameras[name] = {
                "device": self.sim.cameras.get(name) or self.sim.physical[name],
                "image": image, "state": image.with_name(image.name + ".state.json"),
                "exposure": image.with_name(image.name + ".exposure.json"),
                "tmp": image.with_name(f".{image.stem}.tmp.png"),
                "shift": 16 - int(c["bit_depth"]), "frame": -1, "exposure_seq": 0}
            old = read_state(self.cameras[name]["state"])
            if old is not None:                     # a restarted emulator continues the numbering
                self.cameras[name]["frame"] = int(old.get("frame", -1))
                self.cameras[name]["exposure_seq"] = int(old.get("exposure_seq", 0))
        self.frames = 0

    # ------------------------------------------------------------------ screen
    def capture(self) -> dict[str, np.ndarray]:
        """The level frame every SLM window shows now (gray8: red channel, clipped to the panel's range)."""
        shot = self._grabber.grab(self._box)
        bgra = np.frombuffer(shot.bgra, np.uint8).reshape(shot.height, shot.width, 4)
        out = {}
        for name, w in self.windows.items():
            red = bgra[w["y"]:w["y"] + w["height"], w["x"]:w["x"] + w["width"], 2]
            out[name] = np.minimum(red, 2 ** int(w["bit_depth"]) - 1).astype(np.uint8)
        return out

    def _shown(self, now: float):
        """(capture time, levels) the panels show at ``now``: the newest capture at least the latency old."""
        hist = self._history
        while len(hist) > 1 and hist[1][0] <= now - self.latency_s:
            hist.popleft()
        return hist[0]

    # ------------------------------------------------------------------ one frame
    def step(self) -> None:
        """Capture, update the simulated panels, render and write one frame per camera."""
        start = time.monotonic()
        self._history.append((start, self.capture()))
        t_cap, levels = self._shown(start)
        for name, lv in levels.items():
            prev = self._applied.get(name)
            if prev is None or not np.array_equal(prev, lv):
                self._panels[name].show(lv)
                self._applied[name] = lv
        self._applied_t = t_cap
        # the simulated bench's clock follows the real one (drift per hour)
        tl = self.sim.timeline
        tl.sleep(self._t0_virtual + (start - self._t0) - tl.now())
        crcs = {n: levels_crc(lv) for n, lv in levels.items()}
        for cam in self.cameras.values():
            reg = read_state(cam["exposure"])
            if reg is not None and int(reg["seq"]) > cam["exposure_seq"]:
                cam["device"].exposure_s = float(reg["exposure_s"])
                cam["exposure_seq"] = int(reg["seq"])
            frame = cam["device"].grab()
            k = cam["frame"] + 1
            state = {"frame": cam["frame"], "pending": k, "start_s": start, "exposure_s": cam["device"].exposure_s,
                     "exposure_seq": cam["exposure_seq"], "shown_capture_s": t_cap, "levels_crc": crcs,
                     "pid": os.getpid()}
            write_json_atomic(cam["state"], state)
            image = np.left_shift(frame.image.astype(np.uint16), cam["shift"])
            if not self._cv2.imwrite(str(cam["tmp"]), image, [self._cv2.IMWRITE_PNG_COMPRESSION, 0]):
                raise OSError(f"cannot write {cam['tmp']}")
            os.replace(cam["tmp"], cam["image"])
            state["frame"] = cam["frame"] = k
            write_json_atomic(cam["state"], state)
        self.frames += 1

    def run(self, stop) -> None:
        """Run frames every ``frame_period_s`` until ``stop()`` is true."""
        t_next = time.monotonic()
        while not stop():
            self.step()
            t_next += self.frame_period_s
            now = time.monotonic()
            if t_next > now:
                time.sleep(t_next - now)
            else:
                t_next = now            # behind: the next frame starts now (frames are dropped, not queued)

    def close(self) -> None:
        """Release the screen grabber and the simulated bench."""
        try:
            self._grabber.close()
        finally:
            self.sim.close()


def main(argv=None) -> int:
    """Entry point: ``python -m hwio.emulator.process FOLDER``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hwio.emulator.process FOLDER (written by `optwin emulate`)", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    try:
        settings = json.loads((folder / EMULATOR_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"emulator: cannot read {folder / EMULATOR_FILE} ({exc}); run `optwin emulate` to write it",
              file=sys.stderr)
        return 2
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    parent = os.getppid()
    loop = OpticsLoop(settings)
    try:
        # stop on a signal, or when the process that started us is gone (no orphaned emulator)
        loop.run(lambda: bool(stopping) or os.getppid() != parent)
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
