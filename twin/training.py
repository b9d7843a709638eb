"""Minibatch training of any :class:`twin.system.System` (twin, bench or hybrid)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from twin.losses import LOSSES, one_hot
from twin.system import System
from twin.tasks import Task

__all__ = ["History", "train", "evaluate", "accuracy", "lr_factor", "LR_SCHEDULES"]


@dataclass
class History:
    """Per-epoch curves of a training run."""

    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    test_accuracy: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    # with keep_best: the best epoch so far, at the end the one whose weights the run kept
    # (0 = the starting weights), and its validation accuracy
    selected_epoch: int | None = None
    selected_val_accuracy: float | None = None

    def append(self, **values) -> None:
        for k, v in values.items():
            getattr(self, k).append(float(v))

    def as_dict(self) -> dict:
        """The per-epoch curves (lists) by name (``val_accuracy`` only when the run has one)."""
        return {k: list(v) for k, v in self.__dict__.items()
                if isinstance(v, list) and (v or k != "val_accuracy")}


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose largest output is the label."""
    return float(np.mean(np.argmax(outputs, axis=1) == labels))


def evaluate(system: System, x: np.ndarray, y: np.ndarray, n_classes: int, loss: str = "mse",
             batch: int = 1024, rng=None, target: float = 1.0) -> tuple[float, float]:
    """(loss, accuracy) of ``system`` on (x, y), in batches; ``target`` as in :func:`train`."""
    loss_fn = LOSSES[loss]
    total, correct = 0.0, 0
    for i in range(0, len(x), batch):
        out = system.forward(x[i:i + batch], rng=rng).output
        lv, _ = loss_fn(out, target * one_hot(y[i:i + batch], n_classes))
        total += lv * len(out)
        correct += int(np.sum(np.argmax(out, axis=1) == y[i:i + batch]))
    return total / len(x), correct / len(x)


