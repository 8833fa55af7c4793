"""Every attempt at a suite (analysis/report.py): one row per suite run at the scale, oldest first, whatever its
status, from what the suite run recorded (commands/suite.py, suites/run.py `suite_tags`, suites/registration.py).
What docs/results.md's history section is written from (publish.history_summary), so nobody types it."""
from __future__ import annotations

import pandas as pd

from ..suites.registration import TAG as REGISTRATION_TAG
from ..tracking.source import GIT_COMMIT_TAG
from .report_runs import RunSelector
from .report_timing import _utc

HISTORY_COLUMNS = ["run_id", "status", "start", "end", "minutes", "commit", "code_version", "registration",
                   "steps_run", "steps_reused", "workers"]
SHORT = 10   # hex digits shown of a commit, a code version (sha256 of the sources), a registration hash


def _iso(t) -> str:
    t = _utc(t)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t is not None else ""


def _count(value) -> int | None:
    return None if value is None else int(float(value))


def history_row(sel: RunSelector, run: dict) -> dict:
    """One suite run. steps_run: its child step runs (they ran under it, in any status; a reused step is not its
    child); steps_reused: the count the suite logs when it ends (metric steps_reused), empty for an attempt that
    did not get there. workers: the suite logs the param only when > 1, so a run that logged its params without
    it ran with 1."""
    start, end = _utc(run.get("start_time")), _utc(run.get("end_time"))
    tags, params = run["tags"], run["params"]
    workers = params.get("workers") or ("1" if "project" in params else "")
    return {"run_id": run["run_id"], "status": run.get("status") or "",
            "start": _iso(start), "end": _iso(end),
            "minutes": round((end - start).total_seconds() / 60, 2) if start is not None and end is not None else None,
            "commit": tags.get(GIT_COMMIT_TAG, "")[:SHORT], "code_version": tags.get("rtl.code_version", "")[:SHORT],
            "registration": tags.get(REGISTRATION_TAG, "")[:SHORT],
            "steps_run": len(sel.step_children(run)), "steps_reused": _count(run["metrics"].get("steps_reused")),
            "workers": workers}


def history_frame(suite: str, sel: RunSelector) -> pd.DataFrame:
    """HISTORY_COLUMNS, one row per run of suite `suite` at the selector's scale (RunSelector.suite_runs)."""
    rows = [history_row(sel, run) for run in sel.suite_runs(suite)]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS).astype({"steps_reused": "Int64"})
