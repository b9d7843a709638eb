"""Double-phase weight encoding, phase response tables, DMD input encoding."""
from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from scipy.special import erf

from hwio.dither import DITHER_SUBBINS
from hwio.encoder_common import bayer_ranks
from hwio.encoding import DMDEncoder, PhaseEncoder, realised_weights
from hwio.layout import BlockLayout
from hwio.response import InverseLUT, PhaseResponse

TWO_PI = 2 * math.pi


def run_around(lut, k):
    """(level, start, stop) of the run of equal LUT levels holding bin k (unwrapped bins, stop exclusive)."""
    n, lv = lut.n_bins, lut.levels
    start, stop = k, k + 1
    while start > k - n + 1 and lv[(start - 1) % n] == lv[k % n]:
        start -= 1
    while stop < start + n and lv[stop % n] == lv[k % n]:
        stop += 1
    return lv[k % n], start, stop


def run_centre(lut, start, stop):
    """Grid position a run stands for: its centre, or the gap edge it holds (short ranges)."""
    dp = lut.double_phase
    if not dp.full:
        for edge in (dp.gap_centre_rad - dp.gap_width_rad / 2, dp.gap_centre_rad + dp.gap_width_rad / 2):
            u = (edge - lut.phase_min_rad) * lut.bins_per_rad + 0.5
            u = start + (u - start) % lut.n_bins
            if u < stop:
                return u
    return 0.5 * (start + stop)


def dithered_level(lut, phase, rank, n_ranks):
    """Level of a pixel of dither rank ``rank`` (of ``n_ranks``) aiming at ``phase``, walking the LUT.

    Levels stand at the centres of their runs (grid coordinates; the two runs at the edges of
    an unreachable gap stand at the gap's edges); the target, resolved to the middle of its
    1/16 of a grid bin, lies between two such positions at fraction f, and the pixels of rank
    < rint(f n_ranks) take the upper level.
    """
    y = ((phase - lut.phase_min_rad) * lut.bins_per_rad + 0.5) % lut.n_bins
    y = (math.floor(y * 16) + 0.5) / 16            # resolved to 1/16 of a grid bin
    k = int(math.floor(y))
    lev, start, stop = run_around(lut, k)
    centre = run_centre(lut, start, stop)
    if y - k >= centre - k:
        lo, c_lo = lev, centre
        hi, s2, e2 = run_around(lut, stop)
        c_hi = run_centre(lut, s2, e2)
    else:
        hi, c_hi = lev, centre
        lo, s2, e2 = run_around(lut, start - 1)
        c_lo = run_centre(lut, s2, e2)
    count = np.rint((y - c_lo) / (c_hi - c_lo) * n_ranks)
    return hi if rank < count else lo


