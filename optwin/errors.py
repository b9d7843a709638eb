"""Errors the command line turns into one-line messages."""


class UsageError(Exception):
    """Bad user input (arguments, files, values): printed as one line, exit code 2."""
