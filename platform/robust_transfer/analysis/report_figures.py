"""A report's figures (analysis/report.py): the plotted points of lines, bars and fronts, and copied artifacts."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from ..io import atomic_copy
from . import plots
from .report_runs import RunSelector, metric_stats, metric_value, run_ids
from .report_spec import _at_scale, _subst

# --- figures -------------------------------------------------------------------------------------------
def figure_frames(entry: dict, sel: RunSelector, variables: dict | None = None,
                  warn=lambda msg: None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(points, hlines) of a lines/bars figure: plots.POINT_COLUMNS (+ std, n) and plots.HLINE_COLUMNS. A
    seeded step's point is the mean over its seeds (std: their standard deviation, drawn as an error bar)."""
    variables = variables or {}
    points, hlines, name, x = [], [], entry["name"], entry["x"]
    for s in entry["series"]:
        if not _at_scale(s, sel.scale):
            continue
        label = _subst(s["label"], variables)
        runs = []
        for step in s["steps"]:
            run = sel.run(step)
            if run is None:
                warn(f"{name}: step {step!r} has no FINISHED run at scale {sel.scale!r}; series {label!r} "
                     "is missing it")
            elif s["children"]:
                kids = sel.children(run)
                runs += [(step, k) for k in kids] if kids else [(step, run)]  # a single k has no children
            else:
                runs.append((step, run))
        if x == "epoch":   # training curves: one point per logged epoch (step = epoch index, from 0)
            for step, run in runs:
                for metric in entry["y"]:
                    curve = sel.history(run, metric)
                    if not curve:
                        warn(f"{name}: run {run['run_id']} of step {step!r} has no history of {metric!r}; left out")
                    points += [{"series": label, "metric": metric, "x": epoch + 1, "y": y, "step": step,
                                "run_id": run["run_id"]} for epoch, y in curve]
            continue
        seen = set()
        for step, run in runs:
            xv = s["x"].get(step) if run["run_id"] == (sel.run(step) or {}).get("run_id") else None
            xv = xv if xv is not None else run["params"].get(x)
            if xv is None:
                warn(f"{name}: run {run['run_id']} of step {step!r} has no param {x!r}; left out")
                continue
            for metric in entry["y"]:
                y = metric_value(run, metric)
                if y is None:
                    warn(f"{name}: run {run['run_id']} of step {step!r} has no metric {metric!r}; left out")
                elif (metric, xv) in seen:
                    warn(f"{name}: series {label!r} has two runs with {x}={xv}; kept the newest")
                else:
                    seen.add((metric, xv))
                    stats = metric_stats(run, metric) if run.get("seed_runs") else None
                    points.append({"series": label, "metric": metric, "x": xv, "y": y, "step": step,
                                   "run_id": run_ids(run), "std": stats["std"] if stats else None,
                                   "n": stats["n"] if stats else None})
    for h in entry.get("hlines", []):
        if not _at_scale(h, sel.scale):
            continue
        run = sel.run(h["step"])
        y = metric_value(run, h["metric"])
        if y is None:
            why = "has no FINISHED run" if run is None else f"has no metric {h['metric']!r}"
            warn(f"{name}: reference line {h['label']!r}: step {h['step']!r} {why} at scale {sel.scale!r}")
            continue
        hlines.append({"label": _subst(h["label"], variables), "metric": h["metric"], "y": y, "step": h["step"],
                       "run_id": run_ids(run)})
    return (pd.DataFrame(points, columns=plots.POINT_COLUMNS + plots.SPREAD_COLUMNS),
            pd.DataFrame(hlines, columns=plots.HLINE_COLUMNS))


FRONT_COLUMNS = ["series", "role", "x_metric", "x", "y_metric", "y", "hypervolume", "step", "run_id"]


def front_frame(entry: dict, sel: RunSelector, variables: dict | None = None, warn=lambda msg: None) -> pd.DataFrame:
    """The points of a `kind: front` figure (FRONT_COLUMNS): one row per run of each series at the figure's x/y
    (test) metrics; role `front` for the runs a series keeps (all of a `steps` series; the Pareto-optimal ones
    on `pareto_on`), `dominated` for the rest; `hypervolume` of the series' kept points above (0, 0)."""
    from .front import hypervolume, set_runs

    variables = variables or {}
    xm, ym = entry["x"], entry["y"][0]
    rows = []
    for s in entry["series"]:
        if not _at_scale(s, sel.scale):
            continue
        label = _subst(s["label"], variables)
        kept, rest = set_runs(s, sel)
        if kept is None:
            warn(f"{entry['name']}: series {label!r}: a step of {s['steps']} has no FINISHED run"
                 f"{' (or no complete trial)' if s['trials'] else ''} at scale {sel.scale!r}")
            continue
        series_rows = []
        for role, runs in (("front", kept), ("dominated", rest)):
            for step, run in runs:
                x, y = metric_value(run, xm), metric_value(run, ym)
                if x is None or y is None:
                    warn(f"{entry['name']}: run {run['run_id']} of step {step!r} has no {xm if x is None else ym}; left out")
                    continue
                series_rows.append({"series": label, "role": role, "x_metric": xm, "x": x, "y_metric": ym, "y": y,
                                    "step": step, "run_id": run["run_id"]})
        hv = hypervolume([(r["x"], r["y"]) for r in series_rows if r["role"] == "front"])
        rows += [r | {"hypervolume": hv} for r in series_rows]
    return pd.DataFrame(rows, columns=FRONT_COLUMNS)


def _figure_csv(points: pd.DataFrame, hlines: pd.DataFrame) -> pd.DataFrame:
    a = points.assign(kind="point")
    b = hlines.rename(columns={"label": "series"}).assign(kind="hline", x=None)
    rows = a.to_dict("records") + b.to_dict("records")
    spread = plots.SPREAD_COLUMNS if "n" in points and points["n"].notna().any() else []   # seeded points
    return pd.DataFrame(rows, columns=["kind", "series", "metric", "x", "y", "step", "run_id", *spread])


def _copy_artifact(entry: dict, sel: RunSelector, out_dir: Path, warn) -> tuple[Path | None, pd.DataFrame]:
    import mlflow

    run = sel.run(entry["step"])
    row = {"step": entry["step"], "run_id": run["run_id"] if run else None, "artifact": entry["artifact"], "file": None}
    if run is None:
        warn(f"{entry['name']}: step {entry['step']!r} has no FINISHED run at scale {sel.scale!r}")
        return None, pd.DataFrame([row])
    suffix = Path(entry["artifact"]).suffix or ".png"
    dest = out_dir / f"{entry['name']}{suffix}"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(run_id=run["run_id"], artifact_path=entry["artifact"],
                                                             dst_path=tmp))
        except Exception as e:  # MlflowException, OSError: the artifact is not there
            warn(f"{entry['name']}: run {run['run_id']} of step {entry['step']!r} has no artifact "
                 f"{entry['artifact']!r} ({type(e).__name__})")
            return None, pd.DataFrame([row])
        if not local.is_file():
            warn(f"{entry['name']}: artifact {entry['artifact']!r} of run {run['run_id']} is a folder, not a file")
            return None, pd.DataFrame([row])
        atomic_copy(local, dest)
    row["file"] = dest.name
    return dest, pd.DataFrame([row])

