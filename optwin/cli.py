"""The ``optwin`` command line.

Each sub-command lives in ``optwin.commands.<name>`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a
callable taking the parsed arguments and returning an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from optwin.errors import UsageError

COMMANDS = ["train", "bench", "push", "calibrate", "compare", "demo", "sweep"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optwin",
        description="Calibrate, twin and train optical neural networks (end-to-end optical backpropagation).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"optwin.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"optwin.commands.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"optwin {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"optwin {args.command}: interrupted (measured data already recorded is kept; "
              f"re-run with --resume where supported)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
