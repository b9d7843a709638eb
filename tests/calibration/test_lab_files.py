"""Readers for lab measurement files: documented formats work end to end, broken files fail in one line."""
import h5py
import numpy as np
import pytest

from calibration.absorber_fit import fit_absorber
from calibration.camera_fit import fit_camera
from calibration.lab_files import (LabFileError, file_provenance, read_absorber_probe_csv, read_absorber_pump_csv,
                                   read_camera_h5, read_csv_columns, read_slm_csv)
from calibration.slm_phase_fit import fit_diffractive_response
from twin.absorber import TwoLevelAbsorber

GAIN, READ_E, OFFSET = 0.8, 4.0, 50.0


def _frames(rng, electrons, n, shape=(48, 48)):
    e = rng.poisson(electrons, size=(n,) + shape) + READ_E * rng.standard_normal((n,) + shape)
    return np.clip(np.round(GAIN * np.minimum(e, 4000) + OFFSET), 0, 4095).astype(np.uint16)


def _write_camera(path, rng, attrs_on="group"):
    photons = np.geomspace(20, 8000, 14)
    with h5py.File(path, "w") as f:
        for i, ph in enumerate(photons):
            g = f.create_group(f"points/p{i:02d}")
            g["bright"] = _frames(rng, 0.7 * ph, 2)
            g["dark"] = _frames(rng, 0.0, 2)
            target = g if attrs_on == "group" else g["bright"]
            target.attrs["exposure_s"] = 0.01
            target.attrs["photons_per_pixel"] = ph
    return photons


@pytest.mark.parametrize("attrs_on", ["group", "dataset"])
def test_camera_file_round_trip_and_fit(tmp_path, attrs_on):
    rng = np.random.default_rng(1)
    path = tmp_path / "ptc.h5"
    photons = _write_camera(path, rng, attrs_on)
    points = read_camera_h5(path)
    assert [p.name for p in points] == [f"p{i:02d}" for i in range(14)]
    assert points[3].bright.shape == (2, 48, 48) and points[3].bright.dtype == np.uint16
    assert points[5].exposure_s == 0.01 and points[5].photons_per_pixel == pytest.approx(photons[5])
    fit = fit_camera(points, bit_depth=12)
    q = fit.quantities
    assert abs(q["gain_adu_per_e"].value / GAIN - 1) < 0.02 and q["gain_adu_per_e"].within(GAIN, 3)
    assert abs(q["read_noise_e"].value / READ_E - 1) < 0.05
    assert q["quantum_efficiency"].within(0.7, 3)


