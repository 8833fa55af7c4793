"""`report`: a suite's tables and figures (projects/*.yaml `report:`), built from MLflow runs.

For every step a table or figure names, the newest FINISHED run tagged `rtl.step=<step>` and
`rtl.scale=<scale>` supplies the numbers (children of that run, e.g. one per k, are found by
`mlflow.parentRunId`). Writes `<out>/<scale>/<name>.{md,csv,png}` and this suite's section of
`<out>/<scale>/index.md`; other suites' files in the same folder are never touched.

The spec is read by analysis/report_spec.py, runs are chosen by analysis/report_runs.py, the command is
commands/report.py; here: tables, figures, claims and the files (`write_report`).
"""
from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import pandas as pd

from ..io import atomic_copy, atomic_write_text
from . import plots
from .claims import evaluate_claim
from .report_runs import RunSelector, _missing, experiment_ids_for, metric_value, select_runs  # noqa: F401
from .report_runs import metric_stats, run_ids
from .report_runs import DERIVED_METRICS
from .report_spec import (FIGURE_KINDS, NO_VALUE, NOT_RUN, _at_scale, _subst, check_scale, load_report_spec,  # noqa: F401
                          report_steps, scale_description)

# --- tables --------------------------------------------------------------------------------------------
TABLE_COLUMNS = ["label", "metric", "ours", "paper", "step", "run_id"]
SEED_COLUMNS = ["std", "n"]   # added (to the CSV too) when a row comes from a seeded step: ours = the mean


def table_frame(entry: dict, sel: RunSelector, variables: dict | None = None,
                warn=lambda msg: None) -> pd.DataFrame:
    """Tidy rows (TABLE_COLUMNS + status + SEED_COLUMNS) of one table: ours/paper are fractions, None when
    absent; for a seeded step ours is the mean over its seeds, std their standard deviation, n their number
    (std None and n 1 for an unseeded step)."""
    variables = variables or {}
    out = []
    for row in entry["rows"]:
        if not _at_scale(row, sel.scale):
            continue
        label = _subst(row["label"], variables)
        for metric in entry["columns"]:
            step = row["metrics_from"].get(metric, row["step"])
            run = sel.run(step)
            value = metric_value(run, metric)
            if run is None:
                status = NOT_RUN
            elif value is None:
                status = NO_VALUE
                warn(f"{entry['name']}: run {run['run_id']} of step {step!r} has no metric {metric!r}")
            else:
                status = "ok"
            stats = metric_stats(run, metric) if value is not None else None
            seeded = bool(run and run.get("seed_runs"))
            out.append({"label": label, "metric": metric, "ours": value, "paper": row["paper"].get(metric),
                        "step": step, "run_id": run_ids(run), "status": status,
                        "paper_label": _subst(row["paper_label"], variables),
                        "std": stats["std"] if stats else None,
                        "n": stats["n"] if stats else None, "seeded": seeded})
    for step in dict.fromkeys(r["step"] for r in out if r["status"] == NOT_RUN):
        warn(f"{entry['name']}: step {step!r} has no FINISHED run at scale {sel.scale!r} (shown as '{NOT_RUN}')")
    frame = pd.DataFrame(out, columns=TABLE_COLUMNS + ["status", "paper_label", *SEED_COLUMNS, "seeded"])
    frame["n"] = frame["n"].astype("Int64")
    return frame


def csv_columns(frame: pd.DataFrame) -> list[str]:
    """TABLE_COLUMNS, and std, n when a row of the table comes from a seeded step."""
    return TABLE_COLUMNS + (SEED_COLUMNS if "seeded" in frame and frame["seeded"].any() else [])


def format_cell(r, metric: str) -> str:
    """A table cell: the value; for a seeded step `mean ± std (n=3)` (`mean (n=1)` when one seed finished)."""
    if r.status != "ok":
        return r.status
    text = format_value(r.ours, metric)
    if not getattr(r, "seeded", False):
        return text
    if not _missing(r.std) and r.n and r.n > 1:
        text += f" ± {format_value(r.std, metric)}"
    return text + f" (n={int(r.n)})"


def is_accuracy(metric: str) -> bool:
    """Accuracies (fractions) are shown as percentages; other metrics (e.g. feature distances) as numbers."""
    return metric.endswith("_acc") or metric in DERIVED_METRICS


