"""Paper-style figures from tidy run data: lines (metric vs a run param) and grouped bars.

MLflow-free: `analysis.report` selects the runs and hands over tidy DataFrames. Figures are
`matplotlib.figure.Figure` objects on the Agg canvas (no pyplot state, safe in worker threads);
callers save them with `save_figure` and tests inspect the returned figure directly.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# the columns of the tidy frames the plot functions take
POINT_COLUMNS = ["series", "metric", "x", "y", "step", "run_id"]
HLINE_COLUMNS = ["label", "metric", "y", "step", "run_id"]


def x_sort_key(value) -> tuple:
    """Numeric values first, in numeric order ('2' < '10'), then anything else alphabetically."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _numeric(values) -> bool:
    return all(x_sort_key(v)[0] == 0 for v in values)


def _new_figure(title: str, note: str | None, width: float = 6.4, height: float = 4.2) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if title:
        fig.suptitle(title, fontsize=11)
    if note:
        ax.set_title("\n".join(textwrap.wrap(note, 90)), fontsize=7, loc="left", style="italic")
    return fig, ax


METRIC_LABELS = {"clean_acc": "clean", "pgd20_acc": "PGD-20", "cw20_acc": "CW-20", "aa_acc": "AutoAttack",
                 "mean": "(clean + PGD-20)/2"}


def _scale(metrics) -> tuple[float, str]:
    """Accuracies (fractions) are drawn as percentages; anything else as logged."""
    metrics = list(metrics)
    if all(m.endswith("_acc") or m == "mean" for m in metrics):
        return 100.0, "accuracy (%)"
    return 1.0, "value"


def _line_label(series: str, metric: str, n_metrics: int) -> str:
    return series if n_metrics == 1 else f"{series}: {METRIC_LABELS.get(metric, metric)}"


def plot_lines(points: pd.DataFrame, hlines: pd.DataFrame | None = None, *, title: str = "", x: str = "x",
               note: str | None = None) -> Figure:
    """One line per (series, metric) of `points` (POINT_COLUMNS), x sorted numerically; one dashed
    horizontal line per row of `hlines` (HLINE_COLUMNS). Metrics are fractions, drawn as percentages."""
    fig, ax = _new_figure(title, note)
    metrics = list(dict.fromkeys(points["metric"])) if len(points) else []
    numeric = _numeric(points["x"]) if len(points) else True
    if not numeric:  # categorical x: one shared, sorted set of positions
        cats = sorted(set(points["x"]), key=x_sort_key)
        ax.set_xticks(range(len(cats)), [str(c) for c in cats])
    factor, ylabel = _scale(metrics + (list(hlines["metric"]) if hlines is not None else []))
    for (series, metric), group in points.groupby(["series", "metric"], sort=False):
        group = group.sort_values("x", key=lambda s: s.map(x_sort_key))
        xs = [float(v) for v in group["x"]] if numeric else [cats.index(v) for v in group["x"]]
        ax.plot(xs, [factor * v for v in group["y"]], marker="o", label=_line_label(series, metric, len(metrics)))
    line_colours = [line.get_color() for line in ax.get_lines()]
    for i, row in enumerate(hlines.itertuples() if hlines is not None else ()):
        # the i-th reference line belongs to the i-th series (its first line): same colour, dashed
        colour = line_colours[i * max(len(metrics), 1)] if i * max(len(metrics), 1) < len(line_colours) else "0.35"
        ax.axhline(factor * row.y, linestyle="--", linewidth=1.2, color=colour,
                   label=f"{row.label} ({METRIC_LABELS.get(row.metric, row.metric)})")
    if numeric and len(points):
        ticks = sorted({float(v) for v in points["x"]})
        if all(t.is_integer() for t in ticks) and len(ticks) <= 20:
            ax.set_xticks(ticks, [str(int(t)) for t in ticks])
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    if not len(points) and (hlines is None or not len(hlines)):
        ax.text(0.5, 0.5, "no runs yet", ha="center", va="center", transform=ax.transAxes)
    return fig


def plot_bars(points: pd.DataFrame, *, title: str = "", x: str = "x", note: str | None = None) -> Figure:
    """Grouped bars: one group per x value (sorted numerically), one bar per (series, metric) in each
    group that has a value. `points` has POINT_COLUMNS; metrics are fractions, drawn as percentages."""
    fig, ax = _new_figure(title, note, width=9.5, height=5.4)
    groups = sorted(set(points["x"]), key=x_sort_key) if len(points) else []
    keys = list(dict.fromkeys(zip(points["series"], points["metric"]))) if len(points) else []
    n_metrics = len(set(points["metric"])) if len(points) else 0
    width = 0.8 / max(len(keys), 1)
    factor, ylabel = _scale(m for _, m in keys)
    # One colour per series (method), one hatch per metric: the eye groups by method, then reads the metric.
    series_names = list(dict.fromkeys(s for s, _ in keys))
    metric_names = list(dict.fromkeys(m for _, m in keys))
    colours = {s: f"C{i % 10}" for i, s in enumerate(series_names)}
    hatches = {m: h for m, h in zip(metric_names, ["", "///", "...", "xx", "\\\\", "oo"])}
    for i, (series, metric) in enumerate(keys):
        sel = points[(points["series"] == series) & (points["metric"] == metric)]
        pos = [groups.index(v) - 0.4 + width * (i + 0.5) for v in sel["x"]]
        ax.bar(pos, [factor * v for v in sel["y"]], width=width, color=colours[series], hatch=hatches.get(metric, ""),
               edgecolor="white", linewidth=0.5, label=_line_label(series, metric, n_metrics))
    ax.set_xticks(range(len(groups)), [str(g) for g in groups])
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if keys:  # below the axes: with many bars a legend inside covers them
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=len(series_names),
                   fontsize=7)
    else:
        ax.text(0.5, 0.5, "no runs yet", ha="center", va="center", transform=ax.transAxes)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


__all__ = ["plot_lines", "plot_bars", "save_figure", "x_sort_key", "POINT_COLUMNS", "HLINE_COLUMNS"]
