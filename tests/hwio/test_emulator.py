"""The lab emulator: window SLMs on Xvfb -> simulated optics -> pylon emulated cameras.

The optwin side runs in child processes (pyglet fixes its display mode per process, pypylon
reads PYLON_CAMEMU at import); one emulator serves the module.  Skips where Xvfb, pyglet,
mss, pypylon or OpenCV are missing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hwio.config import load_bench_config
from hwio.emulator import Emulator, missing_tools, write_emulated_bench
from hwio.sim.testing import open_with, truth_of

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "experiments" / "benches" / "emulated_reduced.toml"
LATENCY_FRAMES, REFRESH_HZ = 6, 60.0          # 0.1 s display latency
GOOD_SETTLE_S = 0.3                           # latency + frame period + render, with room for a busy machine


def _need_tools():
    missing = missing_tools()
    if missing:
        pytest.skip(f"the lab emulator needs {', '.join(missing)}")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    _need_tools()
    folder = tmp_path_factory.mktemp("emulator")
    emu = Emulator(SOURCE, folder, latency_frames=LATENCY_FRAMES, refresh_hz=REFRESH_HZ, frame_period_s=0.005,
                   settle_time_s=GOOD_SETTLE_S)
    with emu:
        yield emu


def _child(emu, code: str, *args, timeout=120) -> subprocess.CompletedProcess:
    env = dict(os.environ, **emu.env, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


# ------------------------------------------------------------------ the bench file
def test_emulated_bench_file_names_the_real_drivers(tmp_path):
    settings = write_emulated_bench(SOURCE, tmp_path, latency_frames=2, frame_period_s=0.01, settle_time_s=0.07)
    cfg, src = load_bench_config(tmp_path / "bench.toml"), load_bench_config(SOURCE)
    assert not cfg.simulated and cfg._truth_table is None
    assert cfg.devices["panel"]["backend"] == "window" and cfg.devices["input"]["backend"] == "window"
    assert cfg.devices["cam"]["backend"] == "pylon_emulator"
    assert cfg.devices["panel"]["settle_time_s"] == 0.07
    assert cfg.devices["cam"]["options"]["image_file"] == settings["cameras"]["cam"]["image_file"]
    # same network, regions, layouts and spots as the simulated bench
    assert cfg.sizes == src.sizes
    for name in ("slm1", "slm2", "probe_input", "lo", "cam_z1", "cam_back"):
        assert cfg.devices[name]["region_px"] == src.devices[name]["region_px"]
    assert {k: v.to_dict() for k, v in cfg.layouts.items()} == {k: v.to_dict() for k, v in src.layouts.items()}
    assert {k: v.to_dict() for k, v in cfg.spots.items()} == {k: v.to_dict() for k, v in src.spots.items()}
    # windows side by side, inside the screen
    wins = settings["windows"]
    assert wins["input"]["x"] + wins["input"]["width"] < wins["panel"]["x"]
    assert settings["screen_px"][0] >= wins["panel"]["x"] + wins["panel"]["width"]


def test_emulated_bench_needs_a_simulated_bench_without_lamp(tmp_path):
    with pytest.raises(ValueError, match="flat lamp"):
        write_emulated_bench("sim", tmp_path / "a")
    write_emulated_bench(SOURCE, tmp_path / "b")
    with pytest.raises(ValueError, match="needs a simulated bench"):
        write_emulated_bench(tmp_path / "b" / "bench.toml", tmp_path / "c")


# ------------------------------------------------------------------ frames through the drivers
_FRAMES = """
import json, sys
from pathlib import Path
import numpy as np
from hwio.bench import open_bench
from hwio.emulator.camera import read_state
from hwio.emulator.process import levels_crc
from hwio.settle_check import check_settle
bench_file, out, exposure_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
with open_bench(bench_file) as b:
    rng = np.random.default_rng(7)
    b.slms["input"].show(np.ones(b.slms["input"].shape, np.uint8))
    b.slms["slm1"].show(rng.integers(0, 256, b.slms["slm1"].shape))
    b.slms["slm2"].show(rng.integers(0, 256, b.slms["slm2"].shape))
    cam = b.physical["cam"]
    cam.exposure_s = exposure_s
    frames = [cam.grab() for _ in range(6)]
    state = read_state(cam.image_file.with_name(cam.image_file.name + ".state.json"))
    np.save(out, np.stack([f.image for f in frames]), allow_pickle=False)
    info = {"sent": {"panel": levels_crc(b.physical["panel"].last_levels),
                     "input": levels_crc(b.slms["input"].last_levels)},
            "shown": state["levels_crc"], "exposure_s": cam.exposure_s,
            "timestamps": [f.timestamp_s for f in frames], "settle_check": check_settle(b)}
    # a short photon-transfer calibration of one plane through the drivers
    from calibration.procedures.camera import measure_camera_laser
    from calibration.procedures.context import CalContext
    (fit,) = measure_camera_laser(CalContext(b), cameras=["cam_z1"], n_points=8, n_frames=8)
    info["camera_fit"] = {k: [q.value, q.stderr] for k, q in fit.quantities.items()
                          if k in ("gain_adu_per_e", "read_noise_e", "dark_offset_adu")}
    print(json.dumps(info))
