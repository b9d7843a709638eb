"""Training on the twin (``optwin train --system twin``, sweep points): task, network, checkpoints.

Everything takes a validated :class:`optwin.settings.TrainSettings`.  :func:`train_twin` is
the whole run: it checkpoints ``out`` atomically after every epoch (weights, optimizer state,
curves, settings), continues it with ``resume``, keeps the best validation epoch (early
stopping) and trains ``restarts`` initialisations when asked (:mod:`optwin.workflows.restarts`).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from optwin.errors import UsageError, raise_if_interrupted
from optwin.settings import TASK_DEFAULTS, SettingsError, TrainSettings

__all__ = ["load_task_for", "build_twin", "train_twin", "train_with_checkpoints", "load_for_resume",
           "check_schedule_epochs", "initial_weights", "KeptWeights", "summarise"]

# settings that must match for --resume (the rest, e.g. --epochs, may change)
TWIN_RESUME_KEYS = ("task", "layers", "absorber", "alpha0", "i_sat", "rule", "seed", "batch", "lr", "system",
                    "val_fraction", "optimizer", "loss", "init_scale", "target", "lr_schedule", "n_samples",
                    "init_from")
# what a run file written before a setting existed was trained with
RESUME_DEFAULTS = {"val_fraction": 0.0, "lr_schedule": "constant", "i_sat": 1.0, "n_samples": None,
                   "init_from": None}


def load_task_for(settings: TrainSettings):
    """The task of ``settings`` and the settings with ``layers`` filled in.

    Parameters
    ----------
    settings : twin :class:`optwin.settings.TrainSettings`.

    Returns
    -------
    (Task, TrainSettings)
        The loaded task and the settings with ``layers`` (default: the task's hidden widths).

    Raises
    ------
    SettingsError
        When the task cannot be loaded or ``layers`` does not fit it.
    """
    from twin.tasks import load_task
    try:
        task = load_task(settings.task, seed=settings.seed, n_samples=settings.n_samples,
                         limit_train=settings.limit_train)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    layers = settings.layers
    if layers is None:
        layers = (task.n_features, *TASK_DEFAULTS[settings.task]["hidden"], task.n_classes)
        settings = settings.replace(layers=layers)
    if layers[0] != task.n_features or layers[-1] != task.n_classes:
        raise SettingsError(f"--layers {','.join(map(str, layers))} does not fit task {task.name!r}: it has "
                            f"{task.n_features} inputs and {task.n_classes} classes")
    return task, settings


def build_twin(settings: TrainSettings, seed: int | None = None, **network_options):
    """The twin network of ``settings``.

    Parameters
    ----------
    settings : twin settings with ``layers`` filled in (:func:`load_task_for`).
    seed : overrides the initialisation seed (restarts).
    **network_options : e.g. ``imperfections``, ``probe_strength``, ``update``; passed to
        :class:`twin.network.OpticalNetwork` unchanged.

    Returns
    -------
    twin.network.OpticalNetwork
    """
    from twin.network import OpticalNetwork
    absorber = None if settings.absorber == "none" else settings.absorber
    if absorber is not None:
        from twin.absorber import make_absorber
        absorber = make_absorber(absorber, alpha0=settings.alpha0, i_sat=settings.i_sat)
    return OpticalNetwork(list(settings.layers), absorber=absorber, rule=settings.rule,
                          init_scale=settings.init_scale, seed=settings.seed if seed is None else seed,
                          **network_options)


def initial_weights(path, sizes, task: str) -> list:
    """The weights of run file ``path`` (``--init-from``).

    Parameters
    ----------
    path : a run file.
    sizes : the network's layer sizes (n_in, ..., n_out).
    task : the task the new run trains.

    Returns
    -------
    list of ndarray
        One (n_out, n_in) float64 array per layer (twin units).

    Raises
    ------
    SettingsError
        When the run was trained on another task or its shapes do not fit ``sizes``.
    """
    from optwin.runfile import load_run
    run = load_run(path)
    trained_on = run["settings"].get("task")
    if trained_on is not None and trained_on != task:
        raise SettingsError(f"--init-from {path}: its weights were trained on task {trained_on!r}, not {task!r}; "
                            f"start from a {task} run")
    want = [(int(sizes[k + 1]), int(sizes[k])) for k in range(len(sizes) - 1)]
    got = [tuple(np.shape(w)) for w in run["weights"]]
    if got != want:
        raise SettingsError(f"--init-from {path}: weights have shapes {got}, the network needs {want}")
    return [np.asarray(w, dtype=np.float64) for w in run["weights"]]


def train_twin(settings: TrainSettings, out=None, resume: bool = False, progress: bool = False) -> dict:
    """``optwin train --system twin``: train the twin as ``settings`` say.

    Parameters
    ----------
    settings : twin :class:`optwin.settings.TrainSettings`.
    out : run file checkpointed after every epoch (or restart); None: no file.
    resume : continue the run in ``out``.
    progress : show progress bars.

    Returns
    -------
    dict
        :func:`summarise` of the run (accuracies are fractions; with ``val_fraction`` the test
        accuracy of the kept weights), plus the restarts and selected epoch where they apply.
    """
    from optwin.workflows.restarts import run_restarts
    from twin.optim import make_optimizer
    from twin.training import evaluate

    task, settings = load_task_for(settings)
    task, validation = task.split_validation(settings.val_fraction)
    saved = load_for_resume(out, settings, resume)
    chosen = None
    if settings.restarts > 1:
        chosen, seconds = run_restarts(lambda s: build_twin(settings, seed=s), task,
                                       lambda: make_optimizer(settings.optimizer, settings.lr), settings.record(),
                                       validation, out=out, saved=saved, progress=progress)
        net, history = chosen.system, chosen.history
    else:
        net = build_twin(settings)
        if settings.init_from is not None:
            net.set_weights(initial_weights(settings.init_from, settings.layers, settings.task))
        optimizer = make_optimizer(settings.optimizer, settings.lr)
        history, seconds = train_with_checkpoints(net, task, optimizer, settings, out=out, saved=saved,
                                                  validation=validation, progress=progress)
    result = summarise(history, settings, seconds, len(task.x_train))
    if chosen is not None:
        result.update(restarts=settings.restarts, restart=chosen.index, restart_val_accuracy=chosen.val_accuracy)
    if validation is not None:        # the kept weights' test accuracy (not the last epoch's)
        result["test_accuracy"] = evaluate(net, task.x_test, task.y_test, task.n_classes, settings.loss,
                                           target=settings.target)[1]
        result["selected_epoch"] = history.selected_epoch
        result["n_validation"] = len(validation[0])
    return result


def train_with_checkpoints(system, task, optimizer, settings: TrainSettings, out=None, saved=None, validation=None,
                           progress: bool = False):
    """Train ``system``; with ``out``, checkpoint atomically after every epoch; ``saved`` (a run
    file to resume, :func:`load_for_resume`) continues it (weights, optimizer state, curves).
    With ``validation`` (x, y) the run keeps its best validation epoch (early stopping); the
    checkpoints carry that epoch's weights, so a resumed run still knows it.

    Parameters
    ----------
    system : the system to train.
    task : the task.
    optimizer : its optimizer.
    settings : the run's settings (epochs, batch, loss, seed, target, lr_schedule).
    out : run file (None: no checkpoints).
    saved : the run file being resumed, or None.
    validation : ``(x_val, y_val)``, or None.
    progress : show a progress bar.

    Returns
    -------
    (History, float)
        The curves and the training time, earlier parts included (s).
    """
    from twin.training import History, train

    start, history = 0, None
    if saved is not None:
        if int(saved["settings"].get("restarts", 1)) > 1:
            raise UsageError(f"--resume: {out} was trained with --restarts {saved['settings']['restarts']}; "
                             f"give it again")
        system.set_weights(saved["extra_weights"].get("latest", saved["weights"]))
        if saved["optimizer"]:
            optimizer.load_state(saved["optimizer"])
        history = History(**{k: list(v) for k, v in saved["curves"].items()})
        start = len(history.epoch)
    seconds_before = sum(history.seconds) if history else 0.0
    kept = KeptWeights(system.get_weights(), saved) if validation is not None else None
    record = settings.record()

    def checkpoint(epoch, hist, final=False):
        if kept is not None and not final:
            kept.observe(epoch, hist, system.get_weights())
        if out:
            from optwin.runfile import save_run
            extra = {"epochs_done": epoch, **(kept.settings(hist) if kept is not None else {})}
            save_run(out, system.get_weights(), dict(record, **extra), hist.as_dict(), optimizer.state(),
                     extra_weights=kept.weights if kept is not None else None)
        raise_if_interrupted()

    t0 = time.perf_counter()
    try:
        history = train(system, task, optimizer, epochs=settings.epochs, batch=settings.batch, loss=settings.loss,
                        seed=settings.seed, start_epoch=start, history=history, target=settings.target,
                        validation=validation, lr_schedule=settings.lr_schedule, keep_best=kept is not None,
                        best=kept.best if kept is not None else None, on_epoch_end=checkpoint, progress=progress)
    except FloatingPointError as exc:
        raise UsageError(str(exc)) from None
    if out and (start >= settings.epochs or validation is not None):
        checkpoint(len(history.epoch), history, final=True)   # with early stopping: the kept weights
    return history, time.perf_counter() - t0 + seconds_before


def load_for_resume(out, settings: TrainSettings, resume: bool, keys=TWIN_RESUME_KEYS) -> dict | None:
    """The run file to continue (``resume`` with an existing ``out``), checked against ``settings``.

    Parameters
    ----------
    out : the run file.
    settings : the settings now.
    resume : ``--resume`` was given.
    keys : settings that must match the file's.

    Returns
    -------
    dict or None
        The loaded run file, or None (no resume, or no file yet).
    """
    if not resume:
        return None
    if not out:
        raise SettingsError("--resume needs --out (the run file to continue)")
    if not Path(out).exists():
        return None
    from optwin.runfile import load_run
    saved = load_run(out)
    now = settings.record()
    for key in keys:
        before = saved["settings"].get(key, RESUME_DEFAULTS.get(key, now[key]))
        if before != now[key]:
            raise SettingsError(f"--resume: {out} was trained with {key}={before!r}, now {key}={now[key]!r}; "
                                f"use the same settings or a new --out")
    check_schedule_epochs(saved["settings"], settings, out)
    return saved


def check_schedule_epochs(saved: dict, settings: TrainSettings, path) -> None:
    """SettingsError when a cosine-schedule run is resumed with other ``--epochs`` (its rates would change).

    Parameters
    ----------
    saved : the saved run's settings.
    settings : the settings now.
    path : the run file, for the message.
    """
    if settings.lr_schedule == "cosine" and int(saved.get("epochs", settings.epochs)) != settings.epochs:
        raise SettingsError(f"--resume: {path} runs a cosine schedule over {saved.get('epochs')} epochs; give "
                            f"--epochs {saved.get('epochs')} (or train a new --out)")


class KeptWeights:
    """Early stopping across checkpoints: the best validation epoch's weights and the last
    epoch's travel in every run file (``/checkpoint/weights/{best,latest}``), so that
    ``--resume`` continues exactly.

    Parameters
    ----------
    start_weights : the weights the run starts from (twin units), epoch 0's candidate.
    saved : the run file being resumed (or None).
    """

    def __init__(self, start_weights, saved: dict | None = None):
        st = saved["settings"] if saved else {}
        extra = (saved or {}).get("extra_weights") or {}
        # (val accuracy, epoch, weights) of the resumed run's best epoch, for twin.training.train
        self.best = None
        if "best" in extra and st.get("selected_epoch") is not None:
            self.best = (float(st["selected_val_accuracy"]), int(st["selected_epoch"]), extra["best"])
        now = [np.array(w) for w in start_weights]
        self.weights = {"best": now if self.best is None else self.best[2], "latest": now}

    def observe(self, epoch: int, hist, weights) -> None:
        """After an epoch: keep its weights as the latest, and as the best when it is."""
        self.weights["latest"] = [np.array(w) for w in weights]
        if hist.selected_epoch == epoch:
            self.weights["best"] = self.weights["latest"]

    @staticmethod
    def settings(hist) -> dict:
        """The run-file settings that record the selection."""
        return {"selected_epoch": hist.selected_epoch, "selected_val_accuracy": hist.selected_val_accuracy}


def summarise(history, settings: TrainSettings, seconds: float, n_train: int) -> dict:
    """The result of a twin run.

    Parameters
    ----------
    history : the run's curves.
    settings : its settings.
    seconds : training time (s).
    n_train : training samples (for the rate).

    Returns
    -------
    dict
        Task, layers, absorber, rule, accuracies of the last epoch (fractions), final loss,
        epochs, ``seconds`` (s) and ``samples_per_second``.
    """
    epochs_run = len(history.epoch)
    return {
        "system": settings.system, "task": settings.task, "layers": list(settings.layers),
        "absorber": settings.absorber, "alpha0": settings.alpha0, "rule": settings.rule,
        "test_accuracy": history.test_accuracy[-1], "train_accuracy": history.train_accuracy[-1],
        "final_loss": history.train_loss[-1], "epochs": epochs_run, "seconds": seconds,
        "samples_per_second": epochs_run * n_train / seconds if seconds > 0 else None,
    }
