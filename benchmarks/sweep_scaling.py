"""Scaling of ``optwin sweep`` on dask: points per second with 1 and 2 local workers (prints JSON).

Each point is a full twin training on moons (default 800 epochs of 750 samples, about a
second or more).  The same points run three ways, each after a warm-up point so imports are
not timed:

* serial: :func:`optwin.sweep.point.run_point` in a loop in this process (no store, no dask),
* ``run_sweep`` on a LocalCluster of 1 worker, then of 2 workers (store writes included;
  cluster start-up is timed separately and excluded from points/s).

``overhead_per_point_s`` is the worker time a point costs beyond the serial run:
(workers * wall time - serial wall time) / points.  ``results_match_serial`` checks that every
point's trained weights are bit-identical to the serial run's.

    python benchmarks/sweep_scaling.py [--points 8] [--epochs 800]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optwin.sweep.execute import dask_client, run_sweep  # noqa: E402
from optwin.sweep.grid import parse_grid  # noqa: E402
from optwin.sweep.point import run_point  # noqa: E402
from optwin.sweep.store import read_results  # noqa: E402


def make_grid(points: int, epochs: int):
    return parse_grid({"description": "sweep scaling benchmark",
                       "base": {"task": "moons", "hidden": [32], "alpha0": 10.0, "readout_noise": 0.02,
                                "epochs": epochs},
                       "axes": {"seed": list(range(points))}})


def _warm_up() -> str:
    """Run one tiny point (imports, caches) so the timed points measure training only."""
    return run_point({"task": "moons", "epochs": 1, "n_samples": 64})["status"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=8, help="points per run (default 8)")
    ap.add_argument("--epochs", type=int, default=800, help="epochs per point (default 800)")
    args = ap.parse_args()
    grid = make_grid(args.points, args.epochs)
    load_before = os.getloadavg()

    _warm_up()
    t0 = time.perf_counter()
    serial = {p.key: run_point(p.config) for p in grid.points()}
    t_serial = time.perf_counter() - t0
    assert all(r["status"] == "ok" for r in serial.values()), serial
    point_s = [r["seconds"] for r in serial.values()]

    report = {"points": args.points, "epochs_per_point": args.epochs,
              "serial": {"seconds": t_serial, "points_per_second": args.points / t_serial,
                         "point_seconds_min": min(point_s), "point_seconds_mean": sum(point_s) / len(point_s)}}
    match = True
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            t0 = time.perf_counter()
            with dask_client(workers=workers) as client:
                client.run(_warm_up)
                t_start = time.perf_counter() - t0
                summary = run_sweep(grid, Path(tmp) / f"w{workers}.h5", client=client)
            assert summary["ok"] == args.points, summary
            rows = read_results(Path(tmp) / f"w{workers}.h5").rows
            match &= all(r["weights_sha256"] == serial[r["key"]]["weights_sha256"] for r in rows)
            t_run = summary["run_seconds"]
            report[f"workers_{workers}"] = {
                "seconds": t_run, "points_per_second": summary["points_per_second"],
                "cluster_start_s": t_start,
                "overhead_per_point_s": (workers * t_run - t_serial) / args.points,
                "distinct_worker_processes": len({r["worker"] for r in rows})}
    report["speedup_2_vs_1_workers"] = (report["workers_2"]["points_per_second"]
                                        / report["workers_1"]["points_per_second"])
    report["results_match_serial"] = match
    report["cpu_count"] = os.cpu_count()
    report["load_average_1min_before_after"] = [load_before[0], os.getloadavg()[0]]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