"""


def _spot_sums(images: np.ndarray, truth, half: int = 3) -> np.ndarray:
    """Summed ADU in a (2 half + 1)^2 box around every spot of every plane (camera pixels)."""
    quad = {"cam_z1": (0, 0), "cam_a1": (0, 80), "cam_out": (80, 0), "cam_back": (80, 80)}
    out = []
    for plane, (r0, c0) in quad.items():
        for r, c in truth.realised["spot_positions_px"][plane]:
            r, c = int(round(r)) + r0, int(round(c)) + c0
            out.append(images[..., r - half:r + half + 1, c - half:c + half + 1].sum(axis=(-1, -2)))
    return np.array(out, dtype=float).T          # (frames, spots)


EXPOSURE_S = 2e-3


@pytest.fixture(scope="module")
def driven(emulator, tmp_path_factory):
    """One optwin process on the emulated bench: frames, the settle check, a short camera calibration."""
    frames = tmp_path_factory.mktemp("driven") / "frames.npy"
    res = _child(emulator, _FRAMES, emulator.bench_file, frames, EXPOSURE_S)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1]), np.load(frames)


def test_frames_show_the_screen_through_the_simulated_optics(driven):
    """The levels optwin sent reach the optics pixel-exact (screen capture), and the pylon frames carry
    the simulator's image of them: spot by spot as the sim backend renders the same frames.  The
    settle check passes with settle times above the display latency."""
    info, emulated = driven
    exposure_s = EXPOSURE_S
    assert info["shown"] == info["sent"]                      # what the windows show = what was sent
    assert info["exposure_s"] == pytest.approx(exposure_s)
    assert np.all(np.diff(info["timestamps"]) > 0)
    report = info["settle_check"]
    for slm in ("input", "panel"):
        assert report[slm]["camera"] == "cam" and report[slm]["settle_time_s"] == GOOD_SETTLE_S, report
        assert report[slm]["updates"] == 2 and report[slm]["stale"] == 0, report
    assert emulated.shape == (6, 160, 160) and emulated.dtype == np.uint16
    assert all(np.any(emulated[k] != emulated[k + 1]) for k in range(5))      # every grab a new sensor frame

    with open_with(SOURCE, {"truth": {"faults": None}}) as sim:
        truth = truth_of(sim)
        rng = np.random.default_rng(7)
        sim.slms["input"].show(np.ones(sim.slms["input"].shape, np.uint8))
        sim.slms["slm1"].show(rng.integers(0, 256, sim.slms["slm1"].shape))
        sim.slms["slm2"].show(rng.integers(0, 256, sim.slms["slm2"].shape))
        cam = sim.physical["cam"]
        cam.exposure_s = exposure_s
        reference = np.stack([cam.grab().image for _ in range(6)])
        sim.slms["input"].show(np.zeros(sim.slms["input"].shape, np.uint8))
        dark_input = np.stack([cam.grab().image for _ in range(6)])
    emu_s, ref_s, off_s = (_spot_sums(x, truth) for x in (emulated, reference, dark_input))
    offset = 49 * truth.sensors["cam"].dark_offset_adu
    signal = ref_s.mean(0) - offset
    lit = signal > 0.1 * signal.max()
    assert lit.sum() >= 10
    # frame-to-frame scatter of one spot (shot + read noise + laser jitter) sets the tolerance
    sigma = np.sqrt(ref_s.var(0, ddof=1) / 6 + emu_s.var(0, ddof=1) / 6)
    z = (emu_s.mean(0) - ref_s.mean(0))[lit] / sigma[lit]
    assert np.sqrt(np.mean(z ** 2)) < 2.5, z
    # and the comparison can tell scenes apart: the same spots without input light differ by far more
    z_off = (off_s.mean(0) - ref_s.mean(0))[lit] / sigma[lit]
    assert np.sqrt(np.mean(z_off ** 2)) > 10


# ------------------------------------------------------------------ the timing bug
def test_settle_time_below_display_latency_is_caught(emulator, tmp_path):
    """SLM settle time 0 s against a 0.1 s display latency: `optwin calibrate` stops with one line naming
    the stale frame, the latency it measured and the key to change."""
    short = tmp_path / "short_settle.toml"
    text = emulator.bench_file.read_text()
    assert f"settle_time_s = {GOOD_SETTLE_S}" in text
    short.write_text(text.replace(f"settle_time_s = {GOOD_SETTLE_S}", "settle_time_s = 0.0"))
    out = tmp_path / "cal.h5"
    res = _child(emulator, "import sys; from optwin.cli import main; sys.exit(main(sys.argv[1:]))",
                 "calibrate", "--bench", short, "--out", out, "--no-progress")
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(err) == 1 and err[0].startswith("optwin calibrate: error: stale frame:"), err
    assert "settle_time_s" in err[0] and "still showed the previous frame" in err[0]
    latency_s = float(err[0].split("saw the new frame ")[1].split(" s after")[0])
    assert LATENCY_FRAMES / REFRESH_HZ <= latency_s < GOOD_SETTLE_S + 0.5, err[0]
    assert not out.exists()


def test_camera_calibration_through_the_drivers_finds_the_true_sensor(driven):
    """Photon transfer with the laser (8 exposures x 8 frames of cam_z1) through window SLMs and pylon:
    gain, read noise and offset of the simulated sensor within the fit's own uncertainty."""
    fit = driven[0]["camera_fit"]
    with open_with(SOURCE, {"truth": {"faults": None}}) as sim:
        sensor = truth_of(sim).sensors["cam"]
    for key, true in (("gain_adu_per_e", sensor.gain_adu_per_e), ("read_noise_e", sensor.read_noise_e)):
        value, stderr = fit[key]
        assert abs(value - true) < 3 * stderr + 0.01 * true, (key, value, stderr, true)
        assert stderr < 0.05 * true, (key, stderr)
    assert abs(fit["dark_offset_adu"][0] - sensor.dark_offset_adu) < 0.5


