"""Sweep figures: a metric over two axes as a heatmap, and as curves over one axis (PNG).

Cells average the metric over every finished ('ok') point that shares the cell's two axis
values, i.e. over the seeds and any other axis; the figure titles say which.  Matplotlib's
object API with the Agg canvas is used, so no display and no global backend switch is needed.
"""
from __future__ import annotations

import json
from pathlib import Path
from textwrap import fill

import numpy as np

__all__ = ["aggregate", "choose_axes", "plot_sweep", "PLOT_METRICS"]

PLOT_METRICS = ("test_accuracy", "train_accuracy", "test_loss", "final_loss", "seconds")


def _token(v) -> str:
    return json.dumps(v, sort_keys=True)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _label(v) -> str:
    if _is_number(v):
        return f"{v:g}"
    return v if isinstance(v, str) else json.dumps(v)


def levels(results, axis: str) -> list:
    """Distinct values of ``axis`` in the results: ascending for numbers, else first-seen order."""
    if axis not in results.axes:
        raise ValueError(f"unknown axis {axis!r}; this sweep varies {', '.join(results.axes)}")
    seen = {}
    for r in results.rows:
        seen.setdefault(_token(r[axis]), r[axis])
    values = list(seen.values())
    if values and all(_is_number(v) for v in values):
        values.sort()
    return values


def choose_axes(results, x: str | None = None, y: str | None = None) -> tuple[str, str | None]:
    """Default plot axes: the first axes (grid order) with more than one value, seeds last."""
    for a in (x, y):
        if a is not None and a not in results.axes:
            raise ValueError(f"unknown axis {a!r}; this sweep varies {', '.join(results.axes)}")
    if x is not None and x == y:
        raise ValueError(f"--x and --y are both {x!r}; pick two different axes")
    varied = [a for a in results.axes if len(levels(results, a)) > 1]
    candidates = [a for a in varied if a != "seed"] + [a for a in varied if a == "seed"]
    if x is None:
        rest = [a for a in candidates if a != y]
        if not rest:
            raise ValueError("nothing to plot: no axis of this sweep has more than one value")
        x = rest[0]
    if y is None:
        rest = [a for a in candidates if a != x and a != "seed"]
        y = rest[0] if rest else None
    return x, y


def aggregate(results, x: str, y: str | None = None, metric: str = "test_accuracy") -> dict:
    """Mean, standard deviation and count of ``metric`` over 'ok' points per (y, x) cell.

    Returns a dict with ``x_values``, ``y_values`` ([None] without y), arrays ``mean``, ``std``
    (population std, ddof=0), ``count`` and ``failed`` (points not 'ok'), each (n_y, n_x).
    """
    if metric not in PLOT_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(PLOT_METRICS)}")
    xs = levels(results, x)
    ys = levels(results, y) if y else [None]
    xi = {_token(v): i for i, v in enumerate(xs)}
    yi = {_token(v): i for i, v in enumerate(ys)}
    cells = [[[] for _ in xs] for _ in ys]
    failed = np.zeros((len(ys), len(xs)), dtype=int)
    for r in results.rows:
        i, j = yi[_token(r[y]) if y else _token(None)], xi[_token(r[x])]
        if r["status"] == "ok":
            cells[i][j].append(float(r[metric]))
        else:
            failed[i, j] += 1
    mean = np.full((len(ys), len(xs)), np.nan)
    std = np.full_like(mean, np.nan)
    count = np.zeros(mean.shape, dtype=int)
    for i in range(len(ys)):
        for j in range(len(xs)):
            if cells[i][j]:
                mean[i, j] = np.mean(cells[i][j])
                std[i, j] = np.std(cells[i][j])
                count[i, j] = len(cells[i][j])
    return {"x_values": xs, "y_values": ys, "mean": mean, "std": std, "count": count, "failed": failed}


def _over(results, used) -> str:
    rest = [a for a in results.axes if a not in used and len(levels(results, a)) > 1]
    return f" over {', '.join(rest)}" if rest else ""


