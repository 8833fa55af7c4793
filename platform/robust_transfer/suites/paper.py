"""The paper's setting beside ours, step by step (`paper:` blocks of projects/*.yaml), and the inputs a
suite cannot make itself (`requires:` of a scale, given with `rtl suite --set name=value`).

A step may carry

    paper:
      quote: "footnote 2: ... We train for 80,000 iterations with a batch-size of 128."
      iterations: 80000          # a parameter of the step's entry point: the paper's value
      weight_decay: 2.0e-4
      dataset: "not stated"      # the paper does not say (printed, never compared)
      deviation: "why the paper scale differs from the paper here, if it does"

`rtl suite --dry-run true` prints one row per item, `paper: <value> | ours: <value>`, where *ours* is the
planned parameter or, when the step does not set it, the entry point's default: the row is read from
what runs, so it cannot drift from it. `=` marks agreement, `≠` a difference (at the paper scale every
`≠` is explained by the step's `deviation`; tests/test_paper_scale.py holds the plans to the paper).

A scale may declare variables it cannot fill itself:

    scales:
      paper:
        requires:
          imagenet_robust: "a robust ImageNet ResNet-50: rtl import ... then --set imagenet_robust=models:/..."

A step that uses `{imagenet_robust}` fails at planning time with that one line unless the variable is given.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, fields

NOTE_KEYS = ("quote", "deviation")
NOT_STATED = "not stated"


class Required(str):
    """A scale variable that must be given (`--set name=value`); its text says how to get one."""


def scale_variables(raw, where, at: tuple) -> tuple[dict, str]:
    """A scale's mapping → (variables with `requires:` entries as Required, description)."""
    variables = dict(raw or {})
    description = str(variables.pop("description", "") or "")
    requires = variables.pop("requires", None) or {}
    if not isinstance(requires, dict):
        raise where.error(at + ("requires",), "a mapping of variable → how to get a value for it")
    for name, hint in requires.items():
        if name in variables:
            raise where.error(at + ("requires", name), "is also given a value in this scale; required variables "
                              "come from `rtl suite --set`")
        variables[str(name)] = Required(" ".join(str(hint).split()))
    return variables, description


def apply_overrides(variables: dict, overrides: dict[str, str]) -> dict:
    """`--set` values replace the scale's (required or not) variables of the same name."""
    return {**variables, **{k: str(v) for k, v in overrides.items() if k in variables}}


def required_error(var: str, hint: str) -> str:
    return f"needs {{{var}}}, which this suite cannot make: {hint}"


def check_block(raw, entry_params: set[str], where, at: tuple) -> dict:
    """Validate a step's `paper:` block: quote/deviation text, and parameter → the paper's scalar value."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise where.error(at, "a mapping: quote, deviation, and parameter → the paper's value")
    out = {}
    for k, v in raw.items():
        if k not in NOTE_KEYS and k not in entry_params:
            raise where.error(at + (k,), f"not a parameter of this entry point (nor one of {', '.join(NOTE_KEYS)})")
        if isinstance(v, (dict, list)):
            raise where.error(at + (k,), "one value (a number, true/false or text)")
        out[str(k)] = v
    return out


def entry_defaults(entry: str) -> dict[str, object]:
    """Parameter → its default in the entry point's config dataclass (what runs when a step omits it)."""
    from ..config import CONFIGS, canonical_entry_point

    cls = CONFIGS[canonical_entry_point(entry)]
    out = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:  # pragma: no cover - no config uses factories today
            out[f.name] = f.default_factory()
    return out


def _text(value) -> str:
    if value is None or value == "":
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _numbers(text: str) -> list[float] | None:
    try:
        out = [float(p) for p in text.split(",")]
    except ValueError:
        return None
    return out if all(math.isfinite(x) for x in out) else None


def same(paper, ours) -> bool | None:
    """Does our value equal the paper's? None when the paper does not state it."""
    p, o = _text(paper), _text(ours)
    if p.lower().startswith(NOT_STATED):
        return None
    if p.lower() in ("true", "false") or o.lower() in ("true", "false"):
        return p.lower() == o.lower()
    pn, on = _numbers(p), _numbers(o)
    if pn is not None and on is not None:
        return len(pn) == len(on) and all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in zip(pn, on))
    return p == o


def rows(step) -> list[tuple[str, str, str, bool | None]]:
    """(item, paper's value, ours, agreement) for every parameter the step's `paper:` block names."""
    defaults = entry_defaults(step.entry)
    built = getattr(step, "config", None)    # a default the config resolves (ε, step: the norm's) as it runs
    out = []
    for item, paper in step.paper.items():
        if item in NOTE_KEYS:
            continue
        ours = step.params[item] if item in step.params else getattr(built, item, defaults.get(item))
        shown = _text(ours)
        if item == "milestones":  # fractions of the budget: say which updates they are when it is in updates
            total = step.params.get("iterations", defaults.get("iterations"))
            fr, n = _numbers(shown), _numbers(str(total)) if total not in (None, "") else None
            if fr and n:
                shown += f" (updates {','.join(str(math.ceil(f * n[0])) for f in fr)} of {int(n[0])})"
        out.append((item, _text(paper), shown, same(paper, ours)))
    return out


def render(step, scale: str) -> list[str]:
    """The dry-run lines under one step: the paper's quote, a row per item, the deviation (paper scale)."""
    if not step.paper:
        return []
    lines = []
    if step.paper.get("quote"):
        lines.append(f"      paper says: {' '.join(str(step.paper['quote']).split())}")
    for item, paper, ours, agree in rows(step):
        mark = {True: "=", False: "≠", None: "?"}[agree]
        lines.append(f"      {mark} {item:<14} paper: {paper:<22} | ours: {ours}")
    if scale == "paper" and step.paper.get("deviation"):
        lines.append(f"      deviation: {' '.join(str(step.paper['deviation']).split())}")
    return lines


__all__ = ["Required", "scale_variables", "apply_overrides", "required_error", "check_block", "entry_defaults",
           "same", "rows", "render", "NOT_STATED"]
