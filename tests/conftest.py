"""Fixtures shared by the whole suite: one CLI calibration of the embedded simulated bench.

Under pytest-xdist:

* every worker (and every process a test starts) runs its BLAS on one thread: the workers
  already fill the cores, and oversubscribed BLAS threads made small matrix products up to 50
  times slower;
* the controller starts the shared calibration in a background process as the session begins,
  so no worker sits idle waiting for it; a worker that needs it before it is done waits for it
  (and calibrates itself, under a lock, if the background run failed).
"""
import contextlib
import fcntl
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

from optwin.cli import main

SIM_CALIBRATION_ARGS = ["--bench", "sim", "--json", "--no-progress"]
_BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_SHARED = "shared_sim_cal"
_WAIT_S = 1800.0
_BACKGROUND = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import conftest
conftest.calibrate_into(Path(sys.argv[1]))
"""


def calibrate_into(folder: Path) -> dict:
    """``optwin calibrate --bench sim --out folder/cal.h5 --report folder/report --json``, timed;
    the result (``json``, ``wall_s``) is also written to ``folder/complete.json`` (atomically)."""
    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        rc = main(["calibrate", *SIM_CALIBRATION_ARGS, "--out", str(folder / "cal.h5"),
                   "--report", str(folder / "report")])
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"optwin calibrate --bench sim failed ({rc}): {out.getvalue()[-2000:]}")
    result = {"json": json.loads(out.getvalue()), "wall_s": wall}
    tmp = folder / "complete.json.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, folder / "complete.json")
    return result


def _uses_xdist(config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")


@pytest.hookimpl(trylast=True)          # after the tmp_path plugin has set up the session's folder
def pytest_configure(config):
    """Workers: one BLAS thread.  Controller of an xdist run: start the shared calibration."""
    if hasattr(config, "workerinput"):
        for name in _BLAS_ENV:
            os.environ[name] = "1"
        config._blas_limits = threadpool_limits(limits=1)
    elif _uses_xdist(config) and not config.option.collectonly:
        folder = config._tmp_path_factory.getbasetemp() / _SHARED
        folder.mkdir(exist_ok=True)
        env = {**os.environ, **{name: "1" for name in _BLAS_ENV}}
        log = open(folder / "background.log", "w")
        config._sim_calibration = subprocess.Popen(
            [sys.executable, "-c", _BACKGROUND, str(folder), str(Path(__file__).parent)],
            cwd=str(Path(__file__).resolve().parents[1]), env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        log.close()
        (folder / "background.pid").write_text(str(config._sim_calibration.pid))


def pytest_unconfigure(config):
    """Stop the background calibration if the session ends before it does."""
    proc = getattr(config, "_sim_calibration", None)
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def _background_result(folder: Path) -> dict | None:
    """The background calibration's result once it is complete; None when there is none (or it
    failed)."""
    if not (folder / "background.pid").exists():
        return None
    pid = int((folder / "background.pid").read_text())
    deadline = time.monotonic() + _WAIT_S
    while time.monotonic() < deadline:
        if (folder / "complete.json").exists():
            return json.loads((folder / "complete.json").read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:                     # ended without a result: failed
            return json.loads((folder / "complete.json").read_text()) if (folder / "complete.json").exists() \
                else None
        except PermissionError:
            pass
        time.sleep(0.5)
    return None


@pytest.fixture(scope="session")
def sim_calibration_run(tmp_path_factory, request):
    """The calibration file of the simulated bench, written by ``optwin calibrate`` (read-only).

    Returns a dict: ``path`` (cal.h5), ``report`` (the report folder), ``json`` (the command's
    JSON output) and ``wall_s`` (its wall time in s).  With pytest-xdist the workers share one
    (module docstring).
    """
    if not hasattr(request.config, "workerinput"):   # no xdist worker: a folder of this session
        folder = tmp_path_factory.mktemp("sim_cal")
        result = calibrate_into(folder)
    else:
        folder = tmp_path_factory.getbasetemp().parent / _SHARED
        folder.mkdir(exist_ok=True)
        result = _background_result(folder)
        if result is None:
            folder = folder / "fallback"
            folder.mkdir(exist_ok=True)
            with open(folder / "lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    if not (folder / "complete.json").exists():
                        for stale in folder.glob("cal.h5*"):  # a worker that died half-way
                            stale.unlink()
                        calibrate_into(folder)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
            result = json.loads((folder / "complete.json").read_text())
    return {"path": folder / "cal.h5", "report": folder / "report", **result}


@pytest.fixture(scope="session")
def sim_calibration_file(sim_calibration_run):
    """Path of the shared calibration file of the simulated bench (see ``sim_calibration_run``)."""
    return sim_calibration_run["path"]