LR_SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Learning-rate multiplier of epoch ``epoch`` (0-based) of ``epochs`` under ``schedule``."""
    if schedule == "cosine":
        return 0.5 * (1.0 + float(np.cos(np.pi * epoch / max(epochs, 1))))
    return 1.0


def _epoch(system, task, optimizer, weights, targets, loss_fn, batch, rng, epoch, error_scale, fast=None):
    """One epoch of shuffled minibatch steps; returns (mean train loss, train accuracy).

    ``fast = (x, targets, loss name)``: the system's fused ``train_step`` on data already in
    its dtype, gathered batch by batch into reused arrays.
    """
    order = rng.permutation(len(task.x_train))
    labels = task.y_train[order]
    total, correct = 0.0, 0
    if fast is not None:
        x_all, t_all, loss = fast
        xb = np.empty((batch, x_all.shape[1]), x_all.dtype)
        tb = np.empty((batch, t_all.shape[1]), t_all.dtype)
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        if fast is not None:
            n = len(idx)
            x, t = xb[:n], tb[:n]
            np.take(x_all, idx, axis=0, out=x)
            np.take(t_all, idx, axis=0, out=t)
            lv, out = system.train_step(x, t, optimizer, loss, rng=rng, error_scale=error_scale)
        else:
            fw = system.forward(task.x_train[idx], rng=rng)
            out = fw.output
            lv, d_out = loss_fn(out, targets[idx])
        if not math.isfinite(lv):
            raise FloatingPointError(f"loss became {lv} at epoch {epoch + 1}: training diverged; "
                                     f"lower the learning rate or the initial weight scale")
        total += lv * len(idx)
        correct += int(np.count_nonzero(out.argmax(axis=1) == labels[i:i + batch]))
        if fast is None:
            bw = system.backward(d_out * error_scale)
            grads = bw.grads if error_scale == 1.0 else [g / error_scale for g in bw.grads]
            optimizer.step(weights, grads)
            system.set_weights(weights)   # a bench re-shows its SLM frames; a twin keeps the arrays
    return total / len(order), correct / len(order)


def train(system: System, task: Task, optimizer, epochs: int = 10, batch: int = 64, loss: str = "mse",
          seed: int = 0, progress: bool = False, start_epoch: int = 0, history: History | None = None,
          on_epoch_end: Callable[[int, History], None] | None = None,
          error_scale: float = 1.0, target: float = 1.0, validation=None, keep_best: bool = False,
          best=None, lr_schedule: str = "constant") -> History:
    """Train ``system`` on ``task`` for ``epochs`` epochs of shuffled minibatches.

    Each step: forward, loss gradient at the outputs (times ``error_scale``), backward,
    optimizer step on the programmed weights.  Noise draws and shuffles come from generators
    seeded by ``seed`` and the epoch, so a resumed run repeats exactly what an uninterrupted
    one does.

    Parameters
    ----------
    system : the :class:`twin.system.System` to train (twin, bench or hybrid).
    task : the :class:`twin.tasks.Task` (inputs in [0, 1], labels 0..n_classes-1).
    optimizer : a :mod:`twin.optim` optimizer; its ``lr`` is the base rate per step.
    epochs : the epoch to end after (counting the ``start_epoch`` already done).
    batch : samples per step.
    loss : ``mse`` (against one-hot targets) or ``ce`` (softmax cross-entropy).
    seed : seeds shuffles and noise (with the epoch index).
    progress : show a progress bar.
    start_epoch : epochs already done (a resumed run); ``history`` holds their curves.
    history : the :class:`History` to continue (None: a new one).
    on_epoch_end : ``on_epoch_end(epoch, history)`` after every epoch (1-based; checkpoints).
    error_scale : factor on the output error before ``backward`` (keeps an optical probe
        weak); the update is divided by it again.
    target : amplitude of the one-hot targets in output units (the correct class should
        reach ``target``, the others 0); hardware whose outputs cannot reach 1 trains better
        towards a target it can reach (the argmax decision does not depend on it).
    validation : ``(x_val, y_val)`` held-out training samples scored after every epoch
        (``history.val_accuracy``).
    keep_best : (needs ``validation``) end on the weights with the best validation accuracy,
        the starting weights included (epoch 0; ties go to the later epoch), recorded in
        ``history.selected_epoch``, which follows the best epoch during the run: early
        stopping, so a noisy last step (e.g. on a bench) does not decide the result.
    best : ``(val_accuracy, epoch, weights)`` of a resumed run's earlier best epoch (without
        it the resumed run's starting weights compete as epoch ``start_epoch``).
    lr_schedule : ``constant`` (the optimizer's rate throughout) or ``cosine`` (epoch e of E
        at ``lr * (1 + cos(pi e / E)) / 2``: small last steps, so noisy gradients do not keep
        shaking the final weights); follows the epoch index, so a resumed run continues it.

    Returns
    -------
    History
        Per-epoch train loss and accuracy, test loss and accuracy, wall time (s) per epoch and,
        with ``validation``, validation accuracy (fractions of samples).
    """
    _check_train_args(task, epochs, batch, loss, target, lr_schedule, keep_best, validation)
    val_accuracy = _validation_scorer(system, task, validation, loss, seed, target)
    history = history or History()
    targets = target * one_hot(task.y_train, task.n_classes)
    plan = _EpochPlan(task, targets, loss, batch, seed, error_scale, target,
                      _fast_step_data(system, task, targets, loss), val_accuracy)
    weights = system.get_weights()
    best = _starting_best(best, val_accuracy, start_epoch, weights, history) if keep_best else None
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=epochs - start_epoch, desc=f"train {task.name}", unit="epoch", leave=False)
    base_lr = optimizer.lr
    try:
        for epoch in range(start_epoch, epochs):
            optimizer.lr = base_lr * lr_factor(lr_schedule, epoch, epochs)
            best = _train_epoch(system, optimizer, weights, plan, epoch, history, best)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{history.train_loss[-1]:.4f}", test=f"{history.test_accuracy[-1]:.3f}")
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, history)
    finally:
        optimizer.lr = base_lr
    if bar is not None:
        bar.close()
    if best is not None:
        for w, b in zip(weights, best[2]):
            w[...] = b
        system.set_weights(weights)
    return history


def _check_train_args(task: Task, epochs, batch, loss, target, lr_schedule, keep_best, validation) -> None:
    """ValueError (one line) on arguments :func:`train` cannot use."""
    if not (np.isfinite(target) and target > 0):
        raise ValueError(f"target amplitude must be a positive number, got {target}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}: choose one of {', '.join(LOSSES)}")
    if epochs < 0 or batch <= 0:
        raise ValueError(f"epochs must be >= 0 and batch > 0, got {epochs}, {batch}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")
    task.check()
    if keep_best and validation is None:
        raise ValueError("keep_best needs validation=(x_val, y_val) to choose the best epoch")


def _validation_scorer(system: System, task: Task, validation, loss: str, seed: int, target: float):
    """``val_accuracy(epoch)`` on the held-out samples (seeded noise per epoch), or None without them."""
    if validation is None:
        return None
    x_val, y_val = (np.asarray(v) for v in validation)
    if x_val.ndim != 2 or x_val.shape[1] != task.n_features or len(x_val) != len(y_val) or not len(x_val):
        raise ValueError(f"validation must be (x of shape (n, {task.n_features}), y of shape (n,)) with n > 0, "
                         f"got shapes {x_val.shape} and {y_val.shape}")

    def val_accuracy(epoch):
        return evaluate(system, x_val, y_val, task.n_classes, loss, rng=np.random.default_rng([seed, epoch, 2]),
                        target=target)[1]
    return val_accuracy


def _starting_best(best, val_accuracy, start_epoch: int, weights, history: History) -> tuple:
    """``(val_accuracy, epoch, weights)`` the run starts with: ``best`` of a resumed run, else the
    starting weights scored as epoch ``start_epoch``; recorded in ``history.selected_*``."""
    if best is None:
        best = (val_accuracy(start_epoch), start_epoch, [np.array(w) for w in weights])
    else:
        best = (float(best[0]), int(best[1]), [np.array(w, dtype=np.float64) for w in best[2]])
    history.selected_epoch, history.selected_val_accuracy = best[1], best[0]
    return best


def _fast_step_data(system: System, task: Task, targets: np.ndarray, loss: str):
    """``(x, targets, loss)`` in the system's dtype when it has a fused ``train_step``, else None."""
    if callable(getattr(system, "train_step", None)) and getattr(system, "dtype", None) is not None:
        # the twin's fused step, on the data in the twin's precision (no copy when it already is)
        dt = np.dtype(system.dtype)
        return np.ascontiguousarray(task.x_train, dtype=dt), targets.astype(dt), loss
    return None


