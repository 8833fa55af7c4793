"""What a suite run records when it starts, before its first step (issue 24): the hash of every claim and the
parameters of every step, of EVERY suite beside it (projects/*.yaml), so that a claim reading a step another suite
ran (a shared source) is registered by whichever suite run came first.

The record is the suite run's artifact `registration.json` and its tag `rtl.registration` (the record's hash):

    {"format": 1, "suite": "table2", "scale": "cpu", "recorded_at_ms": 1733...,
     "claims": {"table2/t2-robustness-transfers": {"hash": "...", "fields": {"text": "...", "compare": "...", ...}}},
     "steps": {"tr-large-robust-c10": ["<params_key of seed 0>", ...]},
     "problems": {"table3.yaml": "the one line a suite file that could not be read or planned gave"}}

`rtl report` reads these records (analysis/claim_registration.py) and marks a claim `before` only when a record
made before every run it reads holds the claim as it is now, and the parameters those runs ran with.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from ..errors import ConfigError, UserError
from .plan import Suite, load_suite

ARTIFACT = "registration.json"
TAG = "rtl.registration"
FORMAT = 1


def _plan(path: Path, suite: Suite, overrides: dict | None):
    """The suite at `path` planned at this scale (this run's `--set` where that suite has the variables)."""
    try:
        return load_suite(path, suite.scale, version=suite.code_version, overrides=overrides or None)
    except ConfigError:
        if not overrides:
            raise
        return load_suite(path, suite.scale, version=suite.code_version)


def snapshot(suite: Suite, overrides: dict | None = None) -> dict:
    """The record (module doc) of every suite file in the directory of `suite.path`."""
    from ..analysis.report_spec import load_report_spec

    claims, steps, problems = {}, {}, {}
    for path in sorted(Path(suite.path).parent.glob("*.yaml")):
        try:
            spec = load_report_spec(path)
            for entry in spec["report"]:
                if entry["type"] == "claim":
                    claims[f"{spec['name']}/{entry['name']}"] = {"hash": entry["hash"], "fields": entry["fields"]}
        except UserError as e:
            problems[path.name] = str(e)
        try:
            for step in _plan(path, suite, overrides).steps:
                steps.setdefault(step.name, set()).add(step.params_key)
        except UserError as e:
            problems.setdefault(path.name, str(e))
    return {"format": FORMAT, "suite": suite.name, "scale": suite.scale, "recorded_at_ms": int(time.time() * 1000),
            "claims": claims, "steps": {k: sorted(v) for k, v in sorted(steps.items())}, "problems": problems}


def record(client, run_id: str, suite: Suite, overrides: dict | None = None) -> dict:
    """Record the snapshot on the suite's run (call it before the first step starts); returns it."""
    snap = snapshot(suite, overrides)
    client.log_dict(run_id, snap, ARTIFACT)
    digest = hashlib.sha256(json.dumps(snap, sort_keys=True).encode()).hexdigest()[:16]
    client.set_tag(run_id, TAG, digest)
    return snap
