"""calibration.deploy.phase_encoder with wavefront-correction maps declared in the bench file."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from calibration.deploy import DeployError, phase_encoder
from calibration.quantities import Fit
from hwio.bench import load_bench_config, open_bench
from hwio.response import PhaseResponse
from hwio.wavefront import load_wavefront

REPO = Path(__file__).resolve().parents[2]
SIM = REPO / "hwio" / "benches" / "sim.toml"
REDUCED = REPO / "experiments" / "benches" / "sim_reduced.toml"


def with_key(text: str, device: str, line: str) -> str:
    """The bench text with ``line`` added to table [devices.<device>]."""
    return re.sub(rf"(\[devices\.{device}\][^\n]*\n)", lambda m: m.group(1) + line + "\n", text, count=1)


def slm_fit(**info):
    lut = PhaseResponse(np.linspace(0, 7.0, 256), name="slm1").inverse()
    grid = lut.phase_min_rad + 2 * np.pi * np.arange(lut.n_bins) / lut.n_bins
    return Fit(name="slm", model="table", arrays={"inverse_lut": lut.levels, "inverse_lut_phase_rad": grid},
               info=dict(info))


def test_bench_map_reaches_the_encoder_and_its_record(tmp_path):
    shape = tuple(load_bench_config("sim").devices["slm1"]["shape"])
    (tmp_path / "maps").mkdir()
    phase = np.random.default_rng(0).uniform(-3, 3, shape)
    np.save(tmp_path / "maps" / "slm1.npy", phase)
    toml = tmp_path / "lab.toml"
    toml.write_text(with_key(SIM.read_text(), "slm1", 'wavefront_map = "maps/slm1.npy"'))
    with open_bench(toml) as bench:
        enc, source = phase_encoder({"slm": slm_fit()}, bench, "slm1")
        np.testing.assert_array_equal(enc.wavefront_rad, phase)
        rec = enc.wavefront_record
        sha = hashlib.sha256((tmp_path / "maps" / "slm1.npy").read_bytes()).hexdigest()
        assert rec["wavefront_map_sha256"] == sha
        assert rec["wavefront_map_path"] == str((tmp_path / "maps" / "slm1.npy").resolve())
        assert "wavefront map" in source and sha[:12] in source
        # the frame is the map-corrected one
        lay = bench.layouts["slm1"]
        w = np.random.default_rng(1).uniform(-1, 1, (lay.n_rows, lay.n_cols))
        with open_bench("sim") as plain_bench:
            flat, _ = phase_encoder({"slm": slm_fit()}, plain_bench, "slm1")
        assert np.any(enc.encode(w, w_max=1.0) != flat.encode(w, w_max=1.0))
        # panels without a map: none
        enc2, _ = phase_encoder({}, bench, "slm2", fallback_lut=PhaseResponse.linear(8).inverse())
        assert enc2.wavefront_rad is None and enc2.wavefront_record is None
        # a fit that recorded the map: same file passes, another (or none) is refused
        phase_encoder({"slm": slm_fit(**rec)}, bench, "slm1")
        with pytest.raises(DeployError, match="was made with .*sha256 differs"):
            phase_encoder({"slm": slm_fit(**{**rec, "wavefront_map_sha256": "0" * 64})}, bench, "slm1")
        with pytest.raises(DeployError, match="was made with no wavefront map"):
            phase_encoder({"slm": slm_fit(wavefront_map_sha256=None)}, bench, "slm1")
    # a map of the wrong shape fails when the encoder is built, as a DeployError naming the panel
    np.save(tmp_path / "maps" / "slm1.npy", np.zeros((3, 3)))
    with open_bench(toml) as bench:
        with pytest.raises(DeployError, match=r"slm1: wavefront map slm1.npy is 3x3 but the panel is"):
            phase_encoder({"slm": slm_fit()}, bench, "slm1")


def test_region_panels_use_their_crop_of_the_physical_map(tmp_path):
    import cv2
    img = (np.arange(170 * 200) % 251).astype(np.uint8).reshape(170, 200)
    cv2.imwrite(str(tmp_path / "panel.png"), img)
    toml = tmp_path / "reduced.toml"
    text = with_key(REDUCED.read_text(), "panel", 'wavefront_map = {path = "panel.png", full_scale = 256}')
    toml.write_text(text)
    full = load_wavefront(tmp_path / "panel.png", (170, 200), full_scale=256)
    with open_bench(toml) as bench:
        for slm in ("slm1", "slm2", "probe_input"):
            enc, _ = phase_encoder({}, bench, slm, fallback_lut=PhaseResponse.linear(8).inverse())
            dev = bench.config["devices"][slm]
            (r0, c0), (h, w) = dev["region_px"], dev["shape"]
            np.testing.assert_array_equal(enc.wavefront_rad, full[r0:r0 + h, c0:c0 + w])
            assert enc.wavefront_record["wavefront_map_region_px"] == [r0, c0]
