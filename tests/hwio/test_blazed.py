"""First-order (blazed-grating) amplitude encoding: encoder against a pixel-by-pixel grating, the
simulated first-order optics against the analytic sinc, and the calibration's first-order models."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import brentq, minimize_scalar

from calibration.crosstalk_fit import model_ratios
from calibration.deploy import DeployError, phase_encoder
from calibration.interference_fit import circle_phases
from calibration.quantities import Fit
from hwio.bench import open_bench
from hwio.blazed import DEPTH_STEPS
from hwio.dither import DITHER_SUBBINS
from hwio.encoding import BlazedEncoder, PhaseEncoder, amplitude_transfer, realised_weights
from hwio.layout import BlockLayout
from hwio.response import DoublePhaseRange, PhaseResponse
from hwio.sim.first_order import FirstOrderPanel
from hwio.sim.testing import open_with, truth_of

TWO_PI = 2 * math.pi
BLAZED_BENCH = str(Path(__file__).resolve().parents[2] / "experiments" / "benches" / "sim_blazed.toml")


def grating_phase(w, w_max, X, period, amplitude_max=1.0, centre=0.0, offset=0.0):
    """Target phase of the pixel in panel column X of a block showing w, written out from the grating's definition.

    Depth M from sinc(1 - M) = A_max |w| / w_max (amplitude to 1 / 2**16; root-found, not
    tabulated), resolved to 1 / DEPTH_STEPS; sign in the offset; sawtooth values sampled half a
    pixel off the carrier where needed so they are symmetric.  Also whether M lies within 1e-3 of a step's rounding edge (the
    encoder's table may round it the other way).
    """
    a = round(amplitude_max * abs(w) / w_max * 2 ** 16) / 2 ** 16        # amplitudes resolved to 1 / 2**16
    x = 0.0 if a >= 1 else (1.0 if a <= 0 else brentq(lambda t: np.sinc(t) - a, 0.0, 1.0, xtol=1e-14))
    edge = abs((1.0 - x) * DEPTH_STEPS % 1.0 - 0.5) < 1e-3
    m = round((1.0 - x) * DEPTH_STEPS) / DEPTH_STEPS
    negative = w < 0
    d = 0.5 if (negative or period % 2 == 0) else 0.0
    # a wavefront offset: the pixel phase (full range) or a whole-pixel shift + the rest (short range)
    q = round(offset * period / TWO_PI) if amplitude_max < 1 else 0
    turn = (X + q + d) / period + (0.5 if negative else 0.0)
    u = (turn + 0.5) % 1.0 - 0.5
    return m * TWO_PI * u + centre - TWO_PI * d / period + (offset - TWO_PI * q / period), edge


def pixel_by_pixel(w, w_max, layout, shape, lut, period, wavefront=None, amplitude_max=1.0, centre=0.0):
    """The frame, one pixel at a time; also each pixel's distance (in grid bins) from a LUT bin edge."""
    frame = np.empty(shape, dtype=np.int64)
    margin = np.full(shape, np.inf)
    g = layout.guard_px
    bh, bw = layout.block_px[0] - 2 * g, layout.block_px[1] - 2 * g
    owner = {}
    for i in range(layout.n_rows):
        for j in range(layout.n_cols):
            for a in range(bh):
                for b in range(bw):
                    owner[(layout.origin_px[0] + g + i * layout.pitch_px[0] + a,
                           layout.origin_px[1] + g + j * layout.pitch_px[1] + b)] = (i, j)
    step = 1.0 / (lut.bins_per_rad * DITHER_SUBBINS)        # a full-range panel takes the map in these steps
    for r in range(shape[0]):
        for c in range(shape[1]):
            m = 0.0 if wavefront is None else float(wavefront[r, c])
            if amplitude_max == 1.0:
                m = round(m / step) * step
            edge = False
            if (r, c) in owner:
                phase, edge = grating_phase(w[owner[(r, c)]], w_max, c, period, amplitude_max, centre, offset=m)
            else:       # a short range keeps its background off the map
                phase = centre + (math.pi / 2 if (r + c) % 2 == 0 else -math.pi / 2)
                phase += m if amplitude_max == 1 else 0.0
            y = (phase - lut.phase_min_rad) * lut.bins_per_rad + 0.5
            frame[r, c] = lut.levels[int(math.floor(y)) % lut.n_bins]
            margin[r, c] = 0.0 if edge else abs(y - round(y))
    return frame, margin


