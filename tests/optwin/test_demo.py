"""The main job end to end (shortened): calibrate, twin, train every mode, compare, report."""
import json

from optwin.workflows.demo import run_demo


def _refuse(name):
    raise ValueError(f"results.json is not strict JSON: {name}")


def test_demo_end_to_end_writes_a_complete_report(tmp_path, sim_calibration_file):
    import shutil

    from calibration.run import state_paths
    out = tmp_path / "demo"
    out.mkdir()
    # the session's calibration as a finished run the demo resumes (it measures nothing again)
    for key in ("state", "fits"):
        shutil.copy(state_paths(sim_calibration_file)[key], state_paths(out / "cal.h5")[key])
    res = run_demo(out, tasks=("moons",), epochs=2, twin_epochs=30, restarts=2, n_samples=80, quiet=True,
                   resume=True)
    html = (out / "report.html").read_text()
    # MVM scatter, activation, decision boundaries, training curves, all embedded
    assert html.count("data:image/png;base64,") == 4
    assert (out / "calibration" / "report.html").exists() and (out / "cal.h5").exists()
    saved = json.loads((out / "results.json").read_text(), parse_constant=_refuse)   # strict JSON: no NaN
    modes = saved["tasks"]["moons"]
    assert "bench_accuracy" not in modes["ideal"]                                    # 'ideal' runs on no bench
    assert set(modes) == {"ideal", "insilico (uncalibrated twin)", "insilico (calibrated twin)", "hybrid (fine-tune)",
                          "optical (fine-tune)"}
    for label, r in modes.items():
        assert 0.0 <= r["twin_accuracy"] <= 1.0 and (label == "ideal" or 0.0 <= r["bench_accuracy"] <= 1.0)
    assert res["compare"]["mvm1_nrmse"] < 0.2


def test_demo_trains_with_the_bench_defaults_of_optwin_train():
    from optwin.settings import TrainSettings
    from optwin.workflows.demo import demo_settings
    twin, loop = demo_settings("sim", "cal.h5", "xor")
    assert twin == TrainSettings.on_bench("insilico", "sim", "cal.h5", task="xor", n_samples=twin.n_samples)
    assert loop == TrainSettings.on_bench("optical", "sim", "cal.h5", task="xor", n_samples=twin.n_samples)
    assert (twin.restarts, twin.epochs, loop.epochs, loop.lr, loop.lr_schedule) == (8, 200, 10, 0.003, "cosine")


def test_report_renders_in_headless_chromium(tmp_path):
    import shutil
    import subprocess

    import numpy as np
    import pytest
    from PIL import Image

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (.ci/run installs it with apt)")
    from calibration.report import embed_png, html_page
    from optwin.workflows.compare_plots import plot_training_curves
    from twin.training import History
    h = History(epoch=[1, 2, 3], train_loss=[1.0, 0.5, 0.2], test_accuracy=[0.5, 0.8, 0.9])
    png = plot_training_curves({"optical": h}, tmp_path / "curves.png")
    def render(sections, name):
        page = tmp_path / f"{name}.html"
        page.write_text(html_page("test report", sections))
        shot = tmp_path / f"{name}.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / name}",
                        f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
                       check=True, capture_output=True, timeout=120)
        return np.asarray(Image.open(shot).convert("RGB"), dtype=float)

    with_fig = render([("training curves", embed_png(png))], "with")
    without = render([("training curves", "<p>no figure</p>")], "without")
    dark = lambda img: np.mean(img.sum(axis=2) < 600)  # noqa: E731
    # the embedded figure rendered: far more ink than the same page without it, in the plot's colour
    assert dark(with_fig) > 3 * dark(without)
    blue = np.mean((with_fig[..., 2] > 150) & (with_fig[..., 0] < 80))
    assert blue > 1e-4
