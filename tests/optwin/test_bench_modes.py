"""Hardware-in-the-loop training on the calibrated simulated bench."""
import numpy as np
import pytest

from hwio.bench import open_bench
from optwin.settings import TrainSettings
from optwin.workflows.bench_training import run_mode
from optwin.workflows.compare import measure_agreement
from optwin.workflows.from_calibration import bench_system_from_calibration, twin_from_calibration
from twin.tasks import load_task


@pytest.fixture(scope="module")
def calibrated(sim_calibration_file):
    from calibration.calset import CalibrationSet
    bench = open_bench("sim")        # same configuration and truth seed as the calibrated one
    cal = CalibrationSet.load(sim_calibration_file)
    cal.path = sim_calibration_file
    yield bench, cal
    bench.close()


def test_bench_system_reads_in_twin_units(calibrated):
    bench, cal = calibrated
    system = bench_system_from_calibration(bench, cal)
    twin = twin_from_calibration(cal, system.sizes, init_scale=3.0, seed=3)
    system.set_weights([w.copy() for w in twin.get_weights()])
    ag = measure_agreement(system, twin, n_inputs=48, repeats=3, seed=1)
    s = ag["summary"]
    # the calibrated twin predicts every MVM to the bench's own noise floor (<= 1.25 x) ...
    floor = s["noise_floor_nrmse_per_mvm"]
    for mvm in ("mvm1", "mvm2_forward", "mvm2_backward"):
        assert s[f"{mvm}_nrmse"] <= 1.25 * floor[mvm], (mvm, s[f"{mvm}_nrmse"], floor[mvm])
    # ... far better than an uncalibrated (ideal) twin with the same weights
    from optwin.workflows.from_calibration import ideal_twin
    naive = ideal_twin(cal, system.sizes)
    naive.set_weights(system.get_weights())
    z1_naive = naive.layers[0].forward(ag["arrays"]["x"], keep=False)
    err_naive = np.sqrt(np.mean((ag["arrays"]["z1"] - z1_naive) ** 2)) / np.std(ag["arrays"]["z1_pred"])
    assert s["mvm1_nrmse"] < 0.5 * err_naive
    # the measured activation follows the fitted absorber law
    assert s["activation_rmse"] < 0.05 * np.abs(ag["arrays"]["a1"]).max()


def test_bench_encodes_as_its_calibration_file_says(calibrated):
    from calibration.calset import CalibrationSet
    from hwio.encoding import PhaseEncoder, amplitude_transfer
    from hwio.response import PhaseResponse
    bench, cal = calibrated
    system = bench_system_from_calibration(bench, cal)
    fits = {"slm1": "slm", "slm2": "slm.slm2", "probe_input": "slm.probe_input"}
    for panel, name in fits.items():
        enc, fit = system.encoders[panel], cal.fits[name]
        assert enc.dither and enc.dither_ranks > 1 and fit.info["encoder_dither"] is True
        # the file's staircase is the one of the encoder the bench uses: same steps, and
        # several times as many as a plain encoder has
        response = PhaseResponse(np.maximum.accumulate(np.asarray(fit.arrays["phase_response_rad"])))
        edges, _ = amplitude_transfer(enc, response)
        np.testing.assert_array_equal(edges, fit.arrays["amplitude_transfer_edges"])
        plain_edges, _ = amplitude_transfer(PhaseEncoder(enc.layout, enc.shape, enc.lut, dither=False), response)
        assert edges.size > 4 * plain_edges.size
    # a file written before dithering (no encoder_dither) is encoded plain, as its tables were
    old = CalibrationSet.load(cal.path)
    for name in fits.values():
        old.fits[name].info.pop("encoder_dither")
    assert not any(e.dither for e in bench_system_from_calibration(bench, old).encoders.values())


