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

``optwin train --system bench`` (:func:`train_on_bench`, settings from
:class:`optwin.settings.TrainSettings`) pre-trains hybrid and optical runs on the calibrated
twin unless ``--init-from`` gives the weights, trains towards the target amplitude the
calibration allows (:func:`target_from_calibration`) and with ``--out run.h5`` checkpoints
atomically after every epoch (weights in twin units, optimizer state, curves, settings with
``epochs_done``); ``--resume`` continues from the last checkpoint.  With a bench in the loop (hybrid,
optical) a :class:`optwin.workflows.drift.DriftWatch` checks the bench against the twin
after every epoch and re-fits drifting calibration parts (``--no-drift-watch`` turns it off).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from optwin.errors import UsageError, raise_if_interrupted
from optwin.settings import MODES, SettingsError, TrainSettings

__all__ = ["MODES", "run_mode", "train_on_bench", "target_from_calibration", "describe_refit"]

# one-hot target amplitude of run_mode, in twin output units (full-scale layer-2 weight x unit
# activation): 1, the paper's MSE; bench runs of optwin train derive theirs from the
# calibration (target_from_calibration)
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


def target_from_calibration(cal) -> float:
    """The one-hot target amplitude a bench can reach, from its calibration (twin output units).

    One hidden neuron at the saturation intensity (z1 = 1, where the cell's nonlinearity acts)
    through a full-scale layer-2 weight gives the output ``w_max2 * g(1)``, with g the
    calibrated pump law of the cell: the output scale the trained network works at.  Every
    correct output then is within reach of a few hidden neurons, and the wrong ones at 0.
    """
    from calibration.absorber_fit import absorber_from_fit
    from optwin.workflows.from_calibration import _need
    law = absorber_from_fit(_need(cal, "absorber", "absorber"))
    w_max2 = float(_need(cal, "mvm2", "mvm").quantities["w_max"].value)
    target = w_max2 * float(np.ravel(law.transmit(np.array([1.0])))[0])
    if not (np.isfinite(target) and target > 0):
        raise UsageError(f"the calibration gives no usable output scale (w_max2 {w_max2}, g(1) {target / w_max2}); "
                         f"give --target")
    return float(f"{target:.3g}")


# settings that must match for --resume (the rest, e.g. --epochs or the drift watch, may change)
RESUME_KEYS = ("system", "mode", "task", "bench", "cal", "seed", "batch", "lr", "init_scale", "rule",
               "n_samples", "layers", "target", "probe_correction", "val_fraction", "lr_schedule", "init_from",
               "pretrain")
# what a run file written before a setting existed was trained with
RESUME_DEFAULTS = {"val_fraction": 0.0, "lr_schedule": "constant", "init_from": None, "pretrain": None}


def _load_checkpoint(path, settings: TrainSettings) -> dict | None:
    """The checkpoint in ``path`` (None when there is none yet); SettingsError when settings differ."""
    from optwin.runfile import load_run
    from optwin.workflows.twin_training import check_schedule_epochs
    if not Path(path).exists():
        return None
    saved = load_run(path)
    now = settings.record()
    for key in RESUME_KEYS:
        before = saved["settings"].get(key, RESUME_DEFAULTS.get(key))
        if before != now[key]:
            raise SettingsError(f"--resume: {path} was trained with {key}={before!r}, now {key}={now[key]!r}; "
                                f"use the same settings or a new --out")
    check_schedule_epochs(saved["settings"], settings, path)
    return saved


def _starting_weights(cal, sizes, settings: TrainSettings) -> list:
    """The weights a fresh run starts from (the calibrated twin's seeded initialisation)."""
    from optwin.workflows.from_calibration import twin_from_calibration
    net = twin_from_calibration(cal, sizes, rule=settings.rule, seed=settings.seed, init_scale=settings.init_scale)
    return [np.array(w) for w in net.get_weights()]


