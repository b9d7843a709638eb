"""The main job, end to end on a (simulated) bench.

calibrate -> calibrated twin -> train the paper's 2-D tasks in every mode -> compare twin and
bench -> one report (``DIR/report.html``) with the calibration, the MVM agreement, the
activation curve, decision boundaries per mode and training curves.

Per task (:data:`DEMO_ROWS`), with the defaults of ``optwin train --system bench``:
``ideal`` (the reference network on a perfect computer), ``insilico`` on the uncalibrated and
on the calibrated twin (deployed to the bench), ``hybrid`` and ``optical`` fine-tuning the
calibrated in-silico weights on the bench.
"""
from __future__ import annotations

import time
from pathlib import Path

from optwin.outputs import write_json

__all__ = ["run_demo", "DEMO_TASKS"]

DEMO_TASKS = ("moons", "rings", "xor")
#: samples per task: 225 to train (a fifth of them for early stopping) and 375 to test; the
#: large test set makes a one-sample difference 0.3 points, so the ideal row bounds the bench rows
#: beyond the counting noise of a small test set
DEMO_SAMPLES = 600
DEMO_TEST_FRACTION = 0.625
#: (label, mode, twin trained in silico, start from the weights of): twin rows train from random
#: weights with restarts, bench rows fine-tune the calibrated in-silico weights
DEMO_ROWS = (("ideal", "ideal", "calibrated", None),
             ("insilico (uncalibrated twin)", "insilico", "ideal", None),
             ("insilico (calibrated twin)", "insilico", "calibrated", None),
             ("hybrid (fine-tune)", "hybrid", "calibrated", "insilico (calibrated twin)"),
             ("optical (fine-tune)", "optical", "calibrated", "insilico (calibrated twin)"))


def _say(msg, quiet):
    if not quiet:
        print(msg, flush=True)


def demo_settings(bench_name: str, cal_path, task_name: str, seed: int = 0, n_samples: int = DEMO_SAMPLES,
                  epochs: int | None = None, twin_epochs: int | None = None, restarts: int | None = None):
    """The settings of ``optwin train --system bench`` for the demo's twin and bench rows.

    Parameters
    ----------
    bench_name : the bench (config file or built-in name).
    cal_path : its calibration file.
    task_name : the 2-D task.
    seed : seeds data, initial weights, shuffles and noise.
    n_samples : samples of the task.
    epochs : bench rows' epochs (default 10).
    twin_epochs : twin rows' epochs per restart (default 200).
    restarts : twin rows' restarts (default 8).

    Returns
    -------
    (TrainSettings, TrainSettings)
        The twin rows' (``--mode insilico``: best of 8 restarts of 200 epochs) and the bench
        rows' (``--mode optical``: 10 epochs at lr 0.003, cosine) settings.
    """
    from optwin.settings import TrainSettings
    common = {"task": task_name, "seed": seed, "n_samples": n_samples}
    twin = TrainSettings.on_bench("insilico", bench_name, cal_path, epochs=twin_epochs, restarts=restarts, **common)
    loop = TrainSettings.on_bench("optical", bench_name, cal_path, epochs=epochs, **common)
    return twin, loop


def _train_rows(system, cal, task, validation, twin, loop, target: float, quiet: bool) -> dict:
    """Every row of one task: ``{label: run_mode result}`` (each with its ``seconds``).

    Parameters
    ----------
    system : the :class:`hwio.bench_system.BenchSystem`.
    cal : its calibration.
    task : the task (outputs padded to the bench's).
    validation : ``(x_val, y_val)`` for early stopping, or None.
    twin, loop : the settings of the twin rows and of the bench rows (:func:`demo_settings`).
    target : one-hot target amplitude (twin output units).
    quiet : print nothing.

    Returns
    -------
    dict
        Row label -> :func:`optwin.workflows.bench_training.run_mode` result plus ``seconds`` (s).
    """
    from optwin.workflows.bench_training import run_mode
    trained = {}
    for label, mode, twin_kind, start in DEMO_ROWS:
        s = twin if start is None else loop
        s = s.replace(mode=mode, target=target, probe_correction=s.probe_correction and mode == "optical")
        t0 = time.perf_counter()
        if start is None:
            res = run_mode(s, system, cal, task, validation=validation, twin=twin_kind)
        else:
            res = run_mode(s, system, cal, task, validation=validation, init_weights=trained[start]["weights"])
        res["seconds"] = time.perf_counter() - t0
        trained[label] = res
        bench = "-    " if mode == "ideal" else f"{res['bench_accuracy']:.3f}"
        _say(f"    {task.name:6s} {label:30s} bench {bench}  twin {res['twin_accuracy']:.3f}  "
             f"({res['seconds']:.0f} s)", quiet)
    return trained


