"""A report's claims (analysis/report.py): each judged by the engine (analysis/claim_verdicts.py), its registration
read from the suite runs' records (analysis/claim_registration.py), then the Markdown table and `<suite>-claims.csv`.

A claim registered `after` its runs is reported, with its verdict, and counted apart: never among the supported.
"""
from __future__ import annotations

import pandas as pd

from .claim_registration import AFTER, Registrations
from .claim_stats import VERDICTS
from .claim_verdicts import evaluate_claim
from .per_example import PerExample
from .report_spec import _at_scale
from .report_tables import _md

CLAIM_COLUMNS = ["claim", "kind", "explains", "text", "paper", "compare", "values", "verdict", "smallest_detectable",
                 "threshold", "rule", "same_examples", "registered", "registered_at", "registration_note"]


def judge_claims(spec: dict, scale: str, sel, warn=lambda msg: None) -> list[dict]:
    """Every claim of `spec` at `scale`, judged and registered (each entry | evaluate_claim | assess)."""
    entries = [e for e in spec["report"] if e["type"] == "claim" and _at_scale(e, scale)]
    per_example = PerExample(warn)
    judged = {e["name"]: e | evaluate_claim(e, sel, per_example) for e in entries}
    registrations = Registrations(scale, warn)
    for c in judged.values():
        explained = judged.get(c["explains"]) if c["kind"] == "reason" else None
        c.update(registrations.assess(f"{spec['name']}/{c['name']}", c, c["read_runs"],
                                      explained["read_runs"] if explained else None))
    return list(judged.values())


def _number(v) -> str:
    return "" if v is None else f"{v:.3f}"


def claims_frame(claims: list[dict]) -> pd.DataFrame:
    """The rows of `<suite>-claims.csv` (CLAIM_COLUMNS)."""
    return pd.DataFrame([{"claim": c["name"], "kind": c.get("kind", "paper"), "explains": c.get("explains") or "",
                          "text": c["text"], "paper": c["paper"], "compare": c["compare_text"], "values": c["shown"],
                          "verdict": c["verdict"], "smallest_detectable": _number(c["smallest_detectable"]),
                          "threshold": _number(c["threshold"]), "rule": c["rule"], "same_examples": c["same_examples"],
                          "registered": c["registered"], "registered_at": c["registered_at"],
                          "registration_note": c["note"]} for c in claims], columns=CLAIM_COLUMNS)


def count_line(claims: list[dict]) -> str:
    """'3 claims registered before their runs: 1 not supported, 2 supported; 1 registered after (not counted): ...'"""
    def counts(cs):
        got = [v for v in VERDICTS if any(c["verdict"] == v for c in cs)]
        return ", ".join(f"{sum(c['verdict'] == v for c in cs)} {v}" for v in got) or "none"

    before = [c for c in claims if c["registered"] != AFTER]
    after = [c for c in claims if c["registered"] == AFTER]
    line = f"{len(before)} claims registered before their runs: {counts(before)}."
    return line + (f" {len(after)} registered after their runs, reported and not counted: {counts(after)}."
                   if after else "")


def render_claims(claims: list[dict]) -> list[str]:
    """The claims table of a suite's section: what the paper says, our comparison with numbers, the verdict, the
    smallest difference the sample could call, and whether the claim was registered before its runs."""
    lines = ["### Claims", "", "| claim | paper | comparison → our numbers | verdict | smallest detectable "
             "(threshold) | registered |", "|---|---|---|---|---|---|"]
    for c in claims:
        text = _md(c["text"]) if c.get("kind", "paper") == "paper" else f"*({_kind_label(c)})* {_md(c['text'])}"
        sdd = f"{_number(c['smallest_detectable'])} ({_number(c['threshold'])})" if c["smallest_detectable"] is not None \
            else ""
        lines.append(f"| {text} | {_md(c['paper'])} | `{_md(c['compare_text'])}` → `{_md(c['shown'])}` | "
                     f"**{c['verdict']}** | {sdd} | {c['registered']} |")
    lines += ["", count_line(claims)]
    after = [c for c in claims if c["registered"] == AFTER]
    if after:
        lines += ["", "Registered after their runs (from the suite runs' records):"]
        lines += [f"- `{c['name']}`: {_md(c['note'])}" for c in after]
    return lines + [""]


def claim_line(c: dict) -> str:
    """What `rtl report` prints for one claim."""
    sdd = (f"; smallest detectable {_number(c['smallest_detectable'])} (threshold {_number(c['threshold'])})"
           if c["smallest_detectable"] is not None else "")
    return f"claim {c['name']}: {c['verdict']}, registered {c['registered']}{sdd}  ({c['shown']})"


def _kind_label(claim: dict) -> str:
    """How a non-paper claim is marked in its suite's table: a reason says which claim's miss it would explain."""
    kind = claim.get("kind", "paper")
    return f"reason for {claim['explains']}" if kind == "reason" else kind
