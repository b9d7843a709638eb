"""What makes calibration scale: exact fast forms of the models (simulator panels, the crosstalk
model, batched least squares), one-hot probes that light many elements per step, the column-free
illumination fit, and the per-part cost record of ``optwin calibrate --json``."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from calibration.mvm_fit import _StackSolver
from calibration.procedures.mvm import ONEHOT_SPACING, mvm_plans
from calibration.crosstalk_fit import BlockBlurMeans
from calibration.illumination_fit import fit_column_free_illumination, fit_illumination
from hwio.bench import open_bench
from hwio.encoding import realised_weights
from hwio.response import PhaseResponse

WIDE = Path(__file__).resolve().parents[2] / "experiments" / "benches" / "sim_64_32_10.toml"


@pytest.mark.parametrize("bench_name", ["sim", "sim_alt", str(WIDE)])
def test_block_blur_means_is_realised_weights(bench_name):
    """The separable crosstalk model equals hwio.encoding.realised_weights (zero and first order)."""
    rng = np.random.default_rng(3)
    with open_bench(bench_name) as bench:
        for panel in ("slm1", "slm2", "probe_input"):
            lay, shape, bits = bench.layouts[panel], bench.slms[panel].shape, bench.slms[panel].bit_depth
            resp = PhaseResponse.linear(bits, 6.9)
            levels = rng.integers(0, 2 ** bits, shape)
            for period in (None, 4):
                means = BlockBlurMeans(lay, shape, period)
                field = np.exp(1j * resp.phase(levels))
                for sigma in (0.0, 0.45, 1.3):
                    ref = realised_weights(levels, lay, resp, 1.0, sigma, complex_field=True,
                                           first_order_period_px=period)
                    np.testing.assert_allclose(means(field, sigma), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("bench_name", ["sim", str(WIDE)])
def test_simulated_panel_operator_is_blur_then_block_mean(bench_name):
    """The simulator's sparse element operator gives the blur-then-mean fields exactly."""
    rng = np.random.default_rng(4)
    with open_bench(bench_name) as bench:
        for name, panel in bench._sim._panels.items():
            if name == "input":
                continue
            levels = rng.integers(0, len(panel.phase_table_rad), panel.shape)
            slow = panel.illumination * panel._sums.mean(panel.pixel_field(levels))
            np.testing.assert_allclose(panel.element_fields(levels), slow, rtol=0, atol=1e-13)


def test_onehot_probes_light_every_element_once_with_lit_rows_apart():
    n_in, n_h, n_out = 9, 17, 10
    plans = mvm_plans((n_in, n_h, n_out))
    for name, key, shape in (("mvm1", "A1", (n_h, n_in)), ("mvm2", "A2", (n_out, n_h))):
        hot = [st for st in plans[name] if st["kind"] == "onehot"]
        lit = sum(st[key] for st in hot)
        assert np.array_equal(lit, np.ones(shape)), name                # each element exactly once
        for st in hot:
            rows, cols = np.nonzero(st[key])
            assert np.unique(cols).size == 1                              # one column (input/hidden)
            assert np.all(np.diff(np.sort(rows)) >= min(ONEHOT_SPACING, shape[0])) or rows.size == 1
            if name == "mvm1":
                assert np.array_equal(np.flatnonzero(st["x"]), np.unique(cols))      # only its input on
            else:
                assert np.array_equal(np.flatnonzero(st["A1"].any(axis=1)), np.unique(cols))  # its neuron pumped
    hot = [st for st in plans["mvm2_backward"] if st["kind"] == "onehot"]
    assert len(hot) == n_out * n_out                  # every slm2 row with every probe output
    seen = {(int(np.flatnonzero(st["A2"].any(axis=1))[0]), int(np.flatnonzero(st["u"])[0])) for st in hot}
    assert seen == {(i, m) for i in range(n_out) for m in range(n_out)}
    assert all(st["A2"][st["A2"].any(axis=1)].all() for st in hot)     # the whole row lit
    # far fewer steps than one element at a time
    assert len([s for s in plans["mvm1"] if s["kind"] == "onehot"]) == n_in * ONEHOT_SPACING < n_in * n_h


def test_stack_solver_matches_lstsq_also_for_a_rank_deficient_row():
    rng = np.random.default_rng(5)
    d = rng.normal(size=(4, 40, 6))
    d[2, :, 5] = d[2, :, 4]                           # two equal columns: rank deficient
    t = rng.normal(size=(4, 40))
    got = _StackSolver(d)(t)
    for b in range(4):
        ref = np.linalg.lstsq(d[b], t[b], rcond=None)[0]
        np.testing.assert_allclose(d[b] @ got[b], d[b] @ ref, atol=1e-10)
        if b != 2:
            np.testing.assert_allclose(got[b], ref, atol=1e-10)


def test_column_free_illumination_separates_the_input_beam():
    """slm1 elements lit through their own inputs carry the input beam's profile per column: the
    row profile still gives the panel's waist, a plain 2-D fit does not."""
    rng = np.random.default_rng(6)
    nr, nc, waist, waist_in = 32, 64, 1.1, 1.5
    ys, xs = np.meshgrid((np.arange(nr) + 0.5) / nr, (np.arange(nc) + 0.5) / nc, indexing="ij")
    beam = np.exp(-((xs - 0.5) ** 2 + (ys - 0.49) ** 2) / waist ** 2)
    inputs = np.exp(-((xs - 0.5) / waist_in) ** 2)
    se = 0.004 * np.ones((nr, nc))
    amp = 3.0 * beam * inputs + se * rng.standard_normal((nr, nc))
    fit = fit_column_free_illumination(amp, xs, ys, se)
    q = fit.quantities["waist"]
    assert abs(q.value - waist) < 3 * q.stderr and q.stderr < 0.02
    assert abs(fit.quantities["y0"].value - 0.49) < 3 * fit.quantities["y0"].stderr
    plain = fit_illumination(amp, xs, ys, stderr=se).quantities["waist"]
    assert abs(plain.value - waist) > 10 * plain.stderr                     # biased by the input beam


def test_cli_json_reports_frames_bench_time_and_compute_time_per_part(sim_calibration_run):
    data = sim_calibration_run["json"]
    steps = data["steps"]
    assert list(steps) == data["parts"]
    with open_bench("sim") as bench:
        t_max = max(float(c.exposure_s) for c in bench.cameras.values())
        settle_max = max(float(s.settle_time_s) for s in bench.slms.values())
    for part, st in steps.items():
        assert st["frames"] > 0 and st["shows"] > 0, part
        assert st["bench_s"] == pytest.approx(st["settle_s"] + st["exposure_s"] + st["readout_s"], abs=2e-3)
        # exposures are the cameras' (the operating ones are chosen shorter or as long as 4 x)
        assert 1e-5 * st["frames"] <= st["exposure_s"] <= 4 * t_max * st["frames"] + 1e-3, part
        assert st["settle_s"] <= settle_max * st["frames"] + 1e-3, part
        # a simulated bench waits on a virtual clock: the wall time is all compute
        assert st["compute_s"] == pytest.approx(st["wall_s"], abs=1e-3) and st["compute_s"] > 0
        assert st["wall_s"] == pytest.approx(data["timings_s"][part], abs=1e-3)
    assert math.isfinite(sum(st["bench_s"] for st in steps.values()))
