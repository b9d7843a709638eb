"""Figures and page of the twin-vs-bench report: labelled axes, colour bar, accuracies, separate
twin and bench training panels, a noise floor per MVM, no 'nan' for the ideal computer."""
import numpy as np
import pytest

import optwin.workflows.compare_plots as cp
from twin.tasks import load_task
from twin.training import History


@pytest.fixture()
def saved(monkeypatch):
    figs, bars = [], []
    orig = cp._save

    def save(fig, path):
        figs.append([(ax.get_title(), ax.get_xlabel(), ax.get_ylabel(),
                      max((float(np.max(ln.get_xdata())) for ln in ax.lines if len(ln.get_xdata())), default=0.0))
                     for ax in fig.axes if ax.axison and (ax.lines or ax.images or ax.collections)
                     and ax.get_label() != "<colorbar>"])
        bars.extend(ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>")
        return orig(fig, path)
    monkeypatch.setattr(cp, "_save", save)
    return figs, bars


def _history(n, start):
    h = History()
    for e in range(n):
        h.append(epoch=e + 1, train_loss=start / (e + 1), test_accuracy=0.5 + 0.4 * e / max(n - 1, 1))
    return h


def test_decision_maps_and_curves(tmp_path, saved):
    task = load_task("moons", seed=0, n_samples=80).with_outputs(2)
    axis = np.linspace(0, 1, 9)
    m = np.subtract.outer(axis, axis)
    maps = {"ideal": {"twin": (axis, m)}, "optical (fine-tune)": {"twin": (axis, m), "bench": (axis, -m)}}
    acc = {"ideal": {"twin_accuracy": 0.91}, "optical (fine-tune)": {"twin_accuracy": 0.9, "bench_accuracy": 0.87}}
    cp.plot_decision_maps(maps, task, tmp_path / "d.png", accuracy=acc)
    hist = {"moons: ideal": _history(200, 1.0), "moons: insilico (calibrated twin)": _history(200, 2.0),
            "moons: optical (fine-tune)": _history(10, 0.1), "moons: hybrid (fine-tune)": _history(10, 0.2)}
    cp.plot_training_curves(hist, tmp_path / "c.png")
    (maps_axes, curve_axes), bars = saved
    assert bars == ["output 1 - output 0 (twin field units)"]
    titles = [t for t, *_ in maps_axes]
    assert any("accuracy 0.870" in t for t in titles) and any("accuracy 0.910" in t for t in titles)
    assert all(x.startswith("input x1") and y.startswith("input x2") for _, x, y, _ in maps_axes
               if y) and all(x for _, x, _, _ in maps_axes)
    # twin-trained (200 epochs) and bench-trained (10 epochs) curves never share a panel
    assert sorted(last for *_, last in curve_axes) == [10, 10, 200, 200]
    assert all(x == "epoch" and y for _, x, y, _ in curve_axes)


def test_page_has_a_noise_floor_per_mvm_and_no_nan(tmp_path):
    stats = {k: {"total_nrmse": t, "systematic_nrmse": 0.01, "shot_to_shot_nrmse": f, "noise_floor_nrmse": f}
             for k, t, f in (("mvm1", 0.011, 0.010), ("mvm2_forward", 0.02, 0.019), ("mvm2_backward", 0.063, 0.062))}
    summary = {"mvm1_nrmse": 0.011, "noise_floor_nrmse": 0.062, "activation_rmse": 0.013,
               "noise_floor_nrmse_per_mvm": {k: s["noise_floor_nrmse"] for k, s in stats.items()}}
    table = cp.results_table_html({"moons": {"ideal": {"twin_accuracy": 0.9, "bench_accuracy": float("nan"),
                                                       "seconds": 1.0},
                                             "optical (fine-tune)": {"twin_accuracy": 0.9, "bench_accuracy": 0.91,
                                                                     "seconds": 60.0}}})
    text = cp.write_compare_report(tmp_path, summary, [], table, stats=stats).read_text()
    for key, floor in (("layer 1 forward", "0.0100"), ("layer 2 forward", "0.0190"), ("layer 2 backward", "0.0620")):
        row = text[text.index(key):].split("</tr>")[0]
        assert floor in row, row
    assert "nan" not in text.lower() and "noise floor" in text and "twin field units" in text.lower()
    assert "mvm2_forward_nrmse" not in text            # readable names, not raw keys


def test_counting_error_is_the_binomial_standard_error():
    """sqrt(p(1-p)/n) against a simulated spread of test accuracies; a perfect score still has an error."""
    rng = np.random.default_rng(3)
    p, n = 0.97, 375
    spread = np.std(rng.binomial(n, p, 20000) / n)
    assert abs(cp.counting_error(p, n) / spread - 1) < 0.03
    assert 0 < cp.counting_error(1.0, n) < 0.003
    assert np.isnan(cp.counting_error(float("nan"), n)) and np.isnan(cp.counting_error(0.9, None))
    table = cp.results_table_html({"xor": {"optical": {"twin_accuracy": 0.96, "bench_accuracy": 0.98,
                                                       "seconds": 1.0, "n_test": 375}}})
    assert "0.980 &plusmn; 0.007" in table and "<td>375</td>" in table