@dataclass(frozen=True)
class _EpochPlan:
    """What every epoch of one :func:`train` call uses (see its parameters)."""

    task: Task
    targets: np.ndarray
    loss: str
    batch: int
    seed: int
    error_scale: float
    target: float
    fast: tuple | None
    val_accuracy: Callable[[int], float] | None


def _train_epoch(system, optimizer, weights, plan: _EpochPlan, epoch: int, history: History, best):
    """Train and score epoch ``epoch`` (0-based), appending to ``history``; returns the best epoch so far."""
    task = plan.task
    t0 = time.perf_counter()
    train_loss, train_acc = _epoch(system, task, optimizer, weights, plan.targets, LOSSES[plan.loss], plan.batch,
                                   np.random.default_rng([plan.seed, epoch]), epoch, plan.error_scale, plan.fast)
    test_loss, test_acc = evaluate(system, task.x_test, task.y_test, task.n_classes, plan.loss,
                                   rng=np.random.default_rng([plan.seed, epoch, 1]), target=plan.target)
    history.append(epoch=epoch + 1, train_loss=train_loss, train_accuracy=train_acc, test_accuracy=test_acc,
                   test_loss=test_loss, seconds=time.perf_counter() - t0)
    if plan.val_accuracy is not None:
        history.append(val_accuracy=plan.val_accuracy(epoch + 1))
        if best is not None and history.val_accuracy[-1] >= best[0]:
            best = (history.val_accuracy[-1], epoch + 1, [np.array(w) for w in weights])
            history.selected_epoch, history.selected_val_accuracy = best[1], best[0]
    return best
