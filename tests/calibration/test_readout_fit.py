"""The four-phase LO power recovers L^2 whatever residual field E and background B the spots hold."""
import math

import numpy as np
import pytest

from calibration.readout_fit import lo_power, readout_fit

PHASES = (0.0, 0.5 * math.pi, math.pi, 1.5 * math.pi)


def _powers(lo2, e_abs, phi, bg_roi, n_frames, noise, rng):
    """ROI sums (4, n_frames, n_spots): P(t) = L^2 + |E|^2 + 2 L |E| cos(t - phi) + B (+ noise)."""
    t = np.asarray(PHASES)[:, None, None]
    p = lo2 + e_abs ** 2 + 2 * np.sqrt(lo2) * e_abs * np.cos(t - phi) + bg_roi
    return p + noise * rng.standard_normal((4, n_frames, lo2.size))


def test_lo_power_is_exact_for_any_residual_field():
    rng = np.random.default_rng(3)
    centres = np.array([[10.0, 10.0], [10.0, 30.0], [30.0, 20.0]])
    lo2 = np.array([900.0, 2500.0, 400.0])
    e_abs = np.array([5.0, 20.0, 1.0])                # |E| < L: the root with L >= |E|
    phi = np.array([0.3, 2.0, -1.2])
    bg_px, n_pix = 2.5, 29
    image = np.full((40, 40), 100.0 + bg_px)          # dark 100 ADU + laser-on background
    p = _powers(lo2, e_abs, phi, bg_px * n_pix, 4, 0.0, rng)
    l2, m, bg, m_se = lo_power(p, image, centres, n_pix, 3.0, 100.0)
    np.testing.assert_allclose(bg, bg_px)
    np.testing.assert_allclose(l2, lo2, rtol=1e-12)
    np.testing.assert_allclose(m, lo2 + e_abs ** 2, rtol=1e-12)
    np.testing.assert_allclose(m_se, 0.0, atol=1e-9)


def test_readout_fit_amplitudes_and_their_errors():
    rng = np.random.default_rng(4)
    centres = np.array([[8.0, 8.0], [8.0, 24.0]])
    lo2 = np.array([1.0e4, 4.0e4])
    noise, n_frames = 20.0, 400
    p = _powers(lo2, np.zeros(2), np.zeros(2), 0.0, n_frames, noise, rng)
    fit = readout_fit("cam_x", p, np.zeros((32, 32)), centres, 29, 3.0, 0.0, phases=PHASES, t_s=1.5,
                      exposure_s=1e-3)
    lo = fit.arrays["lo_amplitude"]
    # sigma(M) = noise / sqrt(4 n), sigma(L) = sigma(M) / (2 L)
    expected_se = noise / math.sqrt(4 * n_frames) / (2 * np.sqrt(lo2))
    np.testing.assert_allclose(fit.arrays["lo_amplitude_stderr"], expected_se, rtol=0.1)
    assert np.all(np.abs(lo - np.sqrt(lo2)) < 4 * expected_se)
    assert fit.name == "readout.cam_x" and fit.info["t_s"] == 1.5 and fit.info["frames_per_phase"] == n_frames


def test_a_spot_without_lo_light_is_an_error():
    p = np.zeros((4, 3, 2))
    p[:, :, 0] = 100.0
    with pytest.raises(ValueError, match=r"spot\(s\) \[1\] get no LO light"):
        readout_fit("cam_x", p, np.zeros((20, 20)), np.array([[5.0, 5.0], [5.0, 14.0]]), 29, 2.0, 0.0,
                    phases=PHASES, t_s=0.0, exposure_s=1e-3)