def test_optical_training_recovers_the_reality_gap_and_keeps_calibrated_weights(calibrated):
    bench, cal = calibrated
    system = bench_system_from_calibration(bench, cal)
    task = load_task("xor", seed=0, n_samples=300)
    twin_s = TrainSettings.on_bench("insilico", "sim", cal.path, task="xor", epochs=200, batch=16, lr=2e-2, seed=0,
                                    init_scale=3.0, restarts=1, target=1.0)
    naive = run_mode(twin_s, system, cal, task, twin="ideal")
    calib = run_mode(twin_s, system, cal, task)
    # the reality gap: weights from an uncalibrated twin lose clearly more on the bench
    assert calib["bench_accuracy"] >= naive["bench_accuracy"] + 0.1, (naive["bench_accuracy"], calib["bench_accuracy"])
    # optical backpropagation on the bench, started from the naive weights, recovers most of it
    bench_s = TrainSettings.on_bench("optical", "sim", cal.path, task="xor", epochs=8, batch=16, lr=1e-2, seed=0,
                                     init_scale=3.0, lr_schedule="constant", target=1.0)
    recovered = run_mode(bench_s, system, cal, task, init_weights=naive["weights"])
    late = float(np.mean(recovered["history"].test_accuracy[-3:]))      # optical training is noisy
    assert late >= naive["bench_accuracy"] + 0.02, (naive["bench_accuracy"], recovered["history"].test_accuracy)
    assert recovered["history"].train_loss[-1] < 0.8 * recovered["history"].train_loss[0]
    # fine-tuning the calibrated weights optically keeps (or improves) their accuracy
    assert recovered["probe_correction"]          # the calibrated g'/t correction is on by default
    # (with early stopping: 60 of the training samples scored on the bench after every epoch)
    val = (task.x_train[-60:], task.y_train[-60:])
    tuned = run_mode(bench_s.replace(epochs=3), system, cal, task, init_weights=calib["weights"], validation=val)
    assert tuned["bench_accuracy"] >= calib["bench_accuracy"] - 0.03
    assert tuned["history"].selected_epoch in (0, 1, 2, 3) and len(tuned["history"].val_accuracy) == 3