def _heatmap(results, agg, x, y, metric, path) -> None:
    from matplotlib.figure import Figure
    xs, ys, mean = agg["x_values"], agg["y_values"], agg["mean"]
    fig = Figure(figsize=(max(5.0, 1.2 + 0.9 * len(xs)), max(3.0, 1.4 + 0.6 * len(ys))), layout="constrained")
    ax = fig.add_subplot()
    from matplotlib import colormaps
    cmap = "viridis" if "accuracy" in metric else "viridis_r"
    im = ax.imshow(np.ma.masked_invalid(mean), origin="lower", aspect="auto",
                   cmap=colormaps[cmap].with_extremes(bad="0.8"))
    fig.colorbar(im, ax=ax, label=metric)
    ax.set_xticks(range(len(xs)), [_label(v) for v in xs])
    ax.set_yticks(range(len(ys)), [_label(v) for v in ys])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if mean.size <= 150:
        finite = mean[np.isfinite(mean)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for i in range(len(ys)):
            for j in range(len(xs)):
                if np.isfinite(mean[i, j]):
                    dark = (mean[i, j] < mid) == (cmap == "viridis")
                    ax.text(j, i, f"{mean[i, j]:.3g}", ha="center", va="center", fontsize=7,
                            color="w" if dark else "k")
                elif agg["failed"][i, j]:
                    ax.text(j, i, "failed", ha="center", va="center", fontsize=7)
    over = _over(results, (x, y))
    ax.set_title(fill(f"{metric}, mean{over}" if over else metric, 70), fontsize=9)
    fig.savefig(path, dpi=120)


def _curves(results, agg, x, y, metric, path) -> None:
    from matplotlib.figure import Figure
    xs, ys = agg["x_values"], agg["y_values"]
    numeric = all(_is_number(v) for v in xs)
    pos = np.asarray(xs, dtype=float) if numeric else np.arange(len(xs), dtype=float)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    for i, yv in enumerate(ys):
        ok = np.isfinite(agg["mean"][i])
        label = None if yv is None else f"{y} = {_label(yv)}"
        ax.errorbar(pos[ok], agg["mean"][i][ok], yerr=agg["std"][i][ok], marker="o", ms=4, capsize=3,
                    label=label)
    if numeric and pos.min() > 0 and pos.max() / pos.min() >= 20:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(pos, [_label(v) for v in xs])
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if y is not None:
        ax.legend(fontsize=8)
    over = _over(results, (x, y))
    ax.set_title(fill(f"{metric} vs {x}: mean \u00b1 std{over}" if over else f"{metric} vs {x}", 80), fontsize=9)
    fig.savefig(path, dpi=120)


def plot_sweep(results, out_dir, x: str | None = None, y: str | None = None,
               metric: str = "test_accuracy", replace: bool = False) -> list[Path]:
    """Write the heatmap (when two axes vary) and the curves of ``metric``; returns the PNG paths.

    An existing PNG of the same name (an earlier plot) is replaced only with ``replace``; otherwise
    ValueError, before anything is written."""
    if not results.rows:
        raise ValueError(f"{results.path}: no finished points to plot yet")
    x, y = choose_axes(results, x, y)
    agg = aggregate(results, x, y, metric)
    if not np.isfinite(agg["mean"]).any():
        raise ValueError(f"{results.path}: no point finished with status 'ok'; nothing to plot")
    out_dir = Path(out_dir)
    names = ([f"heatmap_{metric}_{y}_vs_{x}.png", f"curves_{metric}_vs_{x}_by_{y}.png"] if y is not None
             else [f"curves_{metric}_vs_{x}.png"])
    existing = [out_dir / n for n in names if (out_dir / n).exists()]
    if existing and not replace:
        raise ValueError(f"{existing[0]} exists (an earlier plot); pass --force to replace it or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    if y is not None:
        p = out_dir / f"heatmap_{metric}_{y}_vs_{x}.png"
        _heatmap(results, agg, x, y, metric, p)
        paths.append(p)
        p = out_dir / f"curves_{metric}_vs_{x}_by_{y}.png"
    else:
        p = out_dir / f"curves_{metric}_vs_{x}.png"
    _curves(results, agg, x, y, metric, p)
    paths.append(p)
    return paths
