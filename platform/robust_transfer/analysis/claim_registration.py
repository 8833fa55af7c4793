"""Was a claim registered before its evidence existed? `before` / `after`, from the suite runs' records
(suites/registration.py), never from prose.

A claim is `before` when one record, made before the first of the runs it reads started, holds the claim as the
YAML states it now (the same hash of text, compare, choose, hypervolume, scales, kind, explains) and, for every step
run it reads, the parameters that run ran with (`rtl.params_key` among the record's keys for that step: the budget).
A reason claim also needs its record to precede the runs of the claim it explains: a reason written after the miss
it explains was seen is reported, and counted apart. Anything else is `after`, with one line saying why; so is a
claim that says it was written after its evidence was seen (`written_after:`, analysis/claims.py).
"""
from __future__ import annotations

import math

import pandas as pd

REGISTERED, AFTER = "before", "after"


def _ms(t) -> int | None:
    """An MLflow start time (as search_runs gives it, or ms) in ms since the epoch (None: absent)."""
    from .report_timing import _utc

    if isinstance(t, (int, float)) and not isinstance(t, bool) and not math.isnan(t):
        return int(t)
    ts = _utc(t)
    return None if ts is None else ts.value // 1_000_000


def _when(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M:%S UTC")


class Registrations:
    """The registration records of every suite run at one scale (any experiment), oldest first, read once."""

    def __init__(self, scale: str, warn=lambda msg: None):
        self.scale, self._warn, self._records = scale, warn, None

    def records(self) -> list[dict]:
        if self._records is None:
            self._records = self._load()
        return self._records

    def _load(self) -> list[dict]:
        import mlflow

        from ..suites.registration import ARTIFACT, FORMAT, TAG

        df = mlflow.search_runs(filter_string=f"tags.`rtl.strategy` = 'suite' and tags.`rtl.scale` = '{self.scale}' "
                                f"and tags.`{TAG}` != ''", search_all_experiments=True, max_results=10_000,
                                output_format="pandas")
        out = []
        for rid in (df["run_id"] if len(df) else []):
            try:
                rec = mlflow.artifacts.load_dict(f"runs:/{rid}/{ARTIFACT}")
            except Exception:   # MlflowException, OSError, ValueError: an unreadable record registers nothing
                self._warn(f"suite run {rid}: its {ARTIFACT} cannot be read; its registrations are not counted")
                continue
            if isinstance(rec, dict) and rec.get("format") == FORMAT and isinstance(rec.get("recorded_at_ms"), int):
                out.append(rec | {"run_id": rid})
        return sorted(out, key=lambda r: r["recorded_at_ms"])

    def assess(self, key: str, claim: dict, runs: list[tuple[str, dict]],
               explained_runs: list[tuple[str, dict]] | None = None) -> dict:
        """{registered: before|after, registered_at (the record's time, or ""), note (one line)} of claim `key`
        ("<suite>/<claim>") that read `runs` ((step, run) each); `explained_runs`: a reason's explained claim's."""
        if claim.get("written_after"):   # the claim says it was written after its evidence was seen: no record helps
            return {"registered": AFTER, "registered_at": "",
                    "note": f"written after its evidence was seen: {claim['written_after']}"}
        starts = [s for s in (_ms(r.get("start_time")) for _, r in runs + (explained_runs or [])) if s is not None]
        first = min(starts) if starts else None
        records = self.records()
        earlier = [r for r in records if first is None or r["recorded_at_ms"] <= first]
        same = [r for r in earlier if (r["claims"].get(key) or {}).get("hash") == claim["hash"]]
        for rec in same:
            bad = _budget_mismatch(rec, runs)
            if not bad:
                what = "the runs of the claim it explains and its own" if explained_runs else "its runs"
                return {"registered": REGISTERED, "registered_at": _when(rec["recorded_at_ms"]),
                        "note": f"recorded by suite run {rec['run_id']} ({rec['suite']}) at "
                                f"{_when(rec['recorded_at_ms'])}, before {what} started"}
        return {"registered": AFTER, "registered_at": "", "note": self._why(key, claim, runs, records, earlier, same,
                                                                              first, explained_runs)}

    @staticmethod
    def _why(key, claim, runs, records, earlier, same, first, explained_runs) -> str:
        if same:
            return _budget_mismatch(same[-1], runs) + " (the record's budget is not what ran)"
        if not records:
            return "no suite run at this scale recorded its claims (a store from before registration, or runs made " \
                   "outside `rtl suite`)"
        later = [r for r in records if (r["claims"].get(key) or {}).get("hash") == claim["hash"]]
        whose = "the claim it explains ran" if explained_runs else "its first run started"
        if later:
            return f"first recorded at {_when(later[0]['recorded_at_ms'])}, after {whose} ({_when(first)})"
        prior = [r for r in records if key in r["claims"]]
        if prior:
            old = prior[-1]["claims"][key].get("fields", {})
            changed = [f for f, h in claim["fields"].items() if old.get(f) != h]
            return (f"changed since suite run {prior[-1]['run_id']} recorded it at "
                    f"{_when(prior[-1]['recorded_at_ms'])}: {', '.join(changed) or 'its hash'}")
        return "not in any suite run's record"


def _budget_mismatch(rec: dict, runs: list[tuple[str, dict]]) -> str:
    """'' when every step run read ran with parameters the record holds for its step; else why not (one phrase)."""
    for step, run in runs:
        got = run["tags"].get("rtl.params_key")
        want = rec["steps"].get(run["tags"].get("rtl.step", step))
        if not got:
            return f"run {run['run_id']} of step {step!r} carries no rtl.params_key (not made by a suite)"
        if want is None:
            return f"the record of suite run {rec['run_id']} has no parameters for step {step!r}"
        if got not in want:
            return f"step {step!r} ran (run {run['run_id']}) with parameters other than those recorded"
    return ""
