"""Shared fixtures of the workflow tests."""
import pytest

from calibration.run import calibrate_bench
from hwio.bench import open_bench


@pytest.fixture(scope="session")
def sim_calibration_file(tmp_path_factory):
    """One full calibration of the embedded simulated bench (read-only for the tests that use it)."""
    out = tmp_path_factory.mktemp("sim_cal") / "cal.h5"
    with open_bench("sim") as bench:
        calibrate_bench(bench, out, progress=False)
    return out
