"""Phase ranges short of and beyond 2 pi: reduced double-phase amplitude, offset phase, wrap rule."""
from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from calibration.quantities import Quantity
from calibration.slm_phase_fit import amplitude_max_quantity, fit_phase_response
from hwio.encoding import PhaseEncoder, amplitude_transfer, realised_weights
from hwio.layout import BlockLayout
from hwio.response import DoublePhaseRange, InverseLUT, PhaseResponse

TWO_PI = 2 * math.pi
LAYOUT = BlockLayout(12, 12, block_px=(6, 6), pitch_px=(8, 8), origin_px=(4, 4))
SHAPE = (104, 104)


def reachable_amplitude(offset, gap_lo, gap_hi, amps):
    """Largest A of ``amps`` (decreasing from 1 to 0) such that every |a| <= A keeps both signs'
    pixel phases offset (+ pi) +- arccos(a) out of the gap (gap_lo, gap_hi): brute force on the
    circle (0 when even zero amplitude falls into the gap)."""
    d = np.arccos(amps)
    ph = np.stack([offset + s + sg * d for s in (0.0, math.pi) for sg in (1, -1)])
    rel = (ph - gap_lo) % TWO_PI
    inside = (rel > 1e-12) & (rel < (gap_hi - gap_lo) - 1e-12)
    bad = np.flatnonzero(inside.any(axis=0))
    if not bad.size:
        return amps[0]
    return amps[bad[-1] + 1] if bad[-1] + 1 < amps.size else 0.0


def test_amplitude_max_is_cos_half_gap_at_the_optimum_offset():
    resp = PhaseResponse.power_law(8, 0.93 * TWO_PI, 1.12)
    dp = resp.double_phase_range()
    g = TWO_PI - resp.range_rad
    assert dp.gap_width_rad == pytest.approx(g) and dp.amplitude_max == pytest.approx(math.cos(g / 2))
    assert dp.phase_offset_rad == pytest.approx(-g / 2)              # gap centre, nearest phase 0
    amps = np.linspace(1.0, 0.0, 20001)                              # decreasing: arccos increasing
    gap = (resp.phase_rad[-1], resp.phase_rad[0] + TWO_PI)
    best = reachable_amplitude(dp.phase_offset_rad, *gap, amps)
    assert best == pytest.approx(dp.amplitude_max, abs=1e-4)
    # any other offset keeps less: brute force over the circle, optimum only at phi0 and phi0 + pi
    offsets = np.concatenate([np.linspace(-math.pi, math.pi, 721),
                              [dp.phase_offset_rad, dp.phase_offset_rad + math.pi]])
    got = np.array([reachable_amplitude(o, *gap, amps) for o in offsets])
    assert got.max() == pytest.approx(dp.amplitude_max, abs=1e-4)
    far = np.abs(np.angle(np.exp(2j * (offsets - dp.phase_offset_rad)))) / 2 > 0.05
    assert np.all(got[far] < dp.amplitude_max - 1e-3)


@pytest.mark.parametrize("bits,turns,gamma", [(8, 0.93, 1.12), (10, 0.8, 0.9), (8, 0.6, 1.0)])
@pytest.mark.parametrize("dither", [False, True])
def test_short_range_realises_amax_times_w_over_wmax(bits, turns, gamma, dither):
    true = PhaseResponse.power_law(bits, turns * TWO_PI, gamma, 0.4)
    lut = true.inverse()
    enc = PhaseEncoder(LAYOUT, SHAPE, lut, dither=dither)
    a_max = math.cos((TWO_PI - true.range_rad) / 2)
    assert enc.amplitude_max == pytest.approx(a_max)
    w = np.random.default_rng(bits).uniform(-2.0, 2.0, (12, 12))
    w[0, :4] = [2.0, -2.0, 1e-9, -1e-9]                          # the ends and zero
    frame = enc.encode(w, w_max=2.0)
    z = realised_weights(frame.astype(np.int64), LAYOUT, true, 1.0, complex_field=True)
    z *= np.exp(-1j * enc.phase_offset_rad)                       # along the encoder's sign axis
    target = a_max * w / 2.0
    # plain: each pixel within half a level step (and half a bin) of its target; no pixel in the gap
    bound = 0.5 * true.max_step_rad + lut.bin_width_rad
    err = np.abs(z.real - target)
    assert err.max() <= bound
    if dither:
        plain = PhaseEncoder(LAYOUT, SHAPE, lut, dither=False)
        zp = realised_weights(plain.encode(w, w_max=2.0).astype(np.int64), LAYOUT, true, 1.0, complex_field=True)
        err_p = np.abs((zp * np.exp(-1j * enc.phase_offset_rad)).real - target)
        assert np.sqrt(np.mean(err ** 2)) < 0.5 * np.sqrt(np.mean(err_p ** 2))
    # the amplitude transfer table ends at +-A_max and is non-decreasing (the gap edges included)
    _, values = amplitude_transfer(enc, true, 0.0)
    assert values[0] == pytest.approx(-a_max, abs=bound) and values[-1] == pytest.approx(a_max, abs=bound)
    assert np.all(np.diff(values) >= -0.25 * bound)


