"""Camera frame -> spot powers and signed fields (homodyne, bias) through ROIs."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf

from hwio.devices import CameraFrame
from hwio.readout import SpotReadout

SHAPE = (96, 128)
SIGMA_PX = 1.4
RADIUS_PX = 7.0


def centres(n=6, seed=0):
    rng = np.random.default_rng(seed)
    k = np.arange(n)
    c = np.stack([20.0 + 28 * (k // 3), 20.0 + 40 * (k % 3)], axis=1)
    return c + rng.uniform(-0.5, 0.5, c.shape)


def mode_images(c, shape=SHAPE, sigma=SIGMA_PX):
    """Pixel-integrated unit-power Gaussian intensity of every spot: (n, rows, cols), each summing to 1."""
    def axis_weights(x0, n):
        edges = np.arange(n + 1) - 0.5
        cdf = 0.5 * (1 + erf((edges - x0) / (sigma * math.sqrt(2))))
        return np.diff(cdf)
    return np.stack([np.outer(axis_weights(r, shape[0]), axis_weights(q, shape[1])) for r, q in c])


def test_powers_with_dark_frame_and_gain_map():
    c = centres()
    rng = np.random.default_rng(1)
    powers_e = rng.uniform(1e3, 5e4, len(c))
    modes = mode_images(c)
    electrons = np.tensordot(powers_e, modes, axes=1)
    dark = rng.normal(100.0, 3.0, SHAPE)
    gain = rng.uniform(0.4, 0.6, SHAPE)           # ADU per electron, per pixel
    frame = dark + gain * electrons
    ro = SpotReadout(c, SHAPE, radius_px=RADIUS_PX, dark_adu=dark, gain_adu_per_e=gain)
    got = ro.power(frame)
    # the ROI holds all but exp(-r^2 / 2 sigma^2) of a Gaussian spot's power
    captured = np.array([(m * (((np.indices(SHAPE) - cc[:, None, None]) ** 2).sum(0) <= RADIUS_PX ** 2)).sum()
                         for m, cc in zip(modes, c)])
    assert np.all(captured > 1 - 2 * math.exp(-RADIUS_PX ** 2 / (2 * SIGMA_PX ** 2)))
    np.testing.assert_allclose(got, powers_e * captured, rtol=1e-10)
    np.testing.assert_allclose(got, powers_e, rtol=1e-3)
    # scalar calibration and a stack of frames
    ro2 = SpotReadout(c, SHAPE, box_px=15, dark_adu=100.0, gain_adu_per_e=0.5)
    stack = 100.0 + 0.5 * np.stack([electrons, 2 * electrons])
    p = ro2.power(stack)
    assert p.shape == (2, len(c))
    np.testing.assert_allclose(p[1], 2 * p[0])
    np.testing.assert_allclose(p[0], powers_e, rtol=1e-3)


def test_integer_frames_and_camera_frame_objects():
    c = centres()
    modes = mode_images(c)
    electrons = np.tensordot(np.full(len(c), 2e4), modes, axes=1)
    frame = np.rint(64 + electrons).astype(np.uint16)
    ro = SpotReadout(c, SHAPE, radius_px=RADIUS_PX, dark_adu=64)
    cf = CameraFrame(image=frame, frame_index=3, timestamp_s=1.0, exposure_s=1e-3)
    np.testing.assert_allclose(ro.power(cf), 2e4, rtol=2e-3)   # rounding of ~150 pixels adds < 0.1 %
    assert ro.power([cf, cf]).shape == (2, len(c))


def _homodyne_frames(E, L, c, lo_phase):
    modes = mode_images(c)
    amp = np.abs(E + L * np.exp(1j * lo_phase)) ** 2
    return np.tensordot(amp, modes, axes=1)


def test_homodyne_recovers_signed_fields_exactly_without_noise():
    c = centres()
    rng = np.random.default_rng(2)
    E = rng.uniform(-40, 40, len(c)) + 1j * rng.uniform(-10, 10, len(c))   # complex spot fields
    L = rng.uniform(60, 120, len(c))                                        # LO amplitudes, unknown to us
    dark = 50.0
    f0 = dark + _homodyne_frames(E, L, c, 0.0)
    fpi = dark + _homodyne_frames(E, L, c, math.pi)
    flo = dark + _homodyne_frames(np.zeros(len(c)), L, c, 0.0)
    ro = SpotReadout(c, SHAPE, radius_px=RADIUS_PX, dark_adu=dark)
    lo = ro.lo_amplitude(flo)
    got = ro.homodyne(f0, fpi, lo)
    # field in sqrt(power) units of the captured fraction: Re(E) * sqrt(captured)
    captured = np.diag(ro.power(dark + mode_images(c)))  # frame k holds spot k alone
    np.testing.assert_allclose(got, E.real * np.sqrt(captured), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(lo, L * np.sqrt(captured), rtol=1e-9)
    assert np.array_equal(np.sign(got), np.sign(E.real))


def test_homodyne_with_shot_noise_and_quantisation():
    c = centres(n=6, seed=4)
    rng = np.random.default_rng(5)
    E = rng.choice([-1.0, 1.0], len(c)) * rng.uniform(20, 60, len(c))
    L = np.full(len(c), 150.0)
    gain, dark, n_frames = 0.25, 100.0, 16

    def grab(field, lo_phase, n):
        electrons = _homodyne_frames(field, L, c, lo_phase)
        shots = rng.poisson(np.broadcast_to(electrons, (n,) + SHAPE))
        return np.clip(np.rint(dark + gain * shots), 0, 4095).astype(np.uint16)

    ro = SpotReadout(c, SHAPE, radius_px=RADIUS_PX, dark_adu=dark, gain_adu_per_e=gain, saturation_adu=4095)
    lo = ro.lo_amplitude(grab(np.zeros(len(c)), 0.0, n_frames))
    got = ro.homodyne(grab(E, 0.0, n_frames), grab(E, math.pi, n_frames), lo).mean(axis=0)
    # shot noise of P0 - Ppi: sqrt(P0 + Ppi) ~ sqrt(2 (L^2 + E^2)) electrons; divided by 4 L, averaged
    sigma = np.sqrt(2 * (L ** 2 + E ** 2)) / (4 * L) / math.sqrt(n_frames)
    assert np.all(np.abs(got - E) < 5 * sigma + 0.01 * np.abs(E))
    assert np.array_equal(np.sign(got), np.sign(E))


def test_bias_field():
    c = centres()
    E = np.array([-3.0, -1.0, 0.0, 2.0, 5.0, 9.5])
    B = 10.0
    frame = np.tensordot((E + B) ** 2, mode_images(c), axes=1)
    ro = SpotReadout(c, SHAPE, radius_px=RADIUS_PX)
    got = ro.bias_field(frame, B * np.sqrt(ro.power(mode_images(c).sum(0))))
    captured = np.sqrt(ro.power(mode_images(c).sum(0)))
    np.testing.assert_allclose(got, E * captured, atol=1e-9)


def test_errors_name_the_problem():
    c = centres()
    ro = SpotReadout(c, SHAPE, radius_px=RADIUS_PX, saturation_adu=4095, name="cam_out")
    frame = np.zeros(SHAPE)
    bad = frame.copy()
    bad[int(round(c[4, 0])), int(round(c[4, 1]))] = np.nan
    with pytest.raises(ValueError, match=r"cam_out: frame contains NaN/inf in the ROI of spot\(s\) \[4\]"):
        ro.power(bad)
    sat = np.zeros(SHAPE, dtype=np.uint16)
    sat[int(round(c[2, 0])), int(round(c[2, 1]))] = 4095
    with pytest.raises(ValueError, match=r"spot\(s\) \[2\] saturated.*reduce exposure"):
        ro.power(sat)
    with pytest.raises(ValueError, match="empty frame"):
        ro.power(np.zeros((0, 0)))
    with pytest.raises(ValueError, match=r"shape \(96, 127\), expected \(96, 128\)"):
        ro.power(np.zeros((96, 127)))
    with pytest.raises(TypeError, match="numeric"):
        ro.power(np.zeros(SHAPE, dtype=object))
    with pytest.raises(ValueError, match=r"LO power <= 0.*spot\(s\) \[0, 1, 2, 3, 4, 5\]"):
        ro.lo_amplitude(np.zeros(SHAPE))
    with pytest.raises(ValueError, match="lo_amplitude must have 6"):
        ro.homodyne(frame, frame, np.ones(5))
    with pytest.raises(ValueError, match="outside"):
        SpotReadout([[3.0, 50.0]], SHAPE, radius_px=5)
    with pytest.raises(ValueError, match="exactly one"):
        SpotReadout(c, SHAPE, radius_px=3, box_px=5)
    with pytest.raises(ValueError, match="odd"):
        SpotReadout(c, SHAPE, box_px=4)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        SpotReadout(np.zeros((3, 3)), SHAPE, box_px=3)
    with pytest.raises(ValueError, match="dark_adu must be a scalar or a"):
        SpotReadout(c, SHAPE, box_px=3, dark_adu=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="gain_adu_per_e must be finite and > 0"):
        SpotReadout(c, SHAPE, box_px=3, gain_adu_per_e=0.0)
