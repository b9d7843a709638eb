"""Training modes against a bench (physics.md section 4).

=========  ====================  =================================  =========================
mode       forward               backward                           evaluated on
=========  ====================  =================================  =========================
ideal      perfect MVMs, cell    exact derivative                   the ideal twin (reference)
insilico   calibrated twin       twin (exact g' by default)         the bench, after deploying
hybrid     bench                 calibrated twin at measured values the bench
optical    bench                 bench: probe through the cell      the bench
                                 (x calibrated g'/t at measured z1)
=========  ====================  =================================  =========================

``ideal`` is the same physical network on a perfect digital computer: the calibrated cell
law, perfect MVMs, the SLMs' weight range (+-w_max), exact derivatives.  ``insilico`` can
also train on an *uncalibrated* twin (``twin="ideal"``: nominal thin-cell law, perfect
MVMs) to show the reality gap that calibration closes.

``optwin train --system bench --out run.h5`` checkpoints atomically after every epoch
(weights in twin units, optimizer state, curves, settings with ``epochs_done``);
``--resume`` continues from the last checkpoint.  With a bench in the loop (hybrid,
optical) a :class:`optwin.workflows.drift.DriftWatch` checks the bench against the twin
after every epoch and re-fits drifting calibration parts (``--no-drift-watch`` turns it off).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from optwin.commands.restart_runs import check_restarts
from optwin.commands.train import check_val_fraction
from optwin.errors import UsageError
from optwin.outputs import print_json

__all__ = ["MODES", "run_mode", "run_cli", "describe_refit"]

MODES = ("insilico", "hybrid", "optical", "ideal")
# one-hot target amplitude for bench training, in twin output units (full-scale layer-2
# weight x unit activation): 1, the paper's MSE; see --target in the README for smaller ones
DEFAULT_TARGET = 1.0


def run_mode(mode: str, bench_system, cal, task, *, epochs: int, batch: int, lr: float, seed: int = 0,
             init_scale: float = 3.0, twin: str = "calibrated", rule: str = "exact", on_epoch_end=None,
             start_epoch: int = 0, history=None, optimizer=None, progress: bool = False,
             init_weights=None, drift_watch=None, drift_baseline: dict | None = None,
             probe_correction: bool = True, target: float = DEFAULT_TARGET, validation=None,
             keep_best: bool = False, best=None, restarts: int = 1, lr_schedule: str = "constant") -> dict:
    """Train in one mode; returns {'history', 'weights', 'bench_accuracy', 'twin_accuracy', ...}.

    ``init_weights`` (twin units, one array per layer) starts the run from given weights, e.g.
    in-silico-trained ones that hybrid or optical training then fine-tunes on the bench, or
    a checkpoint's weights with ``start_epoch``/``history``/``optimizer`` (resume).
    A task with fewer classes than the bench has outputs is padded (extra outputs -> 0).
    ``on_epoch_end(epoch, history, system, optimizer)`` runs after every epoch (checkpoints).
    ``drift_watch`` (:class:`optwin.workflows.drift.DriftWatch` on ``bench_system``; hybrid and
    optical only) checks the bench after every epoch, before ``on_epoch_end``, and re-fits
    what drifted; the twin of a hybrid run then adopts the re-fitted calibration.
    ``drift_baseline`` (a saved ``DriftWatch.baseline``) resumes a watch without re-measuring
    it; the bench is then checked once before the first resumed epoch.
    ``rule`` is the twin's backward rule at the cell (insilico training and the hybrid
    backward pass): ``exact`` (default; a digital model can use g') or ``probe``.
    ``target``: one-hot target amplitude in output units (:func:`twin.training.train`).
    ``validation``/``keep_best``: early stopping on held-out training samples, scored on the
    training system (the bench in hybrid and optical mode; :func:`twin.training.train`);
    ``best`` resumes it (the best epoch of the run's earlier part).
    ``probe_correction`` (optical only): multiply each measured hidden error by the calibrated
    ratio g'(z1)/t(z1) at the measured z1 (:mod:`twin.probe_correction`); False trains
    with the raw probe transmission, as the paper does.
    ``lr_schedule``: ``constant`` or ``cosine`` (:func:`twin.training.train`; e.g. a bench
    fine-tune whose noisy last steps should be small).
    ``restarts`` (ideal and insilico only; needs ``validation``): train that many random
    initialisations and keep the one with the best validation accuracy
    (:func:`twin.restarts.train_restarts`); the result gains ``restart`` (the winner's index),
    ``restart_seeds`` and ``restart_val_accuracy``.
    """
    from optwin.workflows.from_calibration import ideal_twin, twin_from_calibration
    from twin.hybrid import HybridSystem
    from twin.optim import Adam
    from twin.probe_correction import ProbeCorrectedSystem
    from twin.training import evaluate, train

    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if drift_watch is not None and mode not in ("hybrid", "optical"):
        raise UsageError(f"the drift watch needs the bench in the training loop (hybrid or optical), "
                         f"not mode {mode!r}")
    restarts = int(restarts)
    if restarts < 1:
        raise UsageError(f"restarts must be >= 1, got {restarts}")
    if restarts > 1:
        if mode not in ("ideal", "insilico"):
            raise UsageError(f"restarts train on the twin; mode {mode!r} trains on the bench: pre-train with "
                             f"restarts in insilico mode, then fine-tune the winner with --init-from")
        if validation is None:
            raise UsageError("restarts need held-out validation samples to choose between them (--val-fraction)")
        if init_weights is not None or start_epoch or on_epoch_end is not None or history is not None:
            raise UsageError("restarts start from fresh random weights; they cannot continue given weights "
                             "or a checkpoint")
    sizes = bench_system.sizes
    if task.n_classes != sizes[-1]:
        task = task.with_outputs(sizes[-1])
    calibrated = twin_from_calibration(cal, sizes, rule=rule, seed=seed, init_scale=init_scale)
    reference = ideal_twin(cal, sizes, rule="exact", seed=seed, init_scale=init_scale, absorber="calibrated")
    if init_weights is not None:
        for net in (calibrated, reference):
            net.set_weights([np.array(w, dtype=np.float64) for w in init_weights])
    optimizer = optimizer or Adam(lr)
    t0 = time.perf_counter()
    if mode == "ideal":
        system = reference
    elif mode == "insilico":
        system = calibrated if twin == "calibrated" else ideal_twin(cal, sizes, rule=rule, seed=seed,
                                                                    init_scale=init_scale)
        if init_weights is not None:
            system.set_weights([np.array(w, dtype=np.float64) for w in init_weights])
    elif mode == "hybrid":
        bench_system.set_weights(calibrated.get_weights())
        system = HybridSystem(bench_system, calibrated)
    else:
        bench_system.set_weights(calibrated.get_weights())
        system = bench_system
        if probe_correction:
            system = ProbeCorrectedSystem(bench_system, calibrated.absorber)

    if drift_watch is not None:
        def adopt(new_cal):
            """Rebuild the training twin from a re-fitted calibration (weights kept)."""
            nonlocal calibrated, cal
            cal = new_cal
            twin_now = twin_from_calibration(new_cal, sizes, rule=rule, seed=seed, init_scale=init_scale)
            twin_now.set_weights([np.array(w) for w in bench_system.get_weights()])
            calibrated = twin_now
            if isinstance(system, HybridSystem):
                system.twin = twin_now
            if isinstance(system, ProbeCorrectedSystem):
                system.absorber = twin_now.absorber

        drift_watch.on_refit = adopt
        drift_watch.start(drift_baseline)
        if drift_baseline is not None and start_epoch > 0:
            drift_watch.check(start_epoch)      # the bench may have drifted while the run was down

    def epoch_end(epoch, hist):
        if drift_watch is not None:
            drift_watch.maybe_check(epoch)
        if on_epoch_end is not None:
            on_epoch_end(epoch, hist, system, optimizer)

    extra = {}
    if restarts > 1:
        from twin.restarts import train_restarts

        build = twin_builder(mode, cal, sizes, twin=twin, rule=rule, init_scale=init_scale)
        chosen = train_restarts(build, task, lambda: Adam(lr), restarts, seed=seed, validation=validation,
                                epochs=epochs, batch=batch, target=target, keep_best=keep_best,
                                progress=progress, lr_schedule=lr_schedule)
        system, history = chosen.system, chosen.history
        if mode == "ideal":
            reference = system
        optimizer = chosen.optimizer
        extra = {"restart": chosen.index, "restart_seeds": chosen.seeds,
                 "restart_val_accuracy": chosen.val_accuracy}
    else:
        history = train(system, task, optimizer, epochs=epochs, batch=batch, seed=seed, start_epoch=start_epoch,
                        target=target, history=history, progress=progress, validation=validation,
                        keep_best=keep_best, best=best, lr_schedule=lr_schedule,
                        on_epoch_end=epoch_end if (on_epoch_end or drift_watch) else None)
    weights = [np.array(w) for w in system.get_weights()]
    out = {**extra, "mode": mode, "probe_correction": bool(probe_correction and mode == "optical"),
           "history": history, "weights": weights, "seconds": time.perf_counter() - t0,
           "optimizer": optimizer, "system": system}
    if drift_watch is not None:
        out["drift_refits"] = list(drift_watch.events)
        out["cal"] = cal
    if mode == "ideal":
        out["twin_accuracy"] = evaluate(reference, task.x_test, task.y_test, task.n_classes)[1]
        out["bench_accuracy"] = float("nan")
        return out
    bench_system.set_weights(weights)
    out["bench_accuracy"] = evaluate(bench_system, task.x_test, task.y_test, task.n_classes, batch=256)[1]
    calibrated.set_weights(weights)
    out["twin_accuracy"] = evaluate(calibrated, task.x_test, task.y_test, task.n_classes)[1]
    return out


def twin_builder(mode: str, cal, sizes, *, twin: str = "calibrated", rule: str = "exact", init_scale: float = 3.0):
    """``build(init_seed)`` -> the fresh twin that ``mode`` (ideal or insilico) trains, for restarts."""
    from optwin.workflows.from_calibration import ideal_twin, twin_from_calibration

    def build(init_seed: int):
        if mode == "ideal":
            return ideal_twin(cal, sizes, rule="exact", seed=init_seed, init_scale=init_scale, absorber="calibrated")
        if twin == "calibrated":
            return twin_from_calibration(cal, sizes, rule=rule, seed=init_seed, init_scale=init_scale)
        return ideal_twin(cal, sizes, rule=rule, seed=init_seed, init_scale=init_scale)
    return build


# settings that must match for --resume (the rest, e.g. --epochs or the drift watch, may change)
RESUME_KEYS = ("system", "mode", "task", "bench", "cal", "seed", "batch", "lr", "init_scale", "rule",
               "n_samples", "layers", "target", "probe_correction", "val_fraction", "lr_schedule")
# what a run file written before a setting existed was trained with
RESUME_DEFAULTS = {"val_fraction": 0.0, "lr_schedule": "constant"}


def _bench_settings(args, mode: str, layers) -> dict:
    val_fraction = check_val_fraction(getattr(args, "val_fraction", 0.0))
    bench = str(args.bench)
    if Path(bench).exists():
        bench = str(Path(bench).resolve())
    return {"system": "bench", "mode": mode, "task": args.task, "bench": bench,
            "cal": str(Path(args.cal).resolve()), "seed": args.seed, "epochs": args.epochs or 20,
            "batch": args.batch or 16, "lr": args.lr or 1e-2, "init_scale": args.init_scale or 3.0,
            "rule": args.rule or "exact", "n_samples": args.n_samples or 400, "layers": [int(s) for s in layers],
            "target": DEFAULT_TARGET if getattr(args, "target", None) is None else float(args.target),
            "probe_correction": bool(getattr(args, "probe_correction", True)) and mode == "optical",
            "val_fraction": val_fraction, "lr_schedule": getattr(args, "lr_schedule", None) or "constant",
            "restarts": check_restarts(getattr(args, "restarts", 1), val_fraction)}


def _load_checkpoint(path, settings: dict) -> dict | None:
    """The checkpoint in ``path`` (None when there is none yet); UsageError when settings differ."""
    from optwin.runfile import load_run
    if not Path(path).exists():
        return None
    saved = load_run(path)
    for key in RESUME_KEYS:
        if saved["settings"].get(key, RESUME_DEFAULTS.get(key)) != settings[key]:
            raise UsageError(f"--resume: {path} was trained with {key}={saved['settings'].get(key)!r}, "
                             f"now {key}={settings[key]!r}; use the same settings or a new --out")
    from optwin.commands.train import check_schedule_epochs
    check_schedule_epochs(saved["settings"], settings, path)
    return saved


def _starting_weights(cal, sizes, seed: int, settings: dict) -> list:
    """The weights a fresh run starts from (the calibrated twin's seeded initialisation)."""
    from optwin.workflows.from_calibration import twin_from_calibration
    net = twin_from_calibration(cal, sizes, rule=settings["rule"], seed=seed, init_scale=settings["init_scale"])
    return [np.array(w) for w in net.get_weights()]


def _initial_weights(path, sizes) -> list:
    """Weights of a run file (``--init-from``), checked against the bench's layer sizes."""
    from optwin.runfile import load_run
    weights = load_run(path)["weights"]
    want = [(sizes[k + 1], sizes[k]) for k in range(len(sizes) - 1)]
    got = [tuple(np.shape(w)) for w in weights]
    if got != want:
        raise UsageError(f"--init-from {path}: weights have shapes {got}, the bench needs {want}")
    return [np.asarray(w, dtype=np.float64) for w in weights]


def run_cli(args) -> int:
    """``optwin train --system bench ...``"""
    from hwio.bench import open_bench
    from optwin.commands.train import KeptWeights
    from optwin.workflows.drift import DriftWatch, DriftWatchError
    from optwin.workflows.from_calibration import (bench_system_from_calibration, check_calibration_bench,
                                                   load_calibration)
    from twin.optim import Adam
    from twin.tasks import load_task
    from twin.training import History

    if args.system != "bench":
        raise UsageError(f"unknown --system {args.system!r}; use twin or bench")
    if not args.bench or not args.cal:
        raise UsageError("--system bench needs --bench CONFIG and --cal cal.h5")
    if args.resume and not args.out:
        raise UsageError("--resume needs --out (the run file to continue)")
    mode = args.mode or "optical"
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    drift_flag = getattr(args, "drift_watch", None)
    if drift_flag and mode not in ("hybrid", "optical"):
        raise UsageError(f"--drift-watch needs the bench in the training loop (--mode hybrid or optical), "
                         f"not --mode {mode}")
    watch_on = mode in ("hybrid", "optical") if drift_flag is None else bool(drift_flag)
    progress = not (args.json or getattr(args, "no_progress", False)) and sys.stderr.isatty()
    every = getattr(args, "drift_every", None)
    every = 1 if every is None else every
    if every < 1:
        raise UsageError(f"--drift-every must be a positive number of epochs, got {every}")
    if args.rule is not None and args.rule not in ("probe", "exact"):
        raise UsageError(f"unknown rule {args.rule!r}; choose probe or exact")
    target = getattr(args, "target", None)
    if target is not None and not (np.isfinite(target) and target > 0):
        raise UsageError(f"--target must be a positive amplitude, got {target}")
    cal = load_calibration(args.cal)
    try:
        bench = open_bench(args.bench)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    with bench:
        check_calibration_bench(cal, bench, args.cal, allow_other=getattr(args, "allow_other_bench", False),
                                command="optwin train")
        system = bench_system_from_calibration(bench, cal)
        settings = _bench_settings(args, mode, system.sizes)
        try:
            task = load_task(args.task, seed=args.seed, n_samples=settings["n_samples"])
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if task.n_features != system.sizes[0] or task.n_classes > system.sizes[-1]:
            raise UsageError(f"task {args.task!r} ({task.n_features} inputs, {task.n_classes} classes) does not "
                             f"fit bench {bench.name!r} with sizes {system.sizes}")
        task, validation = task.split_validation(settings["val_fraction"])
        optimizer = Adam(settings["lr"])
        saved = _load_checkpoint(args.out, settings) if args.resume else None
        if settings["restarts"] > 1:
            return _restarts_cli(args, mode, bench, system, cal, task, validation, settings, saved, progress)
        if saved is not None and int(saved["settings"].get("restarts", 1)) > 1:
            raise UsageError(f"--resume: {args.out} was trained with --restarts {saved['settings']['restarts']}; "
                             f"give it again")
        start, history, init_weights, baseline, events = 0, None, None, None, []
        drift_curves = {q: [] for q in ("z1", "a1", "z2")}
        if saved is not None:
            curves = saved["curves"]
            history = History(**{k: [float(v) for v in curves[k]] for k in History().as_dict() if k in curves})
            start = len(history.epoch)
            init_weights = saved["extra_weights"].get("latest", saved["weights"])
            if saved["optimizer"]:
                optimizer.load_state(saved["optimizer"])
            for q in drift_curves:
                c = curves.get(f"drift_{q}_nrmse")
                drift_curves[q] = [float(v) for v in c] if c is not None and len(c) == start else [float("nan")] * start
            baseline = saved["settings"].get("drift_baseline") or None
            events = list(saved["settings"].get("drift_refits") or [])
            active = events[-1]["cal_file"] if events else None
            if active and Path(active).exists():   # the latest re-fit describes the bench best
                cal = load_calibration(active)
                system = bench_system_from_calibration(bench, cal)
        if saved is None and getattr(args, "init_from", None):
            init_weights = _initial_weights(args.init_from, system.sizes)
        watch = None
        if watch_on:
            base = Path(args.out) if args.out else Path(args.cal)
            watch = DriftWatch(system, cal, refit_base=base, seed=args.seed, every_epochs=every, progress=progress)
            watch.events = events

        # early stopping: the best epoch's weights and the last epoch's travel in every checkpoint
        kept = None
        if validation is not None:
            start_w = init_weights if init_weights is not None else _starting_weights(cal, system.sizes, args.seed,
                                                                                       settings)
            # as the panels realise them (clipped to each layer's range): what epoch 0 scores
            kept = KeptWeights([np.clip(w, -wm, wm) for w, wm in zip(start_w, system.cal.w_max)], saved)

        def save(epoch, weights, hist, opt, final=None):
            """Atomic run file: weights, settings (+ drift baseline and events), curves, optimizer."""
            from optwin.runfile import save_run
            extra = {"epochs_done": int(epoch), "drift_watch": watch is not None,
                     **(kept.settings(hist) if kept is not None else {})}
            curves = hist.as_dict()
            if watch is not None:
                extra.update(drift_baseline=watch.baseline, drift_refits=watch.events)
                curves.update({f"drift_{q}_nrmse": v for q, v in drift_curves.items()})
            save_run(args.out, weights, dict(settings, **extra, **(final or {})), curves, opt.state(),
                     extra_weights=kept.weights if kept is not None else None)

        def checkpoint(epoch, hist, sys_, opt):
            if kept is not None:
                kept.observe(epoch, hist, sys_.get_weights())
            if watch is not None:     # the residuals of this epoch's check (NaN when none)
                last = watch.checks[-1] if watch.checks and watch.checks[-1]["epoch"] == epoch else None
                for q in drift_curves:
                    drift_curves[q].append(last["residual"][q] if last else float("nan"))
            if args.out:
                save(epoch, sys_.get_weights(), hist, opt)

        try:
            res = run_mode(mode, system, cal, task, epochs=settings["epochs"], batch=settings["batch"],
                           lr=settings["lr"], seed=args.seed, init_scale=settings["init_scale"], rule=settings["rule"],
                           target=settings["target"], probe_correction=settings["probe_correction"],
                           validation=validation, keep_best=kept is not None,
                           best=kept.best if kept is not None else None, lr_schedule=settings["lr_schedule"],
                           progress=progress,
                           init_weights=init_weights, start_epoch=start, history=history, optimizer=optimizer,
                           on_epoch_end=checkpoint if (args.out or watch is not None or validation is not None)
                           else None,
                           drift_watch=watch, drift_baseline=baseline)
        except (FloatingPointError, DriftWatchError) as exc:
            raise UsageError(str(exc)) from None
    h = res["history"]
    seconds = res["seconds"] + (sum(history.seconds[:start]) if saved is not None else 0.0)
    result = {"mode": mode, "system": "bench", "task": args.task, "layers": system.sizes,
              "target": settings["target"], "rule": settings["rule"],
              "probe_correction": settings["probe_correction"],
              "test_accuracy": res["bench_accuracy"] if mode != "ideal" else res["twin_accuracy"],
              "bench_accuracy": res["bench_accuracy"], "twin_accuracy": res["twin_accuracy"],
              "train_accuracy": h.train_accuracy[-1] if h.epoch else float("nan"),
              "final_loss": h.train_loss[-1] if h.epoch else float("nan"), "epochs": len(h.epoch),
              "seconds": seconds, "samples_per_second": (len(h.epoch) - start) * len(task.x_train) / res["seconds"],
              "resumed_from_epoch": start if saved is not None else None,
              "drift_watch": watch is not None, "drift_refits": res.get("drift_refits", [])}
    if validation is not None:
        result.update(selected_epoch=h.selected_epoch, n_validation=len(validation[0]))
    if args.out:
        save(len(h.epoch), res["weights"], h, res["optimizer"],
             final={"bench_accuracy": result["bench_accuracy"], "twin_accuracy": result["twin_accuracy"]})
        result["out"] = str(args.out)
    if args.json:
        print_json(result)
    else:
        print(f"{mode} on {bench.name}: bench accuracy {result['bench_accuracy']:.3f}, "
              f"twin accuracy {result['twin_accuracy']:.3f}, {result['epochs']} epochs in {result['seconds']:.0f} s")
        for ev in result["drift_refits"]:
            print("  " + describe_refit(ev))
    return 0


def _restarts_cli(args, mode, bench, system, cal, task, validation, settings, saved, progress) -> int:
    """``optwin train --system bench --mode insilico|ideal --restarts R``: best of R twin trainings."""
    from optwin.commands.restart_runs import run_restarts
    from optwin.runfile import load_run, save_run
    from twin.optim import Adam
    from twin.training import evaluate

    if mode not in ("insilico", "ideal"):
        raise UsageError(f"--restarts trains on the twin; --mode {mode} trains on the bench: pre-train with "
                         f"--mode insilico --restarts, then fine-tune the winner with --init-from")
    if getattr(args, "init_from", None):
        raise UsageError("--restarts starts every restart from fresh random weights; drop --init-from")
    sizes = system.sizes
    if task.n_classes != sizes[-1]:
        task = task.with_outputs(sizes[-1])
    build = twin_builder(mode, cal, sizes, rule=settings["rule"], init_scale=settings["init_scale"])
    chosen, seconds = run_restarts(build, task, lambda: Adam(settings["lr"]), settings, validation,
                                   out=args.out, saved=saved, progress=progress)
    weights = [np.array(w) for w in chosen.system.get_weights()]
    twin_acc = evaluate(chosen.system, task.x_test, task.y_test, task.n_classes)[1]
    bench_acc = float("nan")
    if mode != "ideal":
        system.set_weights(weights)
        bench_acc = evaluate(system, task.x_test, task.y_test, task.n_classes, batch=256)[1]
    h = chosen.history
    result = {"mode": mode, "system": "bench", "task": args.task, "layers": sizes, "target": settings["target"],
              "rule": settings["rule"], "probe_correction": False,
              "test_accuracy": bench_acc if mode != "ideal" else twin_acc,
              "bench_accuracy": bench_acc, "twin_accuracy": twin_acc,
              "train_accuracy": h.train_accuracy[-1] if h.epoch else float("nan"),
              "final_loss": h.train_loss[-1] if h.epoch else float("nan"), "epochs": len(h.epoch),
              "seconds": seconds, "resumed_from_epoch": None, "drift_watch": False, "drift_refits": [],
              "selected_epoch": h.selected_epoch, "n_validation": len(validation[0]),
              "restarts": settings["restarts"], "restart": chosen.index,
              "restart_val_accuracy": chosen.val_accuracy}
    if args.out:
        run = load_run(args.out)       # the last restart checkpoint, plus the final accuracies
        save_run(args.out, run["weights"], dict(run["settings"], bench_accuracy=bench_acc, twin_accuracy=twin_acc),
                 run["curves"], run["optimizer"])
        result["out"] = str(args.out)
    if args.json:
        print_json(result)
    else:
        print(f"{mode} on {bench.name}: restart {chosen.index + 1} of {settings['restarts']} kept "
              f"(validation accuracy {chosen.val_accuracy[chosen.index]:.3f}); bench accuracy {bench_acc:.3f}, "
              f"twin accuracy {twin_acc:.3f}")
    return 0


def describe_refit(event: dict) -> str:
    """One line for a drift re-fit event (the quantity furthest past its threshold)."""
    before, thr = event["residual_before"], event["threshold"]
    worst = max(before, key=lambda q: before[q] / thr[q])
    state = "recovered" if event["recovered"] else "NOT recovered: " + event.get("note", "")
    return (f"drift at epoch {event['epoch']}: {worst} residual {before[worst]:.4f} > threshold {thr[worst]:.4f}; "
            f"re-fitted {', '.join(event['parts'])} in {event['seconds']:.0f} s -> "
            f"{event['residual_after'][worst]:.4f} ({state})")
