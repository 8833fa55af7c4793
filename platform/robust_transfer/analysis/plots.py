"""Paper-style figures from tidy run data: lines (metric vs a run param) and grouped bars.

MLflow-free: `analysis.report` selects the runs and hands over tidy DataFrames. Figures are
`matplotlib.figure.Figure` objects on the Agg canvas (no pyplot state, safe in worker threads);
callers save them with `save_figure` and tests inspect the returned figure directly.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# the columns of the tidy frames the plot functions take
POINT_COLUMNS = ["series", "metric", "x", "y", "step", "run_id"]
HLINE_COLUMNS = ["label", "metric", "y", "step", "run_id"]
SPREAD_COLUMNS = ["std", "n"]   # optional columns of points: a mean over seeds, drawn with ±std error bars

# Figures people read are saved at 150 dpi or more (tests/test_analysis.py checks saved files).
FIGURE_DPI = 150
# A suite points the alias `s-<first 16 hex digits of the step key>` at each step's model: an internal
# key, never something to print on a figure.
_INTERNAL_ALIAS = re.compile(r"@s-[0-9a-f]{6,}")


def readable_label(ref: str) -> str:
    """A model reference as a person reads it: `models:/cpu-src-large-robust@s-70384ae095ba5164` →
    `cpu-src-large-robust` (suite step aliases are internal keys), `models:/m@champion` → `m@champion`;
    anything else (a label, `runs:/...`, a path) unchanged."""
    s = _INTERNAL_ALIAS.sub("", str(ref).strip())
    return s[len("models:/"):] if s.startswith("models:/") else s


def _text_width(fig: Figure, text: str, fontsize: float) -> float:
    probe = fig.text(0, 0, text, fontsize=fontsize)
    try:
        # the Agg canvas has get_renderer; matplotlib's stubs type fig.canvas as the base class, which has not
        return probe.get_window_extent(fig.canvas.get_renderer()).width  # type: ignore[attr-defined]
    finally:
        probe.remove()


def fit_text(fig: Figure, text: str, fontsize: float, fraction: float = 0.96) -> str:
    """`text` wrapped at spaces so that every line fits `fraction` of the figure's width, as the figure's
    renderer measures it (a `$...$` math span is never split); existing line breaks are kept."""
    limit = fraction * fig.bbox.width
    out = []
    for paragraph in str(text).split("\n"):
        line = ""
        for word in re.findall(r"\S*\$[^$]*\$\S*|\S+", paragraph):
            trial = f"{line} {word}" if line else word
            if line and _text_width(fig, trial, fontsize) > limit:
                out.append(line)
                line = word
            else:
                line = trial
        out.append(line)
    return "\n".join(out)


def x_sort_key(value) -> tuple:
    """Numeric values first, in numeric order ('2' < '10'), then anything else alphabetically."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _numeric(values) -> bool:
    return all(x_sort_key(v)[0] == 0 for v in values)


def _new_figure(title: str, note: str | None, width: float = 6.4, height: float = 4.2) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if title:
        fig.suptitle(fit_text(fig, readable_label(title), 11), fontsize=11)
    if note:
        ax.set_title(fit_text(fig, note, 7, fraction=0.85), fontsize=7, loc="left", style="italic")
    return fig, ax


METRIC_LABELS = {"clean_acc": "clean", "train_clean_acc": "training", "pgd20_acc": "PGD-20", "cw20_acc": "CW-20",
                 "aa_acc": "AutoAttack",
                 "mean": "(clean + PGD-20)/2"}


def _scale(metrics) -> tuple[float, str]:
    """Accuracies (fractions) are drawn as percentages; anything else as logged."""
    metrics = list(metrics)
    if all(m.endswith("_acc") or m == "mean" for m in metrics):
        return 100.0, "accuracy (%)"
    return 1.0, "value"


def _errors(group: pd.DataFrame, factor: float) -> list[float] | None:
    """±std error bars of points that are means over seeds (column `std`), or None when none has one."""
    if "std" not in group or not group["std"].notna().any():
        return None
    return [factor * float(v) if pd.notna(v) else 0.0 for v in group["std"]]


def _line_label(series: str, metric: str, n_metrics: int) -> str:
    return series if n_metrics == 1 else f"{series}: {METRIC_LABELS.get(metric, metric)}"


# Lines: one colour per series (a source, a method), one line style and marker per metric; the dashed
# style is kept for the reference lines (`hlines`).
LINE_STYLES = ["-", ":", "-.", (0, (3, 1, 1, 1, 1, 1))]
MARKERS = ["o", "s", "^", "D"]


