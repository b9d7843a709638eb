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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optwin.errors import UsageError, raise_if_interrupted
from optwin.settings import BENCH_LOOP_MODES, MODES, SettingsError, TrainSettings

__all__ = ["MODES", "RunState", "run_mode", "train_on_bench", "target_from_calibration", "describe_refit"]


@dataclass
class RunState:
    """Where :func:`run_mode` starts: fresh (the defaults) or a checkpoint of an earlier part.

    Attributes
    ----------
    start_epoch : epochs already done.
    history : :class:`twin.training.History` of those epochs (None: a new one).
    optimizer : the optimizer with its state (None: a fresh Adam at ``settings.lr``).
    best : ``(val_accuracy, epoch, weights)`` of the earlier part's best epoch (early stopping).
    drift_baseline : a saved ``DriftWatch.baseline`` (the watch then does not re-measure it).
    """

    start_epoch: int = 0
    history: object = None
    optimizer: object = None
    best: tuple | None = None
    drift_baseline: dict | None = None


def run_mode(settings: TrainSettings, bench_system, cal, task, *, validation=None, init_weights=None,
             state: RunState | None = None, on_epoch_end=None, drift_watch=None, twin: str = "calibrated",
             progress: bool = False) -> dict:
    """Train in ``settings.mode`` (module table) against ``bench_system``; returns the result.

    Parameters
    ----------
    settings : :class:`optwin.settings.TrainSettings`; used: ``mode``, ``epochs``, ``batch``,
        ``lr`` (per Adam step), ``lr_schedule``, ``seed``, ``init_scale`` (initial weights
        ~ N(0, s^2 / n_in), twin units), ``rule`` (the twin's backward rule at the cell:
        ``exact`` g' or ``probe``), ``target`` (one-hot amplitude in twin output units; None:
        :func:`target_from_calibration`), ``probe_correction`` (optical: multiply each
        measured hidden error by the calibrated g'(z1)/t(z1), :mod:`twin.probe_correction`)
        and ``restarts`` (ideal and insilico: best of that many initialisations on
        ``validation``, :func:`twin.restarts.train_restarts`).
    bench_system : :class:`hwio.bench_system.BenchSystem` of the bench (sizes, evaluation).
    cal : its :class:`calibration.calset.CalibrationSet`.
    task : :class:`twin.tasks.Task`; fewer classes than the bench has outputs are padded (extra
        outputs -> 0).
    validation : ``(x_val, y_val)`` held-out training samples: early stopping on the training
        system (the bench in hybrid and optical mode; :func:`twin.training.train`).
    init_weights : one (n_out, n_in) array per layer (twin units) to start from, e.g.
        in-silico-trained weights that hybrid or optical training fine-tunes.
    state : :class:`RunState` of a resumed run (epoch, history, optimizer, best epoch, drift
        baseline; with a baseline and ``start_epoch`` > 0 the bench is checked once first).
    on_epoch_end : ``on_epoch_end(epoch, history, system, optimizer)`` after every epoch.
    drift_watch : :class:`optwin.workflows.drift.DriftWatch` on ``bench_system`` (hybrid and
        optical only): checks the bench after every epoch, before ``on_epoch_end``, and
        re-fits what drifted; the training twin then adopts the re-fitted calibration.
    twin : insilico only: ``calibrated`` twin, or ``ideal`` (nominal thin-cell law, perfect
        MVMs) to show the reality gap.
    progress : show a progress bar.

    Returns
    -------
    dict
        ``mode``, ``history``, ``weights`` (twin units), ``bench_accuracy`` and
        ``twin_accuracy`` (fractions of the test samples; ``bench_accuracy`` NaN in mode
        ideal), ``seconds`` (wall time, s), ``optimizer``, ``system``, ``probe_correction``;
        with a drift watch ``drift_refits`` and ``cal`` (the calibration in use at the end);
        with restarts ``restart``, ``restart_seeds`` and ``restart_val_accuracy``.
    """
    from twin.optim import Adam

    state = state or RunState()
    _check_run(settings, drift_watch, validation, init_weights, state, on_epoch_end)
    target = settings.target if settings.target is not None else target_from_calibration(cal)
    run = _ModeRun(settings, bench_system, cal, twin, init_weights)
    if task.n_classes != run.sizes[-1]:
        task = task.with_outputs(run.sizes[-1])
    optimizer = state.optimizer or Adam(settings.lr)
    t0 = time.perf_counter()
    run.choose_system(init_weights)
    if drift_watch is not None:
        run.attach_watch(drift_watch, state)
    extra = {}
    if settings.restarts > 1:
        history, optimizer, extra = run.train_restarts(task, validation, target, progress)
    else:
        history = run.train(task, optimizer, state, validation, target, on_epoch_end, drift_watch, progress)
    return run.result(task, history, optimizer, drift_watch, extra, time.perf_counter() - t0)