def reference_frame(layout, shape, lut, w, w_max, background, reference=None, dither=True):
    """Pixel-by-pixel double-phase rule, written independently of the vectorised encoder.

    With ``dither`` the pixel pairs (row parity q, pair b // 2) of a block get ranks
    0..R-1 (R = min(8, 2 n_pairs)) by scaling a 2 x n_pairs Bayer order; each pixel dithers
    between the two levels around its target phase (:func:`dithered_level`).  A LUT of a panel
    short of 2 pi shows amplitude ``A_max |w| / w_max`` around the offset phase phi0 (signs phi0,
    phi0 + pi; background phi0 +- pi/2), both taken from the LUT's ``double_phase``.
    """
    a_max, phi0 = lut.double_phase.amplitude_max, lut.double_phase.phase_offset_rad
    if background == "zero":
        rr, cc = np.indices(shape)
        frame = np.where((rr + cc) % 2 == 0, lut(np.array(phi0 + math.pi / 2)), lut(np.array(phi0 - math.pi / 2)))
        frame = frame.astype(lut.level_dtype)
    else:
        frame = np.full(shape, background, dtype=lut.level_dtype)
    vals = np.asarray(w, float)
    if layout.reference_col:
        ref = np.zeros(layout.n_rows) if reference is None else np.asarray(reference, float)
        vals = np.concatenate([vals, ref[:, None]], axis=1)
    for i in range(layout.n_rows):
        for j in range(layout.n_block_cols):
            theta = math.acos(min(a_max * abs(vals[i, j]) / w_max, a_max))
            s = phi0 + (math.pi if vals[i, j] < 0 else 0.0)
            rs, cs = layout.active_slices(i, j)
            n_act, width = rs.stop - rs.start, cs.stop - cs.start
            n_pairs = (width + 1) // 2
            n_ranks = min(8, 2 * n_pairs)
            ranks = bayer_ranks((2, n_pairs)) * n_ranks // (2 * n_pairs)
            for a in range(n_act):
                for b in range(width):
                    phase = s + theta if (a + b) % 2 == 0 else s - theta
                    if dither and n_act > 1:
                        level = dithered_level(lut, phase, ranks[a % 2, b // 2], n_ranks)
                    else:
                        level = lut(np.array(phase))
                    frame[rs.start + a, cs.start + b] = level
    return frame


LAYOUTS = [
    (BlockLayout(5, 7, block_px=(6, 10), pitch_px=(7, 12), origin_px=(3, 5), guard_px=1), (60, 101)),
    (BlockLayout(4, 3, block_px=(5, 7), pitch_px=(5, 9), origin_px=(2, 1), reference_col=True), (40, 50)),
    (BlockLayout(3, 3, block_px=(8, 16), pitch_px=(8, 16)), (24, 48)),
    (BlockLayout(2, 4, block_px=(4, 9), pitch_px=(4, 9), origin_px=(1, 3)), (10, 40)),
    (BlockLayout(3, 2, block_px=(4, 12), pitch_px=(6, 16), origin_px=(0, 6), guard_px=1), (18, 40)),
]


@pytest.mark.parametrize("dither", [True, False])
@pytest.mark.parametrize("background", ["zero", 3])
@pytest.mark.parametrize("bits", [8, 10])
@pytest.mark.parametrize("case", range(len(LAYOUTS)))
def test_encoder_matches_pixel_rule(bits, case, background, dither):
    check_pixel_rule(PhaseResponse.power_law(bits, 2.3 * math.pi, 1.3, -0.5).inverse(), case, background, dither)


@pytest.mark.parametrize("dither", [True, False])
@pytest.mark.parametrize("range_turns,bits,case", [(0.93, 8, 0), (0.93, 10, 1), (0.8, 8, 3), (0.93, 8, 4)])
def test_encoder_matches_pixel_rule_below_two_pi(range_turns, bits, case, dither):
    """A panel short of 2 pi: reduced amplitude, offset phase, gap-edge dither positions."""
    lut = PhaseResponse.power_law(bits, range_turns * TWO_PI, 1.2, -0.5).inverse()
    assert not lut.double_phase.full
    check_pixel_rule(lut, case, "zero", dither, headroom=1.0)     # the largest |w| at A_max, the gap's edge


BENCH_GEOMETRIES = [   # the block geometries of benchmarks/encode_readout.py, a few blocks of each
    (8, BlockLayout(3, 4, block_px=(16, 28), pitch_px=(16, 28), origin_px=(64, 64))),
    (10, BlockLayout(3, 4, block_px=(16, 28), pitch_px=(16, 28), origin_px=(64, 64))),
    (8, BlockLayout(4, 4, block_px=(8, 28), pitch_px=(8, 28), origin_px=(64, 64), guard_px=1)),
    (8, BlockLayout(3, 4, block_px=(17, 29), pitch_px=(17, 29), origin_px=(3, 4))),
]


@pytest.mark.parametrize("bits,layout", BENCH_GEOMETRIES)
def test_benchmark_geometries_match_pixel_rule(bits, layout):
    """On the 1152 x 1920 panel the fast paths (words of up to 8 bytes, alignment classes) give
    exactly the pixel-by-pixel rule, dithered and plain."""
    shape = (1152, 1920)
    lut = PhaseResponse.power_law(bits, 2.1 * math.pi, 1.15, -0.2).inverse()
    w = np.random.default_rng(bits + layout.pitch_px[1]).standard_normal((layout.n_rows, layout.n_cols))
    for dither in (True, False):
        got = PhaseEncoder(layout, shape, lut, dither=dither).encode(w)
        np.testing.assert_array_equal(got, reference_frame(layout, shape, lut, w, np.abs(w).max(), "zero",
                                                           dither=dither))


def check_pixel_rule(lut, case, background, dither, headroom=1.5):
    layout, shape = LAYOUTS[case]
    bits = lut.bit_depth
    enc = PhaseEncoder(layout, shape, lut, background=background, dither=dither)
    rng = np.random.default_rng(case + bits)
    w = rng.standard_normal((layout.n_rows, layout.n_cols))
    ref = rng.standard_normal(layout.n_rows) if layout.reference_col else None
    w_max = headroom * max(np.abs(w).max(), 0 if ref is None else np.abs(ref).max())
    got = enc.encode(w, w_max=w_max, reference=ref)
    assert got.dtype == lut.level_dtype and got.shape == shape
    np.testing.assert_array_equal(got, reference_frame(layout, shape, lut, w, w_max, background, ref, dither))
    # writing into a caller's buffer gives the same frame and overwrites every pixel
    out = np.full(shape, 7, dtype=lut.level_dtype)
    enc.encode(w, w_max=w_max, reference=ref, out=out)
    np.testing.assert_array_equal(out, got)


@pytest.mark.parametrize("bits,gamma,range_rad", [(6, 1.0, TWO_PI), (8, 1.4, 2.2 * math.pi), (10, 0.8, 4 * math.pi)])
def test_round_trip_within_quantisation_bound(bits, gamma, range_rad):
    response = PhaseResponse.power_law(bits, range_rad, gamma, 0.3)
    lut = response.inverse()
    layout = BlockLayout(16, 12, block_px=(6, 8), pitch_px=(6, 8))
    enc = PhaseEncoder(layout, (100, 100), lut, dither=False)
    w = np.random.default_rng(bits).uniform(-2.0, 2.0, (16, 12))
    frame = enc.encode(w)
    w_max = enc.last_w_max
    assert w_max == pytest.approx(np.abs(w).max())
    realised = enc.decode(frame, response, w_max=w_max)
    bound = w_max * lut.max_phase_error_rad(response)
    err = np.abs(realised - w)
    assert err.max() <= bound + 1e-12
    # the bound is not vacuous: quantisation errors reach a good part of it
    assert err.max() > 0.2 * bound
    # dithering the 6 rows of a block over neighbouring levels: several times smaller errors
    dithered = PhaseEncoder(layout, (100, 100), lut)
    err_d = np.abs(dithered.decode(dithered.encode(w), response, w_max=w_max) - w)
    assert err_d.max() <= bound + 1e-12
    assert np.sqrt(np.mean(err_d ** 2)) < np.sqrt(np.mean(err ** 2)) / 2
    # the bound shrinks with bit depth as expected: about half a level step
    assert lut.max_phase_error_rad(response) < 0.6 * response.max_step_rad + 2 * lut.bin_width_rad


def test_signs_and_extremes():
    response = PhaseResponse.linear(12)
    lut = response.inverse()
    layout = BlockLayout(1, 5, block_px=(4, 4), pitch_px=(4, 4))
    enc = PhaseEncoder(layout, (4, 20), lut, dither=False)
    w = np.array([[1.0, -1.0, 0.0, 0.5, -0.5]])
    frame = enc.encode(w)
    # full positive weight: every pixel at phase 0; full negative: every pixel at phase pi
    assert set(np.unique(response.phase(frame[:, 0:4]))) == {0.0}
    np.testing.assert_allclose(response.phase(frame[:, 4:8]), math.pi, atol=lut.max_phase_error_rad(response))
    field = enc.decode(frame, response, complex_field=True)
    np.testing.assert_allclose(field.real, w, atol=1e-3)
    np.testing.assert_allclose(field.imag, 0.0, atol=1e-3)  # even pixel count: no imaginary part
    assert np.array_equal(np.sign(field.real[0, [0, 1, 3, 4]]), [1, -1, 1, -1])
    # dithered rows: neighbouring levels (phase 0 may show as 2 pi), the same fields
    dith = PhaseEncoder(layout, (4, 20), lut)
    frame = dith.encode(w)
    assert len(np.unique(frame[:, 12:14])) > 1
    np.testing.assert_allclose(np.cos(response.phase(frame[:, 0:4])), 1.0, atol=1e-5)
    field = dith.decode(frame, response, complex_field=True)
    np.testing.assert_allclose(field.real, w, atol=1e-3)
    np.testing.assert_allclose(field.imag, 0.0, atol=1e-3)


def test_odd_pixel_count_keeps_real_part():
    response = PhaseResponse.linear(12)
    layout = BlockLayout(1, 2, block_px=(3, 3), pitch_px=(3, 3))
    enc = PhaseEncoder(layout, (3, 6), response.inverse())
    w = np.array([[0.6, -0.3]])
    field = enc.decode(enc.encode(w, w_max=1.0), response, complex_field=True)
    theta = np.arccos(np.abs(w))
    s = np.where(w < 0, -1.0, 1.0)
    # 5 pixels at s+theta, 4 at s-theta: mean = e^{is}(cos theta + i sin theta / 9)
    np.testing.assert_allclose(field.real, w, atol=2e-3)
    np.testing.assert_allclose(field.imag, s * np.sin(theta) / 9, atol=2e-3)


def _blurred_box(n, edges_sign, sigma):
    """Continuous Gaussian blur (sigma) of a 1-D piecewise-constant profile sampled at pixel centres.

    ``edges_sign`` lists (position, jump) pairs; the profile is 0 left of the first edge.
    """
    x = np.arange(n) + 0.5
    out = np.zeros(n)
    for pos, jump in edges_sign:
        out += jump * 0.5 * (1 + erf((x - pos) / (sigma * math.sqrt(2))))
    return out


def test_crosstalk_at_a_sign_edge_matches_gaussian_blur_of_a_step():
    """Blocks +1 | -1 (uniform phases 0 and pi) filling a panel; no field outside the panel.

    The field is separable, so the blurred block mean is the product of the blurred
    column profile (0 | +1 | -1 | 0) and the blurred row profile (0 | 1 | 0), each averaged
    over the block: away from the panel edges a block loses sigma*sqrt(2/pi)/width per edge.
    """
    response = PhaseResponse.linear(12)
    width, height = 40, 200
    layout = BlockLayout(1, 2, block_px=(height, width), pitch_px=(height, width))
    enc = PhaseEncoder(layout, (height, 2 * width), response.inverse())
    frame = enc.encode(np.array([[1.0, -1.0]]))
    for sigma in (1.5, 3.0):
        got = realised_weights(frame, layout, response, crosstalk_px=sigma)
        cols = _blurred_box(2 * width, [(0, 1.0), (width, -2.0), (2 * width, 1.0)], sigma)
        rows = _blurred_box(height, [(0, 1.0), (height, -1.0)], sigma)
        expected = rows.mean() * np.array([cols[:width].mean(), cols[width:].mean()])
        np.testing.assert_allclose(got[0], expected, atol=0.003)
        # two edges per block, one to the opposite sign (loss 2x), one to darkness; plus top/bottom
        loss = sigma * math.sqrt(2 / math.pi)
        assert got[0, 0] == pytest.approx((1 - 3 * loss / (2 * width)) * (1 - 2 * loss / (2 * height)),
                                          abs=0.003)
    # without crosstalk the blocks are exact
    np.testing.assert_allclose(realised_weights(frame, layout, response), [[1.0, -1.0]], atol=1e-6)


def test_uniform_weights_keep_zero_order_under_crosstalk():
    """A linear blur conserves the mean field: interior blocks of a uniform matrix are unchanged."""
    response = PhaseResponse.linear(12)
    layout = BlockLayout(5, 5, block_px=(8, 8), pitch_px=(8, 8))
    enc = PhaseEncoder(layout, (40, 40), response.inverse())
    frame = enc.encode(np.full((5, 5), -0.4), w_max=1.0)
    got = realised_weights(frame, layout, response, crosstalk_px=1.2)
    np.testing.assert_allclose(got[1:-1, 1:-1], -0.4, atol=2e-3)
    assert np.all(np.abs(got[0]) < 0.4 - 0.01)        # panel-edge blocks lose light to the outside


def test_default_w_max_and_zero_matrix():
    response = PhaseResponse.linear(8)
    layout = BlockLayout(2, 2, block_px=(2, 2), pitch_px=(2, 2))
    enc = PhaseEncoder(layout, (4, 4), response.inverse())
    enc.encode(np.zeros((2, 2)))
    assert enc.last_w_max == 1.0
    enc.encode(np.array([[0.1, -0.7], [0.2, 0.3]]))
    assert enc.last_w_max == pytest.approx(0.7)
    levels = enc.decode(enc.encode(np.zeros((2, 2))), response)
    assert np.abs(levels).max() <= response.max_step_rad


def test_encoder_errors():
    response = PhaseResponse.linear(8)
    lut = response.inverse()
    layout = BlockLayout(3, 4, block_px=(4, 4), pitch_px=(4, 4))
    enc = PhaseEncoder(layout, (12, 16), lut, name="slm1")
    with pytest.raises(ValueError, match=r"shape \(4, 3\).*\(3, 4\)"):
        enc.encode(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        enc.encode(np.full((3, 4), np.nan))
    with pytest.raises(ValueError, match="w_max"):
        enc.encode(np.ones((3, 4)), w_max=0.5)
    with pytest.raises(ValueError, match="w_max"):
        enc.encode(np.ones((3, 4)), w_max=-1)
    with pytest.raises(ValueError, match="reference"):
        enc.encode(np.ones((3, 4)), reference=np.ones(3))
    with pytest.raises(ValueError, match="C-contiguous"):
        enc.encode(np.ones((3, 4)), out=np.zeros((12, 16), dtype=np.uint16))
    with pytest.raises(ValueError, match="needs"):
        PhaseEncoder(layout, (10, 16), lut)
    with pytest.raises(TypeError, match="InverseLUT"):
        PhaseEncoder(layout, (12, 16), response)
    with pytest.raises(ValueError, match="background must be"):
        PhaseEncoder(layout, (12, 16), lut, background=256)
    with pytest.raises(ValueError, match="background must be"):
        PhaseEncoder(layout, (12, 16), lut, background="dark")


def test_response_range_below_two_pi_gives_a_reduced_amplitude_range():
    short = PhaseResponse.power_law(8, 1.7 * math.pi, 1.0)
    assert not short.covers_full_turn()
    dp = short.inverse().double_phase
    # gap 0.3 pi between 1.7 pi and 2 pi: A_max = cos(0.15 pi), offset = gap centre 1.85 pi = -0.15 pi
    assert dp.gap_width_rad == pytest.approx(0.3 * math.pi)
    assert dp.amplitude_max == pytest.approx(math.cos(0.15 * math.pi))
    assert dp.phase_offset_rad == pytest.approx(-0.15 * math.pi)
    # the L/(max+1) convention (range 2 pi minus one step) is a full turn
    full = PhaseResponse(TWO_PI * np.arange(256) / 256).inverse().double_phase
    assert full.full and full.amplitude_max == 1.0 and full.phase_offset_rad == 0.0


def test_inverse_lut_is_nearest_level_on_the_circle():
    response = PhaseResponse.power_law(8, 3.1 * math.pi, 1.2, -1.0)
    lut = response.inverse()
    targets = np.random.default_rng(3).uniform(-10, 10, 2000)
    levels = lut(targets).astype(np.int64)
    err = np.abs(np.angle(np.exp(1j * (response.phase_rad[levels] - targets))))
    brute = np.abs(np.angle(np.exp(1j * (response.phase_rad[None, :] - targets[:, None])))).min(axis=1)
    assert err.max() <= lut.max_phase_error_rad(response) + 1e-12
    # equal to the brute-force nearest level up to the grid rounding (half a bin on each side)
    assert np.all(err <= brute + lut.bin_width_rad + 1e-12)


def test_response_tables_and_monotonicity():
    with pytest.raises(ValueError, match="non-decreasing"):
        PhaseResponse(np.r_[np.linspace(0, 7, 128), np.linspace(6, 1, 128)])
    with pytest.raises(ValueError, match="2\\*\\*bit_depth"):
        PhaseResponse(np.linspace(0, 7, 100))
    lv = np.arange(0, 256, 8)
    noisy = 7.0 * (lv / 255.0) + np.random.default_rng(0).normal(0, 0.05, lv.size)
    resp = PhaseResponse.from_measured(lv, noisy, bit_depth=8)
    assert np.all(np.diff(resp.phase_rad) >= 0)
    assert resp.phase_rad[128] == pytest.approx(7.0 * 128 / 255, abs=0.2)
    with pytest.raises(ValueError, match="0..255"):
        resp.phase(np.array([256]))
    with pytest.raises(TypeError):
        resp.phase(np.array([1.5]))


def test_lut_hdf5_round_trip_and_calibration_style_grid(tmp_path):
    response = PhaseResponse.power_law(10, 2.5 * math.pi, 1.1)
    lut = response.inverse()
    with h5py.File(tmp_path / "cal.h5", "w") as f:
        g = f.create_group("slm/slm1")
        lut.to_hdf5(g)
        # a table stored beside its grid of target phases, as calibration fits produce
        grid = np.arange(1024) * TWO_PI / 1024
        g2 = f.create_group("slm/slm2")
        g2.create_dataset("inverse_lut", data=lut(grid).astype(np.int64))
        g2.create_dataset("inverse_lut_phase_rad", data=grid)
        g3 = f.create_group("slm/short")
        g3.create_dataset("inverse_lut", data=np.arange(256))
        g3.create_dataset("inverse_lut_phase_rad", data=np.linspace(0, 5.0, 256))
    with h5py.File(tmp_path / "cal.h5", "r") as f:
        back = InverseLUT.from_hdf5(f["slm/slm1/inverse_lut"])
        np.testing.assert_array_equal(back.levels, lut.levels)
        assert back.phase_min_rad == lut.phase_min_rad and back.bit_depth == 10
        other = InverseLUT.from_hdf5(f["slm/slm2/inverse_lut"], bit_depth=10)
        assert other.n_bins == 1024
        targets = np.linspace(-3, 9, 500)
        assert np.abs(np.angle(np.exp(1j * (response.phase(other(targets).astype(int)) - targets)))).max() \
            <= other.max_phase_error_rad(response)
        with pytest.raises(ValueError, match="not one uniform turn"):
            InverseLUT.from_hdf5(f["slm/short/inverse_lut"], bit_depth=8)
        with pytest.raises(ValueError, match="10 bit, the panel has 8"):
            InverseLUT.from_hdf5(f["slm/slm1/inverse_lut"], bit_depth=8)


# ------------------------------------------------------------------------------------- DMD

def test_dmd_fill_fractions_are_exact_counts():
    layout = BlockLayout(1, 6, block_px=(20, 12), pitch_px=(20, 14), origin_px=(2, 3))
    enc = DMDEncoder(layout, (24, 90), name="input")
    x = np.array([0.0, 1.0, 0.5, 0.123, 0.999, 1 / 240])
    frame = enc.encode(x)
    assert frame.dtype == np.uint8 and set(np.unique(frame)) <= {0, 1}
    fill = enc.decode(frame)[0]
    np.testing.assert_array_equal(fill, np.rint(x * 240) / 240)
    assert np.all(np.abs(fill - x) <= 0.5 / 240 + 1e-15)
    # the batch form gives what each frame decodes to
    batch = np.stack([x, x[::-1]])
    np.testing.assert_array_equal(enc.realised_values(batch), np.stack([fill, enc.decode(enc.encode(x[::-1]))[0]]))
    # pixels outside the blocks stay off
    mask = np.zeros(frame.shape, bool)
    for j in range(6):
        mask[layout.active_slices(0, j)] = True
    assert frame[~mask].sum() == 0
    # other on/off levels give the same pattern
    enc2 = DMDEncoder(layout, (24, 90), on_level=255, off_level=10)
    np.testing.assert_array_equal(enc2.encode(x) == 255, frame == 1)


def test_dmd_pixels_spread_evenly():
    ranks = bayer_ranks((16, 16))
    assert sorted(ranks.ravel()) == list(range(256))
    for k in range(257):
        tiles = (ranks < k).reshape(4, 4, 4, 4).sum(axis=(1, 3))
        assert tiles.max() - tiles.min() <= 1, k
    ranks = bayer_ranks((12, 20))
    for k in range(241):
        tiles = (ranks < k).reshape(3, 4, 5, 4).mean(axis=(1, 3))
        assert np.abs(tiles - k / 240).max() <= 1 / 8, k


def test_dmd_errors():
    layout = BlockLayout(1, 3, block_px=(4, 4), pitch_px=(4, 4))
    enc = DMDEncoder(layout, (4, 12))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        enc.encode(np.array([0.2, 1.2, 0.3]))
    with pytest.raises(ValueError, match="shape"):
        enc.encode(np.array([0.2, 0.3]))
    with pytest.raises(ValueError, match="differ"):
        DMDEncoder(layout, (4, 12), on_level=1, off_level=1)


@pytest.mark.parametrize("dither", [False, True])
def test_amplitude_transfer_is_what_the_encoder_realises(dither):
    from hwio.encoding import amplitude_transfer
    layout = BlockLayout(3, 2, block_px=(8, 8), pitch_px=(10, 10), origin_px=(2, 2), guard_px=1)
    resp = PhaseResponse.power_law(8, 7.0, gamma=1.12)
    enc = PhaseEncoder(layout, (40, 30), resp.inverse(), dither=dither)
    edges, values = amplitude_transfer(enc, resp, 0.0)
    assert np.all(np.diff(edges) > 0) and values.size == edges.size + 1
    # any programmed amplitude, also right next to a step, realises the tabulated value
    rng = np.random.default_rng(4)
    a = rng.uniform(-1, 1, (40, 3, 2))
    a[0] = (edges[rng.integers(0, edges.size, (3, 2))] + rng.choice([-1, 1], (3, 2)) * 1e-9)
    got = np.array([realised_weights(enc.encode(ai, w_max=1.0), layout, resp, 1.0) for ai in a])
    np.testing.assert_allclose(got, values[np.searchsorted(edges, a, side="right")], atol=1e-12)
    # 8-bit LUT rounding: a staircase of steps of order the phase step, finer with more bits
    fine = np.linspace(-1, 1, 2001)
    err8 = np.sqrt(np.mean((values[np.searchsorted(edges, fine, side="right")] - fine) ** 2))
    resp12 = PhaseResponse.power_law(12, 7.0, gamma=1.12)
    e12, v12 = amplitude_transfer(PhaseEncoder(layout, (40, 30), resp12.inverse(), dither=dither), resp12, 0.0)
    err12 = np.sqrt(np.mean((v12[np.searchsorted(e12, fine, side="right")] - fine) ** 2))
    assert err12 < err8 / 8 and e12.size > 8 * edges.size
    if dither:
        # 6 active rows dithered over neighbouring levels: ~6x the steps, ~1/6 of the error
        plain = PhaseEncoder(layout, (40, 30), resp.inverse(), dither=False)
        e0, v0 = amplitude_transfer(plain, resp, 0.0)
        err0 = np.sqrt(np.mean((v0[np.searchsorted(e0, fine, side="right")] - fine) ** 2))
        assert edges.size > 5 * e0.size and err8 < err0 / 4
    else:
        assert 1e-3 < err8 < 0.02
    # fringing crosstalk loses amplitude at the block edges: full scale drops, sign kept
    ex, vx = amplitude_transfer(enc, resp, 0.6)
    assert 0.8 < vx[-1] < 0.97 and -0.97 < vx[0] < -0.8
    # ... and every step's value is the full-frame blur of that step's block, isolated
    np.testing.assert_array_equal(ex, edges)
    bounds = np.concatenate([[-1.0], edges, [1.0]])
    reps = 0.5 * (bounds[:-1] + bounds[1:])
    reps[0], reps[-1] = -1.0, 1.0
    pick = rng.choice(reps.size, 30, replace=False)
    single = BlockLayout(1, 1, block_px=(8, 8), pitch_px=(8, 8), origin_px=(12, 12), guard_px=1)
    one = PhaseEncoder(single, (32, 32), resp.inverse(), dither=dither)
    for i in pick:
        blurred = realised_weights(one.encode(np.array([[reps[i]]]), w_max=1.0), single, resp, 1.0, 0.6)
        assert blurred[0, 0] == pytest.approx(vx[i], abs=1e-12)


# ------------------------------------------------------------------ wavefront-correction maps
def reference_frame_with_map(layout, shape, lut, w, w_max, background, wavefront, reference=None, dither=True):
    """Pixel by pixel: every pixel's target phase plus the map, wrapped, through the LUT.

    Background pixels aim at +pi/2 / -pi/2 by panel parity (zero background) plus the map, or
    keep the fixed level; block pixels aim at s +- theta plus the map, dithered by rank as in
    :func:`reference_frame`.  Written without the encoder's tables.
    """
    vals = np.asarray(w, float)
    if layout.reference_col:
        ref = np.zeros(layout.n_rows) if reference is None else np.asarray(reference, float)
        vals = np.concatenate([vals, ref[:, None]], axis=1)
    frame = np.empty(shape, dtype=lut.level_dtype)
    a_max, phi0 = lut.double_phase.amplitude_max, lut.double_phase.phase_offset_rad
    for r in range(shape[0]):
        for c in range(shape[1]):
            if background == "zero":
                target = phi0 + (math.pi / 2 if (r + c) % 2 == 0 else -math.pi / 2) + wavefront[r, c]
                frame[r, c] = lut(np.array(target))
            else:
                frame[r, c] = background
    for i in range(layout.n_rows):
        for j in range(layout.n_block_cols):
            theta = math.acos(min(a_max * abs(vals[i, j]) / w_max, a_max))
            s = phi0 + (math.pi if vals[i, j] < 0 else 0.0)
            rs, cs = layout.active_slices(i, j)
            n_act, width = rs.stop - rs.start, cs.stop - cs.start
            n_pairs = (width + 1) // 2
            n_ranks = min(8, 2 * n_pairs)
            ranks = bayer_ranks((2, n_pairs)) * n_ranks // (2 * n_pairs)
            for a in range(n_act):
                for b in range(width):
                    r, c = rs.start + a, cs.start + b
                    phase = (s + theta if (a + b) % 2 == 0 else s - theta) + wavefront[r, c]
                    if dither and n_act > 1:
                        frame[r, c] = dithered_level(lut, phase, ranks[a % 2, b // 2], n_ranks)
                    else:
                        frame[r, c] = lut(np.array(phase))
    return frame


def smooth_map(shape, rng, amplitude=9.0):
    """A wavefront-like map (rad): tilt + curvature + small noise, spanning several turns."""
    rr, cc = np.indices(shape) / max(shape)
    return amplitude * (0.7 * rr - 0.4 * cc + (rr - 0.5) ** 2 + cc ** 2) + 0.05 * rng.standard_normal(shape)


@pytest.mark.parametrize("dither", [True, False])
@pytest.mark.parametrize("background", ["zero", 3])
@pytest.mark.parametrize("bits", [8, 10])
@pytest.mark.parametrize("case", range(len(LAYOUTS)))
def test_wavefront_map_matches_pixel_rule(bits, case, background, dither):
    layout, shape = LAYOUTS[case]
    lut = PhaseResponse.power_law(bits, 2.3 * math.pi, 1.3, -0.5).inverse()
    rng = np.random.default_rng(100 + case + bits)
    w = rng.standard_normal((layout.n_rows, layout.n_cols))
    ref = rng.standard_normal(layout.n_rows) if layout.reference_col else None
    w_max = 1.5 * max(np.abs(w).max(), 0 if ref is None else np.abs(ref).max())
    step = TWO_PI / (lut.n_bins * DITHER_SUBBINS)              # the documented map resolution
    # a map on the encoder's resolution: target + map exactly
    on_grid = np.rint(smooth_map(shape, rng) / step) * step
    enc = PhaseEncoder(layout, shape, lut, background=background, dither=dither, wavefront_rad=on_grid)
    got = enc.encode(w, w_max=w_max, reference=ref)
    np.testing.assert_array_equal(
        got, reference_frame_with_map(layout, shape, lut, w, w_max, background, on_grid, ref, dither))
    # any map: the same rule with the map rounded to that resolution
    anymap = rng.uniform(-8.0, 8.0, shape)
    enc = PhaseEncoder(layout, shape, lut, background=background, dither=dither, wavefront_rad=anymap)
    np.testing.assert_array_equal(
        enc.encode(w, w_max=w_max, reference=ref),
        reference_frame_with_map(layout, shape, lut, w, w_max, background, np.rint(anymap / step) * step,
                                 ref, dither))
    # a zero map, and a map of exactly one turn, give the frame without a map
    flat = PhaseEncoder(layout, shape, lut, background=background, dither=dither).encode(w, w_max=w_max, reference=ref)
    for m in (np.zeros(shape), np.full(shape, TWO_PI)):
        enc = PhaseEncoder(layout, shape, lut, background=background, dither=dither, wavefront_rad=m)
        out = np.full(shape, 5, dtype=lut.level_dtype)
        enc.encode(w, w_max=w_max, reference=ref, out=out)
        np.testing.assert_array_equal(out, flat)
        assert enc.last_w_max == w_max


@pytest.mark.parametrize("dither", [True, False])
@pytest.mark.parametrize("case", [0, 1])
def test_wavefront_map_matches_pixel_rule_below_two_pi(case, dither):
    """Short range: the map adds to the offset phase, the reduced amplitude and the background."""
    layout, shape = LAYOUTS[case]
    lut = PhaseResponse.power_law(8, 0.93 * TWO_PI, 1.2, -0.5).inverse()
    rng = np.random.default_rng(7 + case)
    w = rng.standard_normal((layout.n_rows, layout.n_cols))
    ref = rng.standard_normal(layout.n_rows) if layout.reference_col else None
    w_max = max(np.abs(w).max(), 0 if ref is None else np.abs(ref).max())
    step = TWO_PI / (lut.n_bins * DITHER_SUBBINS)
    on_grid = np.rint(smooth_map(shape, rng) / step) * step
    enc = PhaseEncoder(layout, shape, lut, dither=dither, wavefront_rad=on_grid)
    assert enc.amplitude_max < 1 and enc.phase_offset_rad != 0
    np.testing.assert_array_equal(enc.encode(w, w_max=w_max, reference=ref),
                                  reference_frame_with_map(layout, shape, lut, w, w_max, "zero", on_grid, ref, dither))


def test_wavefront_map_changes_frames_and_decodes_back():
    response = PhaseResponse.power_law(10, 2.2 * math.pi, 1.2, 0.3)
    lut = response.inverse()
    layout = BlockLayout(6, 5, block_px=(6, 8), pitch_px=(7, 9), origin_px=(2, 3), guard_px=1)
    shape = (48, 50)
    rng = np.random.default_rng(5)
    wf = smooth_map(shape, rng)
    w = rng.uniform(-1, 1, (6, 5))
    for dither in (False, True):
        enc = PhaseEncoder(layout, shape, lut, dither=dither, wavefront_rad=wf)
        flat = PhaseEncoder(layout, shape, lut, dither=dither)
        frame = enc.encode(w, w_max=1.0)
        assert np.mean(frame != flat.encode(w, w_max=1.0)) > 0.9
        # the panel adds its aberration (minus the map): the weights come back as on a flat panel
        err = np.abs(enc.decode(frame, response, w_max=1.0) - w)
        err_flat = np.abs(flat.decode(flat.encode(w, w_max=1.0), response, w_max=1.0) - w)
        assert err.max() <= lut.max_phase_error_rad(response) + 1e-9
        assert err.max() < 3 * err_flat.max() + 1e-3
        # levels_for: the flat panel's levels
        np.testing.assert_array_equal(enc.levels_for(w, 1.0)[0], flat.levels_for(w, 1.0)[0])
    assert enc.wavefront_rad.shape == shape and not enc.wavefront_rad.flags.writeable
    assert "wavefront=True" in repr(enc)


def test_wavefront_map_errors_are_one_line():
    lut = PhaseResponse.linear(8).inverse()
    layout = BlockLayout(2, 2, block_px=(4, 4), pitch_px=(4, 4))
    with pytest.raises(ValueError, match=r"slm1: wavefront map is 8x9 but the panel is 8x8 \(rows x cols\)"):
        PhaseEncoder(layout, (8, 8), lut, name="slm1", wavefront_rad=np.zeros((8, 9)))
    bad = np.zeros((8, 8))
    bad[2, 3] = np.nan
    bad[5, 5] = np.inf
    with pytest.raises(ValueError, match=r"2 non-finite value\(s\) \(first at row 2, col 3"):
        PhaseEncoder(layout, (8, 8), lut, name="slm1", wavefront_rad=bad)
    with pytest.raises(ValueError, match="must hold numbers"):
        PhaseEncoder(layout, (8, 8), lut, wavefront_rad=np.full((8, 8), "x"))
