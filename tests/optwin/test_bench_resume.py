"""Bench training survives kill -9: atomic per-epoch checkpoints and --resume."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from optwin.cli import main
from optwin.runfile import load_run

EPOCHS = 8
N_SAMPLES = 80
BATCH = 16


@pytest.fixture(scope="module")
def cal_path(sim_calibration_file):
    return sim_calibration_file


def _argv(cal, out, *extra):
    return ["train", "--system", "bench", "--bench", "sim", "--cal", str(cal), "--mode", "optical", "--task", "moons",
            "--epochs", str(EPOCHS), "--n-samples", str(N_SAMPLES), "--batch", str(BATCH), "--lr", "2e-2",
            "--no-pretrain", "--val-fraction", "0", "--target", "1", "--lr-schedule", "constant",
            "--out", str(out), "--json", *extra]


def _epochs_done(path):
    try:
        with h5py.File(path, "r") as f:
            return int(f["settings"].attrs["epochs_done"])
    except Exception:  # noqa: BLE001 - not written yet, or being replaced
        return 0


def _twin_loss(cal, weights, x, y, n_out):
    """MSE loss of ``weights`` on (x, y) in the noiseless calibrated twin (an independent evaluation)."""
    from optwin.workflows.from_calibration import load_calibration, twin_from_calibration
    from twin.losses import LOSSES, one_hot
    twin = twin_from_calibration(load_calibration(cal), [x.shape[1], weights[0].shape[0], n_out])
    for layer in twin.layers:
        layer.imperfections.readout_noise = 0.0
    twin.set_weights(weights)
    return LOSSES["mse"](twin.forward(x).output, one_hot(y, n_out))[0]


def test_sigkill_then_resume_continues_from_the_checkpoint(cal_path, tmp_path, capsys):
    run = tmp_path / "run.h5"
    proc = subprocess.Popen([sys.executable, "-m", "optwin", *_argv(cal_path, run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=os.getcwd())
    deadline = time.time() + 90
    while _epochs_done(run) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = load_run(run)
    k = at_kill["settings"]["epochs_done"]
    assert 2 <= k < EPOCHS, "the run must be killed part-way (machine too fast or too slow?)"
    assert at_kill["settings"]["mode"] == "optical" and at_kill["settings"]["n_samples"] == N_SAMPLES
    assert len(at_kill["curves"]["epoch"]) == k and at_kill["optimizer"]["t"] == k * math.ceil(60 / BATCH)

    assert main(_argv(cal_path, run, "--resume")) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["resumed_from_epoch"] == k and res["epochs"] == EPOCHS
    final = load_run(run)
    assert final["settings"]["epochs_done"] == EPOCHS
    for name, curve in final["curves"].items():
        assert len(curve) == EPOCHS, name
        # the epochs completed before the kill are kept exactly
        np.testing.assert_array_equal(curve[:k], at_kill["curves"][name], err_msg=name)
    np.testing.assert_array_equal(final["curves"]["epoch"], np.arange(1, EPOCHS + 1))
    # the drift watch (on by default for optical training) kept its baseline across the kill:
    # a residual per epoch, below the saved thresholds, and no re-fit on this drift-free stretch
    assert res["drift_watch"] and res["drift_refits"] == [] and final["settings"]["drift_refits"] == []
    assert final["settings"]["drift_baseline"] == at_kill["settings"]["drift_baseline"]
    for q in ("z1", "a1", "z2"):
        curve = final["curves"][f"drift_{q}_nrmse"]
        assert np.all(curve < final["settings"]["drift_baseline"]["threshold"][q]), q
    # Adam continued its step count (its moments were restored, not restarted)
    assert final["optimizer"]["t"] == EPOCHS * math.ceil(60 / BATCH)

    # the resumed run started from the checkpoint's weights, not from the seeded initial ones:
    # its first epoch's loss matches the checkpoint's loss (evaluated independently in the twin)
    from optwin.workflows.from_calibration import load_calibration, twin_from_calibration
    from twin.tasks import load_task
    task = load_task("moons", seed=0, n_samples=N_SAMPLES)
    w0 = twin_from_calibration(load_calibration(cal_path), final["settings"]["layers"], init_scale=3.0,
                               seed=0).get_weights()
    loss_init = _twin_loss(cal_path, w0, task.x_train, task.y_train, 2)
    loss_ckpt = _twin_loss(cal_path, at_kill["weights"], task.x_train, task.y_train, 2)
    first_resumed = final["curves"]["train_loss"][k]
    assert loss_ckpt < 0.8 * loss_init, "training must have moved the weights before the kill"
    assert abs(first_resumed - loss_ckpt) < 0.5 * abs(first_resumed - loss_init)
    # and training went on: the weights moved away from the checkpoint
    assert any(not np.allclose(a, b) for a, b in zip(final["weights"], at_kill["weights"]))


def test_resume_refuses_other_settings_and_needs_out(cal_path, tmp_path, capsys):
    run = tmp_path / "r.h5"
    assert main(_argv(cal_path, run, "--epochs", "1", "--no-drift-watch")) == 0
    capsys.readouterr()
    code = main([*_argv(cal_path, run, "--resume"), "--mode", "hybrid"])
    err = capsys.readouterr().err
    assert code == 2 and "mode" in err and len(err.strip().splitlines()) == 1
    code = main(["train", "--system", "bench", "--bench", "sim", "--cal", str(cal_path), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "--resume needs --out" in err
    # a resumed run with nothing left to do keeps the file's weights and curves
    before = load_run(run)
    assert main(_argv(cal_path, run, "--epochs", "1", "--no-drift-watch", "--resume")) == 0
    after = load_run(run)
    assert json.loads(capsys.readouterr().out)["epochs"] == 1
    for a, b in zip(before["weights"], after["weights"]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(before["curves"]["train_loss"], after["curves"]["train_loss"])
