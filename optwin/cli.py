"""The ``optwin`` command line.

Each sub-command lives in ``optwin.commands.<name>`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a
callable taking the parsed arguments and returning an exit code.

:func:`main` is the one error boundary: every expected failure is one line on stderr,
``optwin <command>: error: <what is wrong and what to do>``, with a documented exit code
(:data:`EXIT_CODES`).  ``--debug`` (before or after the command) or ``OPTWIN_DEBUG=1`` shows
the traceback instead.  Output into a closed pipe (``optwin ... --json | head -c 10``) ends
quietly with exit code 141, as a command killed by SIGPIPE.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import os
import signal
import sys
import threading

from optwin.errors import UsageError, clear_interrupt, on_sigint

COMMANDS = ["train", "bench", "push", "calibrate", "compare", "demo", "sweep", "emulate"]

#: exit codes of ``optwin`` (docs/files.md, "Outputs and errors")
EXIT_OK, EXIT_POINTS_FAILED, EXIT_USAGE, EXIT_RUNTIME, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 3, 130, 141
EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_POINTS_FAILED: "optwin sweep: some points failed (recorded in the results file)",
    EXIT_USAGE: "bad input: arguments, input files, output paths, an output locked by another process",
    EXIT_RUNTIME: "a device or the file system failed while the command ran",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); what was recorded is kept",
    EXIT_BROKEN_PIPE: "the reader of the output went away (closed pipe)",
}
#: errno values of OSErrors that are failures of the machine, not of the input
_RUNTIME_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.ENOMEM}


def build_parser() -> argparse.ArgumentParser:
    """The ``optwin`` parser: every command of :data:`COMMANDS`, ``--debug``."""
    parser = argparse.ArgumentParser(
        prog="optwin",
        description="Calibrate, twin and train optical neural networks (end-to-end optical backpropagation).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"optwin.commands.{name}").register(sub)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of a failure instead of a one-line error (or OPTWIN_DEBUG=1)")
    _add_debug_flag(sub)
    return parser


def _add_debug_flag(subparsers) -> None:
    """``--debug`` after the command too (``optwin train ... --debug``), in every sub-parser."""
    for parser in subparsers.choices.values():
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help="show the traceback of a failure instead of a one-line error")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_debug_flag(action)


def _one_line(exc) -> str:
    """The message of ``exc`` (or a text) on one line: its lines joined (a library message such
    as HDF5's may span several)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(lines) if lines else type(exc).__name__


def _resume_hint(args) -> str:
    if getattr(args, "out", None) and hasattr(args, "resume"):
        return "; re-run with --resume to continue from what was recorded"
    return ""


def describe_failure(exc: BaseException, args) -> tuple[int, str] | None:
    """``(exit code, one-line message)`` for an expected failure, None for a bug (a traceback).

    Parameters
    ----------
    exc : the exception a command raised.
    args : the parsed arguments (for hints such as ``--resume``).
    """
    input_errors = _classes(("calibration.calset", "CalibrationFileError"), ("calibration.deploy", "DeployError"),
                            ("calibration.lab_files", "LabFileError"), ("calibration.run", "CalibrationRunError"),
                            ("hwio.recording", "RecordingError"), ("optwin.workflows.drift", "DriftWatchError"))
    device_errors = _classes(("hwio.devices", "DeviceError"))

    if isinstance(exc, UsageError):
        return EXIT_USAGE, _one_line(exc)
    if isinstance(exc, device_errors):
        text = _one_line(exc)
        advice = "" if "retry" in text else "; check the device (power, cabling, trigger, driver)"
        return EXIT_RUNTIME, f"device failure: {text}{advice}{_resume_hint(args)}"
    if isinstance(exc, input_errors):
        return EXIT_USAGE, _one_line(exc)
    if isinstance(exc, BlockingIOError):
        where = f"{exc.filename}: " if exc.filename else ""
        return EXIT_USAGE, (f"{where}a file this command writes is locked by another process ({_one_line(exc)}); "
                            f"wait for it to finish or choose another output")
    if isinstance(exc, OSError):
        what = exc.strerror or _one_line(exc)
        if exc.errno in _RUNTIME_ERRNOS:
            where = f" {exc.filename}" if exc.filename else ""
            return EXIT_RUNTIME, f"cannot write{where}: {what}; free space or fix the disk, then re-run" \
                                 f"{_resume_hint(args)}"
        if exc.filename:
            advice = {errno.ENOENT: "check the path", errno.EACCES: "check its permissions",
                      errno.EPERM: "check its permissions", errno.EISDIR: "give a file, not a folder",
                      errno.ENOTDIR: "check the path"}.get(exc.errno, "check the file")
            return EXIT_USAGE, f"{exc.filename}: {what}; {advice}"
        return EXIT_RUNTIME, f"input/output error: {what}{_resume_hint(args)}"
    return None


def _classes(*names) -> tuple:
    """The exception classes ``(module, name)`` that import (a module that does not is skipped:
    the boundary must work whatever else is broken)."""
    found = []
    for module, name in names:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so that the interpreter's final flush
    does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass                     # stdout is no real file (e.g. captured in a test)


def _log_to_stderr() -> None:
    """Show the packages' log records of level INFO and above on stderr (``optwin: <message>``),
    e.g. the GenTL producer a bench loads; once per process, and only where nothing else (a
    test runner, an embedding program) has set up logging for them."""
    for name in ("hwio", "calibration", "optwin"):
        logger = logging.getLogger(name)
        if logger.handlers or logging.getLogger().handlers:
            continue
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("optwin: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run one ``optwin`` command; returns its exit code (:data:`EXIT_CODES`).

    Parameters
    ----------
    argv : the arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 done; 1 some sweep points failed; 2 bad input (arguments, files, outputs, a lock held
        by another process); 3 a device or the file system failed while running; 130
        interrupted; 141 the output pipe was closed.  Expected failures are one line on stderr
        (:func:`describe_failure`); with ``--debug`` or ``OPTWIN_DEBUG=1`` they raise instead.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False)) or os.environ.get("OPTWIN_DEBUG", "").strip() not in ("", "0")
    _log_to_stderr()
    with _sigint_remembered():
        return _run(args, debug)


@contextlib.contextmanager
def _sigint_remembered():
    """While a command runs in the main thread with Python's default Ctrl-C handling, Ctrl-C is
    also remembered (:func:`optwin.errors.on_sigint`): an interrupt raised inside a finaliser is
    not lost."""
    install = (threading.current_thread() is threading.main_thread()
               and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if install:
        clear_interrupt()
        signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            clear_interrupt()


def _run(args, debug: bool) -> int:
    """``args.func(args)`` inside the error boundary (:func:`main`)."""
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()           # a closed pipe shows here, inside the boundary
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"optwin {args.command}: interrupted (measured data already recorded is kept; "
              f"re-run with --resume where supported)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:     # noqa: BLE001 - the one error boundary
        failure = None if debug else describe_failure(exc, args)
        if failure is None:
            raise                    # a bug (or --debug): the traceback
        code, message = failure
        try:
            print(f"optwin {args.command}: error: {message}", file=sys.stderr)
        except BrokenPipeError:
            pass
        return code


if __name__ == "__main__":
    sys.exit(main())
