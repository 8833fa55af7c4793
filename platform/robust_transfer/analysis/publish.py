"""docs/results.md from what `rtl report` wrote: which suite runs stand behind it (every attempt, its commit), where
and how long the suites ran, the claim verdicts of every suite, then every suite's tables and figures. Nothing here
holds a number: they all come from the reports' CSV and Markdown files. When each claim was registered comes from
the same CSVs (`registered`, `registration_note`: the suite runs' records, analysis/claim_registration.py): a claim
registered after its runs is listed, and counted apart, never among the supported; a reason counts as tested only when registered before the runs of the miss it
explains and its verdict says something (supported or not supported).

    python -m robust_transfer.analysis.publish --results docs/results --scale cpu --intro docs/results_intro.md \
        > docs/results.md
"""
from __future__ import annotations

import argparse
import csv
import re
import sys
from datetime import datetime
from pathlib import Path

from .claim_registration import AFTER
from .claim_stats import NOT_SUPPORTED, SUPPORTED, VERDICTS
from .claims import CLAIM_KINDS

SUITE_ORDER = ["table1", "table2", "table3", "fig1", "fig3", "fig4", "fig5", "table4", "table5", "table6", "table7",
               "fig7"]
_SECTION = re.compile(r"<!-- rtl-report:(?P<name>[^ ]+) begin -->\n(?P<body>.*?)<!-- rtl-report:(?P=name) end -->", re.S)


def _order(name: str) -> tuple[int, str]:
    return (SUITE_ORDER.index(name) if name in SUITE_ORDER else len(SUITE_ORDER), name)


_HEADINGS = {"premise": "The premise: are the sources what the paper assumes?", "paper": "The paper's claims",
             "reason": "Why the misses: the reasons, tested", "added": "Claims we add (beyond the paper)"}


def _claim_rows(scale_dir: Path) -> list[tuple[str, dict]]:
    """(suite, row) of every `<suite>-claims.csv`, in SUITE_ORDER; CSVs written before a column existed read it as
    empty (`explains`), its default (`kind`: paper), or, for `registered`, `after` (no record said otherwise)."""
    rows = []
    defaults = {"kind": "paper", "explains": "", "registered": AFTER, "smallest_detectable": "", "threshold": "",
                "registration_note": "written before claims were registered (no record)"}
    for path in sorted(scale_dir.glob("*-claims.csv"), key=lambda p: _order(p.name[:-len("-claims.csv")])):
        with open(path, newline="", encoding="utf-8") as f:
            rows += [(path.name[:-len("-claims.csv")], defaults | {k: v for k, v in r.items() if v is not None})
                     for r in csv.DictReader(f)]
    return rows


def _tested(suite: str, reason: dict) -> bool:
    """A reason tested its claim's miss: registered before (its runs and the miss's) and its verdict informative."""
    return reason["registered"] != AFTER and reason["verdict"] in (SUPPORTED, NOT_SUPPORTED)


def _reasons_cell(suite: str, row: dict, reasons: list[tuple[str, dict]]) -> str:
    """A not-supported claim's tested reasons, `[name](#suite): **verdict**` each, or "none": the issue asks that
    every miss gets a run testing its reason, so a miss without one shows it."""
    if row["verdict"] != NOT_SUPPORTED:
        return ""
    mine = [r for s, r in reasons if s == suite and r["explains"] == row["claim"]]
    return "; ".join(f"[{r['claim']}](#{suite}): **{r['verdict']}**"
                     + ("" if r["registered"] != AFTER else " (registered after: not counted)") for r in mine) or "none"


def _counts(rows: list[dict]) -> str:
    got = [v for v in VERDICTS if any(r["verdict"] == v for r in rows)]
    return ", ".join(f"{sum(r['verdict'] == v for r in rows)} {v}" for v in got) or "none"


