"""optwin sweep: grids, bit-reproducible points on dask (local and remote), resume after a kill,
failed points, plots.

Every sweep here is the same small 2-axis grid (alpha0 x readout noise, 3 seeds, moons, few
epochs: ~0.1 s a point); a serial in-process run is the reference the dask runs must match
point for point, and one point is checked against a training written directly with the twin.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from optwin.cli import main
from optwin.outputs import OutputLockedError
from optwin.sweep.execute import run_sweep
from optwin.sweep.grid import load_grid, parse_grid
from optwin.sweep.plot import aggregate
from optwin.sweep.store import SweepStore, read_results

ROOT = Path(__file__).resolve().parents[2]
GRID_TOML = """
description = "test: alpha0 x readout noise on moons"
[base]
task = "moons"
hidden = [16]
epochs = 100
[axes]
alpha0 = [2.0, 10.0]
readout_noise = [0.0, 0.1]
seed = [0, 1, 2]
"""
N_POINTS = 12
COMPARED = ("status", "test_accuracy", "train_accuracy", "test_loss", "final_loss", "weights_sha256")


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def by_key(results):
    return {r["key"]: r for r in results.rows}


def assert_same_points(results, reference):
    got, ref = by_key(results), by_key(reference)
    assert sorted(got) == sorted(ref) and len(got) == N_POINTS
    for key, r in ref.items():
        assert {c: got[key][c] for c in COMPARED} == {c: r[c] for c in COMPARED}, key


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("grid") / "grid.toml"
    path.write_text(GRID_TOML)
    return path


@pytest.fixture(scope="module")
def reference(grid_file, tmp_path_factory):
    """The grid run serially in this process (no dask)."""
    out = tmp_path_factory.mktemp("serial") / "serial.h5"
    summary = run_sweep(load_grid(grid_file), out, workers=0)
    assert summary["ran"] == N_POINTS and summary["ok"] == N_POINTS and summary["executor"] == "serial"
    return read_results(out)


def test_point_matches_a_direct_twin_training(reference):
    from twin.absorber import make_absorber
    from twin.layers import Imperfections
    from twin.network import OpticalNetwork
    from twin.optim import Adam
    from twin.tasks import load_task
    from twin.training import train

    row = next(r for r in reference.rows if (r["alpha0"], r["readout_noise"], r["seed"]) == (10.0, 0.1, 1))
    task = load_task("moons", seed=1)
    net = OpticalNetwork([2, 16, 2], absorber=make_absorber("thin", alpha0=10.0), rule="probe",
                         imperfections=[Imperfections(readout_noise=0.1), Imperfections(readout_noise=0.1)],
                         init_scale=3.0, seed=1)
    hist = train(net, task, Adam(0.01), epochs=100, batch=32, loss="mse", seed=1)
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(w, "<f8").tobytes() for w in net.get_weights()))
    assert row["weights_sha256"] == digest.hexdigest()[:16]
    assert row["test_accuracy"] == hist.test_accuracy[-1] and row["final_loss"] == hist.train_loss[-1]
    assert row["epochs_run"] == 100 and json.loads(row["config"])["readout_noise"] == 0.1
    # the axes matter: noise lowers accuracy at alpha0 = 10, a deeper cell raises it without noise
    agg = aggregate(reference, "alpha0", "readout_noise")
    assert agg["x_values"] == [2.0, 10.0] and agg["y_values"] == [0.0, 0.1]
    assert np.all(agg["count"] == 3)
    assert agg["mean"][0, 1] > agg["mean"][1, 1] and agg["mean"][0, 1] > agg["mean"][0, 0]


def test_grid_keys_are_canonical_and_bad_grids_are_rejected():
    a = parse_grid({"base": {"task": "moons", "hidden": 16}, "axes": {"alpha0": [5, 10], "seed": [0, 1]}})
    b = parse_grid({"base": {"task": "moons", "hidden": [16], "epochs": 800},
                    "axes": {"seed": [0.0, 1.0], "alpha0": [5.0, 10.0]}})
    assert len(a) == 4 and {p.key for p in a.points()} == {p.key for p in b.points()}  # 800 = moons default
    c = parse_grid({"base": {"task": "moons", "epochs": 5}, "axes": {"alpha0": {"start": 1, "stop": 100,
                                                                                  "num": 3, "log": True}}})
    assert c.axes["alpha0"] == [1.0, 10.0, 100.0] and not {p.key for p in c.points()} & {p.key for p in a.points()}
    bad = [({"base": {"task": "moons"}, "axes": {"alpha": [1]}}, "unknown sweep setting 'alpha'"),
           ({"base": {"task": "moons"}, "axes": {"alpha0": [1, 1.0]}}, "twice"),
           ({"base": {"task": "moons", "seed": 1}, "axes": {"seed": [1, 2]}}, "set in [base] and varied"),
           ({"base": {}, "axes": {"seed": [1]}}, "must name a task"),
           ({"base": {"task": "moons"}, "axes": {"seed": []}}, "non-empty list"),
           ({"base": {"task": "moons"}, "axes": {}}, "[axes]")]
    for data, message in bad:
        with pytest.raises(ValueError) as info:
            parse_grid(data)
        assert message in str(info.value)


def test_local_cluster_two_workers_matches_serial(capsys, grid_file, reference, tmp_path):
    out = tmp_path / "local.h5"
    code, stdout, _ = run_cli(capsys, "sweep", grid_file, "--workers", 2, "--out", out, "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["executor"] == "local:2" and summary["ran"] == N_POINTS and summary["ok"] == N_POINTS
    results = read_results(out)
    assert_same_points(results, reference)
    workers = {r["worker"] for r in results.rows}
    assert len(workers) == 2 and f"{os.uname().nodename}:{os.getpid()}" not in workers
    # the CSV mirror holds the same rows
    lines = (tmp_path / "local.csv").read_text().splitlines()
    assert len(lines) == N_POINTS + 1 and lines[0].startswith("index,key,status,alpha0,readout_noise,seed,")


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_existing_scheduler_on_loopback_matches_serial(capsys, grid_file, reference, tmp_path):
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    logs = [open(tmp_path / name, "w") for name in ("scheduler.log", "worker.log")]
    scheduler = subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", str(sched_file)],
                                 cwd=tmp_path, env=env, stdout=logs[0], stderr=subprocess.STDOUT,
                                 start_new_session=True)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not (sched_file.exists() and sched_file.stat().st_size):
            assert scheduler.poll() is None and time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        worker = subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nworkers", "2",
                                   "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"],
                                  cwd=tmp_path, env=env, stdout=logs[1], stderr=subprocess.STDOUT,
                                  start_new_session=True)
        out = tmp_path / "remote.h5"
        code, stdout, _ = run_cli(capsys, "sweep", grid_file, "--scheduler", address, "--out", out, "--json")
        assert code == 0
        summary = json.loads(stdout)
        assert summary["executor"] == address and summary["ok"] == N_POINTS
        results = read_results(out)
        assert_same_points(results, reference)
        assert all(not r["worker"].endswith(f":{os.getpid()}") for r in results.rows)
    finally:
        if worker is not None:
            _stop(worker)
        _stop(scheduler)
        for fh in logs:
            fh.close()


def test_killed_sweep_resumes_with_only_the_missing_points(capsys, grid_file, reference, tmp_path):
    out, csv_path = tmp_path / "killed.h5", tmp_path / "killed.csv"
    proc = subprocess.Popen([sys.executable, "-m", "optwin", "sweep", str(grid_file), "--workers", "1",
                             "--out", str(out), "--json"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (csv_path.exists() and len(csv_path.read_text().splitlines()) >= 1 + 3):
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no points finished within 60 s"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep, its scheduler and its worker processes
        proc.wait()
    for _ in range(100):  # the group's worker processes are gone too
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("worker processes of the killed sweep are still alive")

    before = {r["key"]: r["finished_utc"] for r in read_results(out).rows}
    assert 3 <= len(before) < N_POINTS
    code, stdout, _ = run_cli(capsys, "sweep", grid_file, "--workers", 0, "--out", out, "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["skipped"] == len(before) and summary["ran"] == N_POINTS - len(before)
    results = read_results(out)
    assert_same_points(results, reference)
    after = {r["key"]: r["finished_utc"] for r in results.rows}
    assert all(after[k] == t for k, t in before.items())  # finished points were not run again
    assert sum(after[k] > max(before.values()) for k in after) == N_POINTS - len(before)
    rows = csv_path.read_text().splitlines()[1:]
    assert len(rows) == N_POINTS and len({r.split(",")[1] for r in rows}) == N_POINTS
    # a third run has nothing left to do
    code, stdout, _ = run_cli(capsys, "sweep", grid_file, "--workers", 0, "--out", out, "--json")
    assert code == 0 and json.loads(stdout)["ran"] == 0


def test_failed_point_is_recorded_and_does_not_stop_the_sweep(capsys, tmp_path):
    grid = tmp_path / "bad.toml"
    grid.write_text('[base]\ntask = "moons"\nepochs = 3\n[axes]\nalpha0 = [-1.0, 2.0]\n'
                    'update = ["gradient", "sideways"]\n')
    out = tmp_path / "bad.h5"
    code, stdout, _ = run_cli(capsys, "sweep", grid, "--workers", 0, "--out", out, "--json")
    assert code == 1
    summary = json.loads(stdout)
    assert (summary["ran"], summary["ok"], summary["failed"]) == (4, 1, 3)
    rows = {(r["alpha0"], r["update"]): r for r in read_results(out).rows}
    assert rows[(2.0, "gradient")]["status"] == "ok" and rows[(2.0, "gradient")]["error"] == ""
    assert rows[(-1.0, "gradient")]["status"] == "failed"
    assert "alpha0" in rows[(-1.0, "gradient")]["error"] and "\n" not in rows[(-1.0, "gradient")]["error"]
    assert "update must be 'gradient' or 'optical'" in rows[(2.0, "sideways")]["error"]
    assert np.isnan(rows[(-1.0, "gradient")]["test_accuracy"])
    # failed points are final on resume, unless retried
    code, stdout, _ = run_cli(capsys, "sweep", grid, "--workers", 0, "--out", out, "--json")
    assert code == 0 and json.loads(stdout)["ran"] == 0
    code, stdout, _ = run_cli(capsys, "sweep", grid, "--workers", 0, "--out", out, "--json", "--retry-failed")
    assert code == 1 and json.loads(stdout)["ran"] == 3


def test_plot_writes_heatmap_and_curves(capsys, reference, tmp_path):
    from matplotlib.image import imread
    code, stdout, _ = run_cli(capsys, "sweep", "plot", reference.path, "--out", tmp_path / "figs", "--json")
    assert code == 0
    files = [Path(f) for f in json.loads(stdout)["files"]]
    assert [f.name for f in files] == ["heatmap_test_accuracy_readout_noise_vs_alpha0.png",
                                       "curves_test_accuracy_vs_alpha0_by_readout_noise.png"]
    for f in files:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = imread(f)
        assert img.shape[0] > 200 and img.shape[1] > 200 and img[..., :3].std() > 0.05
    agg = aggregate(reference, "alpha0", "readout_noise")
    seeds = [r["test_accuracy"] for r in reference.rows if r["alpha0"] == 10.0 and r["readout_noise"] == 0.1]
    assert len(seeds) == 3 and agg["mean"][1, 1] == pytest.approx(np.mean(seeds))
    assert agg["std"][1, 1] == pytest.approx(np.std(seeds))
    code, stdout, _ = run_cli(capsys, "sweep", "plot", reference.path, "--x", "seed", "--y", "alpha0",
                              "--metric", "final_loss", "--out", tmp_path / "figs2", "--json")
    assert code == 0 and "heatmap_final_loss_alpha0_vs_seed.png" in stdout
    # the same plot again: the earlier PNGs are kept unless --force
    before = {f: f.stat().st_mtime_ns for f in files}
    code, _, err = run_cli(capsys, "sweep", "plot", reference.path, "--out", tmp_path / "figs")
    assert code == 2 and "exists (an earlier plot)" in err and "--force" in err
    assert {f: f.stat().st_mtime_ns for f in files} == before
    code, _, _ = run_cli(capsys, "sweep", "plot", reference.path, "--out", tmp_path / "figs", "--force")
    assert code == 0 and all(f.stat().st_mtime_ns >= before[f] for f in files)


@pytest.mark.parametrize("argv, message", [
    (["sweep", "{grid}", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1", "--out", "{out}"], "not both"),
    (["sweep", "{grid}"], "--out results.h5"),
    (["sweep", "{missing}", "--out", "{out}"], "no such grid file"),
    (["sweep", "{badtoml}", "--out", "{out}"], "not valid TOML"),
    (["sweep", "{grid}", "--out", "{out}", "--x", "alpha0"], "belongs to `optwin sweep plot"),
    (["sweep", "plot"], "name the results file"),
    (["sweep", "plot", "{missing}"], "no such sweep results file"),
    (["sweep", "plot", "{ref}", "--x", "lr"], "unknown axis 'lr'"),
    (["sweep", "plot", "{ref}", "--metric", "beauty"], "unknown metric"),
])
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, grid_file, reference, argv, message):
    (tmp_path / "bad.toml").write_text("[base\n")
    names = {"grid": grid_file, "out": tmp_path / "x.h5", "missing": tmp_path / "missing",
             "badtoml": tmp_path / "bad.toml", "ref": reference.path}
    code, _, err = run_cli(capsys, *[a.format(**names) for a in argv])
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1


def test_missing_dask_names_the_extra(capsys, monkeypatch, grid_file, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    code, _, err = run_cli(capsys, "sweep", grid_file, "--workers", "2", "--out", tmp_path / "x.h5")
    assert code == 2 and "pip install optwin[cluster]" in err and len(err.strip().splitlines()) == 1


def test_store_refuses_another_grid_and_a_concurrent_writer(grid_file, reference, tmp_path):
    import shutil
    out = tmp_path / "copy.h5"
    shutil.copy(reference.path, out)
    other = parse_grid({"base": {"task": "moons", "epochs": 5}, "axes": {"alpha0": [2.0, 10.0]}})
    with pytest.raises(ValueError, match="another grid"):
        run_sweep(other, out, workers=0)
    grid = load_grid(grid_file)
    with SweepStore(out, grid) as store:
        assert len(store.finished_keys()) == N_POINTS
        with pytest.raises(OutputLockedError, match="locked by another process"):
            SweepStore(out, grid).open()
    summary = run_sweep(grid, out, workers=0)  # lock released: resumes, nothing to run
    assert summary["ran"] == 0 and summary["skipped"] == N_POINTS
