"""Training modes against a bench (physics.md section 4).

=========  ====================  =================================  =========================
mode       forward               backward                           evaluated on
=========  ====================  =================================  =========================
ideal      exact digital twin    exact derivative                   the ideal twin (reference)
insilico   calibrated twin       twin (probe rule)                  the bench, after deploying
hybrid     bench                 calibrated twin at measured values the bench
optical    bench                 bench: probe through the cell      the bench
=========  ====================  =================================  =========================

``insilico`` can also train on an *uncalibrated* (ideal) twin (``twin="ideal"``) to show
the reality gap that calibration closes.
"""
from __future__ import annotations

import time

import numpy as np

from optwin.errors import UsageError

__all__ = ["MODES", "run_mode", "run_cli"]

MODES = ("insilico", "hybrid", "optical", "ideal")


def run_mode(mode: str, bench_system, cal, task, *, epochs: int, batch: int, lr: float, seed: int = 0,
             init_scale: float = 3.0, twin: str = "calibrated", rule: str = "probe", on_epoch_end=None,
             start_epoch: int = 0, history=None, optimizer=None, progress: bool = False) -> dict:
    """Train in one mode; returns {'history', 'weights', 'bench_accuracy', 'twin_accuracy', ...}."""
    from optwin.workflows.from_calibration import ideal_twin, twin_from_calibration
    from twin.hybrid import HybridSystem
    from twin.optim import Adam
    from twin.training import evaluate, train

    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    sizes = bench_system.sizes
    calibrated = twin_from_calibration(cal, sizes, rule=rule, seed=seed, init_scale=init_scale)
    reference = ideal_twin(cal, sizes, rule="exact", seed=seed, init_scale=init_scale)
    optimizer = optimizer or Adam(lr)
    t0 = time.perf_counter()
    if mode == "ideal":
        system = reference
    elif mode == "insilico":
        system = calibrated if twin == "calibrated" else ideal_twin(cal, sizes, rule=rule, seed=seed,
                                                                    init_scale=init_scale)
    elif mode == "hybrid":
        bench_system.set_weights(calibrated.get_weights())
        system = HybridSystem(bench_system, calibrated)
    else:
        bench_system.set_weights(calibrated.get_weights())
        system = bench_system
    if history is not None and start_epoch > 0:
        pass  # weights already restored by the caller through system.set_weights
    history = train(system, task, optimizer, epochs=epochs, batch=batch, seed=seed, start_epoch=start_epoch,
                    history=history, on_epoch_end=(lambda e, h: on_epoch_end(e, h, system, optimizer))
                    if on_epoch_end else None, progress=progress)
    weights = [np.array(w) for w in system.get_weights()]
    out = {"mode": mode, "history": history, "weights": weights, "seconds": time.perf_counter() - t0}
    if mode == "ideal":
        out["twin_accuracy"] = evaluate(reference, task.x_test, task.y_test, task.n_classes)[1]
        out["bench_accuracy"] = float("nan")
        return out
    bench_system.set_weights(weights)
    out["bench_accuracy"] = evaluate(bench_system, task.x_test, task.y_test, task.n_classes, batch=256)[1]
    calibrated.set_weights(weights)
    out["twin_accuracy"] = evaluate(calibrated, task.x_test, task.y_test, task.n_classes)[1]
    return out


def run_cli(args) -> int:
    """``optwin train --system bench ...``"""
    import json

    from hwio.bench import open_bench
    from optwin.workflows.from_calibration import bench_system_from_calibration, load_calibration
    from twin.tasks import load_task

    if args.system != "bench":
        raise UsageError(f"unknown --system {args.system!r}; use twin or bench")
    if not args.bench or not args.cal:
        raise UsageError("--system bench needs --bench CONFIG and --cal cal.h5")
    mode = args.mode or "optical"
    cal = load_calibration(args.cal)
    try:
        bench = open_bench(args.bench)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    with bench:
        system = bench_system_from_calibration(bench, cal)
        try:
            task = load_task(args.task, seed=args.seed, n_samples=args.n_samples or 400)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if task.n_features != system.sizes[0] or task.n_classes != system.sizes[-1]:
            raise UsageError(f"task {args.task!r} ({task.n_features} inputs, {task.n_classes} classes) does not "
                             f"fit bench {bench.name!r} with sizes {system.sizes}")
        res = run_mode(mode, system, cal, task, epochs=args.epochs or 20, batch=args.batch or 16,
                       lr=args.lr or 1e-2, seed=args.seed, init_scale=args.init_scale or 3.0,
                       rule=args.rule, progress=not args.json)
    h = res["history"]
    result = {"mode": mode, "system": "bench", "task": args.task, "layers": system.sizes,
              "test_accuracy": res["bench_accuracy"] if mode != "ideal" else res["twin_accuracy"],
              "bench_accuracy": res["bench_accuracy"], "twin_accuracy": res["twin_accuracy"],
              "train_accuracy": h.train_accuracy[-1], "final_loss": h.train_loss[-1], "epochs": len(h.epoch),
              "seconds": res["seconds"], "samples_per_second": len(h.epoch) * len(task.x_train) / res["seconds"]}
    if args.out:
        from optwin.runfile import save_run
        save_run(args.out, res["weights"], {"mode": mode, "task": args.task, "system": "bench",
                                            "bench": str(args.bench), "cal": str(args.cal), "seed": args.seed},
                 h.as_dict())
        result["out"] = str(args.out)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{mode} on {bench.name}: bench accuracy {result['bench_accuracy']:.3f}, "
              f"twin accuracy {result['twin_accuracy']:.3f}, {result['epochs']} epochs in {result['seconds']:.0f} s")
    return 0
