"""``optwin calibrate``'s human output: one screen, warnings first, a table per kind of device;
progress as log lines when stderr is not a terminal."""
import io
import re
import time

from calibration.calset import CalibrationSet
from calibration.run import run_info
from hwio.progress import progress
from optwin.commands.calibrate_summary import bench_summary_lines


def test_one_screen_summary(sim_calibration_file):
    cal = CalibrationSet.load(sim_calibration_file)
    info = dict(run_info(cal), warnings=["the MVM fits predate this absorber calibration"])
    lines = bench_summary_lines(cal, info, 123.4, sim_calibration_file, report="rep")
    assert len(lines) <= 50 and max(len(line) for line in lines[1:]) <= 115, "\n".join(lines)
    text = "\n".join(lines)
    # warnings before any table
    assert lines[1].startswith("warnings (") and lines[2].startswith("  ! the MVM fits predate")
    assert text.index("warnings") < text.index("cameras (EMVA 1288")
    for head in ("cameras (EMVA 1288", "registration", "readout", "phase panels", "absorber", "matrix-vector"):
        assert head in text
    for cam in ("cam_z1", "cam_a1", "cam_back", "cam_out"):
        row = next(line for line in lines if line.strip().startswith(cam) and "/" in line)   # camera row: hot/dead
        gain = cal.fits["camera" if cam == "cam_out" else f"camera.{cam}"].quantities["gain_adu_per_e"].value
        assert f"{gain:.4g}" in row
    assert re.search(r"noise floor", text) and "rep/report.html" in text


def test_progress_lines_without_a_terminal():
    err = io.StringIO()
    with progress(total=2, desc="calibrate", unit="part", stream=err, interval_s=0.05) as outer:
        outer.set_description("calibrate slm")
        for _ in progress(range(3), desc="slm sweep", stream=err, interval_s=0.05):
            time.sleep(0.06)
        outer.update(2)
    lines = err.getvalue().splitlines()
    assert all(line.startswith("[progress ") for line in lines)
    assert any("calibrate slm 0/2 (0%) > slm sweep" in line for line in lines)   # the nested step, with its parent
    assert lines[-1].endswith("done in 0 s") and "2/2 (100%)" in lines[-1]
    quiet = io.StringIO()
    for _ in progress(range(3), stream=quiet, enabled=False):
        pass
    for _ in progress(range(3), stream=quiet, interval_s=10.0):     # shorter than one interval: silent
        pass
    assert quiet.getvalue() == ""
