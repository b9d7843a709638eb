"""Figures of the twin-vs-bench report (the paper's Figs. 2a, 2b and 3) and the HTML page.

Units: the twin works in *twin field units*: at the hidden layer ``z = 1`` is the absorber's
saturation field ``sqrt(i_sat)``; layer 2 is scaled so that its largest realised weight is 1.
Inputs of the 2-D tasks are input-modulator amplitude fractions (0 to 1).
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from calibration.report_plots import pyplot as _plt
from calibration.report_plots import save_figure as _save

from calibration.report import embed_png, html_page

__all__ = ["plot_mvm_scatter", "plot_activation", "plot_decision_maps", "plot_training_curves",
           "write_compare_report", "mvm_table_html", "results_table_html", "format_accuracy", "READABLE",
           "BENCH_MODES"]

#: readable names of the agreement summary's keys
READABLE = {
    "mvm1": "layer 1 forward (z1 = W1 x)",
    "mvm2_forward": "layer 2 forward (z2 = W2 a1)",
    "mvm2_backward": "layer 2 backward (delta1 = W2^T delta2)",
    "activation": "activation (a1 after the cell)",
    "mvm1_nrmse": "layer 1 forward: nrmse",
    "mvm2_forward_nrmse": "layer 2 forward: nrmse",
    "mvm2_backward_nrmse": "layer 2 backward: nrmse",
    "noise_floor_nrmse": "largest noise floor (nrmse)",
    "activation_rmse": "activation: rms error (twin field units)",
}
#: training modes whose weights were updated on the bench (their curves go on the bench panels)
BENCH_MODES = ("hybrid", "optical")
_STYLES = [("C0", "-"), ("C1", "--"), ("C2", "-."), ("C3", ":"), ("C4", "-"), ("C5", "--")]




def format_accuracy(x) -> str:
    """An accuracy as ``0.913``, or ``-`` where there is none (an ideal computer has no bench).

    Parameters
    ----------
    x : a fraction of correct samples, NaN or None.

    Returns
    -------
    str
    """
    return "-" if x is None or not math.isfinite(float(x)) else f"{float(x):.3f}"


def plot_mvm_scatter(agreement: dict, path: Path) -> Path:
    """Measured vs twin-predicted values for the three MVMs, with systematic, shot-to-shot error
    and each MVM's own noise floor.

    Parameters
    ----------
    agreement : the result of :func:`optwin.workflows.compare.measure_agreement`.
    path : PNG file to write.

    Returns
    -------
    Path
        ``path``.
    """
    plt = _plt()
    a, st = agreement["arrays"], agreement["stats"]
    panels = [("mvm1", a["z1"], a["z1_pred"], st["mvm1"]),
              ("mvm2_forward", a["z2"], a["z2_pred"], st["mvm2_forward"]),
              ("mvm2_backward", a["d1"], a["d1_pred"], st["mvm2_backward"])]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.6))
    for ax, (key, meas, pred, s) in zip(axes, panels):
        for r in range(meas.shape[0]):
            ax.plot(pred.ravel(), meas[r].ravel(), ".", ms=3, alpha=0.5, color="C0",
                    label="bench, one repeat" if r == 0 else None)
        lim = [min(pred.min(), meas.min()), max(pred.max(), meas.max())]
        ax.plot(lim, lim, "k-", lw=0.8, label="bench = twin")
        ax.set_title(READABLE[key], fontsize=10)
        ax.set_xlabel("twin prediction (twin field units)")
        ax.set_ylabel("bench measurement (twin field units)")
        ax.text(0.03, 0.97, f"nrmse total {s['total_nrmse']:.3f}\n  systematic {s['systematic_nrmse']:.3f}\n"
                            f"  shot-to-shot {s['shot_to_shot_nrmse']:.3f}\nnoise floor {s['noise_floor_nrmse']:.3f}",
                transform=ax.transAxes, va="top", fontsize=8, family="monospace",
                bbox={"fc": "white", "alpha": 0.85, "ec": "0.7"})
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def plot_activation(agreement: dict, twin, path: Path) -> Path:
    """Activation after the cell vs linear MVM-1 output, with the fitted absorber curve.

    Parameters
    ----------
    agreement : the result of :func:`optwin.workflows.compare.measure_agreement`.
    twin : the calibrated twin (its absorber law is drawn).
    path : PNG file to write.

    Returns
    -------
    Path
        ``path``.
    """
    plt = _plt()
    a = agreement["arrays"]
    z1, a1 = a["z1"].ravel(), a["a1"].ravel()
    fig, ax = plt.subplots(figsize=(6, 4.4))
    ax.plot(z1, a1, ".", ms=3, alpha=0.5, label="bench (every neuron and repeat)")
    zz = np.linspace(min(z1.min(), 0), max(z1.max(), 0), 300)
    if twin.absorber is not None:
        ax.plot(zz, twin.absorber.transmit(zz), "r-", lw=1.5, label=f"twin: fitted {twin.absorber.name} law")
    ax.plot(zz, zz, "k:", lw=0.8, label="linear (no cell)")
    ax.set_xlabel("z1, field before the cell (twin field units)")
    ax.set_ylabel("a1, field after the cell (twin field units)")
    ax.set_title("saturable-absorber activation", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_decision_maps(maps: dict, task, path: Path, accuracy: dict | None = None) -> Path:
    """Decision maps of every mode (columns) on the bench and the twin (rows).

    Parameters
    ----------
    maps : {mode: {'bench': (axis, map), 'twin': (axis, map)}} for a 2-D task; map = output 1
        minus output 0 (twin field units) on the grid ``axis`` x ``axis``.
    task : the task (its test samples are drawn on the maps).
    path : PNG file to write.
    accuracy : optional {mode: {'bench_accuracy': a, 'twin_accuracy': a}} shown in the titles.

    Returns
    -------
    Path
        ``path``.
    """
    plt = _plt()
    from matplotlib.colors import TwoSlopeNorm
    modes = list(maps)
    v = max([float(np.abs(m).max()) for mm in maps.values() for (_, m) in mm.values()] + [1e-12])
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-v, vmax=v)
    fig, axes = plt.subplots(2, len(modes), figsize=(3.3 * len(modes) + 1.2, 7.0), squeeze=False)
    im = None
    for c, mode in enumerate(modes):
        for r, side in enumerate(("bench", "twin")):
            ax = axes[r, c]
            if side not in maps[mode]:
                ax.text(0.5, 0.5, "no bench:\nideal computer" if mode == "ideal" else "not measured",
                        ha="center", va="center", transform=ax.transAxes, color="0.4")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{mode}\non the {side}", fontsize=9)
                continue
            axis, m = maps[mode][side]
            im = ax.imshow(m, origin="lower", extent=(axis[0], axis[-1], axis[0], axis[-1]), cmap="RdBu_r",
                           norm=norm, aspect="equal")
            ax.contour(axis, axis, m, levels=[0], colors="k", linewidths=1)
            for cls, marker, face in ((0, "o", "black"), (1, "^", "white")):
                sel = task.y_test == cls
                ax.scatter(task.x_test[sel, 0], task.x_test[sel, 1], s=14, marker=marker, c=face,
                           edgecolors="black", linewidths=0.5)
            acc = (accuracy or {}).get(mode, {}).get(f"{side}_accuracy")
            ax.set_title(f"{mode}\non the {side}" + (f": accuracy {format_accuracy(acc)}" if acc is not None else ""),
                         fontsize=10)
            ax.set_xlabel("input x1 (amplitude fraction)", fontsize=9)
            ax.set_ylabel("input x2 (amplitude fraction)", fontsize=9)
            ax.tick_params(labelsize=8)
    fig.suptitle(f"{task.name}: decision maps (black line: decision boundary; test set: black circles class 0, "
                 f"white triangles class 1)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.92, 0.96))
    if im is not None:
        cax = fig.add_axes((0.935, 0.15, 0.015, 0.7), label="<colorbar>")
        fig.colorbar(im, cax=cax, label="output 1 - output 0 (twin field units)")
    return _save(fig, path)


def plot_training_curves(histories: dict, path: Path) -> Path:
    """Training loss and test accuracy vs epoch: one row per task, curves trained in silico
    (ideal, twin) and on the bench (hybrid, optical) on separate panels.

    Parameters
    ----------
    histories : {'<task>: <mode label>': History} (a label without ': ' is its own task).
    path : PNG file to write.

    Returns
    -------
    Path
        ``path``.
    """
    plt = _plt()
    tasks: dict[str, dict] = {}
    for label, h in histories.items():
        task, _, mode = label.partition(": ") if ": " in label else ("", "", label)
        tasks.setdefault(task, {})[mode] = h
    fig = plt.figure(figsize=(17, 3.4 * len(tasks) + 0.9), layout="constrained")
    sub = fig.subfigures(1, 2, wspace=0.03)
    wheres = ("trained in silico (twin / ideal computer)", "fine-tuned on the bench")
    axes = np.empty((len(tasks), 4), dtype=object)
    for g, where in enumerate(wheres):
        sub[g].suptitle(where, fontsize=12)
        axes[:, 2 * g:2 * g + 2] = sub[g].subplots(len(tasks), 2, squeeze=False)
    for r, (task, runs) in enumerate(tasks.items()):
        groups = ((wheres[0], {m: h for m, h in runs.items() if not m.startswith(BENCH_MODES)}),
                  (wheres[1], {m: h for m, h in runs.items() if m.startswith(BENCH_MODES)}))
        for g, (where, group) in enumerate(groups):
            ax, bx = axes[r, 2 * g], axes[r, 2 * g + 1]
            for i, (mode, h) in enumerate(group.items()):
                colour, ls = _STYLES[i % len(_STYLES)]
                mark = "o" if len(h.epoch) <= 30 else None        # a short run's points stay visible
                ax.plot(h.epoch, h.train_loss, ls, color=colour, lw=1.4, marker=mark, ms=3, label=mode)
                bx.plot(h.epoch, h.test_accuracy, ls, color=colour, lw=1.4, marker=mark, ms=3, label=mode)
            prefix = f"{task}: " if task else ""
            ax.set_title(f"{prefix}training loss", fontsize=10)
            bx.set_title(f"{prefix}test accuracy", fontsize=10)
            ax.set_xlabel("epoch")
            bx.set_xlabel("epoch")
            ax.set_ylabel("training loss (mean squared error)")
            bx.set_ylabel("test accuracy (system trained on)")
            losses = np.concatenate([np.asarray(h.train_loss, float) for h in group.values()] + [np.ones(0)])
            if losses.size and losses.min() > 0 and losses.max() / losses.min() > 20:
                ax.set_yscale("log")
            bx.set_ylim(0, 1.02)
            for a_ in (ax, bx):
                a_.xaxis.get_major_locator().set_params(integer=True)
            if group:
                bx.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
            else:
                for a_ in (ax, bx):
                    a_.text(0.5, 0.5, "no runs", ha="center", va="center", transform=a_.transAxes, color="0.4")
    return _save(fig, path)


def mvm_table_html(summary: dict, stats: dict | None = None) -> str:
    """Per-MVM agreement: nrmse against its own noise floor (bench repeat scatter).

    Parameters
    ----------
    summary : ``measure_agreement(...)['summary']``.
    stats : ``measure_agreement(...)['stats']`` (systematic and shot-to-shot parts), optional.

    Returns
    -------
    str
        An HTML table.
    """
    floors = summary.get("noise_floor_nrmse_per_mvm") or {}
    rows = []
    for key in ("mvm1", "mvm2_forward", "mvm2_backward"):
        s = (stats or {}).get(key, {})
        total = s.get("total_nrmse", summary.get(f"{key}_nrmse"))
        floor = s.get("noise_floor_nrmse", floors.get(key))
        ratio = total / floor if total is not None and floor else None
        cells = [READABLE[key], total, s.get("systematic_nrmse"), s.get("shot_to_shot_nrmse"), floor, ratio]
        rows.append("<tr>" + f'<td class="l">{html.escape(cells[0])}</td>'
                    + "".join(f"<td>{'-' if v is None else f'{v:.4f}' if i < 4 else f'{v:.2f}'}</td>"
                              for i, v in enumerate(cells[1:])) + "</tr>")
    act = summary.get("activation_rmse")
    head = ("<tr><th>MVM</th><th>nrmse (total)</th><th>systematic</th><th>shot-to-shot</th><th>noise floor</th>"
            "<th>total / floor</th></tr>")
    text = ("<p class=\"note\">nrmse: rms of (bench - twin) over the rms of the bench values, per single shot. "
            "The noise floor is what a perfect twin would still show: the bench's repeat-to-repeat scatter (for "
            "layer 2 plus its measured input's noise carried through the matrix). total / floor near 1: the twin "
            "predicts everything the bench does systematically.</p>")
    out = text + f"<table>{head}{''.join(rows)}</table>"
    if act is not None:
        out += f"<p>activation: rms error of a1 {act:.4f} twin field units</p>"
    return out


def counting_error(accuracy, n_test) -> float:
    """Binomial standard error of a test accuracy, ``sqrt(p (1 - p) / n)``.

    Parameters
    ----------
    accuracy : fraction of the ``n_test`` test samples classified correctly.
    n_test : number of test samples.

    Returns
    -------
    float
        The one-sigma counting error (fraction); NaN without an accuracy or samples. At p = 0
        or 1 it uses p = 1/(n + 1) (a perfect score on n samples still has an error).
    """
    if accuracy is None or n_test is None or not np.isfinite(accuracy) or int(n_test) < 1:
        return float("nan")
    n = int(n_test)
    p = min(max(float(accuracy), 1.0 / (n + 1)), n / (n + 1))
    return float(np.sqrt(p * (1.0 - p) / n))


def _accuracy_cell(x, n_test) -> str:
    err = counting_error(x, n_test)
    text = format_accuracy(x)
    return text if not np.isfinite(err) else f"{text} &plusmn; {err:.3f}"


def results_table_html(results: dict) -> str:
    """Training results as an HTML table, each accuracy with its counting error.

    Parameters
    ----------
    results : {task: {mode label: {'bench_accuracy', 'twin_accuracy' (fractions), 'seconds' (s),
        optional 'n_test' (test samples, for the binomial error)}}}.

    Returns
    -------
    str
        An HTML table.
    """
    head = ("<tr><th>task</th><th>mode</th><th>test accuracy on the bench</th><th>test accuracy on the twin</th>"
            "<th>test samples</th><th>time (s)</th></tr>")
    rows = []
    for task, per in results.items():
        for label, r in per.items():
            n = r.get("n_test")
            rows.append(f'<tr><td class="l">{html.escape(task)}</td><td class="l">{html.escape(label)}</td>'
                        f"<td>{_accuracy_cell(r.get('bench_accuracy'), n)}</td>"
                        f"<td>{_accuracy_cell(r.get('twin_accuracy'), n)}</td>"
                        f"<td>{'-' if n is None else int(n)}</td>"
                        f"<td>{r.get('seconds', float('nan')):.0f}</td></tr>")
    return (f"<table>{head}{''.join(rows)}</table><p class=\"note\">'-': no bench (the ideal computer); "
            "accuracies on the task's test set, &plusmn; their binomial counting error sqrt(p (1 - p) / n): "
            "rows closer than about two such errors are not distinguished by this test set.</p>")


def write_compare_report(out_dir, summary: dict, figures: list[tuple[str, Path]], table_html: str = "",
                         stats: dict | None = None) -> Path:
    """One self-contained HTML page with the agreement per MVM, a results table and the figures.

    Parameters
    ----------
    out_dir : directory of the page (created).
    summary : :func:`optwin.workflows.compare.measure_agreement`'s ``summary`` (with
        ``noise_floor_nrmse_per_mvm`` for a floor per MVM).
    figures : (title, PNG path) pairs, embedded in order.
    table_html : an HTML fragment placed after the agreement table (e.g. results).
    stats : ``measure_agreement``'s ``stats`` (optional).

    Returns
    -------
    Path
        The written page.
    """
    out = Path(out_dir)
    if "noise_floor_nrmse_per_mvm" in summary or stats:
        agreement = mvm_table_html(summary, stats)
    else:
        agreement = "<table>" + "".join(
            f'<tr><td class="l">{html.escape(READABLE.get(k, k.replace("_", " ")))}</td><td>{v:.4g}</td></tr>'
            for k, v in summary.items() if isinstance(v, (int, float))) + "</table>"
    sections = [("Twin vs bench: agreement per MVM", agreement)]
    if table_html:
        sections.append(("Training results", table_html))
    sections += [(title, embed_png(p)) for title, p in figures]
    sections.append(("Units", "<p>Twin field units: at the hidden layer z = 1 is the absorber's saturation field "
                              "sqrt(i_sat); layer 2 is scaled so that its largest realised weight is 1. "
                              "Inputs of the 2-D tasks are amplitude fractions of the input modulator (0 to 1). "
                              "Accuracies are fractions of the test set.</p>"))
    page = out / "compare.html"
    page.write_text(html_page("optwin: twin vs bench", sections))
    return page
