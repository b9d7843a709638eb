"""Per-pixel photon transfer (calibration.camera_pixel_fit) on synthetic frames of a known camera
under a non-uniform, jittering light pattern."""
from __future__ import annotations

import numpy as np
import pytest

from calibration.camera_pixel_fit import fit_ptc_per_pixel, ptc_pairs

GAIN = 0.42          # DN/e-
READ_E = 6.0         # e-
OFFSET = 100.0       # DN
MAX_ADU = 4095
JITTER = 0.004       # relative light jitter per frame


def _series(rng, n_frames=16, shape=(48, 48)):
    yy, xx = np.indices(shape)
    pattern = np.exp(-((yy - 20.0) ** 2 + (xx - 27.0) ** 2) / (2 * 9.0 ** 2)) + 0.02   # spots + stray light
    rate_e = 4.0e6 * pattern                                  # e- per second at the brightest pixel
    t_full = (MAX_ADU - OFFSET) / GAIN / rate_e.max()
    exposures = np.r_[np.geomspace(t_full / 300, 0.6 * t_full, 15), np.linspace(0.75, 1.3, 5) * t_full]
    stacks = []
    for t in exposures:
        light = 1.0 + JITTER * rng.standard_normal((n_frames, 1, 1))
        e = rng.poisson(rate_e * t * light) + READ_E * rng.standard_normal((n_frames, *shape))
        stacks.append(np.clip(np.round(OFFSET + GAIN * e), 0, MAX_ADU))
    return exposures, stacks


def test_gain_read_noise_offset_and_jitter_recovered():
    rng = np.random.default_rng(7)
    pairs = [ptc_pairs(*_series(rng), MAX_ADU) for _ in range(2)]      # two cameras, one laser
    fits = fit_ptc_per_pixel(pairs)
    assert len(fits) == 2
    for f in fits:
        q = f.quantities
        assert q["gain_adu_per_e"].within(GAIN, 4.0), q["gain_adu_per_e"]
        assert abs(q["gain_adu_per_e"].value / GAIN - 1) < 0.03
        assert abs(q["read_noise_e"].value / READ_E - 1) < 0.1, q["read_noise_e"]
        assert abs(q["dark_offset_adu"].value - OFFSET) < 1.0, q["dark_offset_adu"]
        # saturation where the brightest pixels clip: (MAX_ADU - OFFSET) / GAIN electrons at most
        assert 0.5 < q["saturation_e"].value * GAIN / (MAX_ADU - OFFSET) < 1.05
        assert f.arrays["offset_map_adu"].shape == (48, 48)
        assert abs(f.info["relative_light_jitter"] - JITTER) < 0.5 * JITTER


def test_too_few_lit_pixels_is_a_clear_error():
    rng = np.random.default_rng(1)
    stacks = [OFFSET + rng.normal(0, 1, (4, 4, 4)) for _ in range(6)]
    with pytest.raises(ValueError, match="lit pixel readings"):
        ptc_pairs(np.linspace(1e-3, 6e-3, 6), stacks, MAX_ADU)
