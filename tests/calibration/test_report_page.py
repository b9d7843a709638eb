"""The calibration page of the suite's shared simulated calibration: fit statistics, EMVA figures,
definitions, and axis labels on every figure."""
import math
import re

import numpy as np
import pytest

import calibration.report as report
from calibration import report_plots
from calibration.calset import CalibrationSet
from calibration.fit_statistics import camera_points, raw_streams
from calibration.report import (DEFINITIONS, fit_statistics, information_criteria, plot_camera, plot_registration,
                                write_report)


def _labels_of(fig) -> list[tuple[str, str, str]]:
    """(title, xlabel, ylabel) of every axes that holds data (colour bars and text panels left out)."""
    out = []
    for ax in fig.axes:
        if not ax.axison or ax.get_label() == "<colorbar>" or not (ax.lines or ax.collections or ax.images):
            continue
        out.append((ax.get_title(), ax.get_xlabel(), ax.get_ylabel()))
    return out


@pytest.fixture()
def labelled(monkeypatch):
    """Every figure saved by the report modules: its axes' labels, checked before saving."""
    seen = []
    orig = report_plots.save_figure

    def save(fig, path):
        seen.append(_labels_of(fig))
        return orig(fig, path)
    monkeypatch.setattr(report_plots, "save_figure", save)
    return seen


def test_information_criteria_are_the_known_sigma_ones():
    aic, bic = information_criteria(30.0, 100, 3)
    assert aic == pytest.approx(36.0) and bic == pytest.approx(30.0 + 3 * math.log(100))


def test_page_of_the_shared_calibration(sim_calibration_run):
    """The page the suite's ``optwin calibrate --report`` wrote: statistics per fit, EMVA figures,
    saturation capacity marked as a definition difference (not red), tap ratios explained."""
    text = (sim_calibration_run["report"] / "report.html").read_text()
    assert "Fit statistics" in text and "chi^2/(N-k)" in text and "AIC" in text and "BIC" in text
    for cam in ("cam_z1", "cam_a1", "cam_back", "cam_out"):
        assert f"{cam}: photon transfer" in text
    assert "parameter correlations" in text
    # the EMVA saturation capacity is never flagged red against the simulator's full well / ADC limit
    for row in re.findall(r"<tr><td class=\"l\">camera[^<]*\.saturation_e</td>.*?</tr>", text):
        assert 'class="bad"' not in row and 'class="def"' in row
    assert "background_transmission" in text and "tap" in text
    assert text.count('src="data:image/png;base64,') >= 10


def test_statistics_and_figures_from_the_raw_frames(sim_calibration_file, tmp_path, labelled):
    cal = CalibrationSet.load(sim_calibration_file)
    raw = raw_streams(sim_calibration_file.with_name(sim_calibration_file.name + ".raw.h5"))
    fit = cal.fits["camera.cam_z1"]
    pts = camera_points(fit, raw["camera.cam_z1"])
    assert pts is not None, "the raw frames must reproduce the fit's photon-transfer points"
    (row,) = fit_statistics(fit, camera_points=pts)
    # N: the fit's own linear range; chi^2 recomputed from the frames agrees with the fit's reduced chi^2
    assert row["n"] == len(fit.info["linear_range"]) and row["k"] == 2
    assert row["redchi"] == pytest.approx(fit.info["ptc_redchi"], rel=0.02)
    assert row["corr"].shape == (2, 2) and abs(row["corr"][0, 1]) < 1
    # dark signal: the recomputed dark means bracket the fitted offset
    assert abs(np.median(pts["mu_d"]) - fit.quantities["dark_offset_adu"].value) < 0.5
    plot_camera(fit, pts, tmp_path / "cam.png")
    layout = report._layout(cal)
    rows = fit_statistics(cal.fits["registration"], layout=layout)
    for r in rows:
        if r["n"] > r["k"]:            # over-determined transforms: chi^2/dof near 1, correlations known
            assert 0.2 < r["redchi"] < 3 and r["corr"] is not None
    plot_registration(cal.fits["registration"], layout, tmp_path / "reg.png")
    assert len(labelled) == 2
    for axes in labelled:
        assert len(axes) >= 4
        for title, xl, yl in axes:
            assert xl and yl and xl not in ("x", "y") and yl not in ("x", "y"), (title, xl, yl)
    titles = " ".join(t for axes in labelled for t, _, _ in axes)
    for emva in ("photon transfer", "signal-to-noise", "linearity", "dark signal vs exposure", "DSNU spectrogram",
                 "PRNU spectrogram", "defect pixels"):
        assert emva in titles
    assert "saturation" in DEFINITIONS["saturation_e"] and "full well" in DEFINITIONS["saturation_e"]


def test_page_without_raw_data_and_definition_marking(sim_calibration_file, tmp_path):
    """A calibration without its raw file still gives a page; saturation_e against the full well
    is a definition difference (blue), another quantity 10 sigma off is red."""
    cal = CalibrationSet.load(sim_calibration_file)
    cal.fits = {k: v for k, v in cal.fits.items() if k in ("camera", "slm")}
    q = cal.fits["camera"].quantities
    truth = {"camera.saturation_e": q["saturation_e"].value * 1.3,
             "camera.gain_adu_per_e": q["gain_adu_per_e"].value + 10 * q["gain_adu_per_e"].stderr}
    text = write_report(cal, tmp_path / "rep", truth=truth).read_text()
    assert re.search(r'class="def"[^>]*>-?\d[^<]*definition differs', text)
    assert re.search(r'class="bad">-10</td>', text)
    assert "phase vs level: gamma" in text
