"""``optwin push``: trained weights -> level frames on the simulated bench's weight SLMs."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

try:
    from hwio.bench import open_bench
    from hwio.sim.slm_physics import PhasePanel
    from hwio.sim.testing import truth_of
except ImportError as exc:  # pragma: no cover - depends on the other engineers' progress
    pytest.skip(f"the simulated bench is not available ({exc}); push needs hwio.bench and hwio.sim",
                allow_module_level=True)

from hwio.encoding import PhaseEncoder, realised_weights
from hwio.response import PhaseResponse
from optwin.cli import main
from optwin.commands.push import LAYER_SLMS, load_luts, push_weights
from optwin.runfile import save_run


@pytest.fixture(scope="module")
def bench():
    b = open_bench("sim")
    yield b
    b.close()


def make_weights(bench, seed=0, extra_cols=0):
    rng = np.random.default_rng(seed)
    s = bench.sizes
    return [rng.normal(0, 1, (s.n_hidden, s.n_in + extra_cols)), rng.normal(0, 1, (s.n_out, s.n_hidden))]


def write_run(path, weights):
    save_run(path, weights, {"task": "moons"}, {"epoch": np.arange(1)})
    return path


def write_truth_cal(path, bench, names=LAYER_SLMS):
    """A calibration file holding the inverse of the bench's true phase response (a perfect calibration)."""
    truth = truth_of(bench)
    with h5py.File(path, "w") as f:
        for name in names:
            table = truth.realised["phase_table_rad"][name]
            PhaseResponse(table, name=name).inverse().to_hdf5(f.create_group(f"slm/{name}"))
    return path


def test_push_realises_the_weights_through_the_true_panel_physics(bench, tmp_path):
    weights = make_weights(bench)
    luts, warnings = load_luts(write_truth_cal(tmp_path / "cal.h5", bench), bench.slms)
    assert warnings == []
    reports = push_weights(bench, weights, luts)
    truth = truth_of(bench)
    for k, (name, rep) in enumerate(zip(LAYER_SLMS, reports)):
        slm, layout = bench.slms[name], bench.layouts[name]
        levels = slm.last_levels
        assert levels is not None and levels.shape == slm.shape
        w_max = rep["w_max"]
        assert w_max == pytest.approx(np.abs(weights[k]).max())
        true_resp = PhaseResponse(truth.realised["phase_table_rad"][name], name=name)
        # without crosstalk the panel realises W / w_max up to the LUT's quantisation bound
        ideal_field = realised_weights(levels, layout, true_resp) / 1.0
        bound = luts[name][0].max_phase_error_rad(true_resp)
        assert np.abs(ideal_field - weights[k] / w_max).max() <= bound + 1e-12
        # the pushed frame dithers between neighbouring levels: its rms error is well below a
        # plain (nearest-level) encode's
        plain = PhaseEncoder(layout, slm.shape, luts[name][0], dither=False).encode(weights[k], w_max=w_max)
        rms_plain = np.sqrt(np.mean((realised_weights(plain, layout, true_resp) - weights[k] / w_max) ** 2))
        rms = np.sqrt(np.mean((ideal_field - weights[k] / w_max) ** 2))
        assert rep["dither_ranks"] > 1 and rms < rms_plain / 2
        # the twin's model (blur + block mean) times illumination equals the simulator's panel physics
        crosstalk = truth.slms[name].crosstalk_px
        illum = truth.realised["illumination"][name]
        panel = PhasePanel(name, slm.shape, true_resp.phase_rad, crosstalk, layout, illum)
        model = realised_weights(levels, layout, true_resp, crosstalk_px=crosstalk, complex_field=True)
        np.testing.assert_allclose(model * illum, panel.element_fields(levels), atol=1e-12)
        # crosstalk shrinks the realised amplitude but keeps every sign the LUT can resolve (a weight
        # smaller than the quantisation bound may already come out with either sign without crosstalk)
        resolved = np.abs(weights[k] / w_max) > 2 * bound
        assert resolved.mean() > 0.8
        assert np.all(np.sign(model.real[resolved]) == np.sign(weights[k][resolved]))
        assert np.abs(model.real).sum() < np.abs(weights[k] / w_max).sum()


