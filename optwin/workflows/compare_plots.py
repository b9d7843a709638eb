"""Figures of the twin-vs-bench report (the paper's Figs. 2a, 2b and 3) and the HTML page."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration.report import embed_png, html_page

__all__ = ["plot_mvm_scatter", "plot_activation", "plot_decision_maps", "plot_training_curves", "write_compare_report"]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_mvm_scatter(agreement: dict, path: Path) -> Path:
    """Measured vs twin-predicted values for the three MVMs, with systematic and shot-to-shot error."""
    plt = _plt()
    a, st = agreement["arrays"], agreement["stats"]
    panels = [("layer-1 forward (z1)", a["z1"], a["z1_pred"], st["mvm1"]),
              ("layer-2 forward (z2)", a["z2"], a["z2_pred"], st["mvm2_forward"]),
              ("layer-2 backward (delta1)", a["d1"], a["d1_pred"], st["mvm2_backward"])]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, (title, meas, pred, s) in zip(axes, panels):
        for r in range(meas.shape[0]):
            ax.plot(pred.ravel(), meas[r].ravel(), ".", ms=3, alpha=0.5, color="C0")
        lim = [min(pred.min(), meas.min()), max(pred.max(), meas.max())]
        ax.plot(lim, lim, "k-", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel("twin prediction")
        ax.set_ylabel("bench measurement")
        ax.text(0.03, 0.97, f"systematic {s['systematic_nrmse']:.3f}\nshot-to-shot {s['shot_to_shot_nrmse']:.3f}\n"
                            f"total {s['total_nrmse']:.3f}", transform=ax.transAxes, va="top", fontsize=8,
                bbox={"fc": "white", "alpha": 0.8})
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_activation(agreement: dict, twin, path: Path) -> Path:
    """Activation after the cell vs linear MVM-1 output, with the fitted absorber curve."""
    plt = _plt()
    a = agreement["arrays"]
    z1, a1 = a["z1"].ravel(), a["a1"].ravel()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.plot(z1, a1, ".", ms=3, alpha=0.5, label="bench")
    zz = np.linspace(min(z1.min(), 0), max(z1.max(), 0), 300)
    if twin.absorber is not None:
        ax.plot(zz, twin.absorber.transmit(zz), "r-", lw=1.5, label=f"fitted {twin.absorber.name} law")
    ax.plot(zz, zz, "k:", lw=0.8, label="linear (no cell)")
    ax.set_xlabel("z1 (linear MVM-1 output, twin units)")
    ax.set_ylabel("a1 (after the cell)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_decision_maps(maps: dict, task, path: Path) -> Path:
    """maps: {mode: {'bench': (axis, map), 'twin': (axis, map)}} for a 2-D task."""
    plt = _plt()
    modes = list(maps)
    fig, axes = plt.subplots(2, len(modes), figsize=(3.2 * len(modes), 6.2), squeeze=False)
    for c, mode in enumerate(modes):
        for r, side in enumerate(("bench", "twin")):
            ax = axes[r, c]
            if side not in maps[mode]:
                ax.axis("off")
                continue
            axis, m = maps[mode][side]
            v = np.abs(m).max() or 1.0
            ax.imshow(m, origin="lower", extent=(axis[0], axis[-1], axis[0], axis[-1]), cmap="RdBu_r",
                      vmin=-v, vmax=v)
            ax.contour(axis, axis, m, levels=[0], colors="k", linewidths=1)
            ax.scatter(task.x_test[:, 0], task.x_test[:, 1], c=task.y_test, s=4, cmap="coolwarm",
                       edgecolors="none")
            ax.set_title(f"{mode}: {side}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_training_curves(histories: dict, path: Path) -> Path:
    """histories: {label: History}; loss and test accuracy vs epoch."""
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, h in histories.items():
        ax.plot(h.epoch, h.train_loss, label=label)
        bx.plot(h.epoch, h.test_accuracy, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    bx.set_xlabel("epoch")
    bx.set_ylabel("test accuracy (system trained on)")
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_compare_report(out_dir, summary: dict, figures: list[tuple[str, Path]], table_html: str = "") -> Path:
    """One self-contained HTML page with the summary, a results table and the figures."""
    out = Path(out_dir)
    rows = "".join(f'<tr><td class="l">{k}</td><td>{v:.4g}</td></tr>' for k, v in summary.items()
                   if isinstance(v, (int, float)))
    sections = [("Summary", f"<table>{rows}</table>{table_html}")]
    sections += [(title, embed_png(p)) for title, p in figures]
    page = out / "compare.html"
    page.write_text(html_page("optwin: twin vs bench", sections))
    return page
