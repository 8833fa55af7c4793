"""What a suite's runs cost (analysis/report.py): one row per step run read and one for the suite run."""
from __future__ import annotations

import pandas as pd

from .report_runs import RunSelector
from .report_tables import _md

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

