"""Calibration report: one PNG per fit (data, model, residuals) and a self-contained HTML page.

The HTML embeds the PNGs as base64, so the page is one file that can be mailed or
archived.  When the truth of a simulated bench is supplied (tests and demos only), a
table of recovered vs true values with their deviation in standard errors is added.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np

from calibration.calset import CalibrationSet
from calibration.quantities import Fit

__all__ = ["plot_fit", "write_report", "html_page", "embed_png"]


def _mpl():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_fit(fit: Fit, path: Path) -> Path | None:
    """Data + model (top) and residuals (bottom) for fits with x/y data; maps as images otherwise."""
    plt = _mpl()
    if fit.x is not None and fit.y is not None:
        fig, (ax, rx) = plt.subplots(2, 1, figsize=(6, 5), sharex=True,
                                     gridspec_kw={"height_ratios": [3, 1]})
        x, y = np.asarray(fit.x), np.asarray(fit.y)
        ax.plot(x, y, ".", ms=3, label="measured")
        if fit.y_fit is not None:
            order = np.argsort(x)
            yf = np.asarray(fit.y_fit)
            ax.plot(x[order], yf[order], "-", lw=1.5, label=f"fit: {fit.model}")
            rx.plot(x, y - yf, ".", ms=3)
            rx.axhline(0, color="k", lw=0.5)
            rms = float(np.sqrt(np.mean((y - yf) ** 2)))
            rx.set_ylabel(f"residual\n(rms {rms:.3g})")
        ax.set_ylabel(fit.info.get("y_label", "y"))
        rx.set_xlabel(fit.info.get("x_label", "x"))
        ax.set_title(fit.name)
        ax.legend(fontsize=8)
    else:
        maps = [(k, v) for k, v in fit.arrays.items() if np.ndim(v) == 2 and min(np.shape(v)) > 1]
        if not maps:
            return None
        fig, axes = plt.subplots(1, len(maps), figsize=(4 * len(maps), 3.5), squeeze=False)
        for ax, (k, v) in zip(axes[0], maps):
            im = ax.imshow(np.asarray(v, dtype=float), cmap="viridis")
            ax.set_title(k, fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
        fig.suptitle(fit.name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def embed_png(path: Path) -> str:
    """An <img> tag holding the PNG as base64 data."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.5g}"


def html_page(title: str, sections: list[tuple[str, str]]) -> str:
    """A self-contained page from (heading, inner-HTML) sections."""
    body = "\n".join(f"<section><h2>{html.escape(h)}</h2>\n{inner}</section>" for h, inner in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}}
th{{background:#eee}}td.l{{text-align:left}}img{{max-width:100%;margin:0.5em 0}}
.bad{{background:#fdd}}.ok{{background:#dfd}}</style></head>
<body><h1>{html.escape(title)}</h1>
{body}
</body></html>
"""


def write_report(cal: CalibrationSet, out_dir, truth: dict | None = None) -> Path:
    """Write PNGs and ``report.html`` into ``out_dir``; returns the HTML path.

    truth : optional {'camera.gain_adu_per_e': value, ...} of a simulated bench.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, fit in sorted(cal.fits.items()):
        for q, val in fit.quantities.items():
            key = f"{name}.{q}"
            cells = [f'<td class="l">{html.escape(key)}</td>', f"<td>{_fmt(val.value)}</td>",
                     f"<td>{_fmt(val.stderr)}</td>", f'<td class="l">{html.escape(val.units)}</td>']
            if truth is not None:
                t = truth.get(key)
                if t is None:
                    cells += ["<td>-</td>", "<td>-</td>"]
                else:
                    dev = (val.value - t) / val.stderr if val.stderr and math.isfinite(val.stderr) else float("nan")
                    cls = "ok" if math.isfinite(dev) and abs(dev) <= 3 else "bad"
                    cells += [f"<td>{_fmt(float(t))}</td>", f'<td class="{cls}">{_fmt(dev)}</td>']
            rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "<tr><th>quantity</th><th>value</th><th>std. error</th><th>units</th>"
    head += "<th>true value</th><th>(value - true)/stderr</th></tr>" if truth is not None else "</tr>"
    models = "".join(f'<tr><td class="l">{html.escape(n)}</td><td class="l">{html.escape(f.model)}</td></tr>'
                     for n, f in sorted(cal.fits.items()))
    sections = [("Summary", f"<p>bench <b>{html.escape(cal.bench_name)}</b>, calibrated "
                            f"{html.escape(cal.created_utc)}, optwin {html.escape(cal.software_version)}, "
                            f"schema {cal.schema_version}</p>"
                            f"<table><tr><th>fit</th><th>model</th></tr>{models}</table>"
                            f"<table>{head}{''.join(rows)}</table>")]
    for name, fit in sorted(cal.fits.items()):
        png = plot_fit(fit, out / f"{name.replace('.', '_')}.png")
        if png is not None:
            sections.append((name, embed_png(png)))
    page = out / "report.html"
    page.write_text(html_page(f"optwin calibration: {cal.bench_name}", sections))
    return page
