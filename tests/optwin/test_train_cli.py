import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from optwin.cli import main
from optwin.runfile import load_run


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _whole_and_resumed(capsys, tmp_path, common, whole, first):
    """Run ``common + whole`` into full.h5; run ``common + first`` into part.h5, then resume it
    with ``common + whole``.  Returns (full, part, whole JSON, resumed JSON)."""
    full, part = tmp_path / "full.h5", tmp_path / "part.h5"
    code, out, _ = run_cli(capsys, *common, *whole, "--out", str(full))
    assert code == 0
    res = json.loads(out)
    assert run_cli(capsys, *common, *first, "--out", str(part))[0] == 0
    code, out, _ = run_cli(capsys, *common, *whole, "--out", str(part), "--resume")
    assert code == 0
    return full, part, res, json.loads(out)


def test_digits_json_and_run_file(capsys, tmp_path):
    out_file = tmp_path / "run.h5"
    code, out, _ = run_cli(capsys, "train", "--system", "twin", "--task", "digits", "--rule", "probe",
                           "--alpha0", "10", "--epochs", "30", "--json", "--out", str(out_file))
    assert code == 0
    res = json.loads(out)
    for key in ("test_accuracy", "train_accuracy", "final_loss", "epochs", "seconds", "samples_per_second"):
        assert key in res
    assert res["epochs"] == 30 and res["test_accuracy"] >= 0.95 and res["seconds"] < 60
    run = load_run(out_file)
    assert [w.shape for w in run["weights"]] == [(64, 64), (10, 64)]
    assert run["settings"]["alpha0"] == 10.0 and run["settings"]["rule"] == "probe"
    assert len(run["curves"]["test_accuracy"]) == 30
    assert run["curves"]["test_accuracy"][-1] == pytest.approx(res["test_accuracy"])
    with h5py.File(out_file) as f:
        assert json.loads(f["weights"].attrs["layers"]) == [64, 64, 10]