def _check_run(settings: TrainSettings, drift_watch, validation, init_weights, state: RunState,
               on_epoch_end) -> None:
    """UsageError on a combination :func:`run_mode` cannot train."""
    mode, restarts = settings.mode, int(settings.restarts)
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if drift_watch is not None and mode not in BENCH_LOOP_MODES:
        raise UsageError(f"the drift watch needs the bench in the training loop (hybrid or optical), "
                         f"not mode {mode!r}")
    if restarts < 1:
        raise UsageError(f"restarts must be >= 1, got {restarts}")
    if restarts > 1:
        if mode not in ("ideal", "insilico"):
            raise UsageError(f"restarts train on the twin; mode {mode!r} trains on the bench: pre-train with "
                             f"restarts in insilico mode, then fine-tune the winner with --init-from")
        if validation is None:
            raise UsageError("restarts need held-out validation samples to choose between them (--val-fraction)")
        if (init_weights is not None or state.start_epoch or on_epoch_end is not None
                or state.history is not None):
            raise UsageError("restarts start from fresh random weights; they cannot continue given weights "
                             "or a checkpoint")


class _ModeRun:
    """The networks of one :func:`run_mode` call: the calibrated twin, the ideal reference, the
    system that trains, and the calibration they follow (a drift re-fit replaces it)."""

    def __init__(self, settings: TrainSettings, bench_system, cal, twin_kind: str, init_weights):
        from optwin.workflows.from_calibration import ideal_twin, twin_from_calibration
        s = self.settings = settings
        self.bench_system, self.cal, self.twin_kind = bench_system, cal, twin_kind
        self.sizes = bench_system.sizes
        self.calibrated = twin_from_calibration(cal, self.sizes, rule=s.rule, seed=s.seed, init_scale=s.init_scale)
        self.reference = ideal_twin(cal, self.sizes, rule="exact", seed=s.seed, init_scale=s.init_scale,
                                    absorber="calibrated")
        if init_weights is not None:
            for net in (self.calibrated, self.reference):
                net.set_weights([np.array(w, dtype=np.float64) for w in init_weights])
        self.system = None

    def choose_system(self, init_weights) -> None:
        """The system ``settings.mode`` trains (module table); bench modes show the starting weights."""
        from optwin.workflows.from_calibration import ideal_twin
        from twin.hybrid import HybridSystem
        from twin.probe_correction import ProbeCorrectedSystem
        s, bs, mode = self.settings, self.bench_system, self.settings.mode
        if mode == "ideal":
            self.system = self.reference
        elif mode == "insilico":
            self.system = self.calibrated if self.twin_kind == "calibrated" else ideal_twin(
                self.cal, self.sizes, rule=s.rule, seed=s.seed, init_scale=s.init_scale)
            if init_weights is not None:
                self.system.set_weights([np.array(w, dtype=np.float64) for w in init_weights])
        elif mode == "hybrid":
            bs.set_weights(self.calibrated.get_weights())
            self.system = HybridSystem(bs, self.calibrated)
        else:
            bs.set_weights(self.calibrated.get_weights())
            self.system = ProbeCorrectedSystem(bs, self.calibrated.absorber) if s.probe_correction else bs

    def attach_watch(self, watch, state: RunState) -> None:
        """Start the drift watch (or adopt its saved baseline); a re-fit rebuilds the training twin."""
        watch.on_refit = self.adopt
        watch.start(state.drift_baseline)
        if state.drift_baseline is not None and state.start_epoch > 0:
            watch.check(state.start_epoch)      # the bench may have drifted while the run was down

    def adopt(self, new_cal) -> None:
        """Rebuild the training twin from a re-fitted calibration (weights kept)."""
        from optwin.workflows.from_calibration import twin_from_calibration
        from twin.hybrid import HybridSystem
        from twin.probe_correction import ProbeCorrectedSystem
        s = self.settings
        self.cal = new_cal
        twin_now = twin_from_calibration(new_cal, self.sizes, rule=s.rule, seed=s.seed, init_scale=s.init_scale)
        twin_now.set_weights([np.array(w) for w in self.bench_system.get_weights()])
        self.calibrated = twin_now
        if isinstance(self.system, HybridSystem):
            self.system.twin = twin_now
        if isinstance(self.system, ProbeCorrectedSystem):
            self.system.absorber = twin_now.absorber

    def train(self, task, optimizer, state: RunState, validation, target: float, on_epoch_end, watch,
              progress: bool):
        """One training run (:func:`twin.training.train`); returns its history."""
        from twin.training import train
        s, system = self.settings, self.system

        def epoch_end(epoch, hist):
            if watch is not None:
                watch.maybe_check(epoch)
            if on_epoch_end is not None:
                on_epoch_end(epoch, hist, system, optimizer)

        return train(system, task, optimizer, epochs=s.epochs, batch=s.batch, seed=s.seed,
                     start_epoch=state.start_epoch, target=target, history=state.history, progress=progress,
                     validation=validation, keep_best=validation is not None, best=state.best,
                     lr_schedule=s.lr_schedule, on_epoch_end=epoch_end if (on_epoch_end or watch) else None)

    def train_restarts(self, task, validation, target: float, progress: bool):
        """Best of ``settings.restarts`` twin trainings; returns (history, optimizer, result fields)."""
        from twin.optim import Adam
        from twin.restarts import train_restarts
        s = self.settings
        build = twin_builder(s.mode, self.cal, self.sizes, twin=self.twin_kind, rule=s.rule,
                             init_scale=s.init_scale)
        chosen = train_restarts(build, task, lambda: Adam(s.lr), s.restarts, seed=s.seed, validation=validation,
                                epochs=s.epochs, batch=s.batch, target=target, keep_best=validation is not None,
                                progress=progress, lr_schedule=s.lr_schedule)
        self.system = chosen.system
        if s.mode == "ideal":
            self.reference = chosen.system
        return chosen.history, chosen.optimizer, {"restart": chosen.index, "restart_seeds": chosen.seeds,
                                                  "restart_val_accuracy": chosen.val_accuracy}

    def result(self, task, history, optimizer, watch, extra: dict, seconds: float) -> dict:
        """The result of :func:`run_mode`: the trained weights scored on the bench and on the twin."""
        from twin.training import evaluate
        mode = self.settings.mode
        weights = [np.array(w) for w in self.system.get_weights()]
        out = {**extra, "mode": mode, "probe_correction": bool(self.settings.probe_correction and mode == "optical"),
               "history": history, "weights": weights, "seconds": seconds, "optimizer": optimizer,
               "system": self.system}
        if watch is not None:
            out["drift_refits"] = list(watch.events)
            out["cal"] = self.cal
        if mode == "ideal":
            out["twin_accuracy"] = evaluate(self.reference, task.x_test, task.y_test, task.n_classes)[1]
            out["bench_accuracy"] = float("nan")
            return out
        self.bench_system.set_weights(weights)
        out["bench_accuracy"] = evaluate(self.bench_system, task.x_test, task.y_test, task.n_classes, batch=256)[1]
        self.calibrated.set_weights(weights)
        out["twin_accuracy"] = evaluate(self.calibrated, task.x_test, task.y_test, task.n_classes)[1]
        return out


