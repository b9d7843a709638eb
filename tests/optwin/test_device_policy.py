"""The device-access policy as ``optwin push`` and bench training see it (no calibration needed)."""
from __future__ import annotations

import numpy as np
import pytest

from hwio.device_access import DEFAULT_RETRIES, DeviceRetriesExhausted
from hwio.devices import DeviceError, SLMWriteError
from hwio.sim.testing import open_with
from optwin.commands.push import LAYER_SLMS, plan_push, push_weights
from optwin.errors import UsageError
from optwin.settings import TrainSettings
from optwin.workflows.bench_training import RunState, run_mode

NO_FAULTS = {"truth": {"faults": {"camera_timeout_rate": 0.0, "dropped_frame_rate": 0.0, "stale_frame_rate": 0.0,
                                  "slm_write_failure_rate": 0.0}}}


def failing_show(slm, failures: int, error=SLMWriteError):
    """Make ``slm.show`` fail ``failures`` times with ``error`` before it works; returns the call counter."""
    calls = {"n": 0}
    show = slm.show

    def flaky(levels):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise error(f"{slm.name}: write failed ({calls['n']})")
        return show(levels)
    slm.show = flaky
    return calls


def weights_for(bench, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1.0, 1.0, (bench.layouts[n].n_rows, bench.layouts[n].n_cols)) for n in LAYER_SLMS]


def test_push_retries_panel_writes_as_training_does():
    with open_with("sim", NO_FAULTS) as bench:
        weights = weights_for(bench)
        calls = failing_show(bench.slms["slm1"], DEFAULT_RETRIES)            # the last attempt works
        reports = push_weights(bench, weights, plan_push(bench))
        assert calls["n"] == DEFAULT_RETRIES + 1 and [r["slm"] for r in reports] == list(LAYER_SLMS)
        assert reports[0]["levels_max"] == int(bench.slms["slm1"].last_levels.max())   # the frame is shown
        calls = failing_show(bench.slms["slm2"], DEFAULT_RETRIES + 1)        # one failure too many
        with pytest.raises(DeviceRetriesExhausted, match=f"show on slm2 failed {DEFAULT_RETRIES + 1} times in a row"):
            push_weights(bench, weights, plan_push(bench))
        assert calls["n"] == DEFAULT_RETRIES + 1


def test_push_never_retries_a_device_that_is_gone():
    class Gone(DeviceError):
        retryable = False

    with open_with("sim", NO_FAULTS) as bench:
        calls = failing_show(bench.slms["slm1"], 10, error=Gone)
        with pytest.raises(Gone):
            push_weights(bench, weights_for(bench), plan_push(bench))
        assert calls["n"] == 1


def test_run_mode_refuses_what_it_cannot_train(tmp_path):
    cal = tmp_path / "cal.h5"
    insilico = TrainSettings.on_bench("insilico", "sim", cal, restarts=2)
    with pytest.raises(UsageError, match="drift watch needs the bench in the training loop"):
        run_mode(insilico, None, None, None, drift_watch=object())
    with pytest.raises(UsageError, match="validation samples"):
        run_mode(insilico, None, None, None)
    with pytest.raises(UsageError, match="cannot continue given weights or a checkpoint"):
        run_mode(insilico, None, None, None, validation=([[0.0, 0.0]], [0]), state=RunState(start_epoch=3))
    hybrid = TrainSettings.on_bench("hybrid", "sim", cal)
    with pytest.raises(UsageError, match="mode 'hybrid' trains on the bench"):
        run_mode(hybrid.replace(restarts=2), None, None, None, validation=([[0.0, 0.0]], [0]))
