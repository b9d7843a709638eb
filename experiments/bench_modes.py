"""Training modes on the simulated benches: the README's table (issue: hardware-in-the-loop).

For each bench (calibrated first, through the device interfaces) and each 2-D task:

* ``ideal``: the same network on a perfect digital computer — calibrated cell law, perfect
  MVMs, the SLMs' weight range, exact derivative; trained on the twin;
* ``insilico (uncalibrated)``: trained on a nominal twin (thin-cell law, perfect MVMs), then
  deployed to the bench — the reality gap;
* ``insilico (calibrated)``: trained on the calibrated twin, deployed to the bench;
* ``hybrid`` and ``optical``: train on the bench for ``--bench-epochs`` epochs, starting
  (``--start``) from the uncalibrated in-silico weights (the state the reality gap leaves:
  ``uncalibrated``) or from the calibrated in-silico weights (pre-train in the twin, then
  fine-tune on the bench: ``calibrated``), or both.

Accuracies are test accuracies measured on the bench (``ideal``: on its own network).

    python experiments/bench_modes.py [--benches sim,sim_alt] [--seeds 0] [--bench-epochs 15]

Writes ``docs/bench_modes.json`` and ``docs/bench_modes.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_bench(bench_name, tasks, seeds, bench_epochs, twin_epochs, n_samples, batch, lr, workdir, starts):
    from calibration.run import calibrate_bench
    from hwio.bench import open_bench
    from optwin.workflows.bench_training import run_mode
    from optwin.workflows.from_calibration import bench_system_from_calibration, ideal_twin
    from twin.optim import Adam
    from twin.tasks import load_task
    from twin.training import evaluate, train

    rows = []
    with open_bench(bench_name) as bench:
        t0 = time.perf_counter()
        cal = calibrate_bench(bench, Path(workdir) / f"cal_{bench_name}.h5", progress=False)
        print(f"{bench_name}: calibrated in {time.perf_counter() - t0:.0f} s", flush=True)
        system = bench_system_from_calibration(bench, cal)
        sizes = system.sizes
        for task_name in tasks:
            for seed in seeds:
                task = load_task(task_name, seed=seed, n_samples=n_samples).with_outputs(sizes[-1])
                row = {"bench": bench_name, "task": task_name, "seed": seed}
                ref = ideal_twin(cal, sizes, rule="exact", seed=seed, init_scale=3.0, absorber="calibrated")
                train(ref, task, Adam(lr), epochs=twin_epochs, batch=batch, seed=seed)
                row["ideal"] = evaluate(ref, task.x_test, task.y_test, task.n_classes)[1]
                unc = run_mode("insilico", system, cal, task, epochs=twin_epochs, batch=batch, lr=lr, seed=seed,
                               twin="ideal")
                row["insilico_uncalibrated"] = unc["bench_accuracy"]
                calib = run_mode("insilico", system, cal, task, epochs=twin_epochs, batch=batch, lr=lr, seed=seed)
                row["insilico_calibrated"] = calib["bench_accuracy"]
                for start in starts:
                    init = unc["weights"] if start == "uncalibrated" else calib["weights"]
                    for mode in ("hybrid", "optical"):
                        t1 = time.perf_counter()
                        res = run_mode(mode, system, cal, task, epochs=bench_epochs, batch=batch, lr=lr, seed=seed,
                                       init_weights=init)
                        key = f"{mode}_from_{start}"
                        row[key] = res["bench_accuracy"]
                        row[f"{key}_seconds"] = time.perf_counter() - t1
                        row[f"{key}_curve"] = list(res["history"].test_accuracy)
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                                  if not k.endswith("curve")}), flush=True)
                rows.append(row)
    return rows


def table_md(rows) -> str:
    cols = [c for c in ("ideal", "insilico_uncalibrated", "insilico_calibrated", "hybrid_from_uncalibrated",
                        "optical_from_uncalibrated", "hybrid_from_calibrated", "optical_from_calibrated")
            if any(c in r for r in rows)]
    names = {"ideal": "ideal", "insilico_uncalibrated": "in silico, uncalibrated twin",
             "insilico_calibrated": "in silico, calibrated twin",
             "hybrid_from_uncalibrated": "hybrid (from uncalibrated)", "optical_from_uncalibrated":
             "optical (from uncalibrated)", "hybrid_from_calibrated": "hybrid (fine-tune calibrated)",
             "optical_from_calibrated": "optical (fine-tune calibrated)"}
    lines = ["| bench | task | seed | " + " | ".join(names[c] for c in cols) + " |", "|" + "---|" * (3 + len(cols))]
    for r in rows:
        lines.append(f"| {r['bench']} | {r['task']} | {r['seed']} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benches", default="sim,sim_alt")
    p.add_argument("--tasks", default="moons,rings,xor")
    p.add_argument("--seeds", default="0")
    p.add_argument("--bench-epochs", type=int, default=15)
    p.add_argument("--twin-epochs", type=int, default=200)
    p.add_argument("--n-samples", type=int, default=600)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-2)
    p.add_argument("--start", default="uncalibrated", help="uncalibrated, calibrated or both")
    p.add_argument("--workdir", default="/tmp/optwin_bench_modes")
    p.add_argument("--out", default=str(ROOT / "docs" / "bench_modes"))
    a = p.parse_args(argv)
    Path(a.workdir).mkdir(parents=True, exist_ok=True)
    rows = []
    t0 = time.perf_counter()
    for bench_name in a.benches.split(","):
        rows += run_bench(bench_name, a.tasks.split(","), [int(s) for s in a.seeds.split(",")], a.bench_epochs,
                          a.twin_epochs, a.n_samples, a.batch, a.lr, a.workdir,
                          ["uncalibrated", "calibrated"] if a.start == "both" else [a.start])
    settings = {k: getattr(a, k) for k in ("benches", "tasks", "seeds", "bench_epochs", "twin_epochs", "n_samples",
                                           "batch", "lr", "start")}
    Path(a.out + ".json").write_text(json.dumps({"settings": settings, "rows": rows,
                                                 "seconds": time.perf_counter() - t0}, indent=1))
    Path(a.out + ".md").write_text(f"Settings: {json.dumps(settings)}\n\n{table_md(rows)}\n")
    print(table_md(rows))


if __name__ == "__main__":
    main()
