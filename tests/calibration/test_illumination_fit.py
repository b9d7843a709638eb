"""Panel illumination fits (calibration.illumination_fit) on synthetic element amplitudes."""
from __future__ import annotations

import numpy as np
import pytest

from calibration.illumination_fit import (SPOT_SYSTEMATIC, fit_panel_illumination, leak_by_distance, median_leaks,
                                          pooled_stderr, probe_element_amplitudes)


def _grid(rows=8, cols=6):
    y, x = np.meshgrid((np.arange(rows) + 0.5) / rows, (np.arange(cols) + 0.5) / cols, indexing="ij")
    return x, y


def test_panel_fit_recovers_waist_and_centre_with_bench_errors():
    x, y = _grid()
    waist, x0, y0 = 0.55, 0.47, 0.53
    rng = np.random.default_rng(3)
    amp = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / waist ** 2)
    se = np.full(amp.shape, 2e-3)
    noisy = amp * (1 + rng.normal(0, 2e-3, amp.shape))
    fit, se_total = fit_panel_illumination(noisy, x, y, se)
    q = fit.quantities
    assert q["waist"].within(waist, 4.0) and q["x0"].within(x0, 4.0) and q["y0"].within(y0, 4.0), q
    np.testing.assert_allclose(se_total, np.hypot(se, SPOT_SYSTEMATIC * noisy))
    assert "stderr_jackknife" in fit.info
    # columns lit through their own inputs: free factors per column, rows give the waist
    factors = np.linspace(0.6, 1.4, x.shape[1])
    fit_c, _ = fit_panel_illumination(noisy * factors[None, :], x, y, se, column_factors=True)
    assert fit_c.info["column_factors"] and fit_c.quantities["waist"].within(waist, 4.0)
    # a column factor carries its input's factor times the column profile of the beam
    expected = factors * np.exp(-((x[0] - x0) / waist) ** 2)
    ratio = fit_c.arrays["column_factor"] / expected
    np.testing.assert_allclose(ratio / ratio.mean(), 1.0, atol=0.02)


def test_probe_amplitudes_from_separable_ratios():
    d = np.array([0.5, 1.0, 0.8, 0.3])           # probe element amplitudes
    t = np.array([1.2, 0.7, 0.9])                 # per slm2-column transmission
    ratios = d[:, None] * t[None, :] * np.exp(1j * 0.3)
    amp = probe_element_amplitudes(ratios, ratios)
    np.testing.assert_allclose(amp[0], d / d.sum())


def test_pooled_stderr_and_leaks():
    reps = np.ones((1, 3, 3))
    assert pooled_stderr(reps) is None
    rng = np.random.default_rng(0)
    reps = 1 + rng.normal(0, 0.01, (400, 4, 5))
    np.testing.assert_allclose(pooled_stderr(reps), 0.01 / np.sqrt(400), rtol=0.15)
    sig = np.array([1.0, 0.1, 0.02, 0.0, 2.0, 0.2, 0.04, 0.0])
    lk = leak_by_distance(sig, np.array([0, 4]), 8, 4)
    assert lk[1] == pytest.approx(0.1) and lk[2] == pytest.approx(0.02)
    assert median_leaks([lk, {1: 0.3}]) == {1: pytest.approx(0.2), 2: pytest.approx(0.02), 3: pytest.approx(0.0)}