def twin_builder(mode: str, cal, sizes, *, twin: str = "calibrated", rule: str = "exact", init_scale: float = 3.0):
    """The twin factory of restarts: ``build(init_seed)`` -> the fresh twin ``mode`` trains.

    Parameters
    ----------
    mode : ``ideal`` (perfect MVMs, calibrated cell law, exact rule) or ``insilico``.
    cal : the calibration.
    sizes : layer sizes (n_in, n_hidden, n_out).
    twin : insilico: ``calibrated`` or ``ideal`` (nominal thin-cell law, perfect MVMs).
    rule : backward rule at the cell (``exact`` or ``probe``).
    init_scale : initial weights ~ N(0, s^2 / n_in) (twin units).

    Returns
    -------
    callable
        ``build(init_seed: int)`` -> a :class:`twin.network.Network`.
    """
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

    Parameters
    ----------
    cal : a :class:`calibration.calset.CalibrationSet` with ``absorber`` and ``mvm2`` fits.

    Returns
    -------
    float
        The target amplitude in twin output units (3 significant digits).
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
        twin = self.settings.replace(mode="insilico", epochs=p.epochs, lr=p.lr, lr_schedule="constant",
                                     restarts=p.restarts, probe_correction=False, drift_watch=False)
        res = run_mode(twin, self.system, self.cal, self.task, validation=self.validation, progress=self.progress)
        return {"weights": res["weights"], "restart": int(res.get("restart", 0)),
                "restart_val_accuracy": [float(v) for v in res.get("restart_val_accuracy", [])],
                "bench_accuracy": float(res["bench_accuracy"]), "twin_accuracy": float(res["twin_accuracy"]),
                "seconds": float(res["seconds"])}


