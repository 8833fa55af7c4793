"""Sets of runs as points in a 2-D objective plane (both maximised): Pareto fronts and their hypervolume.

A *point set* of a suite's report (a `kind: front` figure's series, a claim's `hypervolume.sets`) is

    {steps: [table4-lwf-0p001, table4-lwf-0p01]}                      # one point per step's run
    {step: table4-front, trials: true, pareto_on: [val_clean_acc, val_pgd10_acc]}
        # the COMPLETE trial runs of the study that step's `search` run drove (all its invocations: tag
        # rtl.study), kept if Pareto-optimal on `pareto_on` (validation metrics), placed at the figure's or
        # the claim's axes (test metrics)
    {union: [front, grid]}                                             # (claims) the points of named sets

The hypervolume of a set is the area of the plane its points dominate above the reference point: for the
accuracy plane with reference (0, 0), the area under the set's attainment staircase. A set whose
hypervolume equals that of its union with another set dominates (weakly) every point of the other.
"""
from __future__ import annotations

import re

from ..errors import ConfigError
from .spec_fields import list_field as _list, str_field as _str

SET_KEYS = {"label", "steps", "step", "trials", "pareto_on", "scales", "union"}
_STEP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")      # as analysis/report_spec.py (which imports this
_METRIC = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")                # module through claims: no import back)


def _scales_of(value, where: str):
    return None if value is None else [_str(s, "scales", where) for s in _list(value, "scales", where)]


def dominates(a, b) -> bool:
    """a Pareto-dominates b (both coordinates maximised): no worse in each, better in one."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def pareto_indices(points) -> list[int]:
    """Indices of the points no other point dominates (maximising every coordinate); order kept."""
    pts = [tuple(map(float, p)) for p in points]
    return [i for i, p in enumerate(pts) if not any(dominates(q, p) for j, q in enumerate(pts) if j != i)]


def hypervolume(points, reference=(0.0, 0.0)) -> float:
    """The 2-D hypervolume (both coordinates maximised): the area of {z : reference <= z <= some point}.
    Points not above the reference in both coordinates add nothing; an empty set has 0."""
    rx, ry = map(float, reference)
    pts = sorted(((float(x), float(y)) for x, y in points if float(x) > rx and float(y) > ry), reverse=True)
    area, top = 0.0, ry
    for x, y in pts:   # x descending: each point higher than all before adds the strip [rx, x] × [top, y]
        if y > top:
            area += (x - rx) * (y - top)
            top = y
    return area


def staircase(points) -> tuple[list[float], list[float]]:
    """The attainment staircase of the non-dominated points (x ascending): what `hypervolume` measures."""
    front = sorted((tuple(map(float, points[i])) for i in pareto_indices(points)), key=lambda p: (p[0], -p[1]))
    xs, ys = [], []
    for x, y in front:
        if xs:
            xs.append(xs[-1])
            ys.append(y)
        xs.append(x)
        ys.append(y)
    return xs, ys


# --- the report's point sets --------------------------------------------------------------------------------
def point_set_entry(raw, where: str, *, names: set | None = None) -> dict:
    """Validate one point set (see the module doc); `names`: the sets a claim's `union` may name."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a point set is {{steps: [...]}}, {{step: S, trials: true, pareto_on: [...]}}"
                          + (" or {union: [set, ...]}" if names is not None else ""))
    unknown = set(raw) - SET_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(SET_KEYS))}")
    out = {"label": _str(raw.get("label"), "label", where, required=False), "steps": [], "trials": False,
           "pareto_on": None, "union": None, "scales": _scales_of(raw.get("scales"), where)}
    if "union" in raw:
        if names is None:
            raise ConfigError(f"{where}: `union` names other sets of a claim's hypervolume")
        if set(raw) - {"union", "label"}:
            raise ConfigError(f"{where}: a union set has only `union: [set, ...]`")
        out["union"] = [_str(n, "union", where) for n in _list(raw["union"], "union", where)]
        missing = [n for n in out["union"] if n not in names]
        if missing:
            raise ConfigError(f"{where}: union names {missing[0]!r}, which is not a set here; sets: {', '.join(sorted(names))}")
        return out
    step, steps = raw.get("step"), raw.get("steps")
    if (step is None) == (steps is None):
        raise ConfigError(f"{where}: give `steps: [...]` (one point per run) or `step:` with `trials: true`")
    trials = raw.get("trials", False)
    if not isinstance(trials, bool) or (step is not None) != trials:
        raise ConfigError(f"{where}: `trials: true` goes with a single `step` (a search step: its study's trials)")
    out["steps"] = [_str(s, "steps", where, pattern=_STEP) for s in ([step] if step is not None else _list(steps, "steps", where))]
    out["trials"] = trials
    if raw.get("pareto_on") is not None:
        on = [_str(m, "pareto_on", where, pattern=_METRIC) for m in _list(raw["pareto_on"], "pareto_on", where)]
        if len(on) != 2:
            raise ConfigError(f"{where}: pareto_on names two metrics (both maximised), e.g. [val_clean_acc, val_pgd10_acc]")
        test = [m for m in on if not m.startswith("val_")]
        if test:
            raise ConfigError(f"{where}: pareto_on={on} names {', '.join(test)}; choose the front on validation "
                              "metrics (val_clean_acc, val_pgd10_acc): choosing on test data would bias it")
        out["pareto_on"] = on
    return out


def set_runs(pset: dict, sel) -> tuple[list[tuple[str, dict]] | None, list[tuple[str, dict]]]:
    """(the set's chosen runs as (step, run), the runs left out by `pareto_on`); None when a step has no FINISHED
    run at the scale (or a search step no complete trial): the set is not run."""
    from .report_runs import metric_value

    runs: list[tuple[str, dict]] = []
    for step in pset["steps"]:
        run = sel.run(step)
        if run is None:
            return None, []
        if pset["trials"]:
            kids = sel.trials(run)
            if not kids:
                return None, []
            runs += [(step, k) for k in kids]
        else:
            runs.append((step, run))
    if not pset["pareto_on"]:
        return runs, []
    scored = [(s, r, [metric_value(r, m) for m in pset["pareto_on"]]) for s, r in runs]
    scored = [t for t in scored if None not in t[2]]
    keep = set(pareto_indices([v for _, _, v in scored]))
    return [(s, r) for i, (s, r, _) in enumerate(scored) if i in keep], \
        [(s, r) for i, (s, r, _) in enumerate(scored) if i not in keep]


def set_points(runs, axes) -> list[tuple[float, float]] | None:
    """The runs' (x, y) on `axes`; None if a run lacks one of the metrics."""
    from .report_runs import metric_value

    out = []
    for _, run in runs:
        x, y = (metric_value(run, m) for m in axes)
        if x is None or y is None:
            return None
        out.append((x, y))
    return out
