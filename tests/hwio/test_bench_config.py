"""Bench files: open_bench builds devices and geometry; malformed files fail with file + key."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from hwio.bench import BENCH_DIR, Bench, describe_bench, load_bench_config, open_bench
from hwio.devices import Camera, SLM
from hwio.layout import BlockLayout, SpotLayout

REPO = Path(__file__).resolve().parents[2]
SIM_TEXT = (BENCH_DIR / "sim.toml").read_text()
TRUTH_WORDS = ("truth", "gain_adu_per_e", "read_noise", "alpha0", "rotation_deg", "phase_range", "seed",
               "stray", "crosstalk")


def write(tmp_path, text, name="bench.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def replace_once(text, old, new):
    assert text.count(old) >= 1, old
    return text.replace(old, new, 1)


def real_text():
    """sim.toml turned into a real bench: window SLMs, pylon cameras, no truth."""
    text = SIM_TEXT.split("# ----------------------------------------------------------------------------- ground truth")[0]
    lines = []
    section = ""
    for line in text.splitlines():
        if line.startswith("[devices."):
            section = line.split("]")[0][9:]
        if line.strip() == 'backend = "sim"':
            line = 'backend = "pylon"' if section.startswith("cam_") else 'backend = "window"'
        lines.append(line)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------- good files
@pytest.mark.parametrize("name, sizes", [("sim", (2, 16, 2)), ("sim_alt", (2, 12, 3))])
def test_builtin_benches_open_with_devices_and_geometry(name, sizes):
    with open_bench(name) as bench:
        assert isinstance(bench, Bench)
        assert tuple(bench.sizes) == sizes and bench.sizes.n_hidden == sizes[1]
        assert set(bench.slms) == {"input", "slm1", "slm2", "probe_input", "lo", "flat_source"}
        assert set(bench.cameras) == {"cam_z1", "cam_a1", "cam_out", "cam_back"}
        assert all(isinstance(s, SLM) for s in bench.slms.values())
        assert all(isinstance(c, Camera) for c in bench.cameras.values())
        n_in, n_h, n_out = sizes
        shapes = {"input": (1, n_in), "slm1": (n_h, n_in), "slm2": (n_out, n_h), "probe_input": (1, n_out)}
        for slm, shape in shapes.items():
            lay = bench.layouts[slm]
            assert isinstance(lay, BlockLayout) and (lay.n_rows, lay.n_cols) == shape
            lay.check_fits(bench.slms[slm].shape)
        for cam, n in {"cam_z1": n_h, "cam_a1": n_h, "cam_out": n_out, "cam_back": n_h}.items():
            assert isinstance(bench.spots[cam], SpotLayout) and bench.spots[cam].n == n
        assert bench.slms["input"].bit_depth == 1
        assert bench.slms["lo"].shape == (1, len(bench.lo_channels))
        assert bench.slms["flat_source"].shape == (1, 1) and bench.slms["flat_source"].bit_depth == 16
        assert bench.path == BENCH_DIR / f"{name}.toml" and bench.name == name
        # every device shares the bench timeline, and it is virtual: a long wait costs no wall time
        assert all(d.timeline is bench.timeline for d in list(bench.slms.values()) + list(bench.cameras.values()))
        t0 = bench.timeline.now()
        bench.timeline.sleep(7200.0)
        assert bench.timeline.now() == pytest.approx(t0 + 7200.0)


def test_config_and_public_attributes_carry_no_truth():
    with open_bench("sim") as bench:
        cfg = bench.config
        assert set(cfg) == {"bench", "devices", "layout", "spots"}
        text = repr(cfg).lower()
        for word in TRUTH_WORDS:
            assert word not in text, word
        public = {k: v for k, v in vars(bench).items() if not k.startswith("_")}
        assert "truth" not in " ".join(public).lower()
        # config is a copy: editing it does not change the bench
        cfg["devices"]["slm1"]["bit_depth"] = 3
        assert bench.config["devices"]["slm1"]["bit_depth"] == 8


def test_open_by_path_and_sizes_from_file(tmp_path):
    text = replace_once(SIM_TEXT, "n_hidden = 16", "n_hidden = 4")
    text = replace_once(text, "[spots.cam_z1]\ngrid = [4, 4]", "[spots.cam_z1]\ngrid = [2, 2]")
    text = replace_once(text, "[spots.cam_a1]\ngrid = [4, 4]", "[spots.cam_a1]\ngrid = [2, 2]")
    text = replace_once(text, "[spots.cam_back]\ngrid = [4, 4]", "[spots.cam_back]\ngrid = [2, 2]")
    path = write(tmp_path, text)
    with open_bench(path) as bench:
        assert tuple(bench.sizes) == (2, 4, 2)
        assert bench.layouts["slm1"].n_rows == 4 and bench.layouts["slm2"].n_cols == 4
        assert bench.spots["cam_back"].n == 4
        assert bench.path == path


def test_close_is_idempotent_and_context_manager_closes():
    bench = open_bench("sim")
    with bench as b:
        assert b is bench
    assert bench._closed
    bench.close()


def test_real_bench_loads_without_importing_drivers(tmp_path):
    # describing a real bench reads the file only; no driver module is imported
    path = write(tmp_path, real_text(), "real.toml")
    code = ("import sys; from hwio.bench import describe_bench; info = describe_bench(%r); "
            "assert not info['simulated'] and info['devices'][0]['backend'] == 'window'; "
            "bad = [m for m in sys.modules if m.startswith('hwio.drivers.') or m in ('pypylon', 'pyglet')]; "
            "assert not bad, bad; print('ok')") % str(path)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_real_driver_options_are_checked_against_the_driver(tmp_path):
    text = real_text() + "\n[devices.slm1.options]\nscreen = 1\nbogus = 3\n"
    path = write(tmp_path, text)
    load_bench_config(path)        # file is fine as such
    with pytest.raises(ValueError, match=re.escape("[devices.slm1.options].bogus is not a parameter of WindowSLM")):
        open_bench(path)


def test_missing_driver_fails_only_when_used(tmp_path):
    text = real_text().replace('backend = "pylon"', 'backend = "opencv"')
    path = write(tmp_path, text)
    info = describe_bench(path)
    assert {d["backend"] for d in info["devices"]} == {"window", "opencv"}
    try:
        import hwio.drivers.opencv_camera  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(ImportError, match=re.escape("[devices.cam_z1].backend 'opencv'")):
            open_bench(path)


# --------------------------------------------------------------------------------------- bad files
BAD_CASES = [
    # (edit applied to sim.toml, expected message after "<file>: ")
    (("shape = [164, 24]\nbit_depth = 8", "shape = [164, 24]\nbit_depth = \"eight\""),
     "[devices.slm1].bit_depth must be an integer, got 'eight'"),
    (("bit_depth = 12\nexposure_s = 1e-3", "bit_depth = 12\nexposure = 1e-3"),
     "[devices.cam_z1].exposure is not a known key"),
    (("[devices.cam_back]", "[devices.cam_bak]"),
     "[devices.cam_bak] the simulated bench has no device 'cam_bak'"),
    (("n_in = 2", "n_in = 2.5"), "[bench].n_in must be an integer, got 2.5"),
    (("n_out = 2\n", "n_out = 2\nlayers = 3\n"), "[bench].layers is not a known key"),
    (("shape = [164, 24]", "shape = [64]"), "[devices.slm1].shape must be a list of 2 integers, got 1 entries"),
    (("shape = [164, 24]", "shape = [40, 24]"), "[layout.slm1] slm1: layout of 16x2 blocks needs (160, 20) pixels"),
    (("backend = \"sim\"\nshape = [80, 80]", "backend = \"pylon\"\nshape = [80, 80]"), None),  # mixed: allowed
    (("guard_px = 1", "guard_px = -1"), "[layout.slm1].guard_px must be >= 0, got -1"),
    (("[spots.cam_out]\ngrid = [1, 2]", "[spots.cam_out]\nn = 3\ngrid = [1, 2]"),
     "[spots.cam_out].n is 3 but the bench sizes give cam_out 2 spots"),
    (("gain_adu_per_e = 0.28", "gain_adu_per_e = \"high\""), "[truth.camera].gain_adu_per_e must be a number, got 'high'"),
    (("gain_adu_per_e = 0.28", "gain_adu_per_e = 0.28\ngian = 1"), "[truth.camera].gian is not a known key"),
    (("[truth.camera.cam_back]", "[truth.camera.cam_bak]"), "[truth.camera].cam_bak is not a camera"),
    (("model = \"twolevel\"", "model = \"fancy\""), "[truth.absorber].model must be one of 'thin', 'twolevel'"),
    (("offset_px = [30.6, 31.1]", "offset_px = [300.6, 31.1]"), "[truth.registration] puts spot 0 of cam_out"),
    (("[truth.drift]", "[truth.drfit]"), "[truth].drfit is not a known truth table"),
    (("stale_frame_rate = 1e-3", "stale_frame_rate = 2"), "[truth.faults].stale_frame_rate must be <= 0.5, got 2.0"),
    (("bits = 12", "bits = 14"), "[truth.camera].bits is 14 but cam_z1 delivers 12 bit"),
    (("channels = [\"cam_z1\", \"cam_a1\", \"cam_out\", \"cam_back\"]", "channels = [\"cam_z1\", \"cam_x\"]"),
     "[devices.lo].channels names unknown camera 'cam_x'"),
    (("shape = [164, 24]", "shape = [164, 24]\noptions = { screen = 1 }"),
     "[devices.slm1].options is only for real backends"),
    (("[devices.cam_z1]           # hidden layer before the cell\nbackend = \"sim\"",
      "[devices.cam_z1]\nbackend = \"window\""), "[devices.cam_z1].backend 'window' drives a slm, but 'cam_z1' is a camera"),
]


@pytest.mark.parametrize("edit, message", BAD_CASES)
def test_bad_files_name_file_and_key(tmp_path, edit, message):
    path = write(tmp_path, replace_once(SIM_TEXT, *edit))
    if message is None:
        # a sim bench may mix in a real device: the file is valid (opening would need the camera)
        cfg = load_bench_config(path)
        assert cfg.devices["cam_z1"]["backend"] == "pylon" and cfg.simulated
        return
    with pytest.raises(ValueError) as err:
        load_bench_config(path)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: "), text
    assert message in text, text


def test_missing_device_layout_and_tables(tmp_path):
    doc = SIM_TEXT
    cut = doc.index("[devices.cam_back]")
    end = doc.index("[layout.input]")
    no_cam = doc[:cut] + "# ---\n" + doc[end:]
    with pytest.raises(ValueError, match=re.escape("missing device [devices.cam_back]")):
        load_bench_config(write(tmp_path, no_cam, "a.toml"))
    cut = doc.index("[layout.slm2]")
    end = doc.index("[layout.probe_input]")
    with pytest.raises(ValueError, match=re.escape("missing table [layout.slm2]")):
        load_bench_config(write(tmp_path, doc[:cut] + doc[end:], "b.toml"))
    with pytest.raises(ValueError, match=re.escape("unknown table [benchh]")):
        load_bench_config(write(tmp_path, "[benchh]\nn_in = 2\n", "c.toml"))
    with pytest.raises(ValueError, match=re.escape("missing table [bench]")):
        load_bench_config(write(tmp_path, "[devices]\n", "d.toml"))


def test_truth_only_for_simulated_benches(tmp_path):
    path = write(tmp_path, real_text() + "\n[truth]\nseed = 3\n")
    with pytest.raises(ValueError, match=re.escape("[truth] tables are only for benches with 'sim' devices")):
        load_bench_config(path)


def test_phase_table_must_have_one_entry_per_level(tmp_path):
    text = replace_once(SIM_TEXT, "[truth.slm.slm2]\nphase_range_rad = 6.8\ngamma = 1.05",
                        "[truth.slm.slm2]\nphase_table_rad = [0.0, 1.0, 2.0, 7.0]")
    with pytest.raises(ValueError, match=re.escape("[truth.slm.slm2].phase_table_rad has 4 entries but slm2 has 256 levels")):
        load_bench_config(write(tmp_path, text))
    table = ", ".join(f"{7.2 * (k / 255) ** 0.9:.6f}" for k in range(256))
    text = replace_once(SIM_TEXT, "[truth.slm.slm2]\nphase_range_rad = 6.8\ngamma = 1.05",
                        f"[truth.slm.slm2]\nphase_table_rad = [{table}]")
    from hwio.sim.testing import truth_of
    with open_bench(write(tmp_path, text, "ok.toml")) as bench:
        got = truth_of(bench).realised["phase_table_rad"]["slm2"]
        assert got.shape == (256,) and got[-1] == pytest.approx(7.2)


def test_syntax_errors_and_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="not valid TOML"):
        load_bench_config(write(tmp_path, "[bench\nn_in = 2\n"))
    with pytest.raises(ValueError, match=r"bench config 'no_such_bench' not found.*sim_alt"):
        open_bench("no_such_bench")


def test_builtin_files_are_valid_toml_with_truth():
    for name in ("sim", "sim_alt"):
        doc = tomllib.loads((BENCH_DIR / f"{name}.toml").read_text())
        assert {"bench", "devices", "layout", "spots", "truth"} <= set(doc)
        faults = doc["truth"]["faults"]
        assert 0 < max(faults.values()) <= 5e-3      # realistic low fault rates


def test_sim_and_sim_alt_truths_differ():
    from hwio.sim.testing import truth_of
    with open_bench("sim") as a, open_bench("sim_alt") as b:
        ta, tb = truth_of(a), truth_of(b)
        assert ta.absorber.model != tb.absorber.model
        for cam in ("cam_z1", "cam_out"):
            assert ta.cameras[cam].gain_adu_per_e != tb.cameras[cam].gain_adu_per_e
            assert ta.cameras[cam].read_noise_e != tb.cameras[cam].read_noise_e
            assert ta.registration[cam].rotation_deg != tb.registration[cam].rotation_deg
        assert ta.slms["slm1"].gamma != tb.slms["slm1"].gamma
        assert ta.absorber.alpha0 != tb.absorber.alpha0 and ta.absorber.i_sat != tb.absorber.i_sat
        assert not np.allclose(ta.realised["illumination"]["slm1"][:2, :2], tb.realised["illumination"]["slm1"][:2, :2])
