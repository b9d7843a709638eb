"""One sweep point: a fully seeded twin training for one canonical configuration.

:func:`run_point` is what a dask worker executes.  It never raises for a bad configuration
or a diverging training: the point comes back with ``status='failed'`` and a one-line error,
so one bad point cannot stop a sweep.  The seed fixes the task sample and split, the initial
weights, the minibatch order and every noise draw, and BLAS runs single-threaded inside a
point, so the same configuration gives bit-identical numbers in any process on any worker.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import socket
import time
import numpy as np

from optwin.sweep.grid import canonical_config, check_config, point_key

__all__ = ["run_point", "train_point", "imperfections_for", "METRICS"]

# Result columns of a point (besides key, status, error and bookkeeping).
METRICS = ("test_accuracy", "train_accuracy", "test_loss", "final_loss")


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (what the result table stores for a failed point)."""
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0]}" if msg else type(exc).__name__


@contextlib.contextmanager
def _single_threaded_blas():
    """Run numpy's BLAS on one thread: parallelism comes from points, and results cannot
    depend on how many threads a process happened to have."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it the BLAS default stays
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def imperfections_for(layers: list[int], cfg: dict) -> list:
    """One :class:`twin.layers.Imperfections` per optical layer from a point's settings."""
    from twin.layers import Imperfections, gaussian_illumination, neighbour_crosstalk
    imps = []
    for n_in, n_out in zip(layers[:-1], layers[1:]):
        waist = cfg["illumination_waist"]
        imps.append(Imperfections(
            gain=gaussian_illumination(n_out, n_in, waist) if waist is not None else None,
            levels=cfg["slm_levels"], w_max=cfg["w_max"],
            crosstalk=neighbour_crosstalk(n_out, cfg["output_crosstalk"]) if cfg["output_crosstalk"] > 0
            else None,
            readout_noise=cfg["readout_noise"]))
    return imps


def train_point(cfg: dict):
    """Train the twin one canonical configuration describes; returns ``(network, task, history)``.

    The training settings go through :class:`optwin.settings.TrainSettings` (the validation
    of ``optwin train``); raises ValueError on settings it cannot use.
    """
    from optwin.settings import TrainSettings
    from optwin.workflows.twin_training import build_twin, load_task_for
    from twin.optim import make_optimizer
    from twin.training import train

    check_config(cfg)
    settings = TrainSettings.twin(task=cfg["task"], **{
        k: cfg[k] for k in ("absorber", "alpha0", "i_sat", "rule", "loss", "optimizer", "epochs", "batch", "lr",
                            "init_scale", "seed", "n_samples", "limit_train")},
        layers=tuple(cfg["layers"]) if cfg["layers"] is not None else None)
    task, settings = load_task_for(settings)
    if cfg["hidden"] is not None:
        settings = settings.replace(layers=(task.n_features, *cfg["hidden"], task.n_classes))
    net = build_twin(settings, imperfections=imperfections_for(list(settings.layers), cfg),
                     probe_strength=cfg["probe_strength"], update=cfg["update"])
    optimizer = make_optimizer(settings.optimizer, settings.lr)
    history = train(net, task, optimizer, epochs=settings.epochs, batch=settings.batch, loss=settings.loss,
                    seed=settings.seed)
    return net, task, history


def weights_digest(weights) -> str:
    """SHA-256 (first 16 hex digits) of the trained weights' float64 bytes: a bit-exact fingerprint."""
    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w, dtype="<f8").tobytes())
    return h.hexdigest()[:16]


def run_point(config: dict) -> dict:
    """Train one point and return its result row (plain Python values; never raises for bad input).

    Parameters
    ----------
    config : point settings (canonical or not; canonicalised here, so the key matches the grid's).

    Returns
    -------
    dict with ``key``, ``status`` ('ok' or 'failed'), ``error`` ('' or one line), the metrics
    ``test_accuracy``, ``train_accuracy``, ``test_loss``, ``final_loss`` (NaN when failed),
    ``epochs_run``, ``seconds`` (wall time of the point, s), ``weights_sha256``, ``worker``
    (host:pid), ``started_utc`` and ``finished_utc``.
    """
    started = _utc_now()
    t0 = time.perf_counter()
    row = {m: float("nan") for m in METRICS}
    row.update(status="ok", error="", epochs_run=0, weights_sha256="")
    try:
        cfg = canonical_config(config)
        row["key"] = point_key(cfg)
        with _single_threaded_blas():
            net, _task, history = train_point(cfg)
        if history.epoch:
            row.update(test_accuracy=history.test_accuracy[-1], train_accuracy=history.train_accuracy[-1],
                       test_loss=history.test_loss[-1], final_loss=history.train_loss[-1])
        row["epochs_run"] = len(history.epoch)
        row["weights_sha256"] = weights_digest(net.get_weights())
    except Exception as exc:  # noqa: BLE001 - a failed point is data, not the end of the sweep
        row.update(status="failed", error=one_line(exc))
        row.setdefault("key", "")
    row.update(seconds=time.perf_counter() - t0, worker=f"{socket.gethostname()}:{os.getpid()}",
               started_utc=started, finished_utc=_utc_now())
    return row
