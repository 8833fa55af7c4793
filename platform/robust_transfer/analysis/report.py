"""`report`: a suite's tables, figures and claim verdicts (projects/*.yaml `report:`), built from MLflow runs.

For every step a table or figure names, the newest FINISHED run tagged `rtl.step=<step>` and
`rtl.scale=<scale>` supplies the numbers (children of that run, e.g. one per k, are found by
`mlflow.parentRunId`). Writes `<out>/<scale>/<name>.{md,csv,png}` and this suite's section of
`<out>/<scale>/index.md`; other suites' files in the same folder are never touched.

One module per job: the spec (report_spec.py), which runs (report_runs.py), tables (report_tables.py), figures
(report_figures.py), claims (report_claims.py, the engine in claim_verdicts.py), timing (report_timing.py), every
attempt at the suite (report_history.py); the
command is commands/report.py. Here: the files (`write_report`) and this suite's section of index.md.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

from ..io import atomic_write_text
from . import plots
from .claim_stats import NOT_RUN as CLAIM_NOT_RUN
from .report_claims import claims_frame, judge_claims, render_claims
from .report_figures import FRONT_COLUMNS, _copy_artifact, _figure_csv, figure_frames, front_frame  # noqa: F401
from .report_runs import RunSelector, experiment_ids_for, metric_value, select_runs  # noqa: F401
from .report_spec import (FIGURE_KINDS, NOT_RUN, _subst, check_scale, load_report_spec,  # noqa: F401
                          report_steps, scale_description)
from .report_tables import (TABLE_COLUMNS, _md, _runs_line, csv_columns, format_value, is_accuracy,  # noqa: F401
                            render_table, suite_line, table_frame)
from .report_history import history_frame
from .report_timing import compute_line, timing_frame

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
    "runs" (select_runs-style DataFrame of every step read), "warnings", "claims", "timing" (timing_frame),
    "history" (history_frame: every run of the suite at the scale)}.
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
    for entry in spec["report"]:
        if entry["type"] == "claim":
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
    claims = judge_claims(spec, scale, sel, _warn)
    if claims:
        section += render_claims(claims)
        _write_csv(claims_frame(claims), out_dir / f"{spec['name']}-claims.csv")
        files.append(out_dir / f"{spec['name']}-claims.csv")
        for c in claims:
            if c["verdict"] == CLAIM_NOT_RUN:
                _warn(f"claim {c['name']!r}: not run ({', '.join(k for k, v in c['values'].items() if v is None)})")
    timing = timing_frame(spec["name"], sel)
    _write_csv(timing, out_dir / f"{spec['name']}-timing.csv")
    files.append(out_dir / f"{spec['name']}-timing.csv")
    history = history_frame(spec["name"], sel)
    _write_csv(history, out_dir / f"{spec['name']}-history.csv")
    files.append(out_dir / f"{spec['name']}-history.csv")
    section[4:4] = [f"{compute_line(timing)} Times: [{spec['name']}-timing.csv]({spec['name']}-timing.csv); "
                    f"every suite run: [{spec['name']}-history.csv]({spec['name']}-history.csv)", ""]
    update_index(out_dir / "index.md", spec["name"], "\n".join(section), scale)
    files.append(out_dir / "index.md")
    return {"dir": out_dir, "files": files, "tables": tables, "markdown": markdown, "figures": figures,
            "runs": sel.frame(), "warnings": warnings, "claims": claims, "timing": timing,
            "history": history}


__all__ = ["load_report_spec", "check_scale", "scale_description", "report_steps", "select_runs", "RunSelector",
           "metric_value", "is_accuracy", "format_value", "table_frame", "render_table", "figure_frames",
           "write_report", "update_index",
           "experiment_ids_for", "FIGURE_KINDS", "TABLE_COLUMNS"]
