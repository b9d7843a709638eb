"""``optwin calibrate`` file modes on files written here in the documented formats, and one-line
errors (exit 2) for missing, corrupt, truncated and wrong-schema files."""
import json

import h5py
import numpy as np
import pytest

from optwin.cli import main
from twin.absorber import make_absorber

K, READ_E, OFFSET, FULL_E, QE = 0.3, 3.0, 100.0, 10000.0, 0.5


def _camera_file(path, rng):
    """Photon-transfer series from an independent linear sensor model (photons -> e- -> ADU)."""
    with h5py.File(path, "w") as f:
        for i, t in enumerate(np.linspace(0.05, 1.3, 10) * 1e-3):
            photons = t / 1e-3 * FULL_E / QE
            g = f.create_group(f"points/p{i:02d}")
            g.attrs["exposure_s"] = t
            g.attrs["photons_per_pixel"] = photons
            for kind, ph in (("bright", photons), ("dark", 0.0)):
                e = np.minimum(rng.poisson(QE * ph, (4, 24, 24)), FULL_E) + READ_E * rng.standard_normal((4, 24, 24))
                g.create_dataset(kind, data=np.clip(np.rint(K * e + OFFSET), 0, 4095).astype(np.uint16))


def _run(capsys, *argv):
    rc = main(["calibrate", *map(str, argv)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_camera_file_mode(tmp_path, capsys):
    path = tmp_path / "ptc.h5"
    _camera_file(path, np.random.default_rng(1))
    rc, out, err = _run(capsys, "camera", "--frames", path, "--json", "--bits", 12)
    assert rc == 0, err
    data = json.loads(out)
    assert data["camera.gain_adu_per_e"]["value"] == pytest.approx(K, rel=0.03)
    assert data["camera.read_noise_e"]["value"] == pytest.approx(READ_E, rel=0.1)
    assert data["camera.dark_offset_adu"]["value"] == pytest.approx(OFFSET, abs=0.5)
    for key in ("camera.gain_adu_per_e", "camera.read_noise_e", "camera.saturation_e"):
        assert set(data[key]) >= {"value", "stderr"}
    assert data["camera.model"] == "emva1288"
    rc, text, _ = _run(capsys, "camera", "--frames", path)
    assert rc == 0 and "gain_adu_per_e" in text


def test_slm_curve_mode(tmp_path, capsys):
    rng = np.random.default_rng(2)
    levels = np.arange(256)
    phi = 6.4 * (levels / 255) ** 1.15
    power = 3.0 * np.sin(phi / 2) ** 2 + 0.2 + 0.01 * rng.standard_normal(levels.size)
    path = tmp_path / "slm.csv"
    path.write_text("level, first_order_power (uW)\n" + "\n".join(f"{l},{p:.6f}" for l, p in zip(levels, power)))
    rc, out, err = _run(capsys, "slm", "--curve", path, "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["slm.phase_range_rad"]["value"] == pytest.approx(6.4, rel=0.02)
    resp = data["slm.phase_response_rad"]
    assert len(resp) == 256 and np.all(np.diff(resp) >= -1e-9)
    assert np.sqrt(np.mean((np.asarray(resp) - phi) ** 2)) < 0.05
    assert data["bits"] == 8


def test_absorber_pump_and_probe_mode(tmp_path, capsys):
    rng = np.random.default_rng(3)
    alpha0, i_sat = 4.0, 2.5                                    # mW
    law = make_absorber("thin", alpha0=alpha0, i_sat=1.0)
    p_in = np.geomspace(0.02, 60, 50) * i_sat
    z = np.sqrt(p_in / i_sat)
    p_out = 0.8 * i_sat * law.transmit(z) ** 2 * (1 + 0.003 * rng.standard_normal(z.size))
    pump = tmp_path / "pump.csv"
    pump.write_text("# pump sweep\ninput,output\n" + "\n".join(f"{a:.6g},{b:.6g}" for a, b in zip(p_in, p_out)))
    probe = tmp_path / "probe.csv"
    t = 0.4 * law.probe(z) ** 2 * (1 + 0.003 * rng.standard_normal(z.size))
    probe.write_text("pump\tprobe_transmission\n" + "\n".join(f"{a:.6g}\t{b:.6g}" for a, b in zip(p_in, t)))
    rc, out, err = _run(capsys, "absorber", "--pump", pump, "--probe", probe, "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["absorber.model"] == "thin" and data["absorber.spot_averaged"] is False
    assert data["absorber.alpha0"]["value"] == pytest.approx(alpha0, rel=0.05)
    assert data["absorber.i_sat"]["value"] == pytest.approx(i_sat, rel=0.1)
    assert data["absorber.mismatch_max"] == pytest.approx(alpha0 / 4, rel=0.1)   # thin law: max g'/t - 1
    rc, out, err = _run(capsys, "absorber", "--pump", pump)
    assert rc == 0 and "alpha0" in out


def _assert_one_line_error(rc, out, err):
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("optwin calibrate: error:"), err
    assert "Traceback" not in err


def test_bad_files_give_one_line_errors(tmp_path, capsys):
    good = tmp_path / "ptc.h5"
    _camera_file(good, np.random.default_rng(4))
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as f:
        f.create_dataset("frames", data=np.zeros((3, 4, 4)))
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"\x00\x01\x02binary\xff")
    columns = tmp_path / "columns.csv"
    columns.write_text("level,power\n1,2\n2,3\n")
    words = tmp_path / "words.csv"
    words.write_text("input,output\n1,2\n2,lots\n")
    short = tmp_path / "short.csv"
    short.write_text("input,output\n1,0.5\n2,0.9\n3,1.2\n")
    cases = [("camera", "--frames", truncated), ("camera", "--frames", wrong), ("camera", "--frames", garbage),
             ("camera", "--frames", tmp_path / "missing.h5"), ("slm", "--curve", columns),
             ("slm", "--curve", garbage), ("absorber", "--pump", words), ("absorber", "--pump", short),
             ("absorber", "--pump", short, "--probe", columns), ("camera",),
             ("absorber", "--pump", short, "--bench", "sim")]
    for case in cases:
        _assert_one_line_error(*_run(capsys, *case, "--json"))


def test_bench_mode_usage_errors(tmp_path, capsys):
    _assert_one_line_error(*_run(capsys, "--bench", "no_such_bench", "--out", tmp_path / "c.h5"))
    _assert_one_line_error(*_run(capsys, "--bench", "sim", "--out", tmp_path / "c.h5", "--only", "lenses"))
    _assert_one_line_error(*_run(capsys, "--bench", "sim"))
    _assert_one_line_error(*_run(capsys, "--bench", "sim", "--out", tmp_path / "nodir" / "c.h5"))
    _assert_one_line_error(*_run(capsys, "--bench", "sim", "--out", tmp_path / "c.h5", "--only", "absorber"))