@pytest.mark.parametrize("period", [10, 7])
def test_frame_is_the_pixel_by_pixel_grating(period):
    resp = PhaseResponse.power_law(8, 7.0, 1.12, name="slm")
    lut = resp.inverse()
    lay = BlockLayout(3, 4, block_px=(5, 2 * period + 3), pitch_px=(7, 2 * period + 5), origin_px=(1, 3), guard_px=1)
    # period 7: the panel ends at the last block (the encoder's other row-building path)
    shape = (23, 4 * (2 * period + 5) + 6) if period == 10 else (23, 3 + 3 * (2 * period + 5) + 2 * period + 3)
    enc = BlazedEncoder(lay, shape, lut, period)
    w = np.array([[0.0, 0.9, -0.9, 0.31], [-0.05, 1.0, -1.0, 0.5], [0.73, -0.21, 0.12, -0.66]])
    frame = enc.encode(w, w_max=1.0)
    ref, margin = pixel_by_pixel(w, 1.0, lay, shape, lut, period)
    clean = margin > 1e-6            # a pixel exactly on a LUT bin edge may round either way
    assert clean.mean() > 0.99
    np.testing.assert_array_equal(frame[clean], ref[clean])
    # w_max scales: half the weights at w_max 0.5 give the same frame
    np.testing.assert_array_equal(enc.encode(0.5 * w, w_max=0.5), frame)
    assert enc.last_w_max == 0.5


def test_wavefront_map_goes_into_the_grating_offset():
    resp = PhaseResponse.linear(10, TWO_PI, name="slm")
    lut = resp.inverse()
    lay = BlockLayout(2, 2, block_px=(4, 22), pitch_px=(6, 24), origin_px=(2, 1), guard_px=1)
    shape = (14, 52)
    rng = np.random.default_rng(3)
    wf = 9.0 * rng.random(shape)
    enc = BlazedEncoder(lay, shape, lut, 10, wavefront_rad=wf)
    w = np.array([[0.4, -0.8], [-0.15, 0.95]])
    frame = enc.encode(w, w_max=1.0)
    ref, margin = pixel_by_pixel(w, 1.0, lay, shape, lut, 10, wavefront=wf)
    clean = margin > 1e-6
    np.testing.assert_array_equal(frame[clean], ref[clean])
    # a smooth map (several turns over the panel) cancels the panel's aberration (minus the map) in
    # the first order, up to the resampling of the sawtooth
    rr, cc = np.indices(shape)
    smooth = 2.0 + 3.0 * (rr / shape[0]) ** 2 + 1.5 * cc / shape[1]     # ~0.03 rad/px, as flatness maps
    enc = BlazedEncoder(lay, shape, lut, 10, wavefront_rad=smooth)
    got = enc.decode(enc.encode(w, w_max=1.0), resp, complex_field=True)
    flat = BlazedEncoder(lay, shape, lut, 10)
    want = flat.decode(flat.encode(w, w_max=1.0), resp, complex_field=True)
    np.testing.assert_allclose(got, want, atol=0.03)
    # without the map the aberration scrambles the blocks
    bare = flat.encode(w, w_max=1.0)
    aberrated = realised_weights(bare, lay, resp, complex_field=True, wavefront_rad=smooth, first_order_period_px=10)
    assert np.max(np.abs(aberrated - want)) > 0.3


def test_short_range_reduces_the_amplitude_range():
    dp = DoublePhaseRange(gap_centre_rad=2.0, gap_width_rad=0.07 * TWO_PI)
    resp = PhaseResponse.linear(12, TWO_PI, name="slm")
    lut = resp.inverse()
    lay = BlockLayout(1, 3, block_px=(4, 20), pitch_px=(4, 20), origin_px=(0, 0))
    enc = BlazedEncoder(lay, (4, 60), lut, 10, double_phase=dp)
    assert enc.amplitude_max == pytest.approx(np.sinc(0.07 + 1 / 10))
    assert enc.phase_offset_rad == pytest.approx(2.0 - math.pi)
    w = np.array([[1.0, -0.5, 0.2]])
    frame = enc.encode(w, w_max=1.0)
    ref, margin = pixel_by_pixel(w, 1.0, lay, (4, 60), lut, 10, amplitude_max=enc.amplitude_max,
                                 centre=enc.phase_offset_rad)
    clean = margin > 1e-6
    np.testing.assert_array_equal(frame[clean], ref[clean])
    # no pixel phase in the gap: every realised phase lies within the sawtooth around the offset
    ph = np.angle(np.exp(1j * (resp.phase(frame) - enc.phase_offset_rad)))
    assert np.max(np.abs(ph)) <= math.pi * (1 - 0.07) + 2 * lut.bin_width_rad
    # with a wavefront map: whole-pixel shifts of the grating plus the rest in the pixel phase
    wf = 3.0 + 0.8 * np.random.default_rng(5).random((4, 60))
    mapped = BlazedEncoder(lay, (4, 60), lut, 10, double_phase=dp, wavefront_rad=wf)
    assert mapped.amplitude_max == pytest.approx(np.sinc(0.07 + 2 / 10))
    ref, margin = pixel_by_pixel(w, 1.0, lay, (4, 60), lut, 10, wavefront=wf, amplitude_max=mapped.amplitude_max,
                                 centre=mapped.phase_offset_rad)
    got = mapped.encode(w, w_max=1.0)
    np.testing.assert_array_equal(got[margin > 1e-6], ref[margin > 1e-6])
    ph = np.angle(np.exp(1j * (resp.phase(got) - mapped.phase_offset_rad)))
    assert np.max(np.abs(ph)) <= math.pi * (1 - 0.07) + 2 * lut.bin_width_rad
    # the first order: amplitude_max x w along exp(i C), up to the sampled sinc (< 1 %)
    field = enc.decode(frame, resp, complex_field=True) * np.exp(-1j * enc.phase_offset_rad)
    np.testing.assert_allclose(field.real, enc.amplitude_max * w, atol=0.01)
    np.testing.assert_allclose(field.imag, 0.0, atol=0.01)


