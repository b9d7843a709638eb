"""Output safety and the CLI's error boundary (issue 16, build items 1 and 2), through the real CLI.

Files are written by their real producers (``optwin train``, ``optwin calibrate``, ``optwin
sweep``); every refusal is checked for its exit code, its one line on stderr, and for leaving the
refused files byte-identical.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optwin.cli import describe_failure, main
from optwin.outputs import file_kind, json_safe, output_lock

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
TRAIN = ["train", "--task", "moons", "--epochs", "2", "--n-samples", "200"]


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_one_line(result, command, *words, code=2):
    rc, out, err = result
    assert rc == code, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"optwin {command}: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def snapshot(*paths):
    """Contents of files (bytes) and folders ({name: bytes}), to compare after a refusal."""
    out = {}
    for p in map(Path, paths):
        if p.is_dir():
            out[p] = {q.name: q.read_bytes() for q in sorted(p.iterdir()) if q.is_file()}
        else:
            out[p] = p.read_bytes() if p.exists() else None
    return out


def strict_json(text):
    """json.loads that refuses NaN/Infinity (what strict JSON readers do)."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    """A run file written by ``optwin train --out`` (read-only for the tests: they copy it)."""
    path = tmp_path_factory.mktemp("run") / "run.h5"
    assert main([*TRAIN, "--out", str(path), "--json"]) == 0
    return path


@pytest.fixture
def cal_copy(sim_calibration_file, tmp_path):
    """A copy of the session's real calibration (with its raw data and resume state) in tmp_path."""
    src = Path(sim_calibration_file)
    for p in src.parent.iterdir():
        if p.name.startswith(src.name) and p.is_file():
            shutil.copy(p, tmp_path / p.name)
    return tmp_path / src.name


def lab_csv(path):
    path.write_text("input,output\n0.1,0.05\n0.2,0.09\n")
    return path


# ------------------------------------------------------------------------------------ kinds
def test_file_kind_reads_the_content_not_the_name(run_file, tmp_path):
    disguised = tmp_path / "cal.h5"
    shutil.copy(run_file, disguised)
    assert file_kind(disguised) == "optwin-run"
    assert file_kind(lab_csv(tmp_path / "curve.h5")) == "other"
    assert file_kind(tmp_path) == "directory" and file_kind(tmp_path / "nothing") == "missing"


# ------------------------------------------------------------------------------------ train --out
def test_train_never_replaces_another_kind(capsys, tmp_path, cal_copy):
    csv = lab_csv(tmp_path / "lab.csv")
    before = snapshot(cal_copy, csv)
    for force in ([], ["--force"], ["--resume"]):
        assert_one_line(cli(capsys, *TRAIN, "--out", cal_copy, *force), "train",
                        "optwin calibration file, not an optwin run file", "never replaces", "another --out")
        assert_one_line(cli(capsys, *TRAIN, "--out", csv, *force), "train", "a file optwin did not write")
    assert snapshot(cal_copy, csv) == before


def test_train_replaces_its_own_kind_only_with_force_or_resume(capsys, tmp_path, run_file):
    run = tmp_path / "run.h5"
    shutil.copy(run_file, run)
    before = snapshot(run)
    assert_one_line(cli(capsys, *TRAIN, "--out", run), "train", "already exists (an optwin run file)",
                    "--force", "--resume")
    assert snapshot(run) == before
    rc, out, err = cli(capsys, *TRAIN[:-2], "--n-samples", "300", "--out", run, "--force", "--json")
    assert rc == 0, err
    assert strict_json(out)["out"] == str(run)
    assert snapshot(run) != before
    assert cli(capsys, *TRAIN, "--epochs", "4", "--n-samples", "300", "--out", run, "--resume", "--json")[0] == 0
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))   # no temporary left
    assert not (tmp_path / "run.h5.lock").exists()                                    # the lock is released


def test_out_path_problems_are_one_line_before_any_training(capsys, tmp_path):
    long_run = ["train", "--task", "moons", "--epochs", "100000"]           # hours, if it started
    (tmp_path / "folder").mkdir()
    t0 = time.perf_counter()
    assert_one_line(cli(capsys, *long_run, "--out", tmp_path / "missing" / "run.h5"), "train",
                    f"the folder {tmp_path / 'missing'} does not exist", "mkdir -p")
    assert_one_line(cli(capsys, *long_run, "--out", tmp_path / "folder"), "train", "is a folder",
                    str(tmp_path / "folder" / "run.h5"))
    assert time.perf_counter() - t0 < 10