def test_cli_bench_training_and_compare(calibrated, tmp_path, capsys):
    import json

    from optwin.cli import main
    _, cal = calibrated
    run = tmp_path / "hybrid.h5"
    assert main(["train", "--system", "bench", "--bench", "sim", "--cal", str(cal.path), "--mode", "hybrid",
                 "--task", "moons", "--epochs", "2", "--n-samples", "120", "--val-fraction", "0.25", "--no-pretrain",
                 "--out", str(run), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["mode"] == "hybrid" and res["epochs"] == 2 and 0 <= res["bench_accuracy"] <= 1
    # early stopping on the bench: the file's weights are the selected epoch's
    from optwin.runfile import load_run
    saved = load_run(run)
    assert res["selected_epoch"] == saved["settings"]["selected_epoch"] in (0, 1, 2) and res["n_validation"] == 22
    for w, best in zip(saved["weights"], saved["extra_weights"]["best"]):
        np.testing.assert_array_equal(w, best)
    assert len(saved["curves"]["val_accuracy"]) == 2
    # every setting is recorded, the bench defaults included: the recipe's rate and schedule, the
    # target amplitude derived from the calibration
    from optwin.workflows.bench_training import target_from_calibration
    st = saved["settings"]
    assert (st["lr"], st["lr_schedule"], st["batch"], st["pretrain"]) == (0.003, "cosine", 16, None)
    assert st["target"] == res["target"] == target_from_calibration(cal) and st["layers"] == [2, 16, 2]
    # pre-train in the calibrated twin, fine-tune on the bench from those weights
    pre = tmp_path / "pre.h5"
    assert main(["train", "--system", "bench", "--bench", "sim", "--cal", str(cal.path), "--mode", "insilico",
                 "--task", "moons", "--epochs", "20", "--restarts", "1", "--n-samples", "120", "--out", str(pre),
                 "--json"]) == 0
    pre_res = json.loads(capsys.readouterr().out)
    assert main(["train", "--system", "bench", "--bench", "sim", "--cal", str(cal.path), "--mode", "optical",
                 "--task", "moons", "--epochs", "1", "--n-samples", "120", "--init-from", str(pre),
                 "--no-drift-watch", "--json"]) == 0
    tuned = json.loads(capsys.readouterr().out)
    assert tuned["bench_accuracy"] >= pre_res["bench_accuracy"] - 0.1 and len(load_run(pre)["weights"]) == 2
    assert tuned["probe_correction"] is True and tuned["rule"] == "exact" and tuned["pretrain"] is None
    wrong = tmp_path / "wrong.h5"
    from optwin.runfile import save_run
    save_run(wrong, [np.zeros((3, 2)), np.zeros((2, 3))], {"task": "moons"}, {})
    assert main(["train", "--system", "bench", "--bench", "sim", "--cal", str(cal.path), "--mode", "optical",
                 "--task", "moons", "--epochs", "1", "--init-from", str(wrong), "--json"]) == 2
    assert "--init-from" in capsys.readouterr().err
    assert main(["train", "--system", "bench", "--bench", "sim", "--cal", str(cal.path), "--mode", "hybrid",
                 "--task", "xor", "--init-from", str(pre), "--json"]) == 2
    assert "trained on task 'moons'" in capsys.readouterr().err
    assert main(["compare", "--bench", "sim", "--cal", str(cal.path), "--report", str(tmp_path / "rep"),
                 "--inputs", "12", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("mvm1_nrmse", "mvm2_forward_nrmse", "mvm2_backward_nrmse", "noise_floor_nrmse",
                "activation_rmse"):
        assert np.isfinite(res[key])
    html = (tmp_path / "rep" / "compare.html").read_text()
    assert html.count("data:image/png;base64,") == 2
    # a wrong calibration file is a one-line error, exit 2
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage")
    assert main(["compare", "--bench", "sim", "--cal", str(bad), "--report", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "bad.h5" in err and len(err.strip().splitlines()) == 1


def test_bench_cli_restarts_pretrain_on_the_twin(calibrated, tmp_path, capsys):
    """--restarts on a bench run: best of R calibrated-twin trainings (the same choice as
    run_mode's), deployed to the bench; bench-in-the-loop modes refuse it."""
    import json

    from optwin.cli import main
    bench, cal = calibrated
    pre = tmp_path / "pre_r.h5"
    argv = ["train", "--system", "bench", "--bench", "sim", "--cal", str(cal.path), "--task", "moons",
            "--epochs", "6", "--n-samples", "160", "--val-fraction", "0.25", "--restarts", "2", "--json"]
    assert main(argv + ["--mode", "insilico", "--out", str(pre)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["restart"] in (0, 1) and len(res["restart_val_accuracy"]) == 2 and 0 <= res["bench_accuracy"] <= 1
    system = bench_system_from_calibration(bench, cal)
    task, val = load_task("moons", seed=0, n_samples=160).split_validation(0.25)
    lib_s = TrainSettings.on_bench("insilico", "sim", cal.path, task="moons", epochs=6, batch=16, lr=0.02, seed=0,
                                   target=res["target"], restarts=2)
    lib = run_mode(lib_s, system, cal, task.with_outputs(2), validation=val)
    assert lib["restart"] == res["restart"] and lib["restart_val_accuracy"] == res["restart_val_accuracy"]
    assert abs(lib["twin_accuracy"] - res["twin_accuracy"]) <= 0.1      # the twin's readout noise differs
    from optwin.runfile import load_run
    for w, v in zip(load_run(pre)["weights"], lib["weights"]):
        np.testing.assert_array_equal(w, v)
    assert main(argv + ["--mode", "optical"]) == 2
    assert "--init-from" in capsys.readouterr().err


def test_optical_default_pretrains_then_fine_tunes_and_resume_keeps_the_pretraining(calibrated, tmp_path, capsys):
    """--mode optical without --init-from: best of the pre-training restarts (the same choice as
    run_mode's insilico restarts), checkpointed as epoch 0, then the bench fine-tune; a resumed
    run reuses the recorded pre-training."""
    import json

    from optwin.cli import main
    from optwin.runfile import load_run
    bench, cal = calibrated
    run = tmp_path / "opt.h5"
    argv = ["train", "--system", "bench", "--bench", "sim", "--cal", str(cal.path), "--task", "rings",
            "--n-samples", "80", "--epochs", "1", "--pretrain-restarts", "2", "--pretrain-epochs", "8",
            "--no-drift-watch", "--out", str(run), "--json"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    pre = res["pretrain"]
    assert len(pre["restart_val_accuracy"]) == 2 and res["epochs"] == 1 and res["n_validation"] == 12
    system = bench_system_from_calibration(bench, cal)
    task, val = load_task("rings", seed=0, n_samples=80).with_outputs(2).split_validation(0.2)
    lib_s = TrainSettings.on_bench("insilico", "sim", cal.path, task="rings", epochs=8, batch=16, lr=0.02, seed=0,
                                   target=res["target"], restarts=2)
    lib = run_mode(lib_s, system, cal, task, validation=val)
    assert lib["restart"] == pre["restart"] and lib["restart_val_accuracy"] == pre["restart_val_accuracy"]
    saved = load_run(run)
    assert saved["settings"]["pretrain"] == {"restarts": 2, "epochs": 8, "lr": 0.02}
    assert saved["settings"]["pretrain_result"]["seconds"] == pre["seconds"]
    assert main(argv + ["--resume"]) == 0           # nothing left to do: nothing is trained again
    again = json.loads(capsys.readouterr().out)
    assert again["pretrain"] == pre and again["resumed_from_epoch"] == 1


def test_optical_with_one_pretraining_run(calibrated, tmp_path, capsys):
    """--pretrain-restarts 1 is a single calibrated-twin training (no choice between restarts)."""
    import json

    from optwin.cli import main
    _, cal = calibrated
    argv = ["train", "--system", "bench", "--bench", "sim", "--cal", str(cal.path), "--task", "rings",
            "--n-samples", "60", "--epochs", "1", "--pretrain-restarts", "1", "--pretrain-epochs", "4",
            "--no-drift-watch", "--out", str(tmp_path / "one.h5"), "--json"]
    assert main(argv) == 0
    pre = json.loads(capsys.readouterr().out)["pretrain"]
    assert pre["restart"] == 0 and 0.0 <= pre["bench_accuracy"] <= 1.0
