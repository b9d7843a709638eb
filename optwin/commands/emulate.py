"""``optwin emulate``: run the lab emulator (docs/emulator.md).

Starts an X server (Xvfb), writes the emulated bench file (window SLMs, pylon emulated
cameras) from a simulated bench file and runs the optics process until Ctrl-C or SIGTERM,
then stops everything and exits 0.  With a command after ``--`` it runs that command in the
emulator's environment instead (``{bench}`` in it is replaced by the emulated bench file) and
exits with the command's exit code::

    optwin emulate --bench experiments/benches/emulated_reduced.toml --dir emu
    optwin emulate --bench experiments/benches/emulated_reduced.toml --dir emu -- \\
        optwin calibrate --bench {bench} --out cal.h5
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

from optwin.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("emulate", help="run the lab emulator: window SLMs -> simulated optics -> pylon cameras",
                       description="Emulate a lab bench through the real drivers: the SLMs are full-screen windows "
                                   "on an X server (Xvfb), the cameras pylon's emulated cameras, and an optics "
                                   "process renders what the windows show through the simulated optics of a "
                                   "simulated bench file ([truth.*]).  Runs until Ctrl-C/SIGTERM, or runs the "
                                   "command after '--' and stops.")
    p.add_argument("--bench", required=True, help="simulated bench file whose optics to emulate, e.g. "
                                                  "experiments/benches/emulated_reduced.toml")
    p.add_argument("--dir", help="folder for the emulated bench file, camera images and logs (default: a new "
                                 "temporary folder)")
    p.add_argument("--latency-frames", type=int, default=1,
                   help="display latency in refresh periods between a window update and the optics seeing it "
                        "(default 1)")
    p.add_argument("--refresh-hz", type=float, default=60.0, help="display refresh rate (default 60)")
    p.add_argument("--frame-period-s", type=float, default=0.005,
                   help="camera frame period of the emulated sensor in seconds (default 0.005)")
    p.add_argument("--settle-s", type=float,
                   help="settle time of every SLM in the emulated bench file (default: the bench file's)")
    p.add_argument("--display", help="use this X display (e.g. ':1') instead of starting Xvfb")
    p.add_argument("then", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                   help="optional: a command to run inside the emulator after '--' ({bench} = the emulated bench file)")
    p.set_defaults(func=run)


def run(args) -> int:
    from hwio.emulator import Emulator, EmulatorError, missing_tools
    missing = missing_tools()
    if missing:
        raise UsageError(f"the lab emulator needs {', '.join(missing)}")
    if args.latency_frames < 0:
        raise UsageError(f"--latency-frames must be >= 0, got {args.latency_frames}")
    for flag, value in (("--refresh-hz", args.refresh_hz), ("--frame-period-s", args.frame_period_s)):
        if not value > 0:
            raise UsageError(f"{flag} must be > 0, got {value}")
    if args.settle_s is not None and not args.settle_s >= 0:
        raise UsageError(f"--settle-s must be >= 0 s, got {args.settle_s}")
    command = list(args.then or [])
    if command and command[0] == "--":
        command = command[1:]
    folder = args.dir or tempfile.mkdtemp(prefix="optwin-emulator-")
    try:
        emu = Emulator(args.bench, folder, display=args.display, latency_frames=args.latency_frames,
                       refresh_hz=args.refresh_hz, frame_period_s=args.frame_period_s, settle_time_s=args.settle_s)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    stop = []
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, lambda signum, _frame: stop.append(signum))
    try:
        try:
            emu.start()
        except EmulatorError as exc:
            raise UsageError(f"the emulator did not start: {exc}") from None
        env = " ".join(f"{k}={v}" for k, v in emu.env.items())
        print(f"optwin emulate: bench file {emu.bench_file}; drive it with {env} "
              f"(display latency {args.latency_frames} frame(s) at {args.refresh_hz:g} Hz, camera frame period "
              f"{args.frame_period_s:g} s)", file=sys.stderr, flush=True)
        if command:
            argv = [a.replace("{bench}", str(emu.bench_file)) for a in command]
            if argv[0] == "optwin":
                argv = [sys.executable, "-m", "optwin"] + argv[1:]
            proc = subprocess.Popen(argv, env=dict(os.environ, **emu.env))
            while proc.poll() is None:
                if signal.SIGTERM in stop:          # Ctrl-C reaches the command from the terminal itself
                    proc.terminate()
                stop.clear()
                emu.check()
                time.sleep(0.1)
            return proc.returncode
        print("optwin emulate: running; Ctrl-C stops it", file=sys.stderr, flush=True)
        while not stop:
            emu.check()
            time.sleep(0.1)
        return 0
    except EmulatorError as exc:
        raise UsageError(str(exc)) from None
    finally:
        emu.stop()
        for s, h in old.items():
            signal.signal(s, h)
