"""``optwin bench info``: devices, backends, shapes, layouts and sizes; never the truth."""
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from hwio.bench import BENCH_DIR
from optwin.cli import main

REPO = Path(__file__).resolve().parents[2]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def truth_values(name):
    """Every distinctive truth key of a bench file (to make sure none is printed)."""
    doc = tomllib.loads((BENCH_DIR / f"{name}.toml").read_text())
    keys = set()

    def walk(d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v)
            else:
                keys.add(k)
    walk(doc["truth"])
    return keys - set(doc["devices"])        # per-device tables are named like the devices


@pytest.mark.parametrize("name", ["sim", "sim_alt"])
def test_json_lists_devices_layouts_sizes_and_no_truth(capsys, name):
    code, out, err = run_cli(capsys, "bench", "info", "--bench", name, "--json")
    assert code == 0, err
    info = json.loads(out)
    doc = tomllib.loads((BENCH_DIR / f"{name}.toml").read_text())
    assert info["bench"] == name and info["simulated"] is True
    assert info["sizes"] == {k: doc["bench"][k] for k in ("n_in", "n_hidden", "n_out")}
    devices = {d["name"]: d for d in info["devices"]}
    assert set(devices) == set(doc["devices"])
    for dname, d in devices.items():
        assert d["backend"] == "sim"
        assert d["shape"] == doc["devices"][dname]["shape"]
        assert d["bit_depth"] == doc["devices"][dname]["bit_depth"]
        assert d["kind"] == ("camera" if dname.startswith("cam_") else "slm")
    n_in, n_h, n_out = (info["sizes"][k] for k in ("n_in", "n_hidden", "n_out"))
    assert (info["layouts"]["slm1"]["n_rows"], info["layouts"]["slm1"]["n_cols"]) == (n_h, n_in)
    assert (info["layouts"]["slm2"]["n_rows"], info["layouts"]["slm2"]["n_cols"]) == (n_out, n_h)
    assert info["layouts"]["slm1"]["block_px"] == doc["layout"]["slm1"]["block_px"]
    assert info["spots"]["cam_out"]["n"] == n_out and len(info["spots"]["cam_back"]["positions_px"]) == n_h
    assert info["lo_channels"] == doc["devices"]["lo"]["channels"]
    assert "truth" not in out
    for key in truth_values(name):
        assert key not in out, key


def test_open_reports_device_shapes(capsys):
    code, out, _ = run_cli(capsys, "bench", "info", "--bench", "sim", "--open", "--json")
    assert code == 0
    info = json.loads(out)
    doc = tomllib.loads((BENCH_DIR / "sim.toml").read_text())
    assert {d["name"]: d["shape"] for d in info["devices"]}["cam_out"] == doc["devices"]["cam_out"]["shape"]
    assert "gain_adu_per_e" not in out and "alpha0" not in out


def test_text_output(capsys):
    code, out, _ = run_cli(capsys, "bench", "info", "--bench", "sim")
    assert code == 0
    b = tomllib.loads((BENCH_DIR / "sim.toml").read_text())["bench"]
    assert f"{b['n_in']} inputs -> {b['n_hidden']} hidden -> {b['n_out']} outputs" in out
    assert "slm1" in out and f"{b['n_hidden']}x{b['n_in']} blocks" in out and "cam_back" in out
    assert "alpha0" not in out and "truth" not in out


def test_bad_bench_is_a_usage_error(capsys, tmp_path):
    code, out, err = run_cli(capsys, "bench", "info", "--bench", "nowhere", "--json")
    assert code == 2 and out == "" and "not found" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.toml"
    bad.write_text((BENCH_DIR / "sim.toml").read_text().replace("bit_depth = 8", 'bit_depth = "eight"', 1))
    code, out, err = run_cli(capsys, "bench", "info", "--bench", str(bad))
    assert code == 2 and "[devices.slm1].bit_depth must be an integer, got 'eight'" in err
    code, out, err = run_cli(capsys, "bench")
    assert code == 2 and "bench info" in err


def test_entry_point_prints_one_json_object():
    out = subprocess.run([sys.executable, "-m", "optwin", "bench", "info", "--bench", "sim", "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["bench"] == "sim"
