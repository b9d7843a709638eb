"""The main job, end to end on a (simulated) bench.

calibrate -> calibrated twin -> train the paper's 2-D tasks in every mode -> compare twin and
bench -> one report (``DIR/report.html``) with the calibration, the MVM agreement, the
activation curve, decision boundaries per mode and training curves.

Per task: ``ideal`` (the reference network on a perfect computer), ``insilico`` on the
uncalibrated and on the calibrated twin (deployed to the bench), ``hybrid`` and ``optical``
fine-tuning the calibrated in-silico weights on the bench, and ``optical`` starting from the
uncalibrated in-silico weights (training on the bench recovers what the reality gap lost).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from optwin.outputs import write_json

__all__ = ["run_demo", "DEMO_TASKS"]

DEMO_TASKS = ("moons", "rings", "xor")


def _say(msg, quiet):
    if not quiet:
        print(msg, flush=True)


def run_demo(out_dir, bench_name: str = "sim", tasks=DEMO_TASKS, epochs: int = 10, twin_epochs: int = 200,
             n_samples: int = 300, batch: int = 16, lr: float = 2e-2, seed: int = 0, quiet: bool = False,
             resume: bool = False) -> dict:
    """Run the whole job; returns the results table (also written to DIR/results.json)."""
    from calibration.run import calibrate_bench
    from hwio.bench import open_bench
    from optwin.workflows.bench_training import run_mode
    from optwin.workflows.compare import decision_map, measure_agreement
    from optwin.workflows.compare_plots import (plot_activation, plot_decision_maps, plot_mvm_scatter,
                                                plot_training_curves, write_compare_report)
    from optwin.workflows.from_calibration import bench_system_from_calibration, ideal_twin, twin_from_calibration
    from twin.tasks import load_task

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    results = {"bench": bench_name, "tasks": {}}
    with open_bench(bench_name) as bench:
        _say(f"[1/4] calibrating bench {bench_name!r} ...", quiet)
        cal = calibrate_bench(bench, out / "cal.h5", resume=resume, report_dir=out / "calibration",
                              progress=not quiet)
        system = bench_system_from_calibration(bench, cal)
        sizes = system.sizes
        _say(f"[2/4] calibrated twin built: sizes {sizes}, absorber {cal.fits['absorber'].model}", quiet)
        figures = []
        histories = {}
        rows = []
        _say("[3/4] training the 2-D tasks in every mode ...", quiet)
        for task_name in tasks:
            task = load_task(task_name, seed=seed, n_samples=n_samples).with_outputs(sizes[-1])
            maps = {}
            per_task = {}
            # (label, mode, twin to train on, epochs, start from the weights of)
            plan = [("ideal", "ideal", "calibrated", twin_epochs, None),
                    ("insilico (uncalibrated twin)", "insilico", "ideal", twin_epochs, None),
                    ("insilico (calibrated twin)", "insilico", "calibrated", twin_epochs, None),
                    ("hybrid (fine-tune)", "hybrid", "calibrated", epochs, "insilico (calibrated twin)"),
                    ("optical (fine-tune)", "optical", "calibrated", epochs, "insilico (calibrated twin)"),
                    ("optical (from uncalibrated)", "optical", "calibrated", epochs, "insilico (uncalibrated twin)")]
            trained = {}
            for label, mode, twin_kind, n_ep, start in plan:
                t0 = time.perf_counter()
                res = run_mode(mode, system, cal, task, epochs=n_ep, batch=batch, lr=lr, seed=seed, twin=twin_kind,
                               init_weights=trained[start] if start else None)
                trained[label] = res["weights"]
                per_task[label] = {"bench_accuracy": res["bench_accuracy"], "twin_accuracy": res["twin_accuracy"],
                                   "seconds": time.perf_counter() - t0}
                histories[f"{task_name}: {label}"] = res["history"]
                # the map of the network the weights were evaluated on: the ideal one for 'ideal'
                twin = (ideal_twin(cal, sizes, absorber="calibrated") if mode == "ideal"
                        else twin_from_calibration(cal, sizes))
                twin.set_weights(res["weights"])
                maps[label] = {"twin": decision_map(twin, n_grid=41)}
                if mode != "ideal":
                    system.set_weights([w.copy() for w in res["weights"]])
                    maps[label]["bench"] = decision_map(system, n_grid=15)
                _say(f"    {task_name:6s} {label:30s} bench {res['bench_accuracy']:.3f}  "
                     f"twin {res['twin_accuracy']:.3f}  ({per_task[label]['seconds']:.0f} s)", quiet)
                rows.append((task_name, label, res["bench_accuracy"], res["twin_accuracy"]))
            results["tasks"][task_name] = per_task
            figures.append((f"decision boundaries: {task_name} (Fig. 3)",
                            plot_decision_maps(maps, task, out / f"decisions_{task_name}.png")))
        _say("[4/4] comparing twin and bench ...", quiet)
        twin = twin_from_calibration(cal, sizes, init_scale=3.0)
        system.set_weights([w.copy() for w in twin.get_weights()])
        agreement = measure_agreement(system, twin, seed=seed)
    results["compare"] = {k: v for k, v in agreement["summary"].items()}
    figures = [("MVM agreement (Fig. 2a)", plot_mvm_scatter(agreement, out / "mvm_scatter.png")),
               ("activation (Fig. 2b)", plot_activation(agreement, twin, out / "activation.png"))] + figures
    figures.append(("training curves", plot_training_curves(histories, out / "training_curves.png")))
    table = ["<table><tr><th>task</th><th>mode</th><th>bench accuracy</th><th>twin accuracy</th></tr>"]
    for task_name, label, b, t in rows:
        bs = "-" if not np.isfinite(b) else f"{b:.3f}"
        table.append(f'<tr><td class="l">{task_name}</td><td class="l">{label}</td><td>{bs}</td><td>{t:.3f}</td></tr>')
    table.append("</table><p>Calibration report: <a href=\"calibration/report.html\">calibration/report.html</a></p>")
    summary = {k: v for k, v in agreement["summary"].items() if isinstance(v, float)}
    page = write_compare_report(out, summary, figures, table_html="".join(table))
    report = out / "report.html"
    page.replace(report)
    results["seconds"] = time.perf_counter() - t_start
    results["report"] = str(report)
    write_json(out / "results.json", results)         # strict JSON: NaN (no bench accuracy) -> null
    _say(f"done in {results['seconds']:.0f} s; report: {report}", quiet)
    return results
