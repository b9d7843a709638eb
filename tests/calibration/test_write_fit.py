"""``calibration.calset.write_fit``: one fit into a calibration file, atomically, everything else kept."""
import os
import stat

import h5py
import numpy as np
import pytest

import calibration.calset as calset
from calibration.calset import (CalibrationFileError, CalibrationSet, FitExistsError, check_fit_target,
                                write_fit)
from calibration.quantities import Fit, Quantity


def lut_fit(name="slm", offset=0):
    return Fit(name, "gamma", {"phase_range_rad": Quantity(6.5 + offset, 0.01, "rad")},
               arrays={"inverse_lut": np.arange(256) // 2 + offset}, info={"bit_depth": 8})


def test_creates_then_adds_then_replaces(tmp_path):
    path = tmp_path / "cal.h5"
    assert check_fit_target(path, "slm") is False
    assert write_fit(path, lut_fit(), bench_name="lab") == {"created": True, "replaced": False, "fits": ["slm"]}
    assert check_fit_target(path, "slm.slm2") is True
    assert write_fit(path, lut_fit("slm.slm2", 1)) == {"created": False, "replaced": False,
                                                       "fits": ["slm", "slm.slm2"]}
    with pytest.raises(FitExistsError) as err:
        write_fit(path, lut_fit(offset=3))
    assert err.value.fit_name == "slm" and err.value.path == path and "\n" not in str(err.value)
    assert write_fit(path, lut_fit(offset=3), replace=True)["replaced"] is True
    cs = CalibrationSet.load(path)
    assert cs.bench_name == "lab"
    assert cs.fits["slm"].quantities["phase_range_rad"].value == 9.5
    np.testing.assert_array_equal(cs.fits["slm.slm2"].arrays["inverse_lut"], np.arange(256) // 2 + 1)


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "cal.h5"
    write_fit(path, lut_fit())
    os.chmod(path, 0o640)
    old = path.read_bytes()

    def broken(group, fit, name=None):
        group.create_group(fit.name)
        raise OSError("disk full")
    monkeypatch.setattr(calset, "_write_fit", broken)
    with pytest.raises(OSError, match="disk full"):
        write_fit(path, lut_fit("slm.slm2"))
    assert path.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["cal.h5"]
    monkeypatch.undo()
    write_fit(path, lut_fit("slm.slm2"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640          # the replaced file's permissions are kept
    assert sorted(CalibrationSet.load(path).fits) == ["slm", "slm.slm2"]


def test_an_older_schema_is_migrated_and_kept(tmp_path):
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        f.attrs["kind"] = "optwin-calibration"
        f.attrs["schema_version"] = 0
        f.attrs["camera.gain_adu_per_e"] = 0.5
        f.attrs["camera.gain_adu_per_e.stderr"] = 0.01
        f.attrs["camera_model"] = "emva1288"
    assert write_fit(path, lut_fit())["fits"] == ["camera", "slm"]
    cs = CalibrationSet.load(path)
    assert cs.schema_version == calset.SCHEMA_VERSION
    assert cs.quantity("camera.gain_adu_per_e") == Quantity(0.5, 0.01)
    assert cs.fits["slm"].info == {"bit_depth": 8}


def test_other_files_are_refused_untouched(tmp_path):
    other = tmp_path / "frames.h5"
    with h5py.File(other, "w") as f:
        f["points/a/bright"] = np.zeros((2, 3, 3))
    text = tmp_path / "notes.csv"
    text.write_text("level,first_order_power\n0,1\n")
    for target, fragment in ((other, "kind=None"), (text, "not an HDF5"), (tmp_path, "is a directory"),
                             (tmp_path / "no" / "cal.h5", "does not exist")):
        before = target.read_bytes() if target.is_file() else None
        with pytest.raises(CalibrationFileError, match=fragment) as err:
            write_fit(target, lut_fit())
        assert "\n" not in str(err.value) and not isinstance(err.value, FitExistsError)
        if before is not None:
            assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames.h5", "notes.csv"]
    with pytest.raises(ValueError, match="contain no '/'"):
        write_fit(tmp_path / "x.h5", lut_fit("slm/slm2"))
