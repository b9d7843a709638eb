"""Run a grid's pending points: serially in this process, or on dask.distributed.

dask is an optional extra (``pip install optwin[cluster]``).  ``workers=N`` starts a
:class:`distributed.LocalCluster` of N single-threaded worker processes; ``scheduler=ADDRESS``
(``tcp://HOST:PORT`` or a scheduler JSON file) uses an existing cluster; ``client=`` reuses a
connected :class:`distributed.Client`; ``workers=0`` runs in this process without dask.

Scripts that start local workers must guard their entry point with
``if __name__ == "__main__":`` (worker processes are spawned and re-import the main module).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from optwin.sweep.point import METRICS, one_line, run_point
from optwin.sweep.store import SweepStore

__all__ = ["run_sweep", "dask_client", "require_distributed", "CLUSTER_HINT"]

CLUSTER_HINT = "pip install optwin[cluster]"


def require_distributed() -> None:
    """ImportError with the install hint when dask.distributed is missing."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ImportError(f"sweeps on workers need dask.distributed, which is not installed: "
                          f"{CLUSTER_HINT} (or run serially with --workers 0)") from None


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None, connect_timeout_s: float = 10.0,
                worker_wait_s: float = 60.0):
    """A connected ``distributed.Client``: to ``scheduler`` if given, else to a new LocalCluster
    of ``workers`` single-threaded processes (closed again on exit)."""
    require_distributed()
    from distributed import Client, LocalCluster
    if scheduler:
        kwargs = {"scheduler_file": scheduler} if Path(scheduler).is_file() else {"address": scheduler}
        try:
            client = Client(timeout=f"{connect_timeout_s}s", **kwargs)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ValueError(f"cannot reach the dask scheduler at {scheduler} ({one_line(exc)}); check the "
                             f"address or start one with `dask scheduler`") from None
        try:
            try:
                client.wait_for_workers(1, timeout=worker_wait_s)
            except TimeoutError:
                raise ValueError(f"the dask scheduler at {scheduler} has no workers after {worker_wait_s:g} s; "
                                 f"start some with `dask worker {scheduler}`") from None
            yield client
        finally:
            client.close()
        return
    if workers is None or workers < 1:
        raise ValueError(f"a local cluster needs workers >= 1, got {workers}")
    cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR)
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def _crashed(exc: BaseException) -> dict:
    row = {m: float("nan") for m in METRICS}
    row.update(status="crashed", error=one_line(exc), seconds=float("nan"))
    return row


def _run_serial(points, store, bar) -> None:
    for p in points:
        store.add(p, run_point(p.config))
        bar.update(1)


def _run_dask(client, points, store, bar) -> None:
    from distributed import as_completed
    # earlier grid points first; pure=False: every submission is a fresh task
    futures = {client.submit(run_point, p.config, pure=False, priority=-p.index): p for p in points}
    try:
        # batches: results that finish together cost one table rewrite
        for batch in as_completed(list(futures)).batches():
            finished = []
            for fut in batch:
                try:
                    result = fut.result()
                except Exception as exc:  # noqa: BLE001 - the worker died or the task was lost
                    result = _crashed(exc)
                finished.append((futures[fut], result))
                fut.release()
            store.add_many(finished)
            bar.update(len(finished))
    finally:
        left = [f for f in futures if not f.done()]
        if left:
            client.cancel(left)


def run_sweep(grid, out, workers: int | None = None, scheduler: str | None = None, client=None,
              retry_failed: bool = False, progress: bool = False) -> dict:
    """Run every point of ``grid`` not yet finished in ``out``; results are stored as they finish.

    Parameters
    ----------
    grid : a :class:`optwin.sweep.grid.Grid`.
    out : HDF5 results file (created, or resumed when it exists); a CSV mirror goes beside it.
    workers : local dask worker processes (default: the machine's CPU count); 0 runs serially
        in this process without dask.
    scheduler : address (``tcp://HOST:PORT``) or scheduler file of an existing dask cluster.
    client : an already connected ``distributed.Client`` (overrides workers and scheduler).
    retry_failed : also rerun points recorded as 'failed' (crashed points are always rerun).
    progress : show a tqdm bar on stderr.

    Returns
    -------
    dict summary: points, ran, skipped, ok, failed, crashed, executor, seconds (wall, s, including
    cluster start), run_seconds (first submission to last result, s), points_per_second
    (ran / run_seconds), out, csv, failures (up to 10 of {index, key, error}).
    """
    if workers is not None and workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = serial in this process), got {workers}")
    if scheduler and workers:
        raise ValueError("give workers (a local cluster) or scheduler (an existing one), not both")
    t_start = time.perf_counter()
    points = grid.points()
    with SweepStore(out, grid) as store:
        done = store.finished_keys(retry_failed)
        pending = [p for p in points if p.key not in done]
        if not pending:
            executor = "none (all points finished)"
        elif client is not None:
            executor = "client"
        elif scheduler:
            executor = str(scheduler)
        else:
            if workers is None:
                workers = os.cpu_count() or 1
            executor = "serial" if workers == 0 else f"local:{min(workers, max(len(pending), 1))}"
        if pending and executor != "serial" and client is None:
            require_distributed()
        from tqdm import tqdm
        bar = tqdm(total=len(pending), desc="sweep", unit="point", disable=not progress, leave=False)
        t_run = time.perf_counter()
        try:
            if not pending:
                pass
            elif client is not None:
                _run_dask(client, pending, store, bar)
            elif executor == "serial":
                _run_serial(pending, store, bar)
            else:
                n = None if scheduler else min(workers, len(pending))
                with dask_client(workers=n, scheduler=scheduler) as c:
                    t_run = time.perf_counter()
                    _run_dask(c, pending, store, bar)
        finally:
            bar.close()
        run_seconds = time.perf_counter() - t_run
        ran = [store.rows[p.key] for p in pending if p.key in store.rows]
    counts = {s: sum(r["status"] == s for r in ran) for s in ("ok", "failed", "crashed")}
    failures = [{"index": r["index"], "key": r["key"], "error": r["error"]}
                for r in ran if r["status"] != "ok"][:10]
    return {"points": len(points), "ran": len(ran), "skipped": len(points) - len(pending), **counts,
            "executor": executor, "seconds": time.perf_counter() - t_start,
            "run_seconds": run_seconds if pending else 0.0,
            "points_per_second": len(ran) / run_seconds if pending and run_seconds > 0 else 0.0,
            "out": str(store.path), "csv": str(store.csv_path), "failures": failures}
