"""The main job end to end (shortened): calibrate, twin, train every mode, compare, report."""
import json

from optwin.workflows.demo import run_demo


def test_demo_end_to_end_writes_a_complete_report(tmp_path):
    res = run_demo(tmp_path / "demo", tasks=("moons",), epochs=2, twin_epochs=30, n_samples=80, quiet=True)
    out = tmp_path / "demo"
    html = (out / "report.html").read_text()
    # MVM scatter, activation, decision boundaries, training curves, all embedded
    assert html.count("data:image/png;base64,") == 4
    assert (out / "calibration" / "report.html").exists() and (out / "cal.h5").exists()
    saved = json.loads((out / "results.json").read_text())
    modes = saved["tasks"]["moons"]
    assert set(modes) == {"ideal", "insilico (uncalibrated twin)", "insilico (calibrated twin)", "hybrid", "optical"}
    for label, r in modes.items():
        assert 0.0 <= r["twin_accuracy"] <= 1.0
    assert res["compare"]["mvm1_nrmse"] < 0.2
