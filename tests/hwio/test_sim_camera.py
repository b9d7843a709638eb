"""Simulated cameras: images whose statistics recover the sensor truth (emva1288-style checks)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hwio.sim.testing import open_with, truth_of

from sim_bench_helpers import mean_frame, open_clean, set_lo

CAMS = ["cam_z1", "cam_a1", "cam_out", "cam_back"]


def show_flat(bench, level):
    """Flip the flat lamp in at ``level`` (0: dark frames)."""
    bench.slms["flat_source"].show(np.array([[level]], dtype=np.int64))


def show_lo_only(bench):
    """Laser path on, input dark: each camera sees its LO spots only."""
    bench.slms["input"].show(np.zeros(bench.slms["input"].shape, np.int64))
    set_lo(bench, 0)


def expected_positions(bench, cam):
    """Registration applied here by hand: rotate (row, col) by +angle towards +col, scale, offset."""
    reg = truth_of(bench).registration[cam]
    a = math.radians(reg.rotation_deg)
    p = bench.spots[cam].positions_px
    r = reg.scale * (p[:, 0] * math.cos(a) - p[:, 1] * math.sin(a)) + reg.offset_px[0]
    c = reg.scale * (p[:, 0] * math.sin(a) + p[:, 1] * math.cos(a)) + reg.offset_px[1]
    return np.stack([r, c], axis=1)


@pytest.mark.parametrize("name", ["sim", "sim_alt"])
def test_spot_centroids_land_at_registered_positions(name):
    bench = open_clean(name)
    show_lo_only(bench)
    for cam in CAMS:
        img = mean_frame(bench.cameras[cam], 12)
        sigma = truth_of(bench).cameras[cam].psf_sigma_px
        img = img - np.median(img)                  # dark offset + uniform background
        rr, cc = np.indices(img.shape)
        for k, (r, c) in enumerate(expected_positions(bench, cam)):
            # find the spot near the nominal grid first (no truth), then refine on the image
            m = (rr - r) ** 2 + (cc - c) ** 2 <= (4 * sigma) ** 2
            w = img[m]
            cr, ccent = (rr[m] * w).sum() / w.sum(), (cc[m] * w).sum() / w.sum()
            assert math.hypot(cr - r, ccent - c) < 0.1, (cam, k, (cr, ccent), (r, c))
        assert img.shape == bench.cameras[cam].shape


def test_dark_frames_give_offset_read_noise_dark_current_and_hot_pixels():
    bench = open_clean("sim")
    t = truth_of(bench)
    show_flat(bench, 0)
    for cam in ("cam_z1", "cam_back"):
        camera = bench.cameras[cam]
        ct = t.cameras[cam]
        camera.exposure_s = 1e-3
        a, b = camera.grab().image.astype(float), camera.grab().image.astype(float)
        assert np.median(a) == pytest.approx(ct.dark_offset_adu, abs=1.0)
        d = (a - b).ravel()
        d = d[np.abs(d - np.median(d)) < 8 * np.std(d)]
        var_adu = np.var(d) / 2.0 - 1.0 / 12.0                    # minus quantisation noise
        read_e = math.sqrt(var_adu) / ct.gain_adu_per_e
        assert read_e == pytest.approx(ct.read_noise_e, rel=0.06)
        # long darks: mean rise = gain * dark current * t; hot pixels stand out
        camera.exposure_s = 0.5
        long = mean_frame(camera, 4)
        rise = np.median(long) - np.median(a)
        assert rise / (ct.gain_adu_per_e * 0.5) == pytest.approx(ct.dark_current_e_per_s, rel=0.25)
        hot = long > np.median(long) + 50
        truth_hot = t.realised["dark_current_map"][cam] > 10 * ct.dark_current_e_per_s
        assert np.array_equal(hot, truth_hot)
        assert hot.mean() == pytest.approx(ct.hot_pixel_fraction, abs=5 * math.sqrt(ct.hot_pixel_fraction / hot.size))


@pytest.mark.parametrize("name", ["sim", "sim_alt"])
def test_photon_transfer_gives_gain_and_prnu(name):
    bench = open_clean(name)
    t = truth_of(bench)
    cam = "cam_out"
    ct = t.cameras[cam]
    camera = bench.cameras[cam]
    camera.exposure_s = 1e-3
    show_flat(bench, 0)
    dark = mean_frame(camera, 8)
    full_level = ct.full_well_e / (ct.qe * ct.flat_photons_per_s_per_level * camera.exposure_s)
    means, variances = [], []
    for frac in np.linspace(0.05, 0.7, 9):
        show_flat(bench, int(min(65535, frac * full_level)))
        a, b = camera.grab().image.astype(float), camera.grab().image.astype(float)
        means.append(np.mean((a + b) / 2 - dark))
        variances.append(np.var(a - b) / 2)
    slope, intercept = np.polyfit(means, variances, 1)
    assert slope == pytest.approx(ct.gain_adu_per_e, rel=0.03)
    assert abs(intercept) < 0.02 * max(variances)           # read noise is negligible at these levels
    # PRNU: spatial variance of an averaged flat beyond the temporal (shot + read) variance
    level = int(min(65535, 0.5 * full_level))
    show_flat(bench, level)
    n = 16
    frames = np.array([camera.grab().image.astype(float) for _ in range(n)])
    flat = frames.mean(0) - dark
    temporal = frames.var(0, ddof=1).mean() / n
    spatial = flat.var() - temporal
    prnu = math.sqrt(max(spatial, 0.0)) / flat.mean()
    assert prnu == pytest.approx(ct.prnu, rel=0.15)


def test_saturation_at_full_well_and_adc_bits():
    bench = open_clean("sim", {"camera": {"cam_a1": {"bits": 10}}})
    t = truth_of(bench)
    show_flat(bench, 65535)
    for cam in ("cam_z1", "cam_a1"):
        camera = bench.cameras[cam]
        camera.exposure_s = 0.01
        img = camera.grab().image
        ct = t.cameras[cam]
        assert img.dtype == np.uint16 and img.shape == camera.shape
        ceiling = min(round(ct.full_well_e * ct.gain_adu_per_e + ct.dark_offset_adu), 2 ** ct.bits - 1)
        # every pixel is saturated; only read noise (a fraction of an ADU) spreads the full-well value
        assert abs(np.median(img) - ceiling) <= 1
        assert img.max() <= 2 ** ct.bits - 1
    assert np.median(bench.cameras["cam_a1"].grab().image) == 1023      # 10-bit ADC in a 12-bit camera


def test_same_seed_same_images_other_seed_other_images():
    def run(seed):
        bench = open_with("sim", {"truth": {"seed": seed, "faults": {"camera_timeout_rate": 0.2,
                                                                       "slm_write_failure_rate": 0.2}}})
        out, events = [], []
        rng = np.random.default_rng(0)
        for _ in range(20):
            slm = bench.slms["slm1"]
            try:
                slm.show(rng.integers(0, 256, slm.shape))
            except Exception as exc:
                events.append(type(exc).__name__)
            for cam in ("cam_z1", "cam_back"):
                try:
                    f = bench.cameras[cam].grab()
                    out.append(f.image)
                    events.append(f.timestamp_s)
                except Exception as exc:
                    events.append(type(exc).__name__)
        return out, events
    a_img, a_ev = run(11)
    b_img, b_ev = run(11)
    c_img, c_ev = run(12)
    assert a_ev == b_ev and len(a_img) == len(b_img)
    assert all(np.array_equal(x, y) for x, y in zip(a_img, b_img))
    assert "DeviceTimeout" in a_ev and "SLMWriteError" in a_ev
    assert a_ev != c_ev or not all(np.array_equal(x, y) for x, y in zip(a_img, c_img))


def test_exposure_scales_signal_and_is_quantised():
    bench = open_clean("sim")
    camera = bench.cameras["cam_out"]
    t = truth_of(bench).cameras["cam_out"]
    show_lo_only(bench)
    camera.exposure_s = 1e-3
    s1 = mean_frame(camera, 8).sum()
    camera.exposure_s = 2e-3
    s2 = mean_frame(camera, 8).sum()
    offset = t.dark_offset_adu * camera.shape[0] * camera.shape[1]
    assert (s2 - offset) / (s1 - offset) == pytest.approx(2.0, rel=0.01)
    camera.exposure_s = 1.23456e-3
    assert camera.exposure_s == pytest.approx(1.235e-3)
    camera.exposure_s = 1e-9
    assert camera.exposure_s == pytest.approx(1e-5)
    with pytest.raises(ValueError):
        camera.exposure_s = -1.0


def test_flat_lamp_is_a_flip_mirror():
    bench = open_clean("sim")
    camera = bench.cameras["cam_z1"]
    show_lo_only(bench)
    spots = camera.grab().image
    show_flat(bench, 20000)
    flat = camera.grab().image.astype(float)
    ct = truth_of(bench).cameras["cam_z1"]
    expect = ct.dark_offset_adu + ct.gain_adu_per_e * ct.qe * ct.flat_photons_per_s_per_level * 20000 * camera.exposure_s
    assert np.median(flat) == pytest.approx(expect, rel=0.02)
    assert np.percentile(flat, 99.5) < np.median(flat) * 1.2       # uniform: no laser spots
    set_lo(bench, 0)                                              # any laser-path frame flips it out
    again = camera.grab().image
    assert abs(float(np.median(again)) - float(np.median(spots))) < 3
    # the LO spots are back: the brightest one's peak pixel, predicted from the truth (LO amplitude,
    # tap, power scale, sensor response; a spot centred on a pixel corner puts the least on one pixel)
    t = truth_of(bench)
    lo2 = float(np.max(t.realised["lo_amplitude"]["cam_z1"])) ** 2
    adu_per_unit = ct.gain_adu_per_e * ct.qe * camera.exposure_s * t.optics.power_scale * t.optics.tap["cam_z1"]
    corner = 0.5 * math.erf(1.0 / (math.sqrt(2.0) * ct.psf_sigma_px))
    peak_min_adu = adu_per_unit * lo2 * corner ** 2
    assert peak_min_adu > 10 * ct.read_noise_e * ct.gain_adu_per_e      # the check below can tell
    assert again.max() - np.median(again) > 0.8 * peak_min_adu
    assert abs(float(again.max()) - float(spots.max())) < 0.4 * peak_min_adu
