"""calibration.deploy and calibration.fingerprint: the rules that turn fits into bench settings, and
how a calibration recognises its bench."""
from __future__ import annotations

import numpy as np
import pytest

from calibration.calset import CalibrationSet
from calibration.deploy import (DeployError, apply_exposures, camera_exposures, encoder_dither, inverse_lut,
                                layer_frame, phase_encoder, weight_range)
from calibration.fingerprint import (bench_fingerprint, check_bench, fingerprint_differences, fingerprint_from_config,
                                     fingerprint_of)
from calibration.quantities import Fit, Quantity
from hwio.bench import open_bench
from hwio.response import PhaseResponse
from hwio.sim.testing import open_with


@pytest.fixture(scope="module")
def bench():
    with open_bench("sim") as b:
        yield b


def slm_fit(bits=8, range_rad=7.0, **info):
    """An SLM fit as the slm procedure stores it: inverse LUT on its phase grid."""
    resp = PhaseResponse(np.linspace(0, range_rad, 2 ** bits), name="slm1")
    lut = resp.inverse()
    grid = lut.phase_min_rad + 2 * np.pi * np.arange(lut.n_bins) / lut.n_bins
    return Fit(name="slm", model="table", arrays={"inverse_lut": lut.levels, "inverse_lut_phase_rad": grid},
               info=dict(info))


def test_encoder_dither_follows_the_file_then_the_lut():
    assert encoder_dither(None, calibrated=False) is False
    assert encoder_dither(slm_fit(), calibrated=True) is True           # calibrated LUT, no word: dither
    assert encoder_dither(slm_fit(encoder_dither=False), calibrated=True) is False
    old = slm_fit()
    old.arrays["amplitude_transfer"] = np.zeros(3)                      # transfer table from before dithering
    assert encoder_dither(old, calibrated=True) is False


def test_phase_encoder_uses_the_calibrated_lut_or_refuses(bench):
    fit = slm_fit()
    enc, source = phase_encoder({"slm": fit}, bench, "slm1")
    np.testing.assert_array_equal(enc.lut.levels, fit.arrays["inverse_lut"])
    assert enc.dither and "calibrated" in source
    with pytest.raises(DeployError, match="has no inverse LUT of slm2"):
        phase_encoder({"slm": fit}, bench, "slm2")
    fallback = PhaseResponse.linear(8, name="slm2").inverse()
    enc2, source2 = phase_encoder({}, bench, "slm2", fallback_lut=fallback)
    assert enc2.lut is fallback and not enc2.dither and source2 == "uncalibrated"
    with pytest.raises(DeployError, match="not a phase panel"):
        phase_encoder({}, bench, "lo")


def test_inverse_lut_for_another_bit_depth_is_refused():
    with pytest.raises(DeployError, match="10-bit panel but slm1 is 8-bit"):
        inverse_lut(slm_fit(bits=8, bit_depth=10), 8, "slm1")
    with pytest.raises(DeployError, match="beyond the 8-bit range"):
        inverse_lut(slm_fit(bits=10), 8, "slm1")


def test_layer_frame_clips_like_training(bench):
    enc, _ = phase_encoder({"slm": slm_fit()}, bench, "slm1")
    w = np.linspace(-2, 2, 32).reshape(16, 2)
    frame, clipped = layer_frame(enc, w, 1.0)
    assert clipped == pytest.approx(np.mean(np.abs(w) > 1.0))
    np.testing.assert_array_equal(frame, enc.encode(np.clip(w, -1, 1), w_max=1.0))


def test_weight_range_and_exposures_are_validated(bench):
    fits = {"mvm1": Fit(name="mvm1", model="m", quantities={"w_max": Quantity(2.5, 0.01)})}
    assert weight_range(fits, 0) == 2.5 and weight_range(fits, 1) is None
    fits["mvm1"].quantities["w_max"] = Quantity(-1.0, 0.0)
    with pytest.raises(DeployError, match="not a positive weight"):
        weight_range(fits, 0)
    exp = Fit(name="exposure", model="auto", quantities={"cam_z1": Quantity(2.5e-4, 0, "s"),
                                                           "cam_out": Quantity(4e-3, 0, "s")})
    before = bench.cameras["cam_a1"].exposure_s
    applied = apply_exposures(bench, {"exposure": exp})
    assert applied == pytest.approx({"cam_z1": 2.5e-4, "cam_out": 4e-3})
    assert bench.cameras["cam_z1"].exposure_s == pytest.approx(2.5e-4)
    assert bench.cameras["cam_a1"].exposure_s == before                 # not recorded: untouched
    exp.quantities["cam_z1"] = Quantity(0.0, 0, "s")
    with pytest.raises(DeployError, match="not a positive exposure"):
        camera_exposures({"exposure": exp})


def test_fingerprint_tells_benches_apart(bench):
    fp = bench_fingerprint(bench)
    assert fp["name"] == "sim" and fp["sizes"] == [2, 16, 2] and len(fp["hash"]) == 16
    assert all(d["serial"].startswith("sim-") for d in fp["devices"].values())
    assert "exposure_s" not in fp["devices"]["cam_z1"]                    # settings are not identity
    with open_bench("sim") as again:
        assert bench_fingerprint(again) == fp                            # same hardware, same print
    # the same file with other simulated hardware: only the serial numbers tell
    with open_with("sim", {"truth": {"seed": 7}}) as other:
        diffs = fingerprint_differences(fp, bench_fingerprint(other))
    assert diffs and all("serial number" in d for d in diffs)
    with open_bench("sim_alt") as alt:
        diffs = fingerprint_differences(fp, bench_fingerprint(alt))
    assert diffs[0] == "bench name 'sim' vs 'sim_alt'"
    assert any(d.startswith("slm1 shape") for d in diffs) and any(d.startswith("slm2 bit_depth") for d in diffs)


def test_check_bench_refuses_warns_or_falls_back(bench):
    cal = CalibrationSet(bench_name="sim", bench_config=bench.config, bench_fingerprint=bench_fingerprint(bench))
    assert check_bench(cal, bench) == []
    with open_bench("sim_alt") as alt:
        with pytest.raises(DeployError, match=r"cal.h5 was calibrated on another bench than 'sim_alt': bench name "
                                              r"'sim' vs 'sim_alt' \(and \d+ more differences\)"):
            check_bench(cal, alt, source="cal.h5")
        assert "used anyway" in check_bench(cal, alt, allow_other=True)[0]
        # a file from before fingerprints: its stored configuration still identifies the bench
        old = CalibrationSet(bench_name="sim", bench_config=bench.config)
        assert fingerprint_of(old) == fingerprint_from_config(bench.config)
        assert check_bench(old, bench) == []
        with pytest.raises(DeployError, match="bench name"):
            check_bench(old, alt)
    assert "records no bench" in check_bench(CalibrationSet(), bench)[0]


def test_fingerprint_survives_the_file(bench, tmp_path):
    cal = CalibrationSet(bench_name="sim", bench_config=bench.config, bench_fingerprint=bench_fingerprint(bench))
    cal.save(tmp_path / "c.h5")
    assert CalibrationSet.load(tmp_path / "c.h5").bench_fingerprint == cal.bench_fingerprint