# ------------------------------------------------------------------ the command
def test_optwin_emulate_runs_a_command_inside_and_stops(tmp_path, capsys):
    _need_tools()
    from optwin.cli import main
    probe = ("import json, os, sys; from hwio.config import load_bench_config; "
             "cfg = load_bench_config(sys.argv[1]); "
             "print(json.dumps([os.environ['DISPLAY'], cfg.devices['cam']['backend']])); sys.exit(7)")
    code = main(["emulate", "--bench", str(SOURCE), "--dir", str(tmp_path / "emu"), "--", sys.executable, "-c",
                 probe, "{bench}"])
    assert code == 7                                     # the command's exit code
    state = json.loads((tmp_path / "emu" / "cam.png.state.json").read_text())
    assert state["frame"] >= 0
    with pytest.raises(ProcessLookupError):            # the optics process is gone
        os.kill(state["pid"], 0)
    err = capsys.readouterr().err
    assert "bench file" in err and "DISPLAY=:" in err


@pytest.mark.parametrize("args, message", [
    (["--bench", str(SOURCE), "--settle-s", "-1"], "--settle-s must be >= 0 s"),
    (["--bench", str(SOURCE), "--latency-frames", "-1"], "--latency-frames must be >= 0"),
    (["--bench", str(SOURCE), "--frame-period-s", "0"], "--frame-period-s must be > 0"),
])
def test_optwin_emulate_bad_input_is_one_line(tmp_path, capsys, args, message):
    _need_tools()
    from optwin.cli import main
    assert main(["emulate", "--dir", str(tmp_path / "emu"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("optwin emulate: error:") and message in err[0], err
