"""Restarts (``--restarts R``): best of R initialisations in one run file, resumable restart by restart.

The run file (``--out``) always holds the best finished restart so far: its weights,
curves and optimizer state, plus the settings ``restarts_done``, ``restart`` (the chosen
index), ``restart_seeds``, ``restart_val_accuracy`` and ``restart_val_loss``.  It is
rewritten atomically after every finished restart; ``--resume`` skips the finished ones
(a restart killed midway starts again: restarts train on a twin, seconds to minutes each).
"""
from __future__ import annotations

import time

import numpy as np

from optwin.errors import UsageError

__all__ = ["run_restarts", "restart_fields"]


def restart_fields(result, done: int) -> dict:
    """The run-file settings that record the restarts.

    Parameters
    ----------
    result : the :class:`twin.restarts.RestartResult` so far.
    done : restarts finished.

    Returns
    -------
    dict
        ``restarts_done``, ``restart`` (chosen index), ``restart_seeds``,
        ``restart_val_accuracy`` (fractions) and ``restart_val_loss``.
    """
    return {"restarts_done": int(done), "restart": int(result.index), "restart_seeds": list(result.seeds),
            "restart_val_accuracy": list(result.val_accuracy), "restart_val_loss": list(result.val_loss)}


def _resumed(saved: dict | None, build, optimizer_factory):
    """``(done, RestartResult)`` from a run file written with restarts, or None for a fresh start."""
    from twin.restarts import RestartResult
    from twin.training import History
    if saved is None:
        return None
    st = saved["settings"]
    if int(st.get("restarts", 1)) <= 1:
        raise UsageError("--resume: the run file was trained without --restarts; use a new --out")
    done = int(st.get("restarts_done", 0))
    if done == 0:
        return None
    index = int(st["restart"])
    seeds = [int(s) for s in st["restart_seeds"]]
    system = build(seeds[index])
    system.set_weights([np.asarray(w, dtype=np.float64) for w in saved["weights"]])
    history = History(**{k: [float(v) for v in saved["curves"][k]] for k in History().as_dict()
                         if k in saved["curves"]})
    if st.get("selected_epoch") is not None:
        history.selected_epoch = int(st["selected_epoch"])
        history.selected_val_accuracy = float(st["selected_val_accuracy"])
    optimizer = optimizer_factory()
    if saved.get("optimizer"):
        optimizer.load_state(saved["optimizer"])
    result = RestartResult(system=system, history=history, index=index, optimizer=optimizer, seeds=seeds,
                           val_accuracy=[float(v) for v in st["restart_val_accuracy"]],
                           val_loss=[float(v) for v in st["restart_val_loss"]])
    return done, result


def run_restarts(build, task, optimizer_factory, settings: dict, validation, *, out=None, saved=None,
                 progress: bool = False):
    """Train ``settings['restarts']`` restarts, resuming ``saved``; checkpoint ``out`` after each.

    Parameters
    ----------
    build : ``build(init_seed)`` -> a fresh system to train.
    task : the task.
    optimizer_factory : ``optimizer_factory()`` -> a fresh optimizer per restart.
    settings : the run-file settings; needs ``restarts``, ``epochs``, ``batch``, ``seed`` and
        ``target`` (``loss`` and ``lr_schedule`` optional).
    validation : ``(x_val, y_val)`` that chooses the restart (and the epoch within each).
    out : run file rewritten after every finished restart (None: none).
    saved : the run file being resumed (:func:`optwin.runfile.load_run`), or None.
    progress : show progress bars.

    Returns
    -------
    (RestartResult, float)
        The chosen restart and the training time of all restarts, earlier parts included (s).
    """
    from optwin.runfile import save_run
    from twin.restarts import train_restarts

    skip = _resumed(saved, build, optimizer_factory)
    if skip is not None and skip[0] > settings["restarts"]:
        raise UsageError(f"--resume: {skip[0]} restarts are done already, more than --restarts "
                         f"{settings['restarts']}")
    before = float(saved["settings"].get("seconds_total", 0.0)) if saved and skip else 0.0
    t0 = time.perf_counter()

    def checkpoint(r, result):
        if out:
            h = result.history
            fields = {"epochs_done": len(h.epoch), "selected_epoch": h.selected_epoch,
                      "selected_val_accuracy": h.selected_val_accuracy,
                      "seconds_total": before + time.perf_counter() - t0, **restart_fields(result, r + 1)}
            save_run(out, result.system.get_weights(), dict(settings, **fields),
                     h.as_dict(), result.optimizer.state() if result.optimizer is not None else None)

    try:
        result = train_restarts(build, task, optimizer_factory, settings["restarts"], seed=settings["seed"],
                                validation=validation, epochs=settings["epochs"], batch=settings["batch"],
                                loss=settings.get("loss", "mse"), target=settings.get("target", 1.0),
                                keep_best=True, progress=progress, on_restart_end=checkpoint, skip=skip,
                                lr_schedule=settings.get("lr_schedule", "constant"))
    except FloatingPointError as exc:
        raise UsageError(str(exc)) from None
    seconds = before + time.perf_counter() - t0
    return result, seconds
