"""``optwin push`` with files from the real producers: ``optwin calibrate`` (the session's calibration
of the simulated bench) and ``optwin train --out``.  Pushed frames must be the frames training showed,
and the panels must then give the trained network's accuracy on the bench."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from calibration.calset import CalibrationSet
from hwio.bench import load_bench_config, open_bench
from hwio.encoding import realised_weights
from hwio.response import PhaseResponse
from hwio.sim.testing import truth_of
from optwin.cli import main
from optwin.commands.push import LAYER_SLMS, plan_push, push_weights
from optwin.runfile import load_run
from optwin.workflows.from_calibration import bench_system_from_calibration
from twin.tasks import load_task
from twin.training import evaluate


def _cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def cal(sim_calibration_file):
    return CalibrationSet.load(sim_calibration_file)


@pytest.fixture(scope="module")
def trained(sim_calibration_file, tmp_path_factory):
    """A run trained in silico on the calibrated twin by the real CLI, deployed on the bench."""
    run = tmp_path_factory.mktemp("push") / "run.h5"
    rc, out, err = _cli(["train", "--system", "bench", "--bench", "sim", "--cal", str(sim_calibration_file),
                         "--mode", "insilico", "--task", "moons", "--epochs", "40", "--target", "0.3",
                         "--seed", "3", "--out", str(run), "--json", "--no-progress"])
    assert rc == 0, err
    return run, json.loads(out)


def _bench_copy(tmp_path, name="lab", seed=None):
    """The sim bench file with another name (and optionally other simulated hardware)."""
    text = load_bench_config("sim").path.read_text()
    text = text.replace('name = "sim"', f'name = "{name}"', 1)
    if seed is not None:
        text = text.replace("seed = 20250131", f"seed = {seed}", 1)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_pushed_frames_are_the_frames_training_shows(cal, trained):
    run, _ = trained
    weights = load_run(run)["weights"]
    with open_bench("sim") as pushed, open_bench("sim") as trained_on:
        plan = plan_push(pushed, cal, source="cal.h5")
        assert plan.warnings == []
        reports = push_weights(pushed, weights, plan)
        system = bench_system_from_calibration(trained_on, cal)
        system.set_weights([w.copy() for w in weights])
        for k, (name, rep) in enumerate(zip(LAYER_SLMS, reports)):
            np.testing.assert_array_equal(pushed.slms[name].last_levels, trained_on.slms[name].last_levels)
            assert rep["w_max"] == cal.fits[f"mvm{k + 1}"].quantities["w_max"].value
            assert rep["w_max_source"] == f"calibrated (mvm{k + 1}.w_max)"
            assert rep["dither_ranks"] > 1 and rep["clipped_fraction"] == 0.0


def test_pushed_panels_give_the_trained_accuracy_on_the_bench(cal, trained):
    run, result = trained
    weights = load_run(run)["weights"]
    task = load_task("moons", seed=3, n_samples=400)
    with open_bench("sim") as bench:
        push_weights(bench, weights, plan_push(bench, cal))
        system = bench_system_from_calibration(bench, cal)     # reads the panels as pushed: no set_weights
        _, acc = evaluate(system, task.x_test, task.y_test, task.n_classes, batch=256)
    assert result["bench_accuracy"] > 0.8
    # the same frames on the same bench: only readout noise on borderline samples may differ
    assert abs(acc - result["bench_accuracy"]) <= 0.03, (acc, result["bench_accuracy"])


def test_calibrated_push_realises_the_weights_far_better_than_an_ideal_lut(cal, trained):
    run, _ = trained
    weights = load_run(run)["weights"]
    errors = {}
    for which in ("calibrated", "ideal"):
        with open_bench("sim") as bench:
            plan = plan_push(bench, cal if which == "calibrated" else None)
            if which == "calibrated":
                w_max = plan.w_max
            else:                                    # the same ranges: only the LUT differs
                plan.w_max, plan.w_max_sources = list(w_max), ["as calibrated"] * 2
            push_weights(bench, weights, plan)
            truth = truth_of(bench)
            rms = []
            for k, name in enumerate(LAYER_SLMS):
                true_resp = PhaseResponse(truth.realised["phase_table_rad"][name], name=name)
                field = realised_weights(bench.slms[name].last_levels, bench.layouts[name], true_resp)
                rms.append(np.sqrt(np.mean((field - np.clip(weights[k], -w_max[k], w_max[k]) / w_max[k]) ** 2)))
            errors[which] = np.array(rms)
    assert np.all(errors["calibrated"] < 0.02), errors
    assert np.all(errors["calibrated"] < errors["ideal"] / 5), errors


def test_cli_reports_the_calibrated_encoding(sim_calibration_file, trained):
    run, _ = trained
    rc, out, err = _cli(["push", "--bench", "sim", "--weights", str(run), "--cal", str(sim_calibration_file),
                         "--json"])
    assert rc == 0, err
    result = json.loads(out)
    assert result["warnings"] == [] and "warning" not in err
    assert [r["slm"] for r in result["slms"]] == list(LAYER_SLMS)
    for r in result["slms"]:
        assert "calibrated" in r["lut"] and r["w_max_source"].startswith("calibrated")
    rc, out, err = _cli(["push", "--bench", "sim", "--weights", str(run), "--json"])
    assert rc == 0 and "--cal" in err
    result = json.loads(out)
    assert result["cal"] is None and all(r["w_max_source"] == "largest |weight|" for r in result["slms"])
    weights = load_run(run)["weights"]
    for k, r in enumerate(result["slms"]):
        assert r["w_max"] == pytest.approx(np.abs(weights[k]).max())
    rc, out, _ = _cli(["push", "--bench", "sim", "--weights", str(run), "--cal", str(sim_calibration_file),
                       "--w-max", "50"])
    assert rc == 0 and "w_max 50 (full amplitude; --w-max)" in out


def test_a_calibration_from_another_bench_is_refused(sim_calibration_file, trained, tmp_path):
    run, _ = trained
    renamed = _bench_copy(tmp_path, "lab")
    other_hw = _bench_copy(tmp_path, "sim", seed=7)
    base = ["--weights", str(run), "--cal", str(sim_calibration_file)]
    for bench, expect in ((renamed, "bench name 'sim' vs 'lab'"), (other_hw, "serial number")):
        rc, _, err = _cli(["push", "--bench", str(bench)] + base)
        assert rc == 2 and expect in err and "--allow-other-bench" in err, err
        assert len(err.strip().splitlines()) == 1
        rc, out, err = _cli(["push", "--bench", str(bench), "--allow-other-bench", "--json"] + base)
        assert rc == 0 and "used anyway" in err
    # training and compare check the same way
    rc, _, err = _cli(["train", "--system", "bench", "--bench", str(renamed), "--cal", str(sim_calibration_file),
                       "--mode", "insilico", "--task", "moons", "--epochs", "1", "--json"])
    assert rc == 2 and "calibrated on another bench than 'lab'" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _cli(["compare", "--bench", str(other_hw), "--cal", str(sim_calibration_file),
                       "--report", str(tmp_path / "r")])
    assert rc == 2 and "serial number" in err


def test_cli_errors(sim_calibration_file, trained, tmp_path, cal):
    run, _ = trained
    only_slm1 = CalibrationSet.load(sim_calibration_file)
    for name in ("slm.slm2", "mvm1", "mvm2"):
        del only_slm1.fits[name]
    only_slm1.save(tmp_path / "partial.h5")
    no_mvm = CalibrationSet.load(sim_calibration_file)
    del no_mvm.fits["mvm1"], no_mvm.fits["mvm2"]
    no_mvm.save(tmp_path / "no_mvm.h5")
    cases = [
        (["--cal", str(tmp_path / "partial.h5")], "has no inverse LUT of slm2"),
        (["--cal", str(run)], "not an optwin calibration file"),
        (["--cal", str(tmp_path / "none.h5")], "no such calibration file"),
        (["--w-max", "0.01"], "exceeds --w-max 0.01; raise w_max"),
        (["--w-max", "-1"], "--w-max must be"),
    ]
    for extra, message in cases:
        rc, _, err = _cli(["push", "--bench", "sim", "--weights", str(run)] + extra)
        assert rc == 2, (extra, err)
        assert message in err, (extra, err)
        assert err.strip().splitlines()[-1].startswith("optwin push: error:")
    rc, out, err = _cli(["push", "--bench", "sim", "--weights", str(run), "--cal", str(tmp_path / "no_mvm.h5"),
                         "--json"])
    assert rc == 0 and "has no MVM calibration" in err
    rc, _, err = _cli(["push", "--bench", "sim", "--weights", str(tmp_path / "missing.h5")])
    assert rc == 2 and "no such run file" in err
