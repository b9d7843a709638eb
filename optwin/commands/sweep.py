"""``optwin sweep``: parameter sweeps of twin trainings on dask, and their plots.

    optwin sweep GRID.toml [--workers N | --scheduler tcp://HOST:PORT] --out results.h5 [--force] [--json]
    optwin sweep plot results.h5 [--x AXIS --y AXIS] [--metric M] [--out DIR] [--json]

(A grid file literally named ``plot`` is run as ``optwin sweep ./plot``.)

``--out`` must be a sweep results file or a new name; the CSV beside it (``results.csv``) must be
a sweep's own CSV or absent, and a sweep's CSV without its results file is only replaced with
``--force``.  Re-running the same grid over its results file resumes it (no flag needed).
"""
from __future__ import annotations

import sys
from pathlib import Path

from optwin.errors import UsageError
from optwin.outputs import print_json

EPILOG = """grid file (TOML): [base] holds training settings, [axes] lists the values to vary; every
combination is one fully seeded twin training.  See datasets/sweeps/example.toml and
optwin.sweep.grid for the settings (alpha0, absorber, rule, update, illumination_waist,
output_crosstalk, readout_noise, probe_strength, hidden/layers, seed, lr, epochs, ...).
Results are written as each point finishes (HDF5 + CSV beside it); re-running the same command
resumes, skipping finished points.  Another kind of file at --out or at the CSV's name is never
replaced.  Exit code 1 when some point failed, 2 on bad input."""


def register(sub) -> None:
    p = sub.add_parser("sweep", help="parameter sweeps of twin trainings (dask), and their plots",
                       description="Run a grid of twin trainings locally or on a dask cluster "
                                   "(`optwin sweep GRID.toml --out results.h5`), or plot the results "
                                   "(`optwin sweep plot results.h5`).", epilog=EPILOG)
    p.add_argument("target", metavar="GRID.toml|plot", help="grid file to run, or the word plot")
    p.add_argument("results", nargs="?", metavar="RESULTS.h5", help="(plot) the results file to plot")
    p.add_argument("--workers", type=int,
                   help="local dask worker processes (default: CPU count); 0 = serial in this process")
    p.add_argument("--scheduler", help="address of an existing dask scheduler (tcp://HOST:PORT) "
                                       "or its scheduler JSON file")
    p.add_argument("--out", help="results HDF5 file (run), or folder for the PNGs (plot; default "
                                 "RESULTS_plots beside the results)")
    p.add_argument("--retry-failed", action="store_true", help="rerun points recorded as failed")
    p.add_argument("--force", action="store_true",
                   help="replace a sweep's CSV left beside --out without its results file; (plot) replace "
                        "the PNGs of an earlier plot")
    p.add_argument("--x", help="(plot) axis along x")
    p.add_argument("--y", help="(plot) axis along y")
    p.add_argument("--metric", help="(plot) test_accuracy (default), train_accuracy, test_loss, "
                                    "final_loss or seconds")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.target == "plot":
        return _plot(args)
    return _sweep(args)


def _sweep(args) -> int:
    from optwin.sweep.execute import require_distributed, run_sweep
    from optwin.sweep.grid import load_grid
    if args.results is not None:
        raise UsageError(f"unexpected argument {args.results!r}: run a grid with "
                         f"`optwin sweep GRID.toml --out results.h5`, plot with `optwin sweep plot RESULTS.h5`")
    for flag in ("x", "y", "metric"):
        if getattr(args, flag) is not None:
            raise UsageError(f"--{flag} belongs to `optwin sweep plot RESULTS.h5`")
    if not args.out:
        raise UsageError("name the results file: optwin sweep GRID.toml --out results.h5")
    if args.workers is not None and args.scheduler:
        raise UsageError("give --workers N (local cluster) or --scheduler ADDRESS (existing cluster), not both")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be >= 0 (0 = serial in this process), got {args.workers}")
    try:
        grid = load_grid(args.target)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _guard_results(args)
    if args.scheduler or args.workers != 0:
        try:
            require_distributed()
        except ImportError as exc:
            raise UsageError(str(exc)) from None
    progress = not (args.json or args.no_progress) and sys.stderr.isatty()
    try:
        summary = run_sweep(grid, args.out, workers=args.workers, scheduler=args.scheduler,
                            retry_failed=args.retry_failed, progress=progress)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    summary["grid"] = str(args.target)
    if args.json:
        print_json(summary)
    else:
        _print_summary(summary)
    return 1 if summary["failed"] or summary["crashed"] else 0


def _guard_results(args) -> None:
    """Before any point runs: ``--out`` is a sweep results file (resumed) or new; the CSV beside it
    is the sweep's own, replaced without ``--force`` only when the results file is there too (the
    CSV is rewritten from it)."""
    from optwin.outputs import SWEEP, SWEEP_CSV, guard_output
    out = Path(args.out)
    guard_output(out, SWEEP, resume=True, flag="--out",
                 siblings=[(out.with_suffix(".csv"), SWEEP_CSV, bool(args.force or out.exists()))])


def _print_summary(s: dict) -> None:
    print(f"sweep {s['grid']}: {s['points']} points, {s['ran']} ran, {s['skipped']} already finished "
          f"(skipped); executor {s['executor']}")
    if s["ran"]:
        print(f"  {s['ok']} ok, {s['failed']} failed, {s['crashed']} crashed; {s['run_seconds']:.1f} s "
              f"({s['points_per_second']:.2f} points/s), {s['seconds']:.1f} s in all")
    for f in s["failures"]:
        print(f"  point {f['index']} ({f['key']}): {f['error']}")
    print(f"  results: {s['out']} (CSV: {s['csv']})")


def _plot(args) -> int:
    from optwin.sweep.plot import plot_sweep
    from optwin.sweep.store import read_results
    if args.results is None:
        raise UsageError("name the results file: optwin sweep plot results.h5")
    for flag in ("workers", "scheduler"):
        if getattr(args, flag) is not None:
            raise UsageError(f"--{flag} belongs to running a sweep, not to `optwin sweep plot`")
    path = Path(args.results)
    out_dir = Path(args.out) if args.out else path.with_name(path.stem + "_plots")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file, not a folder for the plots; choose another --out")
    try:
        results = read_results(path)
        files = plot_sweep(results, out_dir, x=args.x, y=args.y, metric=args.metric or "test_accuracy",
                           replace=args.force)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print_json({"results": str(path), "files": [str(f) for f in files]})
    else:
        for f in files:
            print(f"wrote {f}")
    return 0
