"""Drift watch during bench training: detect laser-power and alpha0 drift, re-fit, recover.

The calibration is made on the simulated bench with its drift switched off; the tests open
the same bench (same seed, so the same optics) with strong drift and move its virtual clock.
"""
import math
from pathlib import Path

import numpy as np
import pytest

from calibration.calset import CalibrationSet
from calibration.run import calibrate_bench
from hwio.sim.testing import open_with, truth_of
from optwin.workflows.bench_training import describe_refit, run_mode
from optwin.workflows.drift import QUANTITIES, DriftWatch
from optwin.settings import TrainSettings
from optwin.workflows.from_calibration import bench_system_from_calibration, twin_from_calibration
from twin.tasks import load_task

HOUR_S = 3600.0


def drift(power_per_hour=0.0, alpha0_per_hour=0.0):
    return {"truth": {"drift": {"laser_power_per_hour": power_per_hour, "alpha0_per_hour": alpha0_per_hour}}}


@pytest.fixture(scope="module")
def cal(tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "cal.h5"
    with open_with("sim", drift()) as bench:
        c = calibrate_bench(bench, out, progress=False)
    c.path = out
    return c


def watch_on(bench, cal, tmp_path, **kw):
    system = bench_system_from_calibration(bench, cal)
    system.set_weights(twin_from_calibration(cal, system.sizes, init_scale=3.0).get_weights())
    return system, DriftWatch(system, cal, refit_base=tmp_path / "run.h5", **kw)


def test_no_false_alarm_without_drift(cal, tmp_path):
    # power jitter (0.2 % per exposure) and camera noise only; two virtual hours of checks
    with open_with("sim", drift()) as bench:
        _, watch = watch_on(bench, cal, tmp_path)
        base = watch.start()
        for epoch in range(1, 9):
            bench.timeline.sleep(0.25 * HOUR_S)
            assert watch.check(epoch) is None
        assert watch.events == [] and all(c["drifted"] == [] for c in watch.checks)
        r = {q: np.array([c["residual"][q] for c in watch.checks]) for q in QUANTITIES}
        for q in QUANTITIES:
            assert r[q].max() < base["threshold"][q]
            # the baseline's model-free estimate of the pair-to-pair scatter of r^2 holds
            assert 0.3 < np.std(r[q] ** 2, ddof=1) / base["sd_r2"][q] < 3.0, q
        # the watch looks at the systematic residual: it is well below the single-shot noise for a1
        assert base["r0"]["a1"] < 0.5 * base["noise"]["a1"]
        assert not list(tmp_path.glob("run.h5.refit*"))


def test_power_drift_during_hybrid_training_is_refitted(cal, tmp_path):
    rate = -0.5                                    # relative laser power per hour
    with open_with("sim", drift(power_per_hour=rate)) as bench:
        system, watch = watch_on(bench, cal, tmp_path)
        task = load_task("moons", seed=0, n_samples=80)

        def long_epoch(epoch, history, sys_, opt):
            if epoch == 1:                         # the bench keeps drifting: 20 virtual minutes pass
                bench.timeline.sleep(HOUR_S / 3)

        settings = TrainSettings.on_bench("hybrid", "sim", cal.path, task="moons", epochs=3, batch=16, lr=2e-2,
                                          lr_schedule="constant", target=1.0)
        res = run_mode(settings, system, cal, task, drift_watch=watch, on_epoch_end=long_epoch)
        thr = watch.baseline["threshold"]
        first, second, third = watch.checks
        # (a) epoch 1: within the noise; epoch 2 (power down ~17 %): z1 far past its threshold
        assert first["drifted"] == [] and second["drifted"][0] == "z1"
        assert second["residual"]["z1"] > 4 * thr["z1"]
        (event,) = res["drift_refits"]
        assert event["epoch"] == 2 and event["parts"] == ["readout", "mvm"]
        # the LO re-fit alone restores the activation channel (the cell law did not change) ...
        assert event["residual_after_readout"]["a1"] < thr["a1"]
        # ... but less light goes through MVM-1 (z1 ~ sqrt(P)): the MVM re-fit is needed
        assert event["residual_after_readout"]["z1"] > thr["z1"]
        # (b) after the re-fit every quantity is back within its threshold, also one epoch later
        assert event["recovered"] and all(event["residual_after"][q] < thr[q] for q in QUANTITIES), (
        event["residual_after"], event["threshold"], event.get("note"))
        assert event["residual_after"]["z1"] < 0.2 * event["residual_before"]["z1"]
        assert third["drifted"] == []
        # the re-fitted full-amplitude weight follows the true power: w_max ~ sqrt(P) at the re-fit
        new = CalibrationSet.load(event["cal_file"])
        p_true = 1.0 + rate * (event["bench_clock_s"] + 0.5 * event["bench_seconds"]) / HOUR_S
        ratio = new.quantity("mvm1.w_max").value / cal.quantity("mvm1.w_max").value
        assert ratio == pytest.approx(math.sqrt(p_true), rel=0.02)
        # parts not re-fitted are carried over unchanged
        np.testing.assert_array_equal(new.fits["slm"].arrays["inverse_lut"], cal.fits["slm"].arrays["inverse_lut"])
        # the bench system and the hybrid run's twin use the re-fitted calibration; training went on
        assert system.cal.w_max[0] == pytest.approx(new.quantity("mvm1.w_max").value)
        assert res["system"].twin.layers[0].imperfections.w_max == pytest.approx(new.quantity("mvm1.w_max").value)
        assert len(res["history"].epoch) == 3 and np.all(np.isfinite(res["history"].train_loss))
        assert Path(event["cal_file"]).parent == tmp_path
        line = describe_refit(event)
        assert line.startswith("drift at epoch 2: z1 residual") and "re-fitted readout, mvm" in line
        assert "(recovered)" in line and "\n" not in line


def test_alpha0_drift_shows_in_the_activation_and_survives_a_readout_refit(cal, tmp_path):
    with open_with("sim", drift(alpha0_per_hour=0.5)) as bench:
        _, watch = watch_on(bench, cal, tmp_path, refit=False)
        watch.start()
        thr = watch.baseline["threshold"]
        bench.timeline.sleep(HOUR_S)              # alpha0: 3.0 -> 3.5
        assert watch.check(1) is None             # refit=False: recorded only
        check = watch.checks[-1]
        # (a) only the cell's channel moves, far past its threshold
        assert check["drifted"] == ["a1"] and check["residual"]["a1"] > 5 * thr["a1"]
        # a new LO amplitude does not explain it away: the absorber must be re-fitted
        watch.recalibrate(["readout"])
        after = watch.measure()["residual"]
        assert after["a1"] > 5 * thr["a1"]
        assert watch.drifted(after) == ["a1"]


@pytest.mark.slow
def test_alpha0_drift_refit_recovers_and_finds_the_true_alpha0(cal, tmp_path):
    rate = 0.5
    with open_with("sim", drift(alpha0_per_hour=rate)) as bench:
        _, watch = watch_on(bench, cal, tmp_path)
        watch.start()
        thr = watch.baseline["threshold"]
        bench.timeline.sleep(HOUR_S)
        event = watch.check(1)
        assert event["drifted_before"] == ["a1"] and event["parts"] == ["readout", "absorber", "mvm"]
        assert event["recovered"] and all(event["residual_after"][q] < thr[q] for q in QUANTITIES), (
        event["residual_after"], event["threshold"], event.get("note"))
        assert event["residual_after"]["a1"] < 0.2 * event["residual_before"]["a1"]
        fit = CalibrationSet.load(event["cal_file"]).fits["absorber"]
        truth = truth_of(bench).absorber.alpha0
        t_s = fit.info["alpha0_at_s"]              # the sweep's middle on the bench clock
        assert fit.quantities["alpha0"].value == pytest.approx(truth + rate * t_s / HOUR_S, rel=0.02)
        assert cal.quantity("absorber.alpha0").value == pytest.approx(truth, rel=0.02)