def train_on_bench(settings: TrainSettings, out=None, resume: bool = False, progress: bool = False) -> dict:
    """``optwin train --system bench``: train as ``settings`` say; returns the result.

    Hybrid and optical runs with ``settings.pretrain`` first pre-train on the calibrated twin
    (:meth:`_BenchRun.pretrain`) and checkpoint the chosen weights as epoch 0 (``--resume``
    does not repeat it); the bench then fine-tunes them.

    Parameters
    ----------
    settings : the run's :class:`optwin.settings.TrainSettings` (``system`` bench).
    out : run file to checkpoint to after every epoch (None: no file).
    resume : continue the run in ``out``.
    progress : show progress bars.

    Returns
    -------
    dict
        The result: ``mode``, ``bench_accuracy``, ``twin_accuracy``, ``test_accuracy``,
        ``train_accuracy`` (fractions), ``final_loss``, ``epochs``, ``seconds`` (s), ``target``
        (twin output units), ``settings`` and, as they apply, the pre-training, drift re-fits,
        restarts and selected epoch.
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
        state = RunState(start_epoch=start, history=history, optimizer=optimizer,
                         best=kept.best if kept is not None else None, drift_baseline=baseline)
        res = run_mode(s, system, cal, run.task, validation=run.validation, init_weights=init_weights, state=state,
                       on_epoch_end=checkpoint if (out or watch is not None or kept is not None) else None,
                       drift_watch=watch, progress=run.progress)
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
    """One line for a drift re-fit event (the quantity furthest past its threshold).

    Parameters
    ----------
    event : an event of :meth:`optwin.workflows.drift.DriftWatch.refit`.

    Returns
    -------
    str
        E.g. ``drift at epoch 2: z1 residual 0.21 > threshold 0.05; re-fitted readout, mvm in 40 s
        -> 0.03 (recovered)`` (residuals as normalised rms errors).
    """
    before, thr = event["residual_before"], event["threshold"]
    worst = max(before, key=lambda q: before[q] / thr[q])
    state = "recovered" if event["recovered"] else "NOT recovered: " + event.get("note", "")
    return (f"drift at epoch {event['epoch']}: {worst} residual {before[worst]:.4f} > threshold {thr[worst]:.4f}; "
            f"re-fitted {', '.join(event['parts'])} in {event['seconds']:.0f} s -> "
            f"{event['residual_after'][worst]:.4f} ({state})")
