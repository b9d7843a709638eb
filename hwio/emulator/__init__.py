"""The lab emulator: the workflow through the real device drivers, with simulated optics between them.

A simulated bench file (``[truth.*]`` tables) becomes a bench whose SLMs are the real
``window`` driver (borderless windows on an Xvfb screen) and whose cameras are the real
``pylon`` driver on pylon's emulated cameras; an optics process reads the windows off the
screen, renders the camera images with :mod:`hwio.sim`'s physics and writes the files the
emulated cameras read, with a display latency and a camera frame period.  See
``docs/emulator.md``.

* :class:`~hwio.emulator.session.Emulator` starts and stops it (``optwin emulate``);
* :func:`~hwio.emulator.bench_file.write_emulated_bench` writes its bench file;
* :mod:`hwio.emulator.process` is the optics process;
* :class:`~hwio.emulator.camera.EmulatedPylonCamera` is the ``pylon_emulator`` camera backend.
"""
from __future__ import annotations

from hwio.emulator.bench_file import write_emulated_bench
from hwio.emulator.session import Emulator, EmulatorError, missing_tools

__all__ = ["Emulator", "EmulatorError", "missing_tools", "write_emulated_bench"]