def format_value(v, metric: str = "clean_acc") -> str:
    if _missing(v):
        return ""
    return f"{100 * float(v):.2f}" if is_accuracy(metric) else f"{float(v):.4g}"


def _md(text) -> str:
    return "" if text is None else str(text).replace("|", "\\|").replace("\n", " ")


def _runs_line(frame: pd.DataFrame) -> str:
    used = frame[frame["run_id"].notna()][["step", "run_id"]].drop_duplicates()
    missing = list(dict.fromkeys(frame.loc[frame["run_id"].isna(), "step"]))
    parts = [f"`{s}` {r}" for s, r in zip(used["step"], used["run_id"])]
    line = "Runs: " + ("; ".join(parts) if parts else "none")
    return line + (f". Not run: {', '.join(f'`{s}`' for s in missing)}." if missing else ".")


def suite_line(spec: dict, scale: str, *, with_title: bool = True) -> str:
    """'Suite **<title>** (paper: Table 2) at scale `cpu`: <the scale's description>.'"""
    paper = f"paper: {spec['paper']}" if spec.get("paper") else ""
    desc = _md(scale_description(spec, scale)).rstrip(". ")
    if not with_title:
        return (f"{_md(paper[:1].upper() + paper[1:])}. " if paper else "") + f"Scale `{scale}`: {desc}."
    return f"Suite **{_md(spec['title'])}**{_md(f' ({paper})' if paper else '')} at scale `{scale}`: {desc}."