def _expect_error(call, *fragments):
    with pytest.raises(LabFileError) as err:
        call()
    msg = str(err.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, msg
    assert isinstance(err.value, ValueError)


def test_camera_file_errors(tmp_path):
    rng = np.random.default_rng(2)
    _expect_error(lambda: read_camera_h5(tmp_path / "missing.h5"), "no such file")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    _expect_error(lambda: read_camera_h5(text), "not an HDF5 file")
    good = tmp_path / "good.h5"
    _write_camera(good, rng)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _expect_error(lambda: read_camera_h5(truncated), str(truncated))

    def bad(name, build):
        p = tmp_path / name
        with h5py.File(p, "w") as f:
            build(f)
        return p

    _expect_error(lambda: read_camera_h5(bad("nopoints.h5", lambda f: f.create_group("frames"))), "no /points")
    _expect_error(lambda: read_camera_h5(bad("empty.h5", lambda f: f.create_group("points"))), "empty")

    def no_dark(f):
        f["points/a/bright"] = np.zeros((2, 8, 8))
        f["points/a"].attrs["exposure_s"] = 0.1
    _expect_error(lambda: read_camera_h5(bad("nodark.h5", no_dark)), "/points/a/dark is missing")

    def flat(f):
        f["points/a/bright"] = np.zeros((8, 8))
        f["points/a/dark"] = np.zeros((8, 8))
    _expect_error(lambda: read_camera_h5(bad("2d.h5", flat)), "(n_frames, rows, cols)")

    def no_exposure(f):
        f["points/a/bright"] = np.zeros((2, 8, 8))
        f["points/a/dark"] = np.zeros((2, 8, 8))
    _expect_error(lambda: read_camera_h5(bad("noexp.h5", no_exposure)), "exposure_s")

    def sizes(f):
        for name, shape in (("a", (8, 8)), ("b", (8, 9))):
            f[f"points/{name}/bright"] = np.zeros((2,) + shape)
            f[f"points/{name}/dark"] = np.zeros((2,) + shape)
            f[f"points/{name}"].attrs["exposure_s"] = 0.1
    _expect_error(lambda: read_camera_h5(bad("sizes.h5", sizes)), "same frame size")

    def strings(f):
        f["points/a/bright"] = np.array([[[b"x"]]] * 2)
        f["points/a/dark"] = np.zeros((2, 1, 1))
    _expect_error(lambda: read_camera_h5(bad("strings.h5", strings)), "dtype")


def test_csv_formats(tmp_path):
    cases = {
        "header.csv": "# SLM curve, 2024-05-01\nlevel,first_order_power\n0,0.1\n1,0.2 # note\n\n2,0.4\n",
        "noheader.csv": "0, 0.1\n1, 0.2\n2, 0.4\n",
        "semicolon.csv": "Level; First_Order_Power [mW]\n0;0.1\n1;0.2\n2;0.4\n",
        "spaces.txt": "level first_order_power\n0 0.1\n1\t0.2\n2 0.4\n",
        "reordered.csv": "first order power (W),temperature,level\n0.1,20,0\n0.2,21,1\n0.4,20,2\n",
    }
    for name, text in cases.items():
        p = tmp_path / name
        p.write_text(text)
        lv, pw = read_slm_csv(p)
        assert lv.dtype == np.int64
        np.testing.assert_array_equal(lv, [0, 1, 2])
        np.testing.assert_allclose(pw, [0.1, 0.2, 0.4]), name
    p = tmp_path / "bom.csv"
    p.write_bytes("\ufeffinput,output\n1e-3,2.5E-4\n2e-3,6e-4\n".encode("utf-8"))
    x, y = read_absorber_pump_csv(p)
    np.testing.assert_allclose(x, [1e-3, 2e-3])
    p = tmp_path / "probe.csv"
    p.write_text("pump,probe_transmission\n0.5,0.1\n1.0,0.2\n")
    np.testing.assert_allclose(read_absorber_probe_csv(p)[1], [0.1, 0.2])


@pytest.mark.parametrize("text, fragments", [
    ("level,power\n0,1\n", ["missing first_order_power"]),
    ("level,first_order_power\n0,1\n1,abc\n", ["line 3", "'abc'", "not a number"]),
    ("level,first_order_power\n0,nan\n", ["line 2", "finite"]),
    ("level,first_order_power\n0,1\n1\n", ["line 3", "1 columns, expected 2"]),
    ("0,1,2\n1,2,3\n", ["exactly the columns level, first_order_power"]),
    ("# only a comment\n\n", ["no data rows"]),
    ("level,first_order_power\n", ["header only"]),
    ("level,first_order_power\n0.5,1\n", ["integer gray levels"]),
])
def test_csv_errors(tmp_path, text, fragments):
    p = tmp_path / "curve.csv"
    p.write_text(text)
    _expect_error(lambda: read_slm_csv(p), str(p), *fragments)


def test_csv_unreadable_files(tmp_path):
    _expect_error(lambda: read_slm_csv(tmp_path / "none.csv"), "no such file", "level, first_order_power")
    _expect_error(lambda: read_slm_csv(tmp_path), "is a directory")
    b = tmp_path / "image.csv"
    b.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    _expect_error(lambda: read_slm_csv(b), "binary")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("input,output\n1,2 \xb5W\n".encode("latin-1"))
    _expect_error(lambda: read_absorber_pump_csv(latin), "UTF-8")
    neg = tmp_path / "neg.csv"
    neg.write_text("input,output\n-1,2\n")
    _expect_error(lambda: read_absorber_pump_csv(neg), "powers >= 0")
    with pytest.raises(LabFileError, match="missing pump"):
        p = tmp_path / "x.csv"
        p.write_text("input,probe_transmission\n1,2\n")
        read_csv_columns(p, ["pump", "probe_transmission"])


def test_files_drive_the_fits(tmp_path):
    rng = np.random.default_rng(5)
    levels = np.arange(256)
    phi = 2.3 * np.pi * (levels / 255) ** 1.2
    power = 3.0 * np.sin(phi / 2) ** 2 + 0.2 + 0.03 * rng.standard_normal(256)
    p = tmp_path / "slm.csv"
    p.write_text("level,first_order_power\n" + "".join(f"{l},{v:.6g}\n" for l, v in zip(levels, power)))
    fit = fit_diffractive_response(*read_slm_csv(p), bits=8)
    assert np.sqrt(np.mean((fit.arrays["phase_response_rad"] - phi) ** 2)) < 0.05

    i_sat, law = 2.5, TwoLevelAbsorber(3.0)
    p_in = np.geomspace(0.05, 250, 50)
    p_out = 0.8 * i_sat * law.transmit(np.sqrt(p_in / i_sat)) ** 2 * (1 + 0.01 * rng.standard_normal(50))
    pump = tmp_path / "pump.csv"
    pump.write_text("# mW\ninput (mW), output (mW)\n" + "".join(f"{a:.8g}, {b:.8g}\n" for a, b in zip(p_in, p_out)))
    fit = fit_absorber(*read_absorber_pump_csv(pump))
    assert fit.model == "twolevel"
    assert fit.quantities["i_sat"].within(i_sat, 3) and fit.quantities["alpha0"].within(3.0, 3)


def test_file_provenance(tmp_path):
    p = tmp_path / "curve.csv"
    p.write_bytes(b"level,first_order_power\n0,0.1\n1,0.2\n")
    prov = file_provenance(p)
    # sha256 of these exact bytes, computed independently
    assert prov == {"path": str(p.resolve()), "size_bytes": 36,
                    "sha256": "9866260871cbaaa6654e49c144c6d85c80338d12543fc29d710f29546d8d06bd"}
    _expect_error(lambda: file_provenance(tmp_path / "gone.csv"), "cannot read the file")
