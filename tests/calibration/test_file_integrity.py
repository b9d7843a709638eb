"""Integrity of the calibration file (seal, per-fit digests, Fletcher-32, finite fitted values)
and the physical-possibility checks of the lab-file readers."""
import os
import signal

import h5py
import numpy as np
import pytest

from calibration import calset
from calibration.calset import CalibrationFileError, CalibrationSet, write_fit
from calibration.lab_files import (LabFileError, read_absorber_probe_csv, read_absorber_pump_csv, read_camera_h5,
                                   read_slm_csv)
from calibration.quantities import Fit, Quantity


def sample_set():
    cs = CalibrationSet(bench_name="sim", bench_config={"bench": {"name": "sim"}})
    cs.add(Fit("camera", "emva1288", {"gain_adu_per_e": Quantity(0.52, 0.004, "ADU/e-"),
                                      "read_noise_e": Quantity(3.1, float("nan"), "e-")},
               arrays={"offset_map_adu": np.full((4, 5), 100.5)}, info={"warnings": []}))
    cs.add(Fit("absorber", "twolevel", {"alpha0": Quantity(4.9, 0.1)}, x=np.linspace(0, 1, 5),
               y=np.linspace(0, 2, 5)))
    cs.raw["camera/dark"] = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    return cs


def _one_line_error(fn, *fragments):
    with pytest.raises(CalibrationFileError) as info:
        fn()
    text = str(info.value)
    assert "\n" not in text and all(f in text for f in fragments), text
    return text


def test_file_is_sealed_checksummed_and_loads(tmp_path):
    path = sample_set().save(tmp_path / "cal.h5")
    head = path.read_bytes()[:calset.SEAL_BYTES + 8]
    assert head.startswith(b"optwin-sha256:") and head[calset.SEAL_BYTES:] == b"\x89HDF\r\n\x1a\n"
    import hashlib
    assert head[14:78].decode() == hashlib.sha256(path.read_bytes()[calset.SEAL_BYTES:]).hexdigest()
    with h5py.File(path, "r") as f:
        assert f["fits/camera/arrays/offset_map_adu"].fletcher32
        assert f["raw/camera/dark"].fletcher32
        assert len(f["fits/camera"].attrs["sha256"]) == 64
    back = CalibrationSet.load(path)
    assert back.quantity("camera.gain_adu_per_e") == Quantity(0.52, 0.004, "ADU/e-")
    assert np.isnan(back.quantity("camera.read_noise_e").stderr)     # an unknown stderr is allowed


def test_every_byte_change_is_refused(tmp_path):
    path = sample_set().save(tmp_path / "cal.h5")
    data = path.read_bytes()
    for k, pos in enumerate(np.linspace(20, len(data) - 1, 9).astype(int)):
        rot = tmp_path / f"rot{k}.h5"
        b = bytearray(data)
        b[pos] ^= 0x01
        rot.write_bytes(bytes(b))
        _one_line_error(lambda: CalibrationSet.load(rot), str(rot))


def test_edits_name_the_fit_or_say_the_file_changed(tmp_path):
    path = sample_set().save(tmp_path / "cal.h5")
    with h5py.File(path, "a") as f:
        f["fits/absorber/quantities/alpha0"].attrs["value"] = 4.91
    _one_line_error(lambda: CalibrationSet.load(path), "fit 'absorber' does not match the checksum")
    path = sample_set().save(tmp_path / "cal2.h5")
    with h5py.File(path, "a") as f:
        f.attrs["bench_name"] = "lab"
    _one_line_error(lambda: CalibrationSet.load(path), "changed after optwin wrote it")
    path = sample_set().save(tmp_path / "cal3.h5")
    with h5py.File(path, "a") as f:                 # an unsealed file (older optwin) still has its digests
        d = f["fits/camera/arrays/offset_map_adu"]
        d[0, 0] = 100.25
    data = bytearray(path.read_bytes())
    data[:calset.SEAL_BYTES] = b"\0" * calset.SEAL_BYTES
    path.write_bytes(bytes(data))
    _one_line_error(lambda: CalibrationSet.load(path), "fit 'camera' does not match the checksum")


