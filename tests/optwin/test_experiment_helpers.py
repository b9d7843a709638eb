"""The building blocks of the README's experiments (experiments/*.py) do what their tables claim."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest


ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def sim_cal(sim_calibration_file):
    from optwin.workflows.from_calibration import load_calibration
    return load_calibration(sim_calibration_file)


def test_ablation_variants_are_the_calibrated_and_the_ideal_twin(sim_cal):
    from optwin.workflows.from_calibration import ideal_twin, twin_from_calibration
    abl = _load("imperfection_ablation")
    sizes = [2, 16, 2]
    x = np.random.default_rng(0).uniform(0, 1, (64, 2))
    full = twin_from_calibration(sim_cal, sizes, rule="exact", seed=3, init_scale=3.0)
    same = abl.variant_network(sim_cal, sizes, "calibrated", seed=3)
    np.testing.assert_array_equal(full.forward(x, rng=np.random.default_rng(1)).output,
                                  same.forward(x, rng=np.random.default_rng(1)).output)
    ideal = ideal_twin(sim_cal, sizes, rule="exact", seed=3, init_scale=3.0, absorber="calibrated")
    perfect = abl.variant_network(sim_cal, sizes, "perfect_mvms", seed=3)
    np.testing.assert_allclose(perfect.forward(x).output, ideal.forward(x).output, rtol=1e-12, atol=1e-12)
    # removing the gain map alone changes the outputs (same noise draws) by what the gain map does
    no_gain = abl.variant_network(sim_cal, sizes, "no_gain_map", seed=3)
    diff = (no_gain.forward(x, rng=np.random.default_rng(1)).output
            - full.forward(x, rng=np.random.default_rng(1)).output)
    assert np.abs(diff).max() > 1e-3
    assert no_gain.layers[0].imperfections.crosstalk is not None     # the rest stays


def test_bench_mode_runs_merge_only_when_just_the_seeds_differ(tmp_path):
    import json
    bm = _load("bench_modes")
    settings = {"benches": "sim", "tasks": "xor", "seeds": "0", "target": 0.3}

    def run(seed, ideal, **changes):
        path = tmp_path / f"run{seed}{len(changes)}.json"
        row = {"bench": "sim", "task": "xor", "seed": seed, "ideal": ideal, "optical_from_calibrated": ideal - 0.1}
        path.write_text(json.dumps({"settings": dict(settings, seeds=str(seed), **changes), "rows": [row],
                                    "seconds": 10.0}))
        return str(path)

    out = str(tmp_path / "joined")
    bm.merge_runs([run(0, 0.9), run(1, 0.8)], out)
    joined = json.loads(Path(out + ".json").read_text())
    assert joined["settings"]["seeds"] == "0,1" and len(joined["rows"]) == 2 and joined["seconds"] == 20.0
    assert "| sim | xor | mean of 2 | 0.850 | 0.750 |" in Path(out + ".md").read_text()
    with pytest.raises(ValueError, match="target"):
        bm.merge_runs([run(0, 0.9), run(1, 0.8, target=1.0)], out)


@pytest.mark.parametrize("argv, message", [
    (["--restarts", "2", "--val-fraction", "0"], "--val-fraction"),
    (["--bench-runs", "optical,electronic"], "electronic"),
])
def test_bench_modes_refuses_bad_settings_before_running(argv, message, capsys):
    bm = _load("bench_modes")
    with pytest.raises(SystemExit) as exc:
        bm.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_hot_cell_stress_bench_opens():
    """experiments/benches/sim_alt_hot.toml (docs/files.md, Calibration file) stays a valid bench."""
    from hwio.bench import open_bench
    with open_bench(str(ROOT / "experiments" / "benches" / "sim_alt_hot.toml")) as bench:
        assert tuple(bench.sizes) == (2, 16, 3) and bench.name == "sim_alt_hot"