class _BenchRun:
    """One ``optwin train --system bench`` run: the opened bench, its calibration, task and checkpoints."""

    def __init__(self, settings: TrainSettings, bench, out, progress: bool):
        from optwin.workflows.from_calibration import (bench_system_from_calibration, check_calibration_bench,
                                                       load_calibration)
        from twin.tasks import load_task
        self.bench, self.out, self.progress = bench, out, progress
        self.cal = load_calibration(settings.cal)
        check_calibration_bench(self.cal, bench, settings.cal, allow_other=settings.allow_other_bench,
                                command="optwin train")
        self.system = bench_system_from_calibration(bench, self.cal)
        sizes = self.system.sizes
        if settings.target is None:
            settings = settings.replace(target=target_from_calibration(self.cal))
        self.settings = settings = settings.replace(layers=sizes)
        try:
            task = load_task(settings.task, seed=settings.seed, n_samples=settings.n_samples)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        if task.n_features != sizes[0] or task.n_classes > sizes[-1]:
            raise SettingsError(f"task {settings.task!r} ({task.n_features} inputs, {task.n_classes} classes) does "
                                f"not fit bench {bench.name!r} with sizes {sizes}")
        self.task, self.validation = task.with_outputs(sizes[-1]).split_validation(settings.val_fraction)
        self.record = settings.record()

    def save(self, epoch, weights, hist, opt, kept=None, extra=None, curves=None):
        """Atomic run file: weights, settings (+ ``extra``), curves (+ ``curves``), optimizer, kept weights."""
        from optwin.runfile import save_run
        fields = {"epochs_done": int(epoch), **(kept.settings(hist) if kept is not None else {}), **(extra or {})}
        save_run(self.out, weights, dict(self.record, **fields), {**hist.as_dict(), **(curves or {})}, opt.state(),
                 extra_weights=kept.weights if kept is not None else None)

    def pretrain(self) -> dict:
        """Best of ``pretrain.restarts`` calibrated-twin trainings (early stopping on the validation
        samples); the summary with the chosen weights (``weights``) and their bench accuracy."""
        p = self.settings.pretrain
        s = self.settings
        res = run_mode("insilico", self.system, self.cal, self.task, epochs=p.epochs, batch=s.batch, lr=p.lr,
                       seed=s.seed, init_scale=s.init_scale, rule=s.rule, target=s.target,
                       validation=self.validation, keep_best=True, restarts=p.restarts, progress=self.progress)
        return {"weights": res["weights"], "restart": int(res["restart"]),
                "restart_val_accuracy": [float(v) for v in res["restart_val_accuracy"]],
                "bench_accuracy": float(res["bench_accuracy"]), "twin_accuracy": float(res["twin_accuracy"]),
                "seconds": float(res["seconds"])}


def train_on_bench(settings: TrainSettings, out=None, resume: bool = False, progress: bool = False) -> dict:
    """``optwin train --system bench``: train as ``settings`` say; returns the result.

    Hybrid and optical runs with ``settings.pretrain`` first pre-train on the calibrated twin
    (:meth:`_BenchRun.pretrain`) and checkpoint the chosen weights as epoch 0 (``--resume``
    does not repeat it); the bench then fine-tunes them.
    """
    from hwio.bench import open_bench
    if resume and not out:
        raise SettingsError("--resume needs --out (the run file to continue)")
    try:
        bench = open_bench(settings.bench)
    except (ValueError, OSError) as exc:
        raise SettingsError(str(exc)) from None
    with bench:
        run = _BenchRun(settings, bench, out, progress)
        saved = _load_checkpoint(out, run.settings) if resume else None
        if run.settings.restarts > 1:
            return _train_restarts(run, saved)
        if saved is not None and int(saved["settings"].get("restarts", 1)) > 1:
            raise SettingsError(f"--resume: {out} was trained with --restarts {saved['settings']['restarts']}; "
                                f"give it again")
        return _train_single(run, saved)


