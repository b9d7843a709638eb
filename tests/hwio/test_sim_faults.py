"""Simulated faults, drift and the virtual clock."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from hwio.devices import DeviceTimeout, FrameError, SLMWriteError
from hwio.sim.testing import open_with, truth_of

from sim_bench_helpers import (blocked_sums, double_phase_frame, homodyne_fields, mean_frame, open_clean,
                               radius_for, set_lo, spot_sums)


def within(count, n, p, z=5.0):
    """count is a plausible Binomial(n, p) draw."""
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p)) + 1


def test_camera_faults_occur_at_their_rates_as_the_right_exceptions():
    rates = {"camera_timeout_rate": 0.04, "dropped_frame_rate": 0.05, "stale_frame_rate": 0.06,
             "slm_write_failure_rate": 0.0}
    bench = open_with("sim", {"truth": {"faults": rates}})
    camera = bench.cameras["cam_out"]
    camera.max_stale_retries = 0          # one hardware grab per grab: a stale repeat is a FrameError
    n = 3000
    counts = {"timeout": 0, "dropped": 0, "stale": 0, "ok": 0}
    last_ts = -math.inf
    for _ in range(n):
        t_before = bench.timeline.now()
        try:
            f = camera.grab()
        except DeviceTimeout as exc:
            assert exc.retryable and "retry" in str(exc)
            assert bench.timeline.now() - t_before == pytest.approx(camera.timeout_s)   # waited, never hung
            counts["timeout"] += 1
            continue
        except FrameError as exc:
            assert exc.retryable and ("dropped" in str(exc) or "stale" in str(exc))
            counts["dropped" if "dropped" in str(exc) else "stale"] += 1
            continue
        assert f.timestamp_s > last_ts                    # a repeated frame never passes
        last_ts = f.timestamp_s
        counts["ok"] += 1
    pt, pd, ps = rates["camera_timeout_rate"], rates["dropped_frame_rate"], rates["stale_frame_rate"]
    assert within(counts["timeout"], n, pt)
    assert within(counts["dropped"], n, (1 - pt) * pd)
    # the very first frame cannot be stale (nothing to repeat), otherwise stale with (1-pt)(1-pd)ps
    assert within(counts["stale"], n, (1 - pt) * (1 - pd) * ps)


def test_stale_frames_never_pass_after_a_show():
    bench = open_with("sim", {"truth": {"faults": {"stale_frame_rate": 0.3, "camera_timeout_rate": 0.0,
                                                   "dropped_frame_rate": 0.0, "slm_write_failure_rate": 0.0}}})
    camera = bench.cameras["cam_z1"]
    calls = {"n": 0}
    hook = camera._grab_hw

    def counting(timeout_s):
        calls["n"] += 1
        return hook(timeout_s)
    camera._grab_hw = counting
    lo = bench.slms["lo"]
    n, failures = 400, 0
    for i in range(n):
        token = lo.show(np.full(lo.shape, i % 256))
        try:
            f = camera.grab()
        except FrameError:
            failures += 1           # six stale frames in a row: a clear, retryable error
            continue
        assert f.timestamp_s >= token.settled_s
    extra = calls["n"] - n
    # every stale delivery after a show is discarded and grabbed again: geometric number of extra calls
    assert 0.33 * n < extra < 0.53 * n          # mean 0.3 / 0.7 = 0.43 re-grabs per grab
    assert failures <= 3


def test_slm_write_failures_keep_the_old_frame():
    bench = open_with("sim", {"truth": {"faults": {"slm_write_failure_rate": 0.05}}})
    slm = bench.slms["slm2"]
    rng = np.random.default_rng(1)
    n, fails = 2000, 0
    for _ in range(n):
        before = slm.last_levels
        frame = rng.integers(0, 256, slm.shape)
        try:
            slm.show(frame)
            assert np.array_equal(slm.last_levels, frame)
        except SLMWriteError as exc:
            assert exc.retryable and "previous frame" in str(exc)
            assert slm.last_levels is before
            fails += 1
    assert within(fails, n, 0.05)


def test_exposure_longer_than_timeout_is_a_timeout_not_a_hang():
    bench = open_clean("sim")
    camera = bench.cameras["cam_a1"]
    camera.exposure_s = 2.0
    t0 = time.perf_counter()
    with pytest.raises(DeviceTimeout, match="exceed the grab timeout"):
        camera.grab()
    assert time.perf_counter() - t0 < 1.0
    camera.grab(timeout_s=5.0)       # a longer timeout works


def test_virtual_clock_costs_no_wall_time():
    bench = open_clean("sim")
    cam = bench.cameras["cam_z1"]
    slm = bench.slms["slm1"]
    t_virtual = bench.timeline.now()
    t_wall = time.perf_counter()
    for _ in range(50):
        token = slm.show(np.zeros(slm.shape, np.int64))
        f = cam.grab()
        assert f.timestamp_s >= token.settled_s
    wall = time.perf_counter() - t_wall
    virtual = bench.timeline.now() - t_virtual
    per = slm.settle_time_s + cam.exposure_s + cam.readout_s
    assert virtual == pytest.approx(50 * per, rel=1e-6)
    assert wall < virtual


def test_laser_power_drift_over_virtual_hours():
    bench = open_clean("sim", {"drift": {"laser_power_per_hour": -0.1}})
    cam = "cam_out"
    t = truth_of(bench)
    bench.slms["input"].show(np.zeros(bench.slms["input"].shape, np.int64))
    set_lo(bench, 0)

    def lo_power():
        img = mean_frame(bench.cameras[cam], 8)
        s, npx = spot_sums(img, t.realised["spot_positions_px"][cam], radius_for(t, cam))
        bg = np.median(img)
        return (s - npx * bg).sum()
    p0 = lo_power()
    bench.timeline.sleep(3 * 3600.0)
    p3 = lo_power()
    assert p3 / p0 == pytest.approx(1 - 0.3, rel=0.02)


def test_alpha0_drift_changes_the_unpumped_cell_transmission():
    bench = open_clean("sim", {"drift": {"alpha0_per_hour": 1.0},
                               "absorber": {"probe_saturation": 0.0, "pump_leak": 0.0},
                               "optics": {"stray_field": 0.0, "output_crosstalk": 0.0, "probe_gain": 1.0}})
    t = truth_of(bench)
    n_in, n_h, n_out = bench.sizes
    blocked = blocked_sums(bench, ["cam_back"])
    bench.slms["slm2"].show(double_phase_frame(bench, "slm2", np.ones((n_out, n_h))))
    bench.slms["probe_input"].show(double_phase_frame(bench, "probe_input", np.full((1, n_out), 0.8)))
    d_start = homodyne_fields(bench, ["cam_back"], blocked=blocked, n_avg=16)["cam_back"]
    bench.timeline.sleep(2 * 3600.0)
    d_later = homodyne_fields(bench, ["cam_back"], blocked=blocked, n_avg=16)["cam_back"]
    # unpumped two-level cell: probe amplitude transmission exp(-alpha0 / 2); alpha0 rose by 2
    ratio = d_later / d_start
    assert t.absorber.model == "twolevel"
    assert np.allclose(ratio, math.exp(-1.0), rtol=0.05), ratio
