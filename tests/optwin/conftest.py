"""Shared fixtures of the workflow tests."""
import fcntl

import pytest

from calibration.run import calibrate_bench
from hwio.bench import open_bench


@pytest.fixture(scope="session")
def sim_calibration_file(tmp_path_factory, request):
    """One full calibration of the embedded simulated bench (read-only for the tests that use it).

    With pytest-xdist the workers share it: the first one to get here calibrates under a file
    lock in the run's common temporary folder, the others wait and read the same file.
    """
    if not hasattr(request.config, "workerinput"):   # no xdist worker: a folder of this session
        out = tmp_path_factory.mktemp("sim_cal") / "cal.h5"
        with open_bench("sim") as bench:
            calibrate_bench(bench, out, progress=False)
        return out
    shared = tmp_path_factory.getbasetemp().parent / "shared_sim_cal"
    shared.mkdir(exist_ok=True)
    out = shared / "cal.h5"
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            done = shared / "complete"
            if not done.exists():
                for stale in shared.glob("cal.h5*"):  # a worker that died half-way
                    stale.unlink()
                with open_bench("sim") as bench:
                    calibrate_bench(bench, out, progress=False)
                done.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out