@pytest.mark.parametrize("argv, message", [
    (["--task", "cifar"], "unknown task"),
    (["--absorber", "ruby"], "unknown absorber"),
    (["--alpha0", "-1"], "alpha0"),
    (["--alpha0", "nan"], "alpha0"),
    (["--layers", "64,32,5"], "does not fit"),
    (["--layers", "64,x,10"], "integers"),
    (["--rule", "guess"], "unknown rule"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    code, out, err = run_cli(capsys, "train", "--epochs", "1", *argv)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_console_script_text_output(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "optwin", "train", "--task", "moons", "--epochs", "3"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout


def test_corrupt_run_file_is_a_clear_error(tmp_path):
    from optwin.errors import UsageError
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(UsageError, match="unreadable run file"):
        load_run(bad)
    with pytest.raises(UsageError, match="no such run file"):
        load_run(tmp_path / "missing.h5")


def _h5_epochs(path):
    try:
        with h5py.File(path, "r") as f:
            return len(f["curves/epoch"])
    except Exception:  # noqa: BLE001 - file not there yet or being replaced
        return 0


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    import os
    import signal
    import time
    common = ["train", "--task", "digits", "--epochs", "150", "--lr", "1e-3", "--json", "--no-progress"]
    killed = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, "-m", "optwin", *common, "--out", str(killed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while _h5_epochs(killed) < 5 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = _h5_epochs(killed)
    assert 5 <= done_at_kill < 150, "the run must be killed part-way (machine too fast/slow?)"
    assert main([*common, "--out", str(killed), "--resume"]) == 0
    full = tmp_path / "full.h5"
    assert main([*common, "--out", str(full)]) == 0
    a, b = load_run(killed), load_run(full)
    for wa, wb in zip(a["weights"], b["weights"]):
        np.testing.assert_array_equal(wa, wb)
    np.testing.assert_array_equal(a["curves"]["test_accuracy"], b["curves"]["test_accuracy"])


def test_resume_refuses_other_settings(capsys, tmp_path):
    out = tmp_path / "r.h5"
    assert main(["train", "--task", "moons", "--epochs", "2", "--out", str(out), "--json"]) == 0
    code = main(["train", "--task", "moons", "--epochs", "4", "--alpha0", "3", "--out", str(out), "--resume"])
    assert code == 2
    assert "alpha0" in capsys.readouterr().err


def test_early_stopping_keeps_the_best_epoch_and_resumes_exactly(capsys, tmp_path):
    """--val-fraction: the run file and the JSON hold the best validation epoch's weights; a run
    stopped after 3 epochs and resumed to 8 ends exactly like an uninterrupted one."""
    from twin.tasks import load_task
    from twin.training import evaluate
    common = ["train", "--task", "moons", "--n-samples", "300", "--lr", "0.2", "--val-fraction", "0.25",
              "--seed", "2", "--json", "--no-progress"]
    full, part, res, resumed = _whole_and_resumed(capsys, tmp_path, common, ["--epochs", "8"], ["--epochs", "3"])
    a, b = load_run(full), load_run(part)
    for key in ("best", "latest"):
        for wa, wb in zip(a["extra_weights"][key], b["extra_weights"][key]):
            np.testing.assert_array_equal(wa, wb)
    for wa, wb in zip(a["weights"], a["extra_weights"]["best"]):   # the file's weights are the kept ones
        np.testing.assert_array_equal(wa, wb)
    np.testing.assert_array_equal(a["curves"]["val_accuracy"], b["curves"]["val_accuracy"])
    assert len(a["curves"]["val_accuracy"]) == 8
    sel = a["settings"]["selected_epoch"]
    assert res["selected_epoch"] == resumed["selected_epoch"] == sel
    if sel > 0:
        assert a["curves"]["val_accuracy"][sel - 1] == a["curves"]["val_accuracy"].max()
    assert res["test_accuracy"] == resumed["test_accuracy"]
    # the reported accuracy is the kept weights' (recomputed here from the file)
    from optwin.settings import TrainSettings
    from optwin.workflows.twin_training import build_twin
    net = build_twin(TrainSettings.from_record(a["settings"]))
    net.set_weights(a["weights"])
    task = load_task("moons", seed=2, n_samples=300)
    assert evaluate(net, task.x_test, task.y_test, 2, target=1.0)[1] == res["test_accuracy"]
    # resuming with another validation share is refused
    other = [("0.1" if v == "0.25" else v) for v in common]
    code, _, err = run_cli(capsys, *other, "--epochs", "9", "--out", str(part), "--resume")
    assert code == 2 and "val_fraction" in err


def test_bad_validation_share_is_a_clear_error(capsys):
    code, _, err = run_cli(capsys, "train", "--task", "moons", "--val-fraction", "1.5", "--epochs", "1")
    assert code == 2 and "--val-fraction" in err


def test_restarts_keep_the_validation_best_and_resume_restart_by_restart(capsys, tmp_path):
    """--restarts R: the JSON and the run file hold the restart that twin.restarts chooses;
    2 restarts resumed to 3 equal 3 at once; without --val-fraction it is refused."""
    from optwin.settings import TrainSettings
    from optwin.workflows.twin_training import build_twin
    from twin.optim import Adam
    from twin.restarts import train_restarts
    from twin.tasks import load_task
    common = ["train", "--task", "rings", "--n-samples", "300", "--layers", "2,6,2", "--epochs", "10",
              "--lr", "0.02", "--val-fraction", "0.25", "--seed", "4", "--json", "--no-progress"]
    full, part, res, resumed = _whole_and_resumed(capsys, tmp_path, common, ["--restarts", "3"],
                                                  ["--restarts", "2"])
    for key in ("restart", "restart_val_accuracy", "test_accuracy", "selected_epoch"):
        assert res[key] == resumed[key], key
    a, b = load_run(full), load_run(part)
    for wa, wb in zip(a["weights"], b["weights"]):
        np.testing.assert_array_equal(wa, wb)
    assert a["settings"]["restarts_done"] == 3 and a["settings"]["restart"] == res["restart"]
    # second method: the library on the same task, split and settings
    task, val = load_task("rings", seed=4, n_samples=300).split_validation(0.25)
    settings = TrainSettings.from_record(a["settings"])
    lib = train_restarts(lambda s: build_twin(settings, seed=s), task, lambda: Adam(0.02), 3, seed=4,
                         validation=val, epochs=10, batch=settings.batch, target=1.0, keep_best=True)
    assert lib.index == res["restart"] and lib.val_accuracy == res["restart_val_accuracy"]
    for wa, wb in zip(a["weights"], lib.system.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    # refusals: no validation share; resuming a restarts file as a plain run
    code, _, err = run_cli(capsys, "train", "--task", "moons", "--epochs", "1", "--restarts", "2")
    assert code == 2 and "--val-fraction" in err
    code, _, err = run_cli(capsys, *common, "--out", str(part), "--resume")
    assert code == 2 and "--restarts 3" in err


def test_cosine_schedule_is_recorded_and_resume_refuses_another_span(capsys, tmp_path):
    """--lr-schedule cosine spans --epochs: resuming with other --epochs or another schedule is
    refused (the exact resume itself: tests/twin/test_training.py)."""
    common = ["train", "--task", "moons", "--n-samples", "200", "--lr-schedule", "cosine", "--seed", "1",
              "--json", "--no-progress"]
    run = tmp_path / "run.h5"
    assert run_cli(capsys, *common, "--epochs", "6", "--out", str(run))[0] == 0
    assert load_run(run)["settings"]["lr_schedule"] == "cosine"
    code, _, err = run_cli(capsys, *common, "--epochs", "8", "--out", str(run), "--resume")
    assert code == 2 and "--epochs 6" in err
    code, _, err = run_cli(capsys, *[v if v != "cosine" else "constant" for v in common], "--epochs", "6",
                           "--out", str(run), "--resume")
    assert code == 2 and "lr_schedule" in err