def test_bad_settings_raise_one_line_errors():
    lut = PhaseResponse.linear(8).inverse()
    lay = BlockLayout(1, 1, block_px=(4, 20), pitch_px=(4, 20), origin_px=(0, 0))
    with pytest.raises(ValueError, match="grating_period_px must be a whole number"):
        BlazedEncoder(lay, (4, 20), lut, 2)
    with pytest.raises(ValueError, match="grating_period_px must be a whole number"):
        BlazedEncoder(lay, (4, 20), lut, 9.5)
    enc = BlazedEncoder(lay, (4, 20), lut, 10)
    with pytest.raises(ValueError, match="raise w_max"):
        enc.encode(np.array([[2.0]]), w_max=1.0)


def test_bench_file_selects_the_encoding(tmp_path):
    bench = open_bench(BLAZED_BENCH)
    assert bench.config["devices"]["slm1"]["encoding"] == "blazed"
    assert bench.config["devices"]["slm1"]["grating_period_px"] == 10
    assert "encoding" not in bench.config["devices"]["probe_input"]
    enc, source = phase_encoder({}, bench, "slm1", fallback_lut=PhaseResponse.linear(8).inverse())
    assert isinstance(enc, BlazedEncoder) and "blazed" in source
    enc, _ = phase_encoder({}, bench, "probe_input", fallback_lut=PhaseResponse.linear(8).inverse())
    assert isinstance(enc, PhaseEncoder)
    text = Path(BLAZED_BENCH).read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('encoding = "blazed"        #', 'encoding = "blazd"        #', 1))
    with pytest.raises(ValueError, match=r"\[devices.slm1\].encoding"):
        open_bench(bad)
    bad.write_text(text.replace('encoding = "blazed"        #', 'encoding = "double_phase"        #', 1))
    with pytest.raises(ValueError, match="only for encoding = 'blazed'"):
        open_bench(bad)
    # a calibration made with double-phase cannot drive the blazed panel
    lut = PhaseResponse.linear(8).inverse()
    fit = Fit(name="slm", model="test", arrays={"inverse_lut": lut.levels.astype(np.int64),
                                                "inverse_lut_phase_rad": lut.phase_min_rad
                                                + np.arange(lut.n_bins) * lut.bin_width_rad,
                                                "amplitude_transfer": np.array([-1.0, 1.0]),
                                                "amplitude_transfer_edges": np.array([0.0])},
              info={"bit_depth": 8, "encoder_dither": True})
    with pytest.raises(DeployError, match="made with double_phase encoding"):
        phase_encoder({"slm": fit}, bench, "slm1")
    fit.info.update(encoding="blazed", grating_period_px=10)
    enc, _ = phase_encoder({"slm": fit}, bench, "slm1")
    assert isinstance(enc, BlazedEncoder) and enc.grating_period_px == 10