def _train_single(run: _BenchRun, saved: dict | None) -> dict:
    """One bench run (any mode) from the pre-trained, given, checkpointed or seeded weights."""
    from optwin.workflows.drift import DriftWatch, DriftWatchError
    from optwin.workflows.twin_training import KeptWeights, initial_weights
    from twin.optim import Adam
    from twin.training import History

    s, out = run.settings, run.out
    optimizer = Adam(s.lr)
    start, history, init_weights, baseline, events, pre = 0, None, None, None, [], None
    drift_curves = {q: [] for q in ("z1", "a1", "z2")}
    if saved is not None:
        start, history, init_weights, baseline, events, pre, drift_curves = _resumed(run, saved, optimizer)
    elif s.init_from is not None:
        init_weights = initial_weights(s.init_from, run.system.sizes, s.task)
    elif s.pretrain is not None:
        pre = run.pretrain()
        init_weights = pre.pop("weights")
    cal, system = run.cal, run.system
    # early stopping: the best epoch's weights and the last epoch's travel in every checkpoint
    kept = None
    if run.validation is not None:
        start_w = init_weights if init_weights is not None else _starting_weights(cal, system.sizes, s)
        # as the panels realise them (clipped to each layer's range): what epoch 0 scores
        kept = KeptWeights([np.clip(w, -wm, wm) for w, wm in zip(start_w, system.cal.w_max)], saved)
    watch = None
    if s.drift_watch:
        base = Path(out) if out else Path(s.cal)
        watch = DriftWatch(system, cal, refit_base=base, seed=s.seed, every_epochs=s.drift_every,
                           progress=run.progress)
        watch.events = events

    def extra():
        fields = {"drift_watch": watch is not None, "pretrain_result": pre}
        if watch is not None:
            fields.update(drift_baseline=watch.baseline, drift_refits=watch.events)
        return fields

    def save(epoch, weights, hist, opt, final=None):
        curves = {f"drift_{q}_nrmse": v for q, v in drift_curves.items()} if watch is not None else None
        run.save(epoch, weights, hist, opt, kept, dict(extra(), **(final or {})), curves)

    if out and saved is None and pre is not None:     # the pre-training is not repeated by --resume
        save(0, init_weights, History(), optimizer)

    def checkpoint(epoch, hist, sys_, opt):
        if kept is not None:
            kept.observe(epoch, hist, sys_.get_weights())
        if watch is not None:     # the residuals of this epoch's check (NaN when none)
            last = watch.checks[-1] if watch.checks and watch.checks[-1]["epoch"] == epoch else None
            for q in drift_curves:
                drift_curves[q].append(last["residual"][q] if last else float("nan"))
        if out:
            save(epoch, sys_.get_weights(), hist, opt)
        raise_if_interrupted()

    try:
        res = run_mode(s.mode, system, cal, run.task, epochs=s.epochs, batch=s.batch, lr=s.lr, seed=s.seed,
                       init_scale=s.init_scale, rule=s.rule, target=s.target, probe_correction=s.probe_correction,
                       validation=run.validation, keep_best=kept is not None,
                       best=kept.best if kept is not None else None, lr_schedule=s.lr_schedule,
                       progress=run.progress, init_weights=init_weights, start_epoch=start, history=history,
                       optimizer=optimizer,
                       on_epoch_end=checkpoint if (out or watch is not None or kept is not None) else None,
                       drift_watch=watch, drift_baseline=baseline)
    except (FloatingPointError, DriftWatchError) as exc:
        raise UsageError(str(exc)) from None
    h = res["history"]
    seconds = res["seconds"] + (sum(history.seconds[:start]) if saved is not None else 0.0)
    result = _result(run, res, h, seconds)
    result.update(samples_per_second=(len(h.epoch) - start) * len(run.task.x_train) / res["seconds"]
                  if res["seconds"] > 0 else None,
                  resumed_from_epoch=start if saved is not None else None, drift_watch=watch is not None,
                  drift_refits=res.get("drift_refits", []), pretrain=pre)
    if out:
        save(len(h.epoch), res["weights"], h, res["optimizer"],
             final={"bench_accuracy": result["bench_accuracy"], "twin_accuracy": result["twin_accuracy"]})
    return result


