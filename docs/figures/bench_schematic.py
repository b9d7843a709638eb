"""Draw the bench schematic of the README (docs/bench_schematic.png).

Run ``python docs/figures/bench_schematic.py``; it needs only matplotlib.
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "bench_schematic.png"

# (x centre, label, sub-label, colour) along the optical axis
ELEMENTS = [
    (0.6, "laser +\nDMD", "input a(0)\n(input)", "#d9e7f7"),
    (2.2, "SLM 1", "weights W1\n(slm1)", "#fde2c4"),
    (3.8, "Rb cell", "activation g(z1)\nprobe t(z1)", "#f6c9c9"),
    (5.4, "SLM 2", "weights W2\n(slm2)", "#fde2c4"),
    (7.0, "output\nplane", "z2 on cam_out;\nerror delta2 in\nby probe_input", "#d9f2d9"),
]
CAMERAS = [(3.0, "cam_z1", "z1 before the cell", -1), (4.6, "cam_a1", "a1 after the cell", -1),
           (3.0, "cam_back", "delta1 = t(z1) W2^T delta2", +1)]


def box(ax, x, y, w, h, text, colour, size=10):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05",
                                fc=colour, ec="0.3", lw=1.0))
    ax.text(x, y, text, ha="center", va="center", fontsize=size)


def arrow(ax, x0, y0, x1, y1, colour, style="-|>", ls="-"):
    ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle=style, mutation_scale=14,
                                 color=colour, lw=1.6, linestyle=ls))


def main():
    fig, ax = plt.subplots(figsize=(9.0, 3.6))
    ax.set_xlim(-0.2, 7.9)
    ax.set_ylim(-1.9, 2.2)
    ax.axis("off")
    for x, label, sub, colour in ELEMENTS:
        box(ax, x, 0.0, 1.0, 0.8, label, colour)
        ax.text(x, 0.5, sub, ha="center", va="bottom", fontsize=7.5, color="0.25")
    for (x0, *_), (x1, *_) in zip(ELEMENTS, ELEMENTS[1:]):
        arrow(ax, x0 + 0.55, 0.12, x1 - 0.55, 0.12, "#c0392b")          # forward pump
        arrow(ax, x1 - 0.55, -0.12, x0 + 0.55, -0.12, "#2e6fbf", ls="--")  # backward probe
    for x, name, what, side in CAMERAS:
        y = 1.25 * side if side < 0 else 1.2
        box(ax, x, y, 1.05, 0.45, name, "#eeeeee", size=9)
        if side < 0:
            ax.text(x, y - 0.3, what, ha="center", va="top", fontsize=7.5, color="0.25")
            arrow(ax, x, -0.2, x, y + 0.25, "0.45")
        else:
            ax.text(x + 0.6, y, what, ha="left", va="center", fontsize=7.5, color="0.25")
            arrow(ax, x, 0.2, x, y - 0.25, "#2e6fbf")
    ax.text(0.0, 2.0, "forward pump (signal)", color="#c0392b", fontsize=9)
    ax.text(2.6, 2.0, "backward weak probe (error)", color="#2e6fbf", fontsize=9)
    ax.text(5.6, 2.0, "cylindrical lenses sum each row", color="0.3", fontsize=9)
    fig.tight_layout()
    fig.savefig(OUT, dpi=130)
    print(OUT)


if __name__ == "__main__":
    main()