def test_damage_that_crashes_hdf5_stays_in_the_child(tmp_path, monkeypatch):
    path = sample_set().save(tmp_path / "cal.h5")
    with h5py.File(path, "a") as f:
        f.attrs["bench_name"] = "lab"

    def crash(cls, p):
        os.kill(os.getpid(), signal.SIGSEGV)
    monkeypatch.setattr(CalibrationSet, "_load", classmethod(crash))
    _one_line_error(lambda: CalibrationSet.load(path), "crashed the HDF5 library")


def test_nonfinite_fitted_values_are_refused_on_write_and_load(tmp_path):
    for bad in (float("nan"), float("inf"), -float("inf")):
        cs = sample_set()
        cs.add(Fit("slm", "gamma", {"phase_range_rad": Quantity(bad, 0.1, "rad")}))
        with pytest.raises(ValueError, match="fit 'slm': fitted values must be finite"):
            cs.save(tmp_path / "bad.h5")
        assert not (tmp_path / "bad.h5").exists()
        with pytest.raises(ValueError, match="finite"):
            write_fit(tmp_path / "bad.h5", cs.fit("slm"))
        assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "bad.h5").exists()
    old = tmp_path / "old.h5"                        # written before digests: no seal, no sha256
    with h5py.File(old, "w") as f:
        f.attrs["kind"] = "optwin-calibration"
        f.attrs["schema_version"] = 1
        g = f.create_group("fits/absorber")
        g.attrs["model"] = "twolevel"
        q = g.create_group("quantities/alpha0")
        q.attrs.update({"value": np.nan, "stderr": 0.1, "units": ""})
        g.create_group("arrays")
        g.create_group("data")
    _one_line_error(lambda: CalibrationSet.load(old), "fit 'absorber' holds a fitted value", "alpha0=nan")
    with h5py.File(old, "a") as f:
        f["fits/absorber/quantities/alpha0"].attrs["value"] = 4.0
    assert CalibrationSet.load(old).quantity("absorber.alpha0").value == 4.0       # old files still load


def test_write_fit_keeps_the_seal_and_the_other_fits_digests(tmp_path):
    path = sample_set().save(tmp_path / "cal.h5")
    with h5py.File(path, "r") as f:
        camera_digest = f["fits/camera"].attrs["sha256"]
    write_fit(path, Fit("slm", "gamma", {"phase_range_rad": Quantity(6.4, 0.02, "rad")},
                        arrays={"lut": np.arange(256, dtype=np.int64)}))
    assert path.read_bytes().startswith(b"optwin-sha256:")
    with h5py.File(path, "r") as f:
        assert f["fits/camera"].attrs["sha256"] == camera_digest
    back = CalibrationSet.load(path)
    assert sorted(back.fits) == ["absorber", "camera", "slm"]
    assert back.quantity("slm.phase_range_rad").value == 6.4


# ------------------------------------------------------------------------------------ lab files
P_IN = np.geomspace(0.1, 100, 20)
T = np.exp(-3.0 / (1 + P_IN / 2.5))          # a two-level-like cell, transmission 0.05 ... 0.97


def _csv(path, header, a, b, extra=""):
    path.write_text(extra + header + "\n" + "".join(f"{x:.9g},{y:.9g}\n" for x, y in zip(a, b)))
    return path