def _count_line(kind: str, mine: list[tuple[str, dict]], reasons: list[tuple[str, dict]]) -> str:
    """`24 paper claims registered before their runs: 3 not run, 6 not supported (5 with a tested reason), 15
    supported. 2 registered after their runs (not counted): 1 supported, 1 uninformative.` — a reason counts as
    tested when `_tested`."""
    tested = {(s, r["explains"]) for s, r in reasons if _tested(s, r)}
    before = [(s, r) for s, r in mine if r["registered"] != AFTER]
    after = [r for _, r in mine if r["registered"] == AFTER]
    parts = []
    for verdict in VERDICTS:
        n = sum(r["verdict"] == verdict for _, r in before)
        if not n:
            continue
        with_reason = sum((s, r["claim"]) in tested for s, r in before if r["verdict"] == verdict)
        note = f" ({with_reason} with a tested reason)" if kind == "paper" and verdict == NOT_SUPPORTED else ""
        parts.append(f"{n} {verdict}{note}")
    line = f"{len(before)} {kind} claims registered before their runs: {', '.join(parts) or 'none'}."
    return line + (f" {len(after)} registered after their runs (reported, not counted): {_counts(after)}."
                   if after else "")


def _claims_table(kind: str, mine: list[tuple[str, dict]], reasons: list[tuple[str, dict]]) -> list[str]:
    """One kind's table: the paper's claims carry the reasons tested for their misses; a reason names its claim;
    every row says whether the claim was registered before its runs and what its sample could detect."""
    def sdd(r):
        return f"{r['smallest_detectable']} ({r['threshold']})" if r.get("smallest_detectable") else ""

    if kind == "reason":
        out = ["| suite | explains | reason | our numbers | verdict | smallest detectable (threshold) | registered |",
               "|---|---|---|---|---|---|---|"]
        return out + [f"| [{s}](#{s}) | {r['explains']} | {r['text']} | `{r['values']}` | **{r['verdict']}** | "
                      f"{sdd(r)} | {r['registered']} |" for s, r in mine]
    extra = kind == "paper"
    out = ["| suite | claim | paper | our numbers | verdict | smallest detectable (threshold) | registered |"
           + (" reason tested |" if extra else ""), "|---|---|---|---|---|---|---|" + ("---|" if extra else "")]
    return out + [f"| [{s}](#{s}) | {r['text']} | {r['paper']} | `{r['values']}` | **{r['verdict']}** | {sdd(r)} | "
                  f"{r['registered']} |" + (f" {_reasons_cell(s, r, reasons)} |" if extra else "") for s, r in mine]


def registration_summary(rows: list[tuple[str, dict]]) -> list[str]:
    """What was registered when, from the records: how many claims before their runs, and each one after, with why."""
    after = [(s, r) for s, r in rows if r["registered"] == AFTER]
    out = [f"{len(rows) - len(after)} of {len(rows)} claims were registered before their runs: a suite run recorded "
           "the claim as it reads now, with the budget its runs ran with, before the first of those runs started "
           "(and, for a reason, before the runs of the miss it explains)."]
    if after:
        out += ["", "| suite | claim | kind | verdict | why it counts as registered after |", "|---|---|---|---|---|"]
        out += [f"| [{s}](#{s}) | {r['claim']} | {r['kind']} | {r['verdict']} | {r['registration_note']} |"
                for s, r in after]
    return out + [""]


def claims_summary(scale_dir: Path) -> list[str]:
    """The claims of every suite by kind, in claims.CLAIM_KINDS order: the premise first (what the paper's claims
    rest on), the paper's own claims (each miss beside the reason tested for it), the reasons, then ours."""
    rows = _claim_rows(scale_dir)
    if not rows:
        return ["*No claim has been checked yet: run the suites, then `rtl report`.*", ""]
    reasons = [(s, r) for s, r in rows if r["kind"] == "reason"]
    out = ["### When each claim was registered", "", *registration_summary(rows)]
    for kind in CLAIM_KINDS:
        mine = [(s, r) for s, r in rows if r["kind"] == kind]
        if mine:
            out += [f"### {_HEADINGS[kind]}", "", *_claims_table(kind, mine, reasons), "",
                    _count_line(kind, mine, reasons), ""]
    return out


def _suite_csvs(scale_dir: Path, kind: str) -> dict[str, list[dict]]:
    """suite → the rows of its `<suite>-<kind>.csv` (`timing`: report.timing_frame; `history`:
    report_history.history_frame, every suite run oldest first), in SUITE_ORDER."""
    suffix = f"-{kind}.csv"
    paths = sorted(scale_dir.glob(f"*{suffix}"), key=lambda p: _order(p.name[:-len(suffix)]))
    out = {}
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            out[path.name[:-len(suffix)]] = list(csv.DictReader(f))
    return out