def _demo_task(out: Path, system, cal, task_name: str, task, validation, twin_s, loop_s, target: float,
               histories: dict, quiet: bool) -> tuple[dict, tuple]:
    """Train every row of one task, map its decision boundaries and plot them.

    Parameters
    ----------
    out : the demo's output directory (``decisions_<task>.png`` goes there).
    system : the :class:`hwio.bench_system.BenchSystem`.
    cal : its calibration.
    task_name : the task's name.
    task : the task (outputs padded to the bench's).
    validation : ``(x_val, y_val)`` for early stopping, or None.
    twin_s, loop_s : the settings of the twin rows and of the bench rows (:func:`demo_settings`).
    target : one-hot target amplitude (twin output units).
    histories : ``{"<task>: <row label>": history}``, filled in here.
    quiet : print nothing.

    Returns
    -------
    (dict, tuple)
        ``{row label: accuracies (fractions), seconds (s), n_test}`` and the report figure
        ``(title, png path)`` of the task's decision boundaries.
    """
    from optwin.workflows.compare import decision_map
    from optwin.workflows.compare_plots import plot_decision_maps
    from optwin.workflows.from_calibration import ideal_twin, twin_from_calibration
    sizes = system.sizes
    maps = {}
    per_task = {}
    for label, res in _train_rows(system, cal, task, validation, twin_s, loop_s, target, quiet).items():
        mode = res["mode"]
        per_task[label] = {"twin_accuracy": res["twin_accuracy"], "seconds": res["seconds"],
                           "n_test": int(len(task.y_test))}
        if mode != "ideal":                    # 'ideal' runs on no bench
            per_task[label]["bench_accuracy"] = res["bench_accuracy"]
        histories[f"{task_name}: {label}"] = res["history"]
        # the map of the network the weights were evaluated on: the ideal one for 'ideal'
        twin = (ideal_twin(cal, sizes, absorber="calibrated") if mode == "ideal"
                else twin_from_calibration(cal, sizes))
        twin.set_weights(res["weights"])
        maps[label] = {"twin": decision_map(twin, n_grid=41)}
        if mode != "ideal":
            system.set_weights([w.copy() for w in res["weights"]])
            maps[label]["bench"] = decision_map(system, n_grid=15)
    figure = (f"decision boundaries: {task_name} (Fig. 3)",
              plot_decision_maps(maps, task, out / f"decisions_{task_name}.png", accuracy=per_task))
    return per_task, figure


def run_demo(out_dir, bench_name: str = "sim", tasks=DEMO_TASKS, epochs: int | None = None,
             twin_epochs: int | None = None, restarts: int | None = None, n_samples: int = DEMO_SAMPLES,
             seed: int = 0, quiet: bool = False, resume: bool = False,
             test_fraction: float = DEMO_TEST_FRACTION) -> dict:
    """Run the whole job: calibrate, train every row of every task, compare, write the report.

    Training uses the defaults of ``optwin train --system bench`` (:func:`demo_settings`;
    target amplitude from the calibration).

    Parameters
    ----------
    out_dir : directory of ``cal.h5``, the figures, ``report.html`` and ``results.json``.
    bench_name : the bench (config file or built-in name).
    tasks : the 2-D tasks.
    epochs, twin_epochs, restarts : shorten the training (:func:`demo_settings`).
    n_samples : samples per task.
    seed : seeds data, initial weights, shuffles and noise.
    quiet : print nothing.
    resume : continue an interrupted calibration in ``out_dir``.
    test_fraction : share of the samples held out for testing.

    Returns
    -------
    dict
        ``bench``, ``tasks`` ({task: {row label: accuracies (fractions), ``seconds`` (s)}}),
        ``compare`` (the agreement summary), ``seconds`` (s) and ``report`` (path); also
        written to ``out_dir/results.json``.
    """
    from calibration.run import calibrate_bench
    from hwio.bench import open_bench
    from optwin.workflows.bench_training import target_from_calibration
    from optwin.workflows.compare import measure_agreement
    from optwin.workflows.compare_plots import (plot_activation, plot_mvm_scatter, plot_training_curves,
                                                results_table_html, write_compare_report)
    from optwin.workflows.from_calibration import bench_system_from_calibration, twin_from_calibration
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
        _say("[3/4] training the 2-D tasks in every mode ...", quiet)
        target = target_from_calibration(cal)
        for task_name in tasks:
            twin_s, loop_s = demo_settings(bench_name, out / "cal.h5", task_name, seed=seed, n_samples=n_samples,
                                           epochs=epochs, twin_epochs=twin_epochs, restarts=restarts)
            task = load_task(task_name, seed=seed, n_samples=n_samples,
                             test_fraction=test_fraction).with_outputs(sizes[-1])
            task, validation = task.split_validation(twin_s.val_fraction)
            per_task, figure = _demo_task(out, system, cal, task_name, task, validation, twin_s, loop_s, target,
                                          histories, quiet)
            results["tasks"][task_name] = per_task
            figures.append(figure)
        _say("[4/4] comparing twin and bench ...", quiet)
        twin = twin_from_calibration(cal, sizes, init_scale=3.0)
        system.set_weights([w.copy() for w in twin.get_weights()])
        agreement = measure_agreement(system, twin, seed=seed)
    results["compare"] = {k: v for k, v in agreement["summary"].items()}
    figures = [("MVM agreement (Fig. 2a)", plot_mvm_scatter(agreement, out / "mvm_scatter.png")),
               ("activation (Fig. 2b)", plot_activation(agreement, twin, out / "activation.png"))] + figures
    figures.append(("training curves", plot_training_curves(histories, out / "training_curves.png")))
    table = results_table_html(results["tasks"]) + \
        "<p>Calibration report: <a href=\"calibration/report.html\">calibration/report.html</a></p>"
    page = write_compare_report(out, agreement["summary"], figures, table_html=table, stats=agreement["stats"])
    report = out / "report.html"
    page.replace(report)
    results["seconds"] = time.perf_counter() - t_start
    results["report"] = str(report)
    write_json(out / "results.json", results)         # strict JSON: NaN (no bench accuracy) -> null
    _say(f"done in {results['seconds']:.0f} s; report: {report}", quiet)
    return results