def test_short_range_lut_round_trips_through_hdf5(tmp_path):
    lut = PhaseResponse.power_law(8, 0.93 * TWO_PI, 1.1).inverse(1024)
    with h5py.File(tmp_path / "l.h5", "w") as f:
        lut.to_hdf5(f)
    with h5py.File(tmp_path / "l.h5", "r") as f:
        back = InverseLUT.from_hdf5(f["inverse_lut"])
    assert back.double_phase == lut.double_phase
    np.testing.assert_array_equal(back.levels, lut.levels)


def test_slm_fit_records_the_reduced_range():
    levels = np.arange(0, 256, 3)
    R = 0.93 * TWO_PI
    phase = R * (levels / 255.0) ** 1.1 + np.random.default_rng(0).normal(0, 0.003, levels.size)
    fit = fit_phase_response(levels, phase, bits=8, phase_stderr_rad=0.003)
    rq = fit.quantities["phase_range_rad"]
    a = fit.quantities["amplitude_max"]
    assert a.value == pytest.approx(math.cos((TWO_PI - rq.value) / 2), rel=1e-12)
    assert a.stderr == pytest.approx(0.5 * math.sin((TWO_PI - rq.value) / 2) * rq.stderr, rel=1e-9)
    assert abs(a.value - math.cos(0.07 * math.pi)) < 4 * a.stderr + 1e-4
    assert fit.info["double_phase"]["amplitude_max"] == pytest.approx(a.value, abs=1e-6)
    assert any("below 2 pi" in w and "amplitude_max" in w for w in fit.info["warnings"])
    # the LUT is one uniform turn (usable by calibration.deploy) and its gap maps to the end levels
    lut = InverseLUT.from_grid(fit.arrays["inverse_lut"], fit.arrays["inverse_lut_phase_rad"], 8,
                               double_phase=DoublePhaseRange.from_dict(fit.info["double_phase"]))
    gap_phase = lut.double_phase.gap_centre_rad
    assert int(lut(np.array([gap_phase - 0.05]))[0]) == 255 and int(lut(np.array([gap_phase + 0.05]))[0]) == 0
    # a full-range panel records no reduced range
    full = fit_phase_response(levels, 1.1 * TWO_PI * levels / 255.0, bits=8, phase_stderr_rad=0.003)
    assert "amplitude_max" not in full.quantities and full.info["double_phase"]["gap_width_rad"] == 0.0
    assert amplitude_max_quantity(Quantity(7.0, 0.01)).value == 1.0


def one_turn_lut(resp: PhaseResponse, n: int) -> InverseLUT:
    """The alternative wrap rule: only the one turn of levels centred in the range (every block
    in one continuous stretch of the response), nearest level on the circle within it."""
    t = resp.phase_rad
    mid = 0.5 * (t[0] + t[-1])
    keep = np.flatnonzero((t >= mid - math.pi) & (t < mid + math.pi))
    grid = resp.phase_min_rad + TWO_PI * np.arange(n) / n
    d = np.abs(np.angle(np.exp(1j * (grid[:, None] - t[keep][None, :]))))
    return InverseLUT(keep[np.argmin(d, axis=1)], resp.phase_min_rad, resp.bit_depth)


def realised_rms(true, lut, crosstalk_px, dither):
    enc = PhaseEncoder(LAYOUT, SHAPE, lut, dither=dither)
    rng = np.random.default_rng(0)
    errs = []
    for _ in range(3):
        w = rng.uniform(-1, 1, (12, 12))
        got = realised_weights(enc.encode(w, w_max=1.0).astype(np.int64), LAYOUT, true, 1.0, crosstalk_px)
        errs.append(got - (got * w).sum() / (w * w).sum() * w)          # the fringing loss is a gain
    return float(np.sqrt(np.mean(np.square(errs))))


def test_wrap_rule_above_two_pi_interleaves_the_turns():
    """The kept rule (nearest level on the circle over every turn) against one continuous turn,
    through the true response with pixel crosstalk: the turns' interleaved levels make a 4 pi
    table of 256 levels resolve the circle like a 2 pi one, while one turn loses half the levels."""
    four = PhaseResponse.power_law(8, 4 * math.pi, 1.0)
    two = PhaseResponse.power_law(8, TWO_PI, 1.0)
    nearest = realised_rms(four, four.inverse(), 0.9, dither=False)
    assert nearest < 0.7 * realised_rms(four, one_turn_lut(four, 4096), 0.9, dither=False)
    assert nearest < 1.1 * realised_rms(two, two.inverse(), 0.9, dither=False)


def test_short_range_errors_are_one_line():
    with pytest.raises(ValueError, match="gap width in") as e:
        DoublePhaseRange(0.0, TWO_PI)
    assert "\n" not in str(e.value)
    lut = PhaseResponse.linear(8).inverse()
    with pytest.raises(TypeError, match="DoublePhaseRange") as e:
        PhaseEncoder(LAYOUT, SHAPE, lut, double_phase={"gap_width_rad": 0.3})
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="not one uniform turn.*re-run") as e:
        InverseLUT.from_grid(np.arange(256), np.linspace(0, 5.0, 256), 8)
    assert "\n" not in str(e.value)
