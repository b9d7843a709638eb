import h5py
import numpy as np
import pytest

from calibration.calset import CalibrationFileError, CalibrationSet, SCHEMA_VERSION
from calibration.quantities import Fit, Quantity


def sample_set():
    cs = CalibrationSet(bench_name="sim", bench_config={"bench": {"name": "sim"}, "devices": {"slm1": {"bit_depth": 8}}})
    cs.add(Fit("camera", "emva1288", {"gain_adu_per_e": Quantity(0.52, 0.004, "ADU/e-"),
                                      "read_noise_e": Quantity(3.1, 0.05, "e-")},
               arrays={"offset_map_adu": np.full((4, 5), 100.5)}))
    cs.add(Fit("absorber", "twolevel", {"alpha0": Quantity(4.9, 0.1), "i_sat": Quantity(1.02, 0.03)},
               x=np.linspace(0, 1, 5), y=np.linspace(0, 2, 5), y_fit=np.linspace(0, 2, 5) + 0.01,
               info={"bic": {"thin": 10.0, "twolevel": -3.0}}))
    cs.raw["camera/dark"] = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    return cs


def test_round_trip(tmp_path):
    cs = sample_set()
    path = cs.save(tmp_path / "cal.h5")
    back = CalibrationSet.load(path)
    assert back.quantity("camera.gain_adu_per_e") == Quantity(0.52, 0.004, "ADU/e-")
    assert back.fit("absorber").model == "twolevel"
    assert back.fit("absorber").info["bic"]["twolevel"] == -3.0
    np.testing.assert_array_equal(back.fit("camera").arrays["offset_map_adu"], np.full((4, 5), 100.5))
    np.testing.assert_array_equal(back.raw["camera/dark"], cs.raw["camera/dark"])
    np.testing.assert_allclose(back.fit("absorber").y_fit, cs.fit("absorber").y_fit)
    assert back.bench_config["devices"]["slm1"]["bit_depth"] == 8
    assert back.schema_version == SCHEMA_VERSION and back.created_utc and back.software_version
    j = back.as_json()
    assert j["camera.read_noise_e"]["value"] == 3.1 and j["absorber.model"] == "twolevel"


def test_newer_schema_refused_with_clear_message(tmp_path):
    path = sample_set().save(tmp_path / "cal.h5")
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(CalibrationFileError, match="newer than this optwin reads"):
        CalibrationSet.load(path)


def test_corrupt_truncated_and_foreign_files(tmp_path):
    good = sample_set().save(tmp_path / "cal.h5")
    data = good.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CalibrationFileError, match="corrupt or truncated|damaged"):
        CalibrationSet.load(cut)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 50)
    with pytest.raises(CalibrationFileError):
        CalibrationSet.load(junk)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(CalibrationFileError, match="not an optwin calibration"):
        CalibrationSet.load(other)
    with pytest.raises(CalibrationFileError, match="no such"):
        CalibrationSet.load(tmp_path / "missing.h5")


def test_schema_0_is_migrated(tmp_path):
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        f.attrs["kind"] = "optwin-calibration"
        f.attrs["schema_version"] = 0
        f.attrs["camera.gain_adu_per_e"] = 0.5
        f.attrs["camera.gain_adu_per_e.stderr"] = 0.01
        f.attrs["camera_model"] = "emva1288"
    cs = CalibrationSet.load(path)
    assert cs.schema_version == 1
    assert cs.quantity("camera.gain_adu_per_e") == Quantity(0.5, 0.01)
    assert cs.fit("camera").model == "emva1288"


def test_missing_parts_name_what_to_do():
    with pytest.raises(KeyError, match="optwin calibrate"):
        sample_set().fit("registration")