def test_ideal_response_misencodes_on_the_sim_panel(bench):
    """Without calibration the true response (range 7 rad, gamma > 1) distorts the weights well beyond
    quantisation: what the warning says."""
    weights = make_weights(bench, seed=1)
    luts, warnings = load_luts(None, bench.slms)
    assert len(warnings) == 1 and "ideal" in warnings[0]
    push_weights(bench, weights, luts)
    truth = truth_of(bench)
    name = "slm1"
    true_resp = PhaseResponse(truth.realised["phase_table_rad"][name])
    field = realised_weights(bench.slms[name].last_levels, bench.layouts[name], true_resp)
    w = weights[0] / np.abs(weights[0]).max()
    bound = PhaseResponse(truth.realised["phase_table_rad"][name]).inverse().max_phase_error_rad(true_resp)
    assert np.abs(field - w).max() > 5 * bound


def test_cli_json_reports_what_was_shown(tmp_path, capsys):
    s = open_bench("sim")
    weights = make_weights(s, seed=2)
    cal = write_truth_cal(tmp_path / "cal.h5", s)
    s.close()
    run = write_run(tmp_path / "run.h5", weights)
    assert main(["push", "--bench", "sim", "--weights", str(run), "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert "warning" in err and "--cal" in err
    assert result["warnings"] and result["cal"] is None and result["bench"] == "sim"
    assert [r["slm"] for r in result["slms"]] == ["slm1", "slm2"]
    for k, r in enumerate(result["slms"]):
        assert r["weights_shape"] == list(weights[k].shape)
        assert r["w_max"] == pytest.approx(np.abs(weights[k]).max())
        assert 0 <= r["levels_min"] <= r["levels_max"] <= 255
    assert main(["push", "--bench", "sim", "--weights", str(run), "--cal", str(cal), "--w-max", "5",
                 "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["warnings"] == [] and "warning" not in err
    assert all(r["w_max"] == 5.0 and r["lut"].endswith(f"/slm/{r['slm']}/inverse_lut") for r in result["slms"])
    assert main(["push", "--bench", "sim", "--weights", str(run), "--cal", str(cal)]) == 0
    out, _ = capsys.readouterr()
    assert "slm1 <- /weights/layer0" in out and "w_max" in out


def test_cli_errors(tmp_path, capsys):
    s = open_bench("sim")
    good = make_weights(s)
    sizes = s.sizes
    s.close()
    run = write_run(tmp_path / "run.h5", good)
    wide = write_run(tmp_path / "wide.h5", make_weights(s, extra_cols=1))
    three = write_run(tmp_path / "three.h5", good + [np.ones((2, 2))])
    partial_cal = tmp_path / "partial.h5"
    with h5py.File(partial_cal, "w") as f:
        PhaseResponse.linear(8).inverse().to_hdf5(f.create_group("slm/slm1"))
    cases = [
        (["--weights", str(wide)], f"is {sizes.n_hidden}x{sizes.n_in + 1} (n_out x n_in) but slm1 of bench 'sim' "
                                   f"holds {sizes.n_hidden}x{sizes.n_in}; train with "
                                   f"--layers {sizes.n_in},{sizes.n_hidden},{sizes.n_out}"),
        (["--weights", str(three)], "has 3 weight layer(s)"),
        (["--weights", str(run), "--cal", str(partial_cal)], "no /slm/slm2/inverse_lut"),
        (["--weights", str(run), "--cal", str(tmp_path / "none.h5")], "no such calibration file"),
        (["--weights", str(run), "--w-max", "0.1"], "raise w_max"),
        (["--weights", str(run), "--w-max", "-1"], "--w-max must be"),
        (["--weights", str(tmp_path / "missing.h5")], "no such run file"),
    ]
    for extra, message in cases:
        assert main(["push", "--bench", "sim"] + extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err, (extra, err)
        assert err.strip().splitlines()[-1].startswith("optwin push: error:")
    assert main(["push", "--bench", "no_such_bench", "--weights", str(run)]) == 2
    assert "not found" in capsys.readouterr().err