def test_pump_sweep_output_above_input(tmp_path):
    ok = _csv(tmp_path / "ok.csv", "input,output", P_IN, P_IN * T)
    np.testing.assert_allclose(read_absorber_pump_csv(ok)[1], P_IN * T, rtol=1e-8)
    noisy = _csv(tmp_path / "noisy.csv", "input,output", P_IN, np.maximum(P_IN * T, P_IN * 1.04))
    read_absorber_pump_csv(noisy)                       # 4 % above the input: detector noise
    over = _csv(tmp_path / "over.csv", "input,output", P_IN, P_IN * T * 1.2 + 0.3 * P_IN)
    with pytest.raises(LabFileError, match="exceeds the input") as info:
        read_absorber_pump_csv(over)
    k = int(np.argmax(P_IN * T * 1.2 + 0.3 * P_IN - P_IN))
    assert f"data row {k + 1}" in str(info.value)
    gain = _csv(tmp_path / "gain.csv", "input,output", P_IN, 1.8 * P_IN * T, extra="# gain = 2\n")
    np.testing.assert_allclose(read_absorber_pump_csv(gain)[1], 1.8 * P_IN * T, rtol=1e-8)   # data unchanged
    too_much = _csv(tmp_path / "much.csv", "input,output", P_IN, 2.5 * P_IN, extra="# gain: 2\n")
    with pytest.raises(LabFileError, match="declared gain 2 x input"):
        read_absorber_pump_csv(too_much)
    for bad, fragment in (("# gain = 0\n", "must be one finite number > 0"), ("# gain = x\n", "'x'"),
                          ("# gain = 2\n# GAIN=3\n", "each declare a gain")):
        with pytest.raises(LabFileError, match=fragment):
            read_absorber_pump_csv(_csv(tmp_path / "g.csv", "input,output", P_IN, P_IN * T, extra=bad))


def test_negative_and_absent_powers(tmp_path):
    scale = 3.0
    power = scale * np.sin(np.linspace(0, 3, 30)) ** 2
    small = power - 0.02 * scale                        # a dark level subtracted once too often: noise size
    read_slm_csv(_csv(tmp_path / "small.csv", "level,first_order_power", np.arange(30), small))
    big = power - 0.3 * scale
    with pytest.raises(LabFileError, match="cannot be negative"):
        read_slm_csv(_csv(tmp_path / "big.csv", "level,first_order_power", np.arange(30), big))
    with pytest.raises(LabFileError, match="no power above zero"):
        read_slm_csv(_csv(tmp_path / "neg.csv", "level,first_order_power", np.arange(30), -power - 0.1))
    with pytest.raises(LabFileError, match="column output .* cannot be negative"):
        read_absorber_pump_csv(_csv(tmp_path / "p.csv", "input,output", P_IN, P_IN * T - 0.2 * P_IN.max()))


def test_probe_transmission_at_most_one(tmp_path):
    read_absorber_probe_csv(_csv(tmp_path / "ok.csv", "pump,probe_transmission", P_IN, np.minimum(T * 1.05, 1.04)))
    with pytest.raises(LabFileError, match="above 1"):
        read_absorber_probe_csv(_csv(tmp_path / "pct.csv", "pump,probe_transmission", P_IN, 100 * T))
    read_absorber_probe_csv(_csv(tmp_path / "g.csv", "pump,probe_transmission", P_IN, 1.5 * T, extra="# gain = 1.6\n"))


def _camera(path, bright_mean, dark_mean, dtype=np.uint16, edit=None):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for i, t in enumerate((1e-4, 2e-4, 4e-4)):
            g = f.create_group(f"points/p{i}")
            g.attrs["exposure_s"] = t
            g["bright"] = rng.normal(bright_mean, 2.0, (4, 6, 6)).astype(dtype)
            g["dark"] = rng.normal(dark_mean, 2.0, (4, 6, 6)).astype(dtype)
        if edit:
            edit(f)
    return path


def test_camera_frames_physical(tmp_path):
    assert len(read_camera_h5(_camera(tmp_path / "ok.h5", 300, 100))) == 3
    assert len(read_camera_h5(_camera(tmp_path / "dark_point.h5", 100, 100))) == 3     # no light: allowed
    with pytest.raises(LabFileError, match="darker than the dark frames"):
        read_camera_h5(_camera(tmp_path / "swapped.h5", 100, 300))
    with pytest.raises(LabFileError, match="negative pixel values"):
        read_camera_h5(_camera(tmp_path / "neg.h5", 300, 0.5, dtype=np.float32))
    with pytest.raises(LabFileError, match="NaN"):
        read_camera_h5(_camera(tmp_path / "nan.h5", 300, 100, dtype=np.float64,
                               edit=lambda f: f["points/p1/bright"].__setitem__((0, 0, 0), np.nan)))