def _resumed(run: _BenchRun, saved: dict, optimizer):
    """What a checkpoint continues: ``(start epoch, history, weights, drift baseline, drift events,
    pre-training summary, drift curves)``; restores ``optimizer`` and, after a drift re-fit, the
    run's calibration and bench system."""
    from optwin.workflows.from_calibration import bench_system_from_calibration, load_calibration
    from twin.training import History
    curves = saved["curves"]
    history = History(**{k: [float(v) for v in curves[k]] for k in History().as_dict() if k in curves})
    start = len(history.epoch)
    if saved["optimizer"]:
        optimizer.load_state(saved["optimizer"])
    drift_curves = {}
    for q in ("z1", "a1", "z2"):
        c = curves.get(f"drift_{q}_nrmse")
        drift_curves[q] = [float(v) for v in c] if c is not None and len(c) == start else [float("nan")] * start
    st = saved["settings"]
    events = list(st.get("drift_refits") or [])
    active = events[-1]["cal_file"] if events else None
    if active and Path(active).exists():   # the latest re-fit describes the bench best
        run.cal = load_calibration(active)
        run.system = bench_system_from_calibration(run.bench, run.cal)
    return (start, history, saved["extra_weights"].get("latest", saved["weights"]), st.get("drift_baseline") or None,
            events, st.get("pretrain_result"), drift_curves)


def _result(run: _BenchRun, res: dict, h, seconds: float) -> dict:
    """The fields every bench result has."""
    s = run.settings
    result = {"mode": s.mode, "system": "bench", "bench_name": run.bench.name, "task": s.task,
              "layers": list(run.system.sizes), "target": s.target, "rule": s.rule,
              "probe_correction": s.probe_correction,
              "test_accuracy": res["bench_accuracy"] if s.mode != "ideal" else res["twin_accuracy"],
              "bench_accuracy": res["bench_accuracy"], "twin_accuracy": res["twin_accuracy"],
              "train_accuracy": h.train_accuracy[-1], "final_loss": h.train_loss[-1], "epochs": len(h.epoch),
              "seconds": seconds, "settings": run.record}
    if run.validation is not None:
        result.update(selected_epoch=h.selected_epoch, n_validation=len(run.validation[0]))
    return result


def _train_restarts(run: _BenchRun, saved: dict | None) -> dict:
    """``--mode insilico|ideal --restarts R``: the best of R twin trainings, deployed to the bench."""
    from optwin.runfile import load_run, save_run
    from optwin.workflows.restarts import run_restarts
    from twin.optim import Adam
    from twin.training import evaluate

    s, system, task = run.settings, run.system, run.task
    build = twin_builder(s.mode, run.cal, system.sizes, rule=s.rule, init_scale=s.init_scale)
    chosen, seconds = run_restarts(build, task, lambda: Adam(s.lr), run.record, run.validation, out=run.out,
                                   saved=saved, progress=run.progress)
    weights = [np.array(w) for w in chosen.system.get_weights()]
    twin_acc = evaluate(chosen.system, task.x_test, task.y_test, task.n_classes)[1]
    bench_acc = float("nan")
    if s.mode != "ideal":
        system.set_weights(weights)
        bench_acc = evaluate(system, task.x_test, task.y_test, task.n_classes, batch=256)[1]
    result = _result(run, {"bench_accuracy": bench_acc, "twin_accuracy": twin_acc}, chosen.history, seconds)
    result.update(resumed_from_epoch=None, drift_watch=False, drift_refits=[], restarts=s.restarts,
                  restart=chosen.index, restart_val_accuracy=chosen.val_accuracy)
    if run.out:
        saved_run = load_run(run.out)       # the last restart checkpoint, plus the final accuracies
        save_run(run.out, saved_run["weights"], dict(saved_run["settings"], bench_accuracy=bench_acc,
                                                     twin_accuracy=twin_acc),
                 saved_run["curves"], saved_run["optimizer"])
    return result


def describe_refit(event: dict) -> str:
    """One line for a drift re-fit event (the quantity furthest past its threshold)."""
    before, thr = event["residual_before"], event["threshold"]
    worst = max(before, key=lambda q: before[q] / thr[q])
    state = "recovered" if event["recovered"] else "NOT recovered: " + event.get("note", "")
    return (f"drift at epoch {event['epoch']}: {worst} residual {before[worst]:.4f} > threshold {thr[worst]:.4f}; "
            f"re-fitted {', '.join(event['parts'])} in {event['seconds']:.0f} s -> "
            f"{event['residual_after'][worst]:.4f} ({state})")
