"""Best of several random initialisations, chosen on held-out validation samples.

Small optical networks (a few hidden neurons, no biases, clipped weights) land in very
different minima from different initial weights: on the simulated benches one 200-epoch
run of the same task scores anywhere from 0.78 to 0.99 depending on the draw.  Training
``restarts`` initialisations and keeping the one with the best *validation* accuracy
(never the test set) removes most of that lottery.  On a twin this costs only compute;
on a bench, pre-train with restarts in the twin and fine-tune the winner there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from twin.training import History, evaluate, train

__all__ = ["restart_seed", "RestartResult", "train_restarts"]


def restart_seed(seed: int, restart: int) -> int:
    """The initialisation and shuffle seed of restart ``restart`` of a run seeded ``seed``.

    Restart 0 uses ``seed`` itself, so one restart is exactly the plain run; the others
    come from a ``SeedSequence`` of (seed, restart) and do not collide with other seeds'.
    """
    if restart < 0:
        raise ValueError(f"restart index must be >= 0, got {restart}")
    if restart == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(restart)]).generate_state(1)[0] % 2 ** 31)


@dataclass
class RestartResult:
    """The chosen restart and how every restart scored on the validation samples."""

    system: object
    history: History
    index: int
    optimizer: object = None
    seeds: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)


def train_restarts(build: Callable[[int], object], task, make_optimizer: Callable[[], object], restarts: int, *,
                   seed: int, validation, epochs: int, on_restart_end=None, skip=None, **train_kwargs) -> RestartResult:
    """Train ``restarts`` systems ``build(init_seed)`` and return the best on ``validation``.

    Each restart r trains a fresh system from ``build(restart_seed(seed, r))`` with a fresh
    optimizer, shuffled and noised with that seed, for ``epochs`` epochs
    (:func:`twin.training.train` with ``train_kwargs``, e.g. ``keep_best=True`` for early
    stopping inside each restart).  The winner has the highest validation accuracy of its
    final weights; ties go to the lower validation loss, then to the earlier restart.
    ``on_restart_end(r, result_so_far)`` runs after every restart (checkpoints);
    ``skip = (n_done, RestartResult)`` continues after ``n_done`` finished restarts.
    """
    if int(restarts) < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if validation is None:
        raise ValueError("restarts need validation=(x_val, y_val) to choose between them; "
                         "never choose on the test set")
    x_val, y_val = validation
    loss = train_kwargs.get("loss", "mse")
    target = train_kwargs.get("target", 1.0)
    start, result = (0, None) if skip is None else skip
    for r in range(int(start), int(restarts)):
        s = restart_seed(seed, r)
        system = build(s)
        optimizer = make_optimizer()
        try:
            history = train(system, task, optimizer, epochs=epochs, seed=s, validation=validation,
                            **train_kwargs)
            vl, va = evaluate(system, x_val, y_val, task.n_classes, loss,
                              rng=np.random.default_rng([s, epochs, 3]), target=target)
        except FloatingPointError:          # a diverged restart loses; the others go on
            if restarts == 1:
                raise
            history, vl, va = None, float("nan"), float("nan")
        if result is None:
            result = RestartResult(system=system, history=history, index=r, optimizer=optimizer)
        result.seeds.append(s)
        result.val_accuracy.append(float(va))
        result.val_loss.append(float(vl))
        best = result.index
        if result.history is None or (va, -vl) > (result.val_accuracy[best], -result.val_loss[best]):
            if history is not None:
                result.system, result.history, result.index, result.optimizer = system, history, r, optimizer
        if on_restart_end is not None and result.history is not None:
            on_restart_end(r, result)
    if result is None or result.history is None:
        raise FloatingPointError(f"all {restarts} restarts diverged: lower the learning rate or the initial "
                                 f"weight scale")
    return result