def render_table(entry: dict, frame: pd.DataFrame, spec: dict, scale: str, heading: str = "###", *,
                 with_suite: bool = True) -> str:
    """The Markdown of one table: a heading, the suite/scale/description line (unless `with_suite` is
    false: index.md states it once per suite), the run ids, the table."""
    metrics = list(entry["columns"])
    with_paper = bool(frame["paper"].notna().any())
    with_paper_row = bool(frame["paper_label"].notna().any())
    header = ["setting"]
    for m in metrics:
        h = entry["columns"][m]
        header += [f"{h} (ours)", f"{h} (paper)"] if with_paper else [h]
    header += ["paper row"] if with_paper_row else []
    lines = [f"{heading} {_md(entry['title'])}", "", *([suite_line(spec, scale)] if with_suite else []),
             _runs_line(frame), "",
             "| " + " | ".join(_md(h) for h in header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1 - with_paper_row) + [":---"] * with_paper_row) + "|"]
    for label, rows in frame.groupby("label", sort=False):
        by_metric = {r.metric: r for r in rows.itertuples()}
        cells = [_md(label)]
        for m in metrics:
            r = by_metric[m]
            cells.append(format_cell(r, m))
            if with_paper:
                cells.append(format_value(r.paper, m))
        if with_paper_row:
            cells.append(_md(rows["paper_label"].dropna().iloc[0]) if rows["paper_label"].notna().any() else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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


# --- timing --------------------------------------------------------------------------------------------
TIMING_COLUMNS = ["kind", "step", "run_id", "start", "end", "seconds", "machine"]


def _utc(t) -> pd.Timestamp | None:
    """An MLflow start/end time (datetime from search_runs) as a UTC Timestamp; None when absent (not ended)."""
    if t is None or pd.isna(t):
        return None
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _timing_row(kind: str, step: str, run: dict) -> dict:
    start, end = _utc(run.get("start_time")), _utc(run.get("end_time"))
    return {"kind": kind, "step": step, "run_id": run["run_id"],
            "start": start.strftime("%Y-%m-%dT%H:%M:%SZ") if start else "",
            "end": end.strftime("%Y-%m-%dT%H:%M:%SZ") if end else "",
            "seconds": round((end - start).total_seconds(), 3) if start and end else None,
            "machine": run["tags"].get("rtl.machine", "")}


def timing_frame(suite: str, sel: RunSelector) -> pd.DataFrame:
    """TIMING_COLUMNS: one `step` row per step run the report read (each seed's run; each run once), and a
    `suite` row for the newest run of the suite itself: what docs/results.md says the suites cost."""
    rows = [_timing_row("step", step, run) for step, run in sel.step_runs()]
    suite_run = sel.suite_run(suite)
    rows += [_timing_row("suite", "", suite_run)] if suite_run else []
    return pd.DataFrame(rows, columns=TIMING_COLUMNS)


def compute_line(timing: pd.DataFrame) -> str:
    """'Compute: 3 step runs, 12.5 min of step time; suite run 2026-… to 2026-… UTC (machine …).'"""
    steps = timing[timing["kind"] == "step"]
    line = f"Compute: {len(steps)} step runs, {steps['seconds'].fillna(0).sum() / 60:.1f} min of step time; "
    suite = timing[timing["kind"] == "suite"]
    if suite.empty:
        return line + "no suite run recorded."
    r = suite.iloc[0]
    end = r["end"].replace("T", " ").rstrip("Z") + " UTC" if r["end"] else "not ended"
    machine = r["machine"] or "not recorded"
    return line + f"suite run started {r['start'].replace('T', ' ').rstrip('Z')} UTC, ended {end} (machine: {_md(machine)})."


# --- writing -------------------------------------------------------------------------------------------
def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def _section_markers(suite: str) -> tuple[str, str]:
    return f"<!-- rtl-report:{suite} begin -->", f"<!-- rtl-report:{suite} end -->"


def update_index(index: Path, suite: str, section: str, scale: str) -> None:
    """Replace this suite's section of index.md (or append it); other suites' sections stay as they are."""
    begin, end = _section_markers(suite)
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    text = index.read_text(encoding="utf-8") if index.exists() else (
        f"# Results at scale `{scale}`\n\nWritten by `rtl report`: one section per suite (projects/*.yaml).\n\n")
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    text = pattern.sub(lambda m: block, text, count=1) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block
    atomic_write_text(index, text)


def write_report(spec: dict, scale: str, out: str | Path = "docs/results", *,
                 experiment_ids: list[str] | None = None, warn=None) -> dict:
    """Build every table and figure of `spec` at `scale` into `<out>/<scale>/` and update index.md.

    Never fails on missing runs (a "not run" cell, a warning). Returns {"dir", "files", "tables"
    (name → tidy DataFrame), "markdown" (name → str), "figures" (name → matplotlib Figure),
    "runs" (select_runs-style DataFrame of every step read), "warnings", "claims", "timing" (timing_frame)}.
    """
    import mlflow

    from ..tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    variables = check_scale(spec, scale)
    out_dir = Path(out) / scale
    out_dir.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []

    def _warn(msg: str) -> None:
        warnings.append(msg)
        (warn or (lambda m: print(f"warning: {m}", file=sys.stderr)))(msg)

    sel = RunSelector(scale, experiment_ids)
    files, tables, markdown, figures = [], {}, {}, {}
    section = [f"## {_md(spec['title'])}", "", suite_line(spec, scale, with_title=False), ""]
    claims = []
    for entry in spec["report"]:
        if entry["type"] == "claim":
            if _at_scale(entry, scale):
                claims.append(entry | evaluate_claim(entry, sel))
            continue
        name, title = entry["name"], _subst(entry["title"], variables)
        if entry["type"] == "table":
            frame = table_frame(entry, sel, variables, _warn)
            md = render_table(entry | {"title": title}, frame, spec, scale)
            atomic_write_text(out_dir / f"{name}.md", md)
            _write_csv(frame[csv_columns(frame)], out_dir / f"{name}.csv")
            files += [out_dir / f"{name}.md", out_dir / f"{name}.csv"]
            tables[name], markdown[name] = frame[csv_columns(frame)], md
            section += [render_table(entry | {"title": title}, frame, spec, scale, with_suite=False),
                        f"Values: [{name}.csv]({name}.csv)", ""]
            continue
        note = _subst(entry.get("paper_note"), variables)
        if entry["kind"] == "artifact":
            path, csv = _copy_artifact(entry, sel, out_dir, _warn)
            _write_csv(csv, out_dir / f"{name}.csv")
            files += ([path] if path else []) + [out_dir / f"{name}.csv"]
            runs = f"Run: `{entry['step']}` {csv['run_id'][0]}." if path else f"Not run: `{entry['step']}`."
        elif entry["kind"] == "front":
            csv = front_frame(entry, sel, variables, _warn)
            fig = plots.plot_front(csv, title=title, x=entry["x"], y=entry["y"][0], note=note)
            path = plots.save_figure(fig, out_dir / f"{name}.png")
            figures[name] = fig
            _write_csv(csv, out_dir / f"{name}.csv")
            files += [path, out_dir / f"{name}.csv"]
            runs = _runs_line(pd.DataFrame(
                [{"step": st, "run_id": sel.run(st)["run_id"] if sel.run(st) else None}
                 for st in report_steps({"report": [entry]}, scale)], columns=["step", "run_id"]))
        else:
            points, hlines = figure_frames(entry, sel, variables, _warn)
            if entry["kind"] == "lines":
                fig = plots.plot_lines(points, hlines, title=title, x=entry["x"], note=note)
            else:
                fig = plots.plot_bars(points, title=title, x=entry["x"], note=note)
            path = plots.save_figure(fig, out_dir / f"{name}.png")
            figures[name] = fig
            csv = _figure_csv(points, hlines)
            _write_csv(csv, out_dir / f"{name}.csv")
            files += [path, out_dir / f"{name}.csv"]
            runs = _runs_line(pd.DataFrame(
                [{"step": st, "run_id": sel.run(st)["run_id"] if sel.run(st) else None}
                 for st in report_steps({"report": [entry]}, scale)], columns=["step", "run_id"]))
        section += [f"### {_md(title)}", ""]
        section += [f"![{_md(title)}]({path.name})", ""] if path else [f"*{NOT_RUN}*", ""]
        section += ([f"*{_md(note)}*", ""] if note else []) + [f"{runs} Values: [{name}.csv]({name}.csv)", ""]
    if claims:
        section += render_claims(claims)
        frame = pd.DataFrame([{"claim": c["name"], "kind": c.get("kind", "paper"), "explains": c.get("explains") or "",
                               "text": c["text"], "paper": c["paper"], "check": c["check"],
                               "values": c["shown"], "verdict": c["verdict"]} for c in claims])
        _write_csv(frame, out_dir / f"{spec['name']}-claims.csv")
        files.append(out_dir / f"{spec['name']}-claims.csv")
        for c in claims:
            if c["verdict"] == NOT_RUN:
                _warn(f"claim {c['name']!r}: not run ({', '.join(k for k, v in c['values'].items() if v is None)})")
    timing = timing_frame(spec["name"], sel)
    _write_csv(timing, out_dir / f"{spec['name']}-timing.csv")
    files.append(out_dir / f"{spec['name']}-timing.csv")
    section[4:4] = [f"{compute_line(timing)} Times: [{spec['name']}-timing.csv]({spec['name']}-timing.csv)", ""]
    update_index(out_dir / "index.md", spec["name"], "\n".join(section), scale)
    files.append(out_dir / "index.md")
    return {"dir": out_dir, "files": files, "tables": tables, "markdown": markdown, "figures": figures,
            "runs": sel.frame(), "warnings": warnings, "claims": claims, "timing": timing}


def render_claims(claims: list[dict]) -> list[str]:
    """The claims table of a suite's section: what the paper says, our check with numbers, the verdict."""
    lines = ["### Claims", "", "| claim | paper | check (our numbers) | verdict |", "|---|---|---|---|"]
    for c in claims:
        text = _md(c["text"]) if c.get("kind", "paper") == "paper" else f"*({_kind_label(c)})* {_md(c['text'])}"
        lines.append(f"| {text} | {_md(c['paper'])} | `{c['check']}` → `{c['shown']}` | **{c['verdict']}** |")
    return lines + [""]


def _kind_label(claim: dict) -> str:
    """How a non-paper claim is marked in its suite's table: a reason says which claim's miss it would explain."""
    kind = claim.get("kind", "paper")
    return f"reason for {claim['explains']}" if kind == "reason" else kind


__all__ = ["load_report_spec", "check_scale", "scale_description", "report_steps", "select_runs", "RunSelector",
           "metric_value", "is_accuracy", "format_value", "table_frame", "render_table", "figure_frames",
           "write_report", "update_index",
           "experiment_ids_for", "FIGURE_KINDS", "TABLE_COLUMNS"]
