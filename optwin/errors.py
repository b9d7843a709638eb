"""Errors the command line turns into one-line messages."""


class UsageError(Exception):
    """Bad user input (arguments, files, values): printed as one line, exit code 2."""


class _Interrupt:
    """Whether Ctrl-C (SIGINT) was pressed while a command ran (see :func:`raise_if_interrupted`)."""
    requested = False


def on_sigint(signum, frame) -> None:
    """SIGINT handler of the command line: remember the request, then interrupt as Python does.

    Python raises ``KeyboardInterrupt`` wherever the main thread is; when that is inside a
    finaliser (an HDF5 object being released), the exception is printed and dropped and the
    run would go on.  The remembered request lets the next epoch boundary stop it
    (:func:`raise_if_interrupted`)."""
    _Interrupt.requested = True
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` when Ctrl-C was pressed and its exception got lost; call it
    where stopping is safe (after a checkpoint)."""
    if _Interrupt.requested:
        raise KeyboardInterrupt


def clear_interrupt() -> None:
    """Forget a remembered Ctrl-C (at the start and end of a command)."""
    _Interrupt.requested = False
