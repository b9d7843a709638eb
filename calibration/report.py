"""Calibration report: fit statistics, figures per device and a self-contained HTML page.

For every fit the page gives the number of points that entered it (N), the number of
free parameters (k), chi^2, the reduced chi^2 = chi^2 / (N - k), AIC and BIC and, where
the fit's design is known, the parameter correlations.  Residual panels show only the
points that entered a fit; points left out (saturated, outside the linear range, outliers)
are drawn distinctly in the data panel.  The camera section has the EMVA 1288 figures
(photon transfer, SNR, linearity, dark signal vs exposure, DSNU/PRNU spectrograms, defect
pixels), recomputed from the frames in the calibration's raw file when it is given.

Modules: :mod:`calibration.fit_statistics` (the statistics rows), :mod:`calibration.report_plots`
(figures), :mod:`calibration.report_camera` (the EMVA figure); this module assembles the page.

The HTML embeds the PNGs as base64, so the page is one file that can be mailed or archived.
When the truth of a simulated bench is supplied (tests and demos only), a table of
recovered vs true values with their deviation in standard errors is added; quantities whose
definition differs from the truth's (the EMVA saturation capacity vs the full well) are
marked as such, not as bad fits.
"""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np

from calibration.calset import CalibrationSet
from calibration.fit_statistics import camera_points, fit_statistics, information_criteria, raw_streams
from calibration.quantities import Fit
from calibration.report_camera import plot_camera
from calibration.report_plots import (plot_absorber, plot_exposure, plot_fit, plot_mvm, plot_readout,
                                      plot_registration, plot_slm)

__all__ = ["plot_fit", "plot_camera", "plot_registration", "write_report", "html_page", "embed_png",
           "fit_statistics", "information_criteria", "DEFINITIONS"]

#: quantities whose meaning differs from the similarly named truth of a simulated bench
DEFINITIONS = {
    "saturation_e": (
        "EMVA 1288 saturation capacity: the signal (in electrons) at the maximum of the photon-transfer "
        "variance. Pixels clip at the ADC's last code or at the full well, and the variance starts to fall "
        "when the first pixels of the (PRNU- and shot-noise-spread) distribution clip, so the saturation "
        "capacity lies below both the full well and the ADC range by design: a negative deviation from the "
        "true full well / ADC limit is expected, not a bad fit."),
}

#: explanations shown in the report's Definitions section
NOTES = [
    ("N, k, chi^2", "N: points (values) that entered the fit; k: free parameters; chi^2 = sum((data - model) / "
                    "sigma)^2 with the measured sigma of each point; reduced chi^2 = chi^2 / (N - k), about 1 for "
                    "a model that describes the data within their noise."),
    ("AIC, BIC", "Computed here from chi^2 as AIC = chi^2 + 2k and BIC = chi^2 + k ln N (known sigma). The "
                 "absorber's law comparison is the fitting code's own (lmfit: N ln(chi^2/N) + 2k, + k ln N); only "
                 "differences between models fitted to the same data mean something (lower is better)."),
    ("correlation", "Correlation coefficients of the fitted parameters, cov_ij / sqrt(cov_ii cov_jj), from the "
                    "weighted design matrix of the fit (|r| near 1: the data do not separate the two)."),
    ("saturation_e", DEFINITIONS["saturation_e"]),
    ("background_transmission", "T_bg of the absorber fit: P_out = T_bg * T(P_in) with P_in on cam_z1 (before "
                                "the cell) and P_out on cam_a1 (after it), each in its own camera's homodyne "
                                "units. It is the ratio of the two cameras' tap and detection efficiencies (beam "
                                "splitter tap, LO amplitude, gain) times the cell's non-saturable transmission, "
                                "so it can exceed 1; the twin divides it out (a1 = h_a1 / sqrt(i_sat T_bg)), it is "
                                "not an optical gain."),
    ("probe_background_transmission", "The same tap ratio for the backward probe: the probe's amplitude seen on "
                                      "cam_back relative to its programmed amplitude, fitted as the scale of "
                                      "c * t(z1). It carries the probe path's own tap and LO, hence a value "
                                      "different from the pump's."),
    ("readout LO amplitude", "sqrt of the LO power summed over each spot's region of interest (dark-subtracted "
                             "ADU); homodyne values h = (P_0 - P_pi) / (4 * LO amplitude) are in sqrt(ADU)."),
    ("nrmse", "rms error over the rms of the measured values, on held-out probes: systematic (mean of the "
              "repeats vs the model), shot-to-shot (repeat scatter), total; the noise floor is the shot-to-shot "
              "part a perfect model would still show."),
]


