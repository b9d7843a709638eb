"""Training modes on the simulated benches: the table of docs/results.md.

For each bench (calibrated first, through the device interfaces) and each 2-D task:

* ``ideal``: the same network on a perfect digital computer — calibrated cell law, perfect
  MVMs, the SLMs' weight range, exact derivative; trained on the twin;
* ``insilico (uncalibrated)``: trained on a nominal twin (thin-cell law, perfect MVMs), then
  deployed to the bench — the reality gap;
* ``insilico (calibrated)``: trained on the calibrated twin, deployed to the bench;
* ``hybrid`` and ``optical``: train on the bench for ``--bench-epochs`` epochs, starting
  (``--start``) from the uncalibrated in-silico weights (the state the reality gap leaves:
  ``uncalibrated``) or from the calibrated in-silico weights (pre-train in the twin, then
  fine-tune on the bench: ``calibrated``), or both.  ``optical`` applies the calibrated
  g'/t correction at the measured z1 (:mod:`twin.probe_correction`); the fine-tune is also
  run with the raw probe (``optical_raw``), as the paper trains.

With ``--restarts R`` every twin training (ideal and both in-silico ones) trains R random
initialisations and keeps the one with the best validation accuracy
(:mod:`twin.restarts`); the bench fine-tunes start from the chosen calibrated-twin weights.

Every training holds out ``--val-fraction`` of its training samples and ends on the epoch
with the best accuracy on them (early stopping; scored on the system that trains: the twin,
or the bench in hybrid and optical mode; a fine-tune can keep its starting weights).
Fine-tunes of the calibrated weights use ``--finetune-lr``, runs from the uncalibrated
weights ``--bench-lr``.  The targets are one-hot with amplitude ``--target``.

Accuracies are test accuracies measured on the bench (``ideal``: on its own network), on
``n_samples * test_fraction`` held-out samples; the second table averages over seeds.

    python experiments/bench_modes.py [--benches sim,sim_alt] [--seeds 0,1] [--bench-epochs 10] [--jobs 2]
    python experiments/bench_modes.py --merge docs/bench_modes.json more_seeds.json --out joined

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


def run_bench(bench_name, tasks, seeds, bench_epochs, twin_epochs, n_samples, batch, lr, workdir, starts,
              test_fraction=0.25, bench_lr=None, target=1.0, finetune_lr=None, val_fraction=0.0, restarts=1,
              bench_runs=("hybrid", "optical", "optical_raw"), bench_schedule="constant"):
    from calibration.run import calibrate_bench
    from hwio.bench import open_bench
    from optwin.settings import TrainSettings
    from optwin.workflows.bench_training import run_mode
    from optwin.workflows.from_calibration import bench_system_from_calibration
    from twin.tasks import load_task

    rows = []
    bench_lr = lr if bench_lr is None else bench_lr
    finetune_lr = bench_lr if finetune_lr is None else finetune_lr
    with open_bench(bench_name) as bench:
        t0 = time.perf_counter()
        cal_path = Path(workdir) / f"cal_{bench_name}.h5"
        cal = calibrate_bench(bench, cal_path, progress=False)
        print(f"{bench_name}: calibrated in {time.perf_counter() - t0:.0f} s", flush=True)
        system = bench_system_from_calibration(bench, cal)
        sizes = system.sizes
        for task_name in tasks:
            for seed in seeds:
                task = load_task(task_name, seed=seed, n_samples=n_samples,
                                 test_fraction=test_fraction).with_outputs(sizes[-1])
                task, val = task.split_validation(val_fraction)
                row = {"bench": bench_name, "task": task_name, "seed": seed, "n_train": len(task.x_train),
                       "n_val": 0 if val is None else len(val[0]), "n_test": len(task.x_test)}
                twin_s = TrainSettings(system="bench", task=task_name, mode="ideal", seed=seed, epochs=twin_epochs,
                                       batch=batch, lr=lr, init_scale=3.0, target=target, restarts=restarts,
                                       val_fraction=val_fraction, rule="exact", probe_correction=True,
                                       bench=bench_name, cal=str(cal_path), absorber=None, alpha0=None, i_sat=None)
                ref = run_mode(twin_s, system, cal, task, validation=val)
                row["ideal"] = ref["twin_accuracy"]
                unc = run_mode(twin_s.replace(mode="insilico"), system, cal, task, validation=val, twin="ideal")
                row["insilico_uncalibrated"] = unc["bench_accuracy"]
                calib = run_mode(twin_s.replace(mode="insilico"), system, cal, task, validation=val)
                row["insilico_calibrated"] = calib["bench_accuracy"]
                for key, res in (("ideal", ref), ("insilico_uncalibrated", unc), ("insilico_calibrated", calib)):
                    row[f"{key}_restart"] = res.get("restart", 0)
                for start in starts:
                    init = unc["weights"] if start == "uncalibrated" else calib["weights"]
                    runs = [("hybrid", True), ("optical", True)]
                    if start == "calibrated":
                        runs.append(("optical", False))     # the paper's raw probe, for comparison
                    runs = [(m, c) for m, c in runs if (m if c else "optical_raw") in bench_runs]
                    for mode, corrected in runs:
                        t1 = time.perf_counter()
                        loop_s = twin_s.replace(mode=mode, epochs=bench_epochs, restarts=1,
                                                lr=finetune_lr if start == "calibrated" else bench_lr,
                                                probe_correction=corrected, lr_schedule=bench_schedule)
                        res = run_mode(loop_s, system, cal, task, validation=val, init_weights=init)
                        key = f"{mode if corrected else 'optical_raw'}_from_{start}"
                        row[key] = res["bench_accuracy"]
                        row[f"{key}_selected_epoch"] = res["history"].selected_epoch
                        row[f"{key}_seconds"] = time.perf_counter() - t1
                        row[f"{key}_curve"] = list(res["history"].test_accuracy)
                print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                                  if not k.endswith("curve")}), flush=True)
                rows.append(row)
    return rows


COLUMNS = ("ideal", "insilico_uncalibrated", "insilico_calibrated", "hybrid_from_uncalibrated",
           "optical_from_uncalibrated", "hybrid_from_calibrated", "optical_from_calibrated",
           "optical_raw_from_calibrated")


def mean_rows(rows) -> list:
    """One row per (bench, task): every column averaged over seeds (``seed`` = 'mean of n')."""
    groups = {}
    for r in rows:
        groups.setdefault((r["bench"], r["task"]), []).append(r)
    out = []
    for (bench, task), rs in groups.items():
        m = {"bench": bench, "task": task, "seed": f"mean of {len(rs)}"}
        for c in COLUMNS:
            if all(c in r for r in rs):
                m[c] = float(np.mean([r[c] for r in rs]))
        out.append(m)
    return out


def table_md(rows) -> str:
    cols = [c for c in COLUMNS if any(c in r for r in rows)]
    names = {"ideal": "ideal", "insilico_uncalibrated": "in silico, uncalibrated twin",
             "insilico_calibrated": "in silico, calibrated twin",
             "hybrid_from_uncalibrated": "hybrid (from uncalibrated)", "optical_from_uncalibrated":
             "optical (from uncalibrated)", "hybrid_from_calibrated": "hybrid (fine-tune calibrated)",
             "optical_from_calibrated": "optical (fine-tune calibrated)",
             "optical_raw_from_calibrated": "optical, raw probe (fine-tune calibrated)"}
    lines = ["| bench | task | seed | " + " | ".join(names[c] for c in cols) + " |", "|" + "---|" * (3 + len(cols))]
    for r in rows:
        lines.append(f"| {r['bench']} | {r['task']} | {r['seed']} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benches", default="sim,sim_alt")
    p.add_argument("--tasks", default="moons,rings,xor")
    p.add_argument("--seeds", default="0")
    p.add_argument("--bench-epochs", type=int, default=10)
    p.add_argument("--twin-epochs", type=int, default=200)
    p.add_argument("--n-samples", type=int, default=1200)
    p.add_argument("--test-fraction", type=float, default=0.625,
                   help="held-out share (1200 x 0.625: 450 train, 750 test)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-2, help="Adam learning rate of the twin trainings")
    p.add_argument("--bench-lr", type=float, default=1e-2,
                   help="Adam learning rate on the bench, starting from the uncalibrated-twin weights")
    p.add_argument("--finetune-lr", type=float, default=3e-3,
                   help="Adam learning rate on the bench when fine-tuning the calibrated-twin weights")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of the training samples held out for early stopping in every training (0: none)")
    p.add_argument("--target", type=float, default=0.3, help="one-hot target amplitude")
    p.add_argument("--restarts", type=int, default=1,
                   help="random initialisations per twin training (ideal and in silico), the best on the "
                        "validation samples kept (needs --val-fraction > 0)")
    p.add_argument("--bench-runs", default="hybrid,optical,optical_raw",
                   help="bench trainings to run: any of hybrid, optical, optical_raw (the raw probe)")
    p.add_argument("--bench-schedule", default="constant", choices=("constant", "cosine"),
                   help="learning-rate schedule of the bench trainings (cosine: small last steps)")
    p.add_argument("--jobs", type=int, default=1, help="benches run in parallel processes")
    p.add_argument("--start", default="uncalibrated", help="uncalibrated, calibrated or both")
    p.add_argument("--workdir", default="/tmp/optwin_bench_modes")
    p.add_argument("--out", default=str(ROOT / "docs" / "bench_modes"))
    p.add_argument("--merge", nargs="+", metavar="RUN.json",
                   help="run nothing: join the rows of earlier runs (same settings but the seeds) into --out")
    a = p.parse_args(argv)
    if a.merge:
        return merge_runs(a.merge, a.out)
    Path(a.workdir).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    starts = ["uncalibrated", "calibrated"] if a.start == "both" else [a.start]
    runs = [r.strip() for r in a.bench_runs.split(",") if r.strip()]
    unknown = sorted(set(runs) - {"hybrid", "optical", "optical_raw"})
    if unknown:
        p.error(f"--bench-runs: unknown {', '.join(unknown)}; choose from hybrid, optical, optical_raw")
    if a.restarts > 1 and a.val_fraction <= 0:
        p.error("--restarts chooses on the validation samples: give --val-fraction > 0")
    jobs = [(b, a.tasks.split(","), [int(s) for s in a.seeds.split(",")], a.bench_epochs, a.twin_epochs, a.n_samples,
             a.batch, a.lr, a.workdir, starts, a.test_fraction, a.bench_lr, a.target, a.finetune_lr, a.val_fraction,
             a.restarts, tuple(runs), a.bench_schedule)
            for b in a.benches.split(",")]
    if a.jobs > 1:
        from multiprocessing import Pool
        with Pool(min(a.jobs, len(jobs))) as pool:
            results = pool.starmap(run_bench, jobs)
    else:
        results = [run_bench(*job) for job in jobs]
    rows = [r for res in results for r in res]
    settings = {k: getattr(a, k) for k in ("benches", "tasks", "seeds", "bench_epochs", "twin_epochs", "n_samples",
                                           "test_fraction", "batch", "lr", "bench_lr", "finetune_lr", "val_fraction",
                                           "target", "start", "restarts", "bench_runs", "bench_schedule")}
    write_tables(a.out, settings, rows, time.perf_counter() - t0)


def write_tables(out: str, settings: dict, rows: list, seconds: float) -> None:
    """``out``.json (settings, rows, seconds) and ``out``.md (mean and per-seed tables)."""
    Path(out + ".json").write_text(json.dumps({"settings": settings, "rows": rows, "seconds": seconds}, indent=1))
    text = (f"Settings: {json.dumps(settings)}\n\nMean over seeds:\n\n{table_md(mean_rows(rows))}\n\n"
            f"Per seed:\n\n{table_md(rows)}\n")
    Path(out + ".md").write_text(text)
    print(text)


def merge_runs(paths, out: str) -> None:
    """Join runs that differ only in their seeds (a ValueError names the first other setting)."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    base = dict(runs[0]["settings"])
    for path, run in zip(paths[1:], runs[1:]):
        for key, value in run["settings"].items():
            if key != "seeds" and base.get(key) != value:
                raise ValueError(f"{path}: {key}={value!r} differs from {paths[0]} ({base.get(key)!r}); "
                                 f"only runs that differ in their seeds can be merged")
    base["seeds"] = ",".join(r["settings"]["seeds"] for r in runs)
    write_tables(out, base, [row for r in runs for row in r["rows"]], sum(r["seconds"] for r in runs))


if __name__ == "__main__":
    main()