def test_read_only_folder_is_refused_before_training(capsys, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.geteuid() == 0:        # root writes anywhere: make the check see what a user sees
            import optwin.outputs as outputs
            monkeypatch.setattr(outputs, "_writable", lambda folder: Path(folder) != ro)
        assert_one_line(cli(capsys, "train", "--task", "moons", "--epochs", "100000", "--out", ro / "run.h5"),
                        "train", f"cannot write in the folder {ro}", "permission denied")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


# ------------------------------------------------------------------------------------ calibrate --out
def test_calibrate_refuses_other_kinds_and_needs_force_over_a_calibration(capsys, tmp_path, run_file, cal_copy):
    run = tmp_path / "run.h5"
    shutil.copy(run_file, run)
    raw = cal_copy.with_name(cal_copy.name + ".raw.h5")
    before = snapshot(tmp_path)
    assert_one_line(cli(capsys, "calibrate", "--bench", "sim", "--out", run, "--force"), "calibrate",
                    "is an optwin run file, not an optwin calibration file")
    assert_one_line(cli(capsys, "calibrate", "--bench", "sim", "--out", cal_copy), "calibrate",
                    "already exists (an optwin calibration file)", "--force", "--resume")
    assert_one_line(cli(capsys, "calibrate", "--bench", "sim", "--out", cal_copy, "--only", "camera"), "calibrate",
                    "already holds the camera calibration", "--force")
    # the files beside a new --out: a lab's file at the raw name, an interrupted run's state
    new = tmp_path / "new.h5"
    lab_csv(tmp_path / "new.h5.raw.h5")
    assert_one_line(cli(capsys, "calibrate", "--bench", "sim", "--out", new, "--force"), "calibrate",
                    "new.h5.raw.h5 (written beside --out", "a file optwin did not write")
    (tmp_path / "new.h5.raw.h5").unlink()
    state = json.loads(cal_copy.with_name(cal_copy.name + ".state.json").read_text())
    state.pop("complete", None)
    (tmp_path / "other.h5.state.json").write_text(json.dumps(state))
    assert_one_line(cli(capsys, "calibrate", "--bench", "sim", "--out", tmp_path / "other.h5"), "calibrate",
                    "other.h5.state.json", "resume state of an optwin calibration", "--resume")
    (tmp_path / "other.h5.state.json").unlink()
    assert snapshot(tmp_path) == before and raw.exists()


def _calibrate_camera(out, *extra):
    return subprocess.run([sys.executable, "-m", "optwin", "calibrate", "--bench", "sim", "--out", str(out),
                           "--only", "camera", "--no-progress", "--json", *extra], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)


def test_fresh_calibration_keeps_the_old_raw_data_until_it_is_complete(tmp_path):
    out = tmp_path / "c.h5"
    assert _calibrate_camera(out).returncode == 0                     # raw data in c.h5.raw.h5
    done = _calibrate_camera(out, "--force")                          # a partial run beside it: raw.camera.h5
    assert done.returncode == 0, done.stderr
    assert strict_json(done.stdout)["out_file"] == str(out)
    old_raw = tmp_path / "c.h5.raw.camera.h5"
    before = snapshot(out, old_raw, tmp_path / "c.h5.raw.h5")
    # again with --force, killed while it records: the calibration file and both raw files as they were
    proc = subprocess.Popen([sys.executable, "-m", "optwin", "calibrate", "--bench", "sim", "--out", str(out),
                             "--only", "camera", "--force", "--no-progress"], cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None and not list(tmp_path.glob("c.h5.raw.camera.new-*")):
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert snapshot(out, old_raw, tmp_path / "c.h5.raw.h5") == before
    # a plain re-run is refused (an interrupted run's state); --resume finishes it and only then replaces
    refused = _calibrate_camera(out)
    assert refused.returncode == 2 and "--resume" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    resumed = _calibrate_camera(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    after = snapshot(out, old_raw)
    assert after[out] != before[out] and after[old_raw] != before[old_raw]
    assert not list(tmp_path.glob("*.new-*")) and not list(tmp_path.glob(".*"))
    from calibration.calset import CalibrationSet
    from calibration.run import run_info
    from hwio.recording import list_streams
    info = run_info(CalibrationSet.load(out))
    assert info["raw_file"] == "c.h5.raw.camera.h5" and info["raw_files"] == ["c.h5.raw.h5", "c.h5.raw.camera.h5"]
    assert sum(list_streams(old_raw).values()) > 0


# ------------------------------------------------------------------------------------ sweep --out
@pytest.fixture
def grid_file(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('[base]\ntask = "moons"\nepochs = 2\nn_samples = 120\n\n[axes]\nalpha0 = [2.0, 6.0]\n')
    return path


def test_sweep_never_replaces_a_lab_csv_beside_its_results(capsys, tmp_path, grid_file, run_file):
    lab = lab_csv(tmp_path / "curve.csv")
    before = snapshot(lab)
    for force in ([], ["--force"]):
        assert_one_line(cli(capsys, "sweep", grid_file, "--workers", "0", "--out", tmp_path / "curve.h5", *force),
                        "sweep", "curve.csv (written beside --out", "a file optwin did not write", "never replaces")
    shutil.copy(run_file, tmp_path / "run.h5")
    assert_one_line(cli(capsys, "sweep", grid_file, "--workers", "0", "--out", tmp_path / "run.h5"), "sweep",
                    "is an optwin run file, not an optwin sweep results file")
    assert snapshot(lab) == before and not (tmp_path / "curve.h5").exists()


def test_sweep_resumes_its_own_file_and_replaces_an_orphan_csv_only_with_force(capsys, tmp_path, grid_file):
    out = tmp_path / "results.h5"
    rc, text, err = cli(capsys, "sweep", grid_file, "--workers", "0", "--out", out, "--json")
    assert rc == 0, err
    assert strict_json(text)["ran"] == 2
    rc, text, _ = cli(capsys, "sweep", grid_file, "--workers", "0", "--out", out, "--json")   # resumes by design
    assert rc == 0 and strict_json(text)["skipped"] == 2
    out.unlink()                                        # the CSV of a sweep whose results file is gone
    csv = tmp_path / "results.csv"
    before = snapshot(csv)
    assert_one_line(cli(capsys, "sweep", grid_file, "--workers", "0", "--out", out), "sweep",
                    "results.csv (written beside --out", "the CSV of an optwin sweep", "--force")
    assert snapshot(csv) == before
    assert cli(capsys, "sweep", grid_file, "--workers", "0", "--out", out, "--force", "--json")[0] == 0
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "results.h5.lock").exists()
    # an OSError with a file name (a plot folder inside a file) is one line, exit 2
    assert_one_line(cli(capsys, "sweep", "plot", out, "--out", csv / "figs"), "sweep", "results.csv")


# ------------------------------------------------------------------------------------ report folders
def test_compare_report_folder_rules(capsys, tmp_path, cal_copy):
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "activation.png").write_bytes(b"a lab's own figure")
    before = snapshot(lab)
    argv = ["compare", "--bench", "sim", "--cal", cal_copy, "--inputs", "4", "--repeats", "2"]
    for force in ([], ["--force"]):
        assert_one_line(cli(capsys, *argv, "--report", lab, *force), "compare",
                        "holds files optwin did not write there (activation.png)")
    assert_one_line(cli(capsys, *argv, "--report", cal_copy), "compare", "not a folder")
    assert snapshot(lab) == before
    report = tmp_path / "report"
    rc, out, err = cli(capsys, *argv, "--report", report, "--json")
    assert rc == 0, err
    assert strict_json(out)["report"] == str(report / "compare.html")
    first = snapshot(report)
    assert_one_line(cli(capsys, *argv, "--report", report), "compare", "already holds an optwin compare report",
                    "--force")
    assert snapshot(report) == first
    assert cli(capsys, *argv, "--report", report, "--force", "--seed", "1")[0] == 0
    assert snapshot(report) != first


def test_demo_folder_rules(capsys, tmp_path, run_file, cal_copy):
    assert_one_line(cli(capsys, "demo", "--out", run_file), "demo", "is an optwin run file, not a folder")
    foreign = tmp_path / "site"
    foreign.mkdir()
    (foreign / "report.html").write_text("<html>a lab's page</html>")
    before = snapshot(foreign)
    assert_one_line(cli(capsys, "demo", "--out", foreign, "--force"), "demo", "holds files optwin did not write")
    assert snapshot(foreign) == before
    # a folder with an earlier demo's calibration in it: --force or --resume
    assert_one_line(cli(capsys, "demo", "--out", tmp_path), "demo", "already holds", "--force", "--resume")


# ------------------------------------------------------------------------------------ locks
def test_a_second_writer_of_the_same_out_is_told_it_is_locked(capsys, tmp_path):
    out = tmp_path / "run.h5"
    proc = subprocess.Popen([sys.executable, "-m", "optwin", "train", "--task", "moons", "--epochs", "100000",
                             "--out", str(out), "--no-progress"], cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            # a pytest-xdist worker ignores SIGINT, and a child inherits that: restore it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not out.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert out.exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint within 60 s"
        line = assert_one_line(cli(capsys, "train", "--task", "moons", "--epochs", "2", "--out", out, "--force"),
                               "train", "is locked by another process", f"pid {proc.pid}", "wait for it")
        assert "BlockingIOError" not in line
        # Ctrl-C ends the first run with its one line and exit code 130; its checkpoint stays readable
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        err = proc.stderr.read().decode()
        assert err.strip().startswith("optwin train: interrupted") and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    from optwin.runfile import load_run
    assert load_run(out)["settings"]["epochs_done"] >= 1
    assert cli(capsys, "train", "--task", "moons", "--epochs", "2", "--out", out, "--force")[0] == 0   # released


def test_lock_in_this_process_blocks_a_sweep_too(capsys, tmp_path, grid_file):
    out = tmp_path / "results.h5"
    with output_lock(out):
        assert_one_line(cli(capsys, "sweep", grid_file, "--workers", "0", "--out", out), "sweep",
                        "locked by another process")
    assert not out.exists()


# ------------------------------------------------------------------------------------ the error boundary
def _faulty_bench(tmp_path):
    """The embedded simulated bench with cameras that time out or drop half their frames."""
    text = (REPO / "hwio" / "benches" / "sim.toml").read_text()
    lines = [("camera_timeout_rate = 0.5" if ln.startswith("camera_timeout_rate") else
              "dropped_frame_rate = 0.5" if ln.startswith("dropped_frame_rate") else ln) for ln in text.splitlines()]
    path = tmp_path / "faulty.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_device_failure_is_one_line_exit_3_and_debug_shows_the_traceback(capsys, tmp_path, monkeypatch):
    from hwio.devices import DeviceError
    bench = _faulty_bench(tmp_path)
    line = assert_one_line(cli(capsys, "calibrate", "--bench", bench, "--out", tmp_path / "c.h5", "--no-progress"),
                           "calibrate", "device failure", "failed 6 times in a row", "cam_", "--resume", code=3)
    assert "Traceback" not in line
    with pytest.raises(DeviceError, match="times in a row"):
        main(["--debug", "calibrate", "--bench", str(bench), "--out", str(tmp_path / "d.h5"), "--no-progress"])
    monkeypatch.setenv("OPTWIN_DEBUG", "1")
    with pytest.raises(DeviceError):
        main(["calibrate", "--bench", str(bench), "--out", str(tmp_path / "e.h5"), "--no-progress"])


def test_debug_flag_after_the_command_shows_the_traceback(tmp_path):
    from optwin.outputs import OutputError
    with pytest.raises(OutputError, match="does not exist"):
        main(["train", "--epochs", "1", "--out", str(tmp_path / "no" / "run.h5"), "--debug"])


def _errors():
    from calibration.calset import CalibrationFileError
    from calibration.deploy import DeployError
    from calibration.run import CalibrationRunError
    from hwio.devices import DeviceTimeout
    from hwio.recording import RecordingError
    return [(CalibrationFileError("cal.h5: not an optwin calibration file (kind='x')"), 2, "cal.h5"),
            (CalibrationRunError("cal.h5.state.json: cannot read the resume state\n(details)"), 2, "(details)"),
            (DeployError("cal.h5 was calibrated on another bench than 'lab'"), 2, "another bench"),
            (RecordingError("raw.h5: damaged"), 2, "raw.h5"),
            (DeviceTimeout("cam_z1: no frame within 1 s"), 3, "device failure: cam_z1"),
            (FileNotFoundError(2, "No such file or directory", "grid.toml"), 2, "grid.toml: No such file"),
            (OSError(28, "No space left on device", "run.h5"), 3, "run.h5"),
            (BlockingIOError(11, "Unable to lock file"), 2, "locked by another process")]


def test_every_expected_failure_class_has_a_one_line_message_and_code():
    import argparse
    args = argparse.Namespace(command="calibrate", out="cal.h5", resume=False)
    for exc, code, words in _errors():
        got = describe_failure(exc, args)
        assert got is not None and got[0] == code and words in got[1] and "\n" not in got[1], (exc, got)
    assert describe_failure(ZeroDivisionError("a bug"), args) is None        # bugs keep their traceback


# ------------------------------------------------------------------------------------ strict JSON, pipes
def test_json_is_strict(capsys):
    rc, out, err = cli(capsys, "train", "--task", "moons", "--epochs", "1", "--json")
    assert rc == 0, err
    res = strict_json(out)
    assert res["epochs"] == 1 and 0 <= res["test_accuracy"] <= 1
    import numpy as np
    assert json_safe({"a": np.float32("nan"), "b": [np.inf, np.int64(3)], "c": np.arange(2.0), "d": Path("x")}) == \
        {"a": None, "b": [None, 3], "c": [0.0, 1.0], "d": "x"}


@pytest.mark.parametrize("argv", [["bench", "info", "--bench", "sim", "--json"], ["bench", "info", "--bench", "sim"]])
def test_closed_pipe_is_quiet(argv):
    proc = subprocess.Popen([sys.executable, "-m", "optwin", *argv], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()              # the reader is gone before the command writes (| head -c 0)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == ""