@pytest.mark.parametrize("period", [10, 64])
def test_simulated_first_order_is_the_sinc_of_the_depth(period):
    """Ideal panel (16-bit linear 2 pi, no crosstalk): the first order of the sampled grating is
    sin(pi x) / (P sin(pi x / P)) with x = 1 - M, which tends to sinc(x) as the period grows."""
    resp = PhaseResponse.linear(16, TWO_PI, name="slm")
    lut = resp.inverse()
    n = 21
    lay = BlockLayout(n, 1, block_px=(2, 2 * period), pitch_px=(2, 2 * period), origin_px=(0, 3 * period))
    shape = (2 * n, 5 * period)
    enc = BlazedEncoder(lay, shape, lut, period)
    w = np.linspace(-1.0, 1.0, n)[:, None]
    frame = enc.encode(w, w_max=1.0)
    panel = FirstOrderPanel("slm", shape, resp.phase_rad, 0.0, lay, np.ones((n, 1)), period)
    field = panel.element_fields(frame)[:, 0]
    x = np.array([brentq(lambda t, a=a: np.sinc(t) - a, 0, 1) if 0 < a < 1 else (0.0 if a >= 1 else 1.0)
                  for a in np.abs(w[:, 0])])          # 1 - M
    sampled = np.where(x > 0, np.sin(np.pi * x) / (period * np.sin(np.pi * np.maximum(x, 1e-12) / period)), 1.0)
    sampled = np.where(x >= 1, 0.0, sampled)
    np.testing.assert_allclose(field.real, np.sign(w[:, 0]) * sampled, atol=2e-4)
    np.testing.assert_allclose(field.imag, 0.0, atol=2e-4)
    # vs the textbook sinc: pixelation costs up to (pi x / P)^2 / 6 relative
    tol = (math.pi / period) ** 2 / 6 + 2e-4
    np.testing.assert_allclose(np.abs(field.real), np.abs(w[:, 0]), atol=tol)


def test_realised_transfer_is_what_the_simulator_renders():
    """The twin's transfer table (amplitude_transfer, LUT + crosstalk, isolated blocks) against
    the simulator's first-order fields of the blazed bench, with its hidden truth."""
    bench = open_with(BLAZED_BENCH, {"truth": {"faults": None}})
    truth = truth_of(bench)
    resp = PhaseResponse(truth.realised["phase_table_rad"]["slm1"], name="slm1")
    sigma = truth.slms["slm1"].crosstalk_px
    enc = BlazedEncoder(bench.layouts["slm1"], bench.slms["slm1"].shape, resp.inverse(), 10)
    edges, values = amplitude_transfer(enc, resp, sigma)
    assert np.all(np.diff(edges) > 0) and values.size == edges.size + 1
    w = np.random.default_rng(7).uniform(-1, 1, (16, 2))
    bench.slms["slm1"].show(enc.encode(w, w_max=1.0))
    field = bench._sim._elements("slm1") / truth.realised["illumination"]["slm1"]
    table = values[np.searchsorted(edges, w, side="right")]
    # neighbours leak a little through the blur; isolated blocks are the table's model
    np.testing.assert_allclose(field.real, table, atol=3e-3)
    # the realised transfer is not the textbook one: the fringing loss is a few per cent
    assert 0.8 < values[-1] < 0.97


def test_calibration_models_recover_phase_law_and_crosstalk():
    """First-order calibration on the simulator's element fields (no cameras): the two-level
    grating sweep traces circles whose phases are the true phase law, and the crosstalk patterns
    fitted with the first-order model give the true crosstalk."""
    bench = open_with(BLAZED_BENCH, {"truth": {"faults": None}})
    truth = truth_of(bench)
    table = truth.realised["phase_table_rad"]["slm2"]
    resp = PhaseResponse(table, name="slm2")
    eng, slm = bench._sim, bench.slms["slm2"]
    enc = BlazedEncoder(bench.layouts["slm2"], slm.shape, resp.inverse(), 10)

    def fields(frame):
        slm.show(frame)
        return eng._elements("slm2")[:, :bench.layouts["slm2"].n_cols].ravel()

    levels = np.arange(0, 256, 5)
    sweep = np.array([fields(enc.two_level_frame(int(g))) for g in levels])
    phase, _, _ = circle_phases(sweep, levels)
    np.testing.assert_allclose(phase, table[levels] - table[0], atol=2e-3)
    pats, uniform = enc.crosstalk_patterns()
    zero = enc.encode(np.zeros((2, 16)), w_max=1.0)
    ez, eu = fields(zero), fields(uniform)
    meas = {k: np.mean((fields(v) - ez) / (eu - ez)) for k, v in pats.items()}
    lay = bench.layouts["slm2"]

    def cost(s):
        mod = model_ratios(pats, uniform, zero, lay, resp, s, 10)
        return sum(abs(meas[k] - mod[k]) ** 2 for k in pats)

    sigma = minimize_scalar(cost, bounds=(0.0, 2.0), method="bounded", options={"xatol": 1e-5}).x
    assert sigma == pytest.approx(truth.slms["slm2"].crosstalk_px, abs=0.01)
    # the patterns are sensitive: a sigma off by 0.1 px misfits
    assert cost(sigma + 0.1) > 100 * cost(sigma) + 1e-8