# ======================================================================================= HTML
def embed_png(path: Path) -> str:
    """An <img> tag holding the PNG as base64 data.

    Parameters
    ----------
    path : a PNG file.

    Returns
    -------
    str : the HTML tag.
    """
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def _fmt(x, spec: str = ".5g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def html_page(title: str, sections: list[tuple[str, str]]) -> str:
    """A self-contained page from (heading, inner-HTML) sections.

    Parameters
    ----------
    title : page title (plain text, escaped here).
    sections : (heading, inner HTML) pairs, in order.

    Returns
    -------
    str : the HTML document.
    """
    body = "\n".join(f"<section><h2>{html.escape(h)}</h2>\n{inner}</section>" for h, inner in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1300px;margin:2em auto;color:#222;line-height:1.35}}
table{{border-collapse:collapse;margin:0.6em 0}}td,th{{border:1px solid #bbb;padding:2px 7px;text-align:right;
font-size:0.92em}}th{{background:#eee}}td.l{{text-align:left}}img{{max-width:100%;margin:0.5em 0}}
.bad{{background:#fdd}}.ok{{background:#dfd}}.def{{background:#e6ecf7}}.warn{{background:#fff4d6;
border-left:4px solid #e0a000;padding:0.4em 0.8em}}dt{{font-weight:bold;margin-top:0.4em}}
.note{{color:#555;font-size:0.9em}}</style></head>
<body><h1>{html.escape(title)}</h1>
{body}
</body></html>
"""


def _stats_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    head = ("<tr><th>fit</th><th>N</th><th>k</th><th>chi^2</th><th>chi^2/(N-k)</th><th>AIC</th><th>BIC</th>"
            "<th>note</th></tr>")
    body = "".join(
        f'<tr><td class="l">{html.escape(r["fit"])}</td><td>{r["n"]}</td><td>{r["k"]}</td><td>{_fmt(r["chi2"], ".4g")}'
        f'</td><td>{_fmt(r["redchi"], ".3g")}</td><td>{_fmt(r["aic"], ".5g")}</td><td>{_fmt(r["bic"], ".5g")}</td>'
        f'<td class="l note">{html.escape(r["note"])}</td></tr>' for r in rows)
    out = f"<table>{head}{body}</table>"
    corr = [f"<div><p class=\"note\">parameter correlations, {html.escape(r['fit'])}:</p>"
            f"{_corr_table(r['labels'], r['corr'])}</div>"
            for r in rows if r.get("corr") is not None and r.get("labels")]
    if corr:
        out += f'<div style="display:flex;flex-wrap:wrap;gap:2em">{"".join(corr)}</div>'
    return out


def _corr_table(labels, corr) -> str:
    c = np.asarray(corr, float)
    head = "<tr><th></th>" + "".join(f"<th>{html.escape(lab)}</th>" for lab in labels) + "</tr>"
    rows = []
    for i, lab in enumerate(labels):
        cells = []
        for j in range(len(labels)):
            v = c[i, j]
            shade = int(255 - 120 * min(abs(v), 1.0)) if i != j else 235
            colour = f"rgb(255,{shade},{shade})" if v > 0 else f"rgb({shade},{shade},255)"
            cells.append(f'<td style="background:{colour}">{v:+.2f}</td>')
        rows.append(f"<tr><th>{html.escape(lab)}</th>{''.join(cells)}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _quantity_table(fits: list[Fit], truth: dict | None) -> str:
    rows = []
    for fit in fits:
        for q, val in fit.quantities.items():
            key = f"{fit.name}.{q}"
            cells = [f'<td class="l">{html.escape(key)}</td>', f"<td>{_fmt(val.value)}</td>",
                     f"<td>{_fmt(val.stderr, '.2g')}</td>", f'<td class="l">{html.escape(val.units)}</td>']
            if truth is not None:
                t = truth.get(key)
                if t is None:
                    cells += ["<td>-</td>", "<td>-</td>"]
                else:
                    ok_se = val.stderr and math.isfinite(val.stderr)
                    dev = (val.value - t) / val.stderr if ok_se else float("nan")
                    if q in DEFINITIONS:
                        tip = html.escape(DEFINITIONS[q])
                        cells += [f"<td>{_fmt(float(t))}</td>", f'<td class="def" title="{tip}">'
                                  f'{_fmt(dev, ".3g")} (definition differs, see Definitions)</td>']
                    else:
                        cls = "ok" if math.isfinite(dev) and abs(dev) <= 3 else "bad"
                        cells += [f"<td>{_fmt(float(t))}</td>", f'<td class="{cls}">{_fmt(dev, ".3g")}</td>']
            rows.append("<tr>" + "".join(cells) + "</tr>")
    if not rows:
        return ""
    head = "<tr><th>quantity</th><th>value</th><th>std. error</th><th>units</th>"
    head += "<th>true value</th><th>(value - true)/stderr</th></tr>" if truth is not None else "</tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _layout(cal: CalibrationSet) -> dict:
    spots = (cal.bench_config or {}).get("spots") or {}
    out = {}
    for cam, s in spots.items():
        if not isinstance(s, dict):
            continue
        pos = s.get("positions_px")
        if pos is None:
            from hwio.layout import SpotLayout
            try:
                pos = SpotLayout(int(s["n"]), tuple(s["grid"]), float(s.get("pitch_px", 24.0)),
                                 tuple(s.get("origin_px", (0.0, 0.0)))).positions_px
            except (KeyError, TypeError, ValueError):
                continue
        out[cam] = np.asarray(pos, float)
    return out


def _groups(cal: CalibrationSet) -> list[tuple[str, list[Fit]]]:
    order = [("Cameras (EMVA 1288)", "camera"), ("Registration", "registration"), ("Readout", "readout"),
             ("Phase panels (SLM)", "slm"), ("Absorber", "absorber"), ("Matrix-vector multiplications", "mvm"),
             ("Scale", "scale"), ("Operating exposures", "exposure")]
    used, out = set(), []
    for title, prefix in order:
        fits = [f for n, f in sorted(cal.fits.items()) if n.split(".")[0].startswith(prefix) and n not in used]
        if prefix == "camera":      # the reference camera (cam_out, fit 'camera') after the others is odd: by name
            fits.sort(key=lambda f: f.info.get("camera", f.name))
        used.update(f.name for f in fits)
        if fits:
            out.append((title, fits))
    rest = [f for n, f in sorted(cal.fits.items()) if n not in used]
    if rest:
        out.append(("Other fits", rest))
    return out


def write_report(cal: CalibrationSet, out_dir, truth: dict | None = None, raw_path=None) -> Path:
    """Write the figures (PNG) and ``report.html`` of a calibration into ``out_dir``.

    Parameters
    ----------
    cal : the calibration set.
    out_dir : folder to write into (created when absent; files of the same name are replaced).
    truth : optional {'camera.gain_adu_per_e': value, ...} of a simulated bench, in the units
        of the quantities; adds the recovered-vs-true table.
    raw_path : the calibration's raw recording (``<cal>.raw.h5``); the camera figures are
        recomputed from its frames (without it they show what the fit kept).

    Returns
    -------
    Path : the HTML page.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = _layout(cal)
    raw = raw_streams(raw_path)
    run = _run_info(cal)
    all_rows: list[dict] = []
    device_sections = []
    for title, fits in _groups(cal):
        if title.startswith("Cameras"):
            inner = _camera_sections(fits, raw, out, all_rows)
        elif title == "Readout":
            inner = [_readout_section(fits, out)]
        else:
            inner = [_fit_section(fit, layout, out, all_rows) for fit in fits]
        inner.append("<details><summary>quantities</summary>" + _quantity_table(fits, truth) + "</details>")
        device_sections.append((title, "\n".join(inner)))
    sections = [("Summary", _summary(cal, run, all_rows))]
    if truth is not None:
        sections.append(("Recovered vs true (simulated bench)",
                         "<p class=\"note\">Deviation in standard errors; |dev| &le; 3 green, else red. Quantities "
                         "whose definition differs from the truth's name are blue and explained under "
                         "Definitions.</p>" + _quantity_table([f for _, fs in _groups(cal) for f in fs], truth)))
    sections += device_sections
    sections.append(("Definitions", "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                                                     for k, v in NOTES) + "</dl>"))
    page = out / "report.html"
    page.write_text(html_page(f"optwin calibration: {cal.bench_name}", sections))
    return page


def _run_info(cal: CalibrationSet) -> dict:
    """The run record stored with the calibration (``raw/run_info``, JSON); {} when absent or unreadable."""
    try:
        return json.loads(bytes(np.asarray(cal.raw["run_info"]).item()).decode()) if "run_info" in cal.raw else {}
    except (ValueError, TypeError, AttributeError):
        return {}


def _camera_sections(fits: list[Fit], raw: dict, out: Path, all_rows: list[dict]) -> list[str]:
    """HTML of the camera fits (statistics and EMVA figure each); appends their rows to ``all_rows``."""
    inner = ["<p class=\"note\">saturation_e is the EMVA 1288 saturation capacity (signal at the "
             "photon-transfer variance maximum), below the full well by definition. Figures recomputed "
             "from the recorded frames" + ("" if raw else " (raw file not available: figures show what "
                                                           "the fit kept)") + ".</p>"]
    for fit in fits:
        cam = fit.info.get("camera", fit.name)
        pts = camera_points(fit, raw[f"camera.{cam}"]) if f"camera.{cam}" in raw else None
        rows = fit_statistics(fit, camera_points=pts)
        for r in rows:
            r["fit"] = f"{cam}: {r['fit']}"
        all_rows += rows
        png = plot_camera(fit, pts, out / f"{fit.name.replace('.', '_')}.png")
        inner.append(f"<h3>{html.escape(cam)} (fit <code>{html.escape(fit.name)}</code>)</h3>"
                     + _stats_table(rows) + (embed_png(png) if png else ""))
    return inner


def _readout_section(fits: list[Fit], out: Path) -> str:
    """HTML of the readout: the LO amplitude per spot of every camera (a measurement, not a fit)."""
    png = plot_readout(fits, out / "readout.png")
    return ("<p class=\"note\">Not a fit: the LO amplitude of each spot measured with the signal "
            "blocked (four LO phases); the spread between spots is the LO's illumination profile.</p>"
            + (embed_png(png) if png else ""))


def _figure(fit: Fit, layout: dict, path: Path) -> Path | None:
    """The figure of one (non-camera) fit, chosen by the kind in its name."""
    kind = fit.name.split(".")[0]
    if kind == "registration":
        return plot_registration(fit, layout, path)
    if kind == "slm":
        return plot_slm(fit, path)
    if kind == "absorber":
        return plot_absorber(fit, path)
    if kind == "exposure":
        return plot_exposure(fit, path)
    return plot_mvm(fit, path) if kind.startswith("mvm") else plot_fit(fit, path)


def _fit_section(fit: Fit, layout: dict, out: Path, all_rows: list[dict]) -> str:
    """HTML of one fit: statistics, notes of its kind and figure; appends its rows to ``all_rows``."""
    rows = fit_statistics(fit, layout=layout)
    all_rows += [dict(r, fit=f"{fit.name}: {r['fit']}") for r in rows]
    kind = fit.name.split(".")[0]
    png = _figure(fit, layout, out / f"{fit.name.replace('.', '_')}.png")
    info = ""
    if kind == "absorber":
        info = ("<p class=\"note\">background_transmission and probe_background_transmission are camera "
                "tap ratios (after / before the cell, each camera in its own homodyne units), not optical "
                "gains: values above 1 are normal. See Definitions.</p>")
    if kind == "scale":
        info = "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>"
                                for k, v in fit.info.items()) + "</dl>"
    return (f"<h3>{html.escape(fit.name)} <span class=\"note\">model {html.escape(fit.model)}"
            f"</span></h3>" + _stats_table(rows) + info + (embed_png(png) if png else ""))


def _summary(cal: CalibrationSet, run: dict, all_rows: list[dict]) -> str:
    """HTML of the summary: bench, date, software, run time, warnings and every fit's statistics."""
    warnings = list(run.get("warnings", []) or [])
    for name, fit in sorted(cal.fits.items()):
        warnings += [f"{name}: {w}" for w in fit.info.get("warnings", []) or []]
    summary = (f"<p>bench <b>{html.escape(cal.bench_name)}</b>, calibrated {html.escape(cal.created_utc)}, "
               f"optwin {html.escape(cal.software_version)}, schema {cal.schema_version}"
               + (f", {run['wall_s']:.0f} s" if isinstance(run.get("wall_s"), (int, float)) else "")
               + (f", raw data <code>{html.escape(str(run.get('raw_file')))}</code>" if run.get("raw_file") else "")
               + "</p>")
    summary += ("<div class=\"warn\"><b>Warnings</b><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
                + "</ul></div>") if warnings else "<p>No warnings.</p>"
    return summary + "<h3>Fit statistics</h3>" + _stats_table([dict(r, corr=None) for r in all_rows])