def _timing_rows(scale_dir: Path) -> dict[str, list[dict]]:
    return _suite_csvs(scale_dir, "timing")


def _step_minutes(rows: list[dict]) -> float:
    """Minutes of step time over distinct step runs: a run shared by several suites (a source) counts once."""
    seconds = {r["run_id"]: float(r["seconds"] or 0) for r in rows if r["kind"] == "step"}
    return sum(seconds.values()) / 60


def _when(iso: str) -> str:
    return iso.replace("T", " ").rstrip("Z")[:16] if iso else "?"


def _span(start: str, end: str) -> str:
    """'2 h 25 min' between two ISO times (the CSVs' UTC `...Z`)."""
    minutes = round((datetime.fromisoformat(end.rstrip("Z")) - datetime.fromisoformat(start.rstrip("Z")))
                    .total_seconds() / 60)
    return f"{minutes // 60} h {minutes % 60} min"


def timing_summary(scale_dir: Path) -> list[str]:
    """Where the suites ran, from first suite start to last suite end, and their step time: all from the
    reports' `*-timing.csv` (the MLflow runs' start/end times and rtl.machine tags)."""
    by_suite = _timing_rows(scale_dir)
    if not by_suite:
        return ["*No timing recorded yet: run the suites, then `rtl report`.*", ""]
    rows = [r for suite_rows in by_suite.values() for r in suite_rows]
    machines = sorted({r["machine"] for r in rows if r["machine"]})
    suites = [r for r in rows if r["kind"] == "suite"]
    starts, ends = [r["start"] for r in suites if r["start"]], [r["end"] for r in suites if r["end"]]
    out = [f"Machine: {'; '.join(machines) if machines else 'not recorded'}."]
    if starts and ends:
        out.append(f"Suite runs: from {_when(min(starts))} to {_when(max(ends))} UTC ({_span(min(starts), max(ends))}).")
    distinct = {r["run_id"] for r in rows if r["kind"] == "step"}
    out += [f"Step time: {_step_minutes(rows):.1f} min over {len(distinct)} distinct step runs "
            "(a run several suites read counts once).", "",
            "| suite | step runs | step time (min) | suite run (UTC) |", "|---|---:|---:|---|"]
    for suite, suite_rows in by_suite.items():
        n = len({r["run_id"] for r in suite_rows if r["kind"] == "step"})
        run = next((r for r in suite_rows if r["kind"] == "suite"), None)
        when = f"{_when(run['start'])} – {_when(run['end']) if run['end'] else 'not ended'}" if run else "not recorded"
        out.append(f"| [{suite}](#{suite}) | {n} | {_step_minutes(suite_rows):.1f} | {when} |")
    return out + [""]


def _history_rows(scale_dir: Path) -> dict[str, list[dict]]:
    return _suite_csvs(scale_dir, "history")


