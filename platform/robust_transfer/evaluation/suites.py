"""The suites as the evaluation runs them: a suite name (and an `attacks=` override, and budget knobs)
→ the attack specs, the budget and whether diagnostics run; and what its AutoAttack-like number means.

The presets themselves — per suite, its attacks, its budget and whether it is diagnosed — are ONE table,
`config.evaluate.SUITES`, where the config checks a suite name at the boundary (config/ may not import
this package).
"""
from __future__ import annotations

from ..attacks.budget import AttackBudget
from ..config.evaluate import SUITES, suite_preset
from .reference import LABEL as REFERENCE_LABEL, reference_version

__all__ = ["SUITES", "suite_preset", "suite_attacks", "suite_budget", "aa_impl", "substitute_metric"]


def substitute_metric(suite: str) -> str:
    """The metric of a diagnosed substitute suite's worst case (`standard_worst_acc`, `full_worst_acc`): never
    `aa_acc`, which only the reference AutoAttack reports."""
    return f"{suite}_worst_acc"


def suite_attacks(suite: str, override: str | tuple = "") -> tuple[str, ...]:
    """The attack names a suite (or an `attacks=` override of it) runs, canonical, clean first."""
    return tuple(s.name for s in suite_preset(suite).specs(override))


def suite_budget(suite: str, **overrides) -> AttackBudget:
    """The suite's budget with any non-None knob overridden (ConfigError on a bad value)."""
    return suite_preset(suite).budget_with(**overrides)


def aa_impl(suite: str, specs, deviation: str = "") -> str:
    """What the evaluation's AutoAttack number is — `aa_acc` (the reference) or `<suite>_worst_acc` (a substitute)
    — in words a model card can quote ('' when the evaluation reports neither)."""
    if any(s.kind == "autoattack" for s in specs):
        if deviation:
            return f"AutoAttack (standard, adapted: {deviation}); pyautoattack {reference_version()}"
        return f"{REFERENCE_LABEL}; pyautoattack {reference_version()}"
    if suite_preset(suite).diagnosed:
        code = {"ours": "robust_transfer", "pyautoattack": "pyautoattack's APGD/Square", "art": "ART"}
        used = " + ".join(dict.fromkeys(code[s.impl] for s in specs if s.kind != "clean"))
        return (f"suite {suite}: worst case over {', '.join(s.name for s in specs if s.kind != 'clean')} "
                f"({used}; an AutoAttack-style substitute, not comparable with RobustBench)")
    return ""