def plot_lines(points: pd.DataFrame, hlines: pd.DataFrame | None = None, *, title: str = "", x: str = "x",
               note: str | None = None) -> Figure:
    """One line per (series, metric) of `points` (POINT_COLUMNS), x sorted numerically: a colour per series,
    a line style per metric; one dashed horizontal line per row of `hlines` (HLINE_COLUMNS), in the colour
    of the series at the same position. Metrics are fractions, drawn as percentages."""
    fig, ax = _new_figure(title, note)
    metrics = list(dict.fromkeys(points["metric"])) if len(points) else []
    numeric = _numeric(points["x"]) if len(points) else True
    if not numeric:  # categorical x: one shared, sorted set of positions
        cats = sorted(set(points["x"]), key=x_sort_key)
        ax.set_xticks(range(len(cats)), [str(c) for c in cats])
    factor, ylabel = _scale(metrics + (list(hlines["metric"]) if hlines is not None else []))
    series_names = list(dict.fromkeys(points["series"])) if len(points) else []
    colours = {s: f"C{i % 10}" for i, s in enumerate(series_names)}
    for (series, metric), group in points.groupby(["series", "metric"], sort=False):
        group = group.sort_values("x", key=lambda s: s.map(x_sort_key))
        xs = [float(v) for v in group["x"]] if numeric else [cats.index(v) for v in group["x"]]
        k = metrics.index(metric)
        ax.plot(xs, [factor * v for v in group["y"]], color=colours[series], linestyle=LINE_STYLES[k % len(LINE_STYLES)],
                marker=MARKERS[k % len(MARKERS)], label=_line_label(series, metric, len(metrics)))
        err = _errors(group, factor)
        if err is not None:
            ax.errorbar(xs, [factor * v for v in group["y"]], yerr=err, fmt="none", ecolor=colours[series],
                        capsize=2, linewidth=0.8)
    for i, row in enumerate(hlines.itertuples() if hlines is not None else ()):
        # the i-th reference line belongs to the i-th series: same colour, dashed
        colour = colours[series_names[i]] if i < len(series_names) else "0.35"
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
               edgecolor="white", linewidth=0.5, label=_line_label(series, metric, n_metrics), yerr=_errors(sel, factor),
               error_kw={"capsize": 2, "linewidth": 0.8})
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


def plot_front(points: pd.DataFrame, *, title: str = "", x: str = "clean_acc", y: str = "pgd20_acc",
               note: str | None = None) -> Figure:
    """Runs as points on two metrics (analysis/report.py FRONT_COLUMNS: series, role, x, y, hypervolume): a colour
    and marker per series; its kept points (role `front`) filled and joined by their attainment staircase (the area
    under it is the series' hypervolume above (0, 0), given in the legend), the rest (`dominated`: left out by the
    series' validation front) hollow. Accuracies are drawn as percentages."""
    from .front import staircase

    fig, ax = _new_figure(title, note, width=6.4, height=4.8)
    factor, _ = _scale([x, y])
    names = list(dict.fromkeys(points["series"])) if len(points) else []
    for i, series in enumerate(names):
        colour, marker = f"C{i % 10}", MARKERS[i % len(MARKERS)]
        group = points[points["series"] == series]
        kept = group[group["role"] == "front"]
        hv = float(kept["hypervolume"].iloc[0]) if len(kept) else 0.0
        pts = list(zip(kept["x"], kept["y"]))
        xs, ys = staircase(pts) if pts else ([], [])
        ax.plot([factor * v for v in xs], [factor * v for v in ys], color=colour, linewidth=1.0, alpha=0.7)
        ax.scatter([factor * v for v in kept["x"]], [factor * v for v in kept["y"]], color=colour, marker=marker,
                   s=36, zorder=3, label=f"{series} (hypervolume {hv:.4f})")
        rest = group[group["role"] != "front"]
        if len(rest):
            ax.scatter([factor * v for v in rest["x"]], [factor * v for v in rest["y"]], facecolors="none",
                       edgecolors=colour, marker=marker, s=28, zorder=2, label=f"{series}: other trials (dominated on validation)")
    ax.set_xlabel(f"{METRIC_LABELS.get(x, x)} accuracy (%)" if factor == 100.0 else x)
    ax.set_ylabel(f"{METRIC_LABELS.get(y, y)} accuracy (%)" if factor == 100.0 else y)
    ax.grid(alpha=0.3)
    if names:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no runs yet", ha="center", va="center", transform=ax.transAxes)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = FIGURE_DPI) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


__all__ = ["plot_lines", "plot_bars", "plot_front", "save_figure", "x_sort_key", "readable_label", "fit_text", "FIGURE_DPI",
           "POINT_COLUMNS", "HLINE_COLUMNS", "SPREAD_COLUMNS"]