def _distinct(rows: list[dict], column: str) -> list[str]:
    """The values of `column` in the rows' order (oldest run first), each once; runs that recorded none left out."""
    return list(dict.fromkeys(r[column] for r in rows if r[column]))


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def history_summary(scale_dir: Path) -> list[str]:
    """Which suite runs stand behind the page, from the reports' `*-history.csv` (every run of every suite, from
    the store): first start to last end, the commits and code versions (a warning when there are several), one
    row per suite, and every attempt that did not finish."""
    by_suite = _history_rows(scale_dir)
    rows = [r for suite_rows in by_suite.values() for r in suite_rows]
    if not rows:
        return ["*No suite history yet: `rtl report` writes it (`<suite>-history.csv`, from the suite runs).*", ""]
    starts, ends = [r["start"] for r in rows if r["start"]], [r["end"] for r in rows if r["end"]]
    commits, versions = _distinct(rows, "commit"), _distinct(rows, "code_version")
    running = [r for r in rows if r["status"] == "RUNNING"]
    line = f"{_n(len(rows), 'suite run')} of {_n(len(by_suite), 'suite')}"
    if starts and ends:
        line += f": from {_when(min(starts))} to {_when(max(ends))} UTC ({_span(min(starts), max(ends))} wall time)"
    line += (f"; commit {', '.join(f'`{c}`' for c in commits) or 'not recorded'}, code version "
             f"{', '.join(f'`{v}`' for v in versions) or 'not recorded'}")
    line += f"; {len(running)} still running when the reports were written." if running else "."
    out = [line, ""]
    if len(commits) > 1 or len(versions) > 1:
        what = [f"{len(commits)} commits" if len(commits) > 1 else "", f"{len(versions)} code versions"
                if len(versions) > 1 else ""]
        out += [f"**Warning: the suite runs behind this page ran {' and '.join(w for w in what if w)}**: its numbers "
                "may come from different code (the table says which suite ran which).", ""]
    out += ["| suite | attempts (finished/failed/killed) | first start (UTC) | last end (UTC) | commit | registration |",
            "|---|---|---|---|---|---|"]
    for suite, suite_rows in by_suite.items():
        n = {s: sum(r["status"] == s for r in suite_rows) for s in ("FINISHED", "FAILED", "KILLED", "RUNNING")}
        attempts = f"{len(suite_rows)} ({n['FINISHED']}/{n['FAILED']}/{n['KILLED']})" + (
            f", {n['RUNNING']} running" if n["RUNNING"] else "")
        first = min((r["start"] for r in suite_rows if r["start"]), default="")
        last = max((r["end"] for r in suite_rows if r["end"]), default="")
        out.append(f"| [{suite}](#{suite}) | {attempts} | {_when(first)} | {_when(last) if last else 'not ended'} | "
                   f"{', '.join(f'`{c}`' for c in _distinct(suite_rows, 'commit')) or 'not recorded'} | "
                   f"{', '.join(f'`{g}`' for g in _distinct(suite_rows, 'registration')) or 'not recorded'} |")
    unfinished = [(suite, r) for suite, suite_rows in by_suite.items() for r in suite_rows if r["status"] != "FINISHED"]
    out += ["", "Attempts that did not finish: " + "; ".join(_unfinished(s, r) for s, r in unfinished) + "."
            if unfinished else "Every attempt finished."]
    return out + [""]


def _unfinished(suite: str, r: dict) -> str:
    """'table1 KILLED (started 2026-12-02 13:11, ended 2026-12-02 13:17 UTC, after 1 step run)'."""
    if not r["end"]:
        return f"{suite} {r['status']} (started {_when(r['start'])} UTC, not ended)"
    return (f"{suite} {r['status']} (started {_when(r['start'])}, ended {_when(r['end'])} UTC, "
            f"after {_n(int(r['steps_run'] or 0), 'step run')})")


def suite_sections(scale_dir: Path) -> list[str]:
    index = scale_dir / "index.md"
    if not index.exists():
        return []
    prefix = f"{scale_dir.parent.name}/{scale_dir.name}"  # results.md sits beside the results folder
    found = {m["name"]: m["body"] for m in _SECTION.finditer(index.read_text(encoding="utf-8"))}
    out = []
    for name in sorted(found, key=_order):
        body = found[name]
        # index.md links its files relative to its folder; results.md sits two levels up
        body = re.sub(r"\]\((?!https?:|#)([^)]+)\)", lambda m: f"]({prefix}/{m.group(1)})", body)
        out += [f'<a id="{name}"></a>', "", body.rstrip(), ""]
    return out


def compose(results: Path, scale: str, intro: str) -> str:
    scale_dir = results / scale
    parts = [intro.rstrip(), "", "## History: the suite runs behind this page", ""] + history_summary(scale_dir)
    parts += ["## Where and how long these runs took", ""] + timing_summary(scale_dir)
    parts += ["## Claims, checked against our runs", ""]
    parts += claims_summary(scale_dir)
    parts += [f"## Tables and figures (scale `{scale}`)", ""] + suite_sections(scale_dir)
    return "\n".join(parts).rstrip() + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="docs/results")
    p.add_argument("--scale", default="cpu")
    p.add_argument("--intro", default="docs/results_intro.md")
    a = p.parse_args(argv)
    intro = Path(a.intro).read_text(encoding="utf-8") if Path(a.intro).exists() else "# Results"
    sys.stdout.write(compose(Path(a.results), a.scale, intro))
    return 0


if __name__ == "__main__":
    sys.exit(main())
