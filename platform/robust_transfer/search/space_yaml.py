"""A search-space YAML → a validated `SearchSpace` (search/space.py; the format is described there).

Every mistake is reported before any trial runs, as `FILE:LINE: key: what is wrong` (io.load_yaml).
"""
from __future__ import annotations

import math
from pathlib import Path

from ..config import canonical_entry_point
from ..errors import ConfigError, SearchError
from ..expr import Constraint, Expr, ExprError
from ..io import Where, load_yaml, read_yaml_text
from .space import (ENTRY_POINT_PARAM, Objective, ParamSpec, SearchSpace, _field_type, coerce_value,
                    config_field_names, entry_point_names)

TOP_KEYS = {"study", "entry_point", "description", "fixed", "fixed_by_entry_point", "fixed_when", "params", "objective",
            "objectives", "directions", "constraints", "pruner", "sampler", "trials", "timeout"}
PARAM_KEYS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
              "categorical": {"type", "choices"}}
OBJECTIVE_KEYS = {"name", "metric", "expr", "direction", "report"}
DIRECTIONS = {"maximize": "maximize", "max": "maximize", "minimize": "minimize", "min": "minimize"}
PRUNERS = ("median", "hyperband", "threshold", "none")
SAMPLERS = ("tpe", "random", "nsga2", "grid")
NOT_SEARCHABLE = {"experiment", "register_as", "progress", "data_dir", "device", "checkpoint_dir", "resume"}
SPACE_SHAPE = "a search space is a YAML mapping (entry_point, fixed, params, objective(s), ...)"


def _num(where: Where, path, value, what="a number"):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise where.error(path, f"{value!r} is not {what}")
    return value


def _parse_param(where: Where, name: str, spec, entry_points) -> ParamSpec:
    path = ("params", name)
    if not isinstance(spec, dict):
        raise where.error(path, "a parameter is a mapping: {type: float|int|categorical, ...}")
    typ = spec.get("type")
    if typ not in PARAM_KEYS:
        raise where.error(path + ("type",) if "type" in spec else path,
                          f"type={typ!r} is not allowed; choose one of: float, int, categorical")
    unknown = set(spec) - PARAM_KEYS[typ]
    if unknown:
        k = sorted(unknown)[0]
        raise where.error(path + (k,), f"unknown key {k!r} for a {typ} parameter; allowed: {', '.join(sorted(PARAM_KEYS[typ]))}")
    if typ == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise where.error(path + ("choices",), "choices must be a non-empty list")
        for i, c in enumerate(choices):
            if not (c is None or isinstance(c, (bool, int, float, str))):
                raise where.error(path + ("choices", i), f"{c!r}: choices must be numbers, strings, booleans or null")
        if len(set(map(repr, choices))) != len(choices):
            raise where.error(path + ("choices",), "choices repeat a value")
        if name == ENTRY_POINT_PARAM:
            for i, c in enumerate(choices):
                if canonical_entry_point(c) is None:
                    raise where.error(path + ("choices", i), f"{c!r} is not an entry point; "
                                      f"choose from: {entry_point_names()}")
            choices = [canonical_entry_point(c) for c in choices]
        else:
            for ep in entry_points:
                for i, c in enumerate(choices):
                    try:
                        coerce_value(ep, name, c)
                    except ConfigError as e:
                        raise where.error(path + ("choices", i), str(e)) from None
        return ParamSpec(name, "categorical", choices=tuple(choices))
    for k in ("low", "high"):
        if k not in spec:
            raise where.error(path, f"a {typ} parameter needs low and high")
        _num(where, path + (k,), spec[k])
        if typ == "int" and not float(spec[k]).is_integer():
            raise where.error(path + (k,), f"{spec[k]!r} is not a whole number (type: int)")
        if typ == "int" and abs(spec[k]) > MAX_INT_PARAM:
            raise where.error(path + (k,), f"{k}={spec[k]!r} is out of range; an int parameter stays within "
                              f"[-{MAX_INT_PARAM}, {MAX_INT_PARAM}]")
    low, high = spec["low"], spec["high"]
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise where.error(path + ("log",), f"log={log!r} must be true or false")
    step = spec.get("step")
    if low > high:
        raise where.error(path + ("low",), f"low={low!r} is greater than high={high!r}")
    if low == high:
        raise where.error(path + ("high",), f"the range [{low}, {high}] is empty; put a single value under `fixed`")
    if log and low <= 0:
        raise where.error(path + ("low",), f"a log range must be > 0; low={low!r} (use e.g. 1.0e-7)")
    if step is not None:
        _num(where, path + ("step",), step)
        if step <= 0:
            raise where.error(path + ("step",), f"step={step!r} must be > 0")
        if log:
            raise where.error(path + ("step",), "step and log cannot be combined")
        if typ == "int" and not float(step).is_integer():
            raise where.error(path + ("step",), f"step={step!r} must be a whole number (type: int)")
        if step > high - low:
            raise where.error(path + ("step",), f"step={step!r} is larger than the range [{low}, {high}]")
    for ep in entry_points:
        ftype = _field_type(ep, name)
        if ftype is int and typ == "float":
            raise where.error(path + ("type",), f"{name} is a whole number in {ep}; use type: int")
        if ftype not in (int, float):
            raise where.error(path + ("type",), f"{name} is not numeric in {ep}; use type: categorical")
        for k in ("low", "high"):
            try:
                coerce_value(ep, name, spec[k])
            except ConfigError as e:
                raise where.error(path + (k,), str(e)) from None
    return ParamSpec(name, typ, low=low, high=high, log=log, step=step)


def _parse_objectives(where: Where, data: dict) -> list[Objective]:
    if ("objective" in data) == ("objectives" in data):
        raise where.error((), "give exactly one of `objective` (one) or `objectives` (a list, multi-objective)")
    key = "objective" if "objective" in data else "objectives"
    raw = data[key]
    items = [raw] if key == "objective" else raw
    if not isinstance(items, list) or not items:
        raise where.error((key,), "objectives must be a non-empty list")
    paths = [(key,)] if key == "objective" else [(key, i) for i in range(len(items))]
    directions = data.get("directions")
    if directions is not None:
        if not isinstance(directions, list):
            raise where.error(("directions",), "directions must be a list, one per objective")
        if len(directions) != len(items):
            raise where.error(("directions",), f"{len(directions)} direction(s) for {len(items)} objective(s); "
                              "give one direction per objective")
    out = []
    for i, (item, path) in enumerate(zip(items, paths)):
        if isinstance(item, str):
            item = {"metric": item}
        if not isinstance(item, dict):
            raise where.error(path, "an objective is a metric name or {metric|expr: ..., direction: maximize|minimize}")
        unknown = set(item) - OBJECTIVE_KEYS
        if unknown:
            k = sorted(unknown)[0]
            raise where.error(path + (k,), f"unknown key {k!r}; allowed: {', '.join(sorted(OBJECTIVE_KEYS))}")
        if ("metric" in item) == ("expr" in item):
            raise where.error(path, "give exactly one of metric (a name) or expr (e.g. (clean_acc + pgd20_acc)/2)")
        text = item.get("metric", item.get("expr"))
        try:
            expr = Expr.parse(str(text))
            report = Expr.parse(str(item["report"])) if item.get("report") is not None else None
        except ExprError as e:
            raise where.error(path + ("metric" if "metric" in item else "expr",), str(e)) from None
        if "metric" in item and expr.text != expr.names[0]:
            raise where.error(path + ("metric",), f"{text!r} is an expression; write it under expr:")
        d = item.get("direction")
        if directions is not None:
            if d is not None and DIRECTIONS.get(str(d)) != DIRECTIONS.get(str(directions[i])):
                raise where.error(("directions", i), f"directions[{i}]={directions[i]!r} contradicts the "
                                  f"objective's direction {d!r}")
            d = directions[i]
            dpath = ("directions", i)
        else:
            dpath = path + ("direction",)
        if d is None:
            raise where.error(path, "direction is required: maximize or minimize")
        if str(d) not in DIRECTIONS:
            raise where.error(dpath, f"direction={d!r} is not allowed; choose one of: maximize, minimize")
        name = str(item.get("name") or (expr.names[0] if "metric" in item else
                                        ("score" if len(items) == 1 else f"objective{i}")))
        out.append(Objective(name, expr, DIRECTIONS[str(d)], report))
    names = [o.name for o in out]
    if len(set(names)) != len(names):
        raise where.error((key,), f"objective names repeat: {names}; give each a distinct name:")
    return out


MAX_SAMPLER_SEED = 2**32 - 1   # numpy's RandomState (Optuna's samplers) takes seeds below 2**32
MAX_GRID = 100_000             # points of a `sampler: grid` (the grid becomes lists)
MAX_INT_PARAM = 2**53          # |low|, |high| of an int parameter (exact as a float, as Optuna stores it)
# Sampler/pruner options that count something: whole numbers >= the bound (Optuna checks few of them itself).
COUNT_OPTIONS = {"n_startup_trials": 0, "n_warmup_steps": 0, "interval_steps": 1, "n_ei_candidates": 1,
                 "population_size": 2, "min_resource": 1, "reduction_factor": 2, "n_min_trials": 1,
                 "bootstrap_count": 0}


def _check_counts(where, key: str, options: dict) -> None:
    for name, low in COUNT_OPTIONS.items():
        if name in options:
            v = options[name]
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= 10**9:
                raise where.error((key, name), f"{name}={v!r} must be a whole number in [{low}, {10**9}]")


def _parse_choice(where, data, key, allowed, default):
    raw = data.get(key, default)
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict) or raw.get("type") not in allowed:
        got = raw.get("type") if isinstance(raw, dict) else raw
        raise where.error((key, "type") if isinstance(raw, dict) and "type" in raw else (key,),
                          f"{key} type {got!r} is not allowed; choose one of: {', '.join(allowed)}")
    return dict(raw)


def _parse_fixed_when(where: Where, raw, params: dict, fixed: dict, by_ep: dict, entry_points, check_name) -> dict:
    """`fixed_when: {teacher: {online: {augment: true}}}`: values set only in trials whose searched categorical
    `teacher` sampled `online` (a conditional parameter: augment needs the online teacher). They win over
    `fixed`; `set` overrides win over them."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise where.error(("fixed_when",), "fixed_when maps a searched categorical to {choice: {name: value}}")
    out: dict[str, dict] = {}
    for name, by_choice in raw.items():
        path = ("fixed_when", name)
        p = params.get(name)
        if p is None or p.type != "categorical" or name == ENTRY_POINT_PARAM:
            raise where.error(path, f"{name!r} is not a searched categorical parameter of this space "
                              "(fixed_by_entry_point is for the entry point)")
        if not isinstance(by_choice, dict) or not by_choice:
            raise where.error(path, "maps choices of the parameter to {name: value}")
        out[name] = {}
        for choice, values in by_choice.items():
            matches = [c for c in p.choices if c == choice or str(c) == str(choice)]
            if not matches:
                raise where.error(path + (choice,), f"{choice!r} is not a choice of {name} "
                                  f"({', '.join(map(str, p.choices))})")
            if not isinstance(values, dict) or not values:
                raise where.error(path + (choice,), "maps parameter names to values")
            for k, v in values.items():
                check_name(path + (choice, k), k, entry_points, False)
                if k in params:
                    raise where.error(path + (choice, k), f"{k} is searched too; keep one")
                for ep in entry_points:
                    try:
                        coerce_value(ep, k, v)
                    except ConfigError as e:
                        raise where.error(path + (choice, k), str(e)) from None
            out[name][matches[0]] = dict(values)
    return out


def parse_space(data: dict, where: Where, text: str = "") -> SearchSpace:
    unknown = set(data) - TOP_KEYS
    if unknown:
        k = sorted(unknown)[0]
        raise where.error((k,), f"unknown key {k!r}; allowed: {', '.join(sorted(TOP_KEYS))}")
    params_raw = data.get("params")
    if not isinstance(params_raw, dict) or not params_raw:
        raise where.error(("params",), "params must map at least one parameter name to its range")

    # Which entry point(s): `entry_point: lwf`, or a searched categorical `params.entry_point`.
    if ENTRY_POINT_PARAM in params_raw:
        spec = params_raw[ENTRY_POINT_PARAM]
        choices = spec.get("choices") if isinstance(spec, dict) else None
        if not isinstance(spec, dict) or spec.get("type") != "categorical" or not isinstance(choices, list) or not choices:
            raise where.error(("params", ENTRY_POINT_PARAM), "a searched entry_point is {type: categorical, choices: [...]}")
        if "entry_point" in data:
            raise where.error(("entry_point",), "the entry point is searched (params.entry_point): "
                              "remove the top-level entry_point")
        entry_points = tuple(choices)
    else:
        if "entry_point" not in data:
            raise where.error((), f"entry_point is required; choose one of: {entry_point_names()}")
        entry_points = (data["entry_point"],)
    for i, ep in enumerate(entry_points):
        path = ("params", ENTRY_POINT_PARAM, "choices", i) if ENTRY_POINT_PARAM in params_raw else ("entry_point",)
        if canonical_entry_point(ep) is None:
            raise where.error(path, f"{ep!r} is not an entry point; choose one of: {entry_point_names()}")
        if canonical_entry_point(ep) in ("search", "promote"):
            raise where.error(path, "a study drives a training or evaluation entry point, not search/promote")
    entry_points = tuple(canonical_entry_point(ep) for ep in entry_points)

    fixed = data.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise where.error(("fixed",), "fixed must map parameter names to values")
    by_ep = data.get("fixed_by_entry_point") or {}
    if not isinstance(by_ep, dict):
        raise where.error(("fixed_by_entry_point",), "fixed_by_entry_point maps an entry point to its fixed values")
    for ep, vals in by_ep.items():
        if canonical_entry_point(ep) not in entry_points:
            raise where.error(("fixed_by_entry_point", ep), f"{ep!r} is not one of this study's entry points "
                              f"({', '.join(entry_points)})")
        if not isinstance(vals, dict):
            raise where.error(("fixed_by_entry_point", ep), "must map parameter names to values")
    yaml_key = {canonical_entry_point(ep): ep for ep in by_ep}
    by_ep = {canonical_entry_point(ep): vals for ep, vals in by_ep.items()}

    def check_name(path, name, eps, searched):
        allowed = set.intersection(*(config_field_names(e) for e in eps))
        if name not in allowed:
            union = sorted(set().union(*(config_field_names(e) for e in eps)))
            raise where.error(path, f"unknown parameter {name!r} for {'/'.join(eps)}; allowed: {', '.join(union)}")
        if searched and name in NOT_SEARCHABLE:
            raise where.error(path, f"{name} cannot be searched; put it under fixed (or pass it with set=)")

    for name, value in fixed.items():
        check_name(("fixed", name), name, entry_points, False)
        for ep in entry_points:
            try:
                coerce_value(ep, name, value)
            except ConfigError as e:
                raise where.error(("fixed", name), str(e)) from None
    for ep, vals in by_ep.items():
        for name, value in vals.items():
            check_name(("fixed_by_entry_point", yaml_key[ep], name), name, (ep,), False)
            try:
                coerce_value(ep, name, value)
            except ConfigError as e:
                raise where.error(("fixed_by_entry_point", yaml_key[ep], name), str(e)) from None

    params: dict[str, ParamSpec] = {}
    for name, spec in params_raw.items():
        if name != ENTRY_POINT_PARAM:
            check_name(("params", name), name, entry_points, True)
            if name in fixed or any(name in v for v in by_ep.values()):
                raise where.error(("params", name), f"{name} is both fixed and searched; keep one")
        params[name] = _parse_param(where, name, spec, entry_points)

    fixed_when = _parse_fixed_when(where, data.get("fixed_when"), params, fixed, by_ep, entry_points, check_name)
    objectives = _parse_objectives(where, data)
    constraints = []
    raw_c = data.get("constraints") or []
    if isinstance(raw_c, str):
        raw_c = [raw_c]
    if not isinstance(raw_c, list):
        raise where.error(("constraints",), "constraints is a list like [\"clean_acc >= 0.7\"]")
    for i, c in enumerate(raw_c):
        try:
            constraints.append(Constraint.parse(str(c)))
        except ExprError as e:
            raise where.error(("constraints", i), str(e)) from None

    pruner = _parse_choice(where, data, "pruner", PRUNERS, "none" if len(objectives) > 1 else "median")
    if len(objectives) > 1 and pruner["type"] != "none":
        raise where.error(("pruner",), "pruning works only for single-objective studies; use pruner: none "
                          "(or a single objective)")
    sampler = _parse_choice(where, data, "sampler", SAMPLERS, "tpe")
    if sampler["type"] == "grid":
        for n, p in params.items():
            if p.type != "categorical" and not (p.type == "int" and not p.log):
                raise where.error(("params", n), "sampler: grid needs categorical or int parameters")
    if sampler.get("seed") is not None and (isinstance(sampler["seed"], bool) or not isinstance(sampler["seed"], int)
                                            or not 0 <= sampler["seed"] <= MAX_SAMPLER_SEED):
        raise where.error(("sampler", "seed"), f"seed={sampler['seed']!r} must be a whole number in [0, {MAX_SAMPLER_SEED}]")
    _check_counts(where, "sampler", sampler)
    _check_counts(where, "pruner", pruner)
    if sampler["type"] == "grid":
        size = 1
        for n, p in params.items():
            size *= len(p.choices) if p.type == "categorical" else (int(p.high) - int(p.low)) // int(p.step or 1) + 1
            if size > MAX_GRID:
                raise where.error(("params", n), f"sampler: grid has more than {MAX_GRID} points (the limit) "
                                  "with this parameter; narrow the ranges, add a step, or use another sampler")


    trials = data.get("trials")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise where.error(("trials",), f"trials={trials!r} must be a whole number >= 1")
    timeout = data.get("timeout")
    if timeout is not None:
        _num(where, ("timeout",), timeout)
        if timeout <= 0:
            raise where.error(("timeout",), f"timeout={timeout!r} must be > 0 seconds (leave it out for no limit)")
    study = data.get("study")
    if study is not None and not isinstance(study, str):
        raise where.error(("study",), "study must be a name")
    space = SearchSpace(source=where.source, entry_points=entry_points, params=params, objectives=objectives,
                        fixed=dict(fixed), fixed_by_entry_point={k: dict(v) for k, v in by_ep.items()},
                        fixed_when=fixed_when, constraints=constraints, pruner=pruner, sampler=sampler, study=study, trials=trials,
                        timeout=timeout, text=text)
    space.check_configs(where)
    return space


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML (SearchError `FILE:LINE: key: ...` on any problem)."""
    from ..resources import named_file, names

    p = named_file("search_spaces", str(path)) or Path(path)  # a file, or a shipped space by name
    if not p.is_file():
        hint = ", ".join(names("search_spaces"))
        raise SearchError(f"space={str(path)!r} does not exist" + (f"; give a file or one of: {hint}" if hint else ""))
    text = read_yaml_text(p, SearchError, "space")
    return parse_space(*load_yaml(text, str(path), SearchError, SPACE_SHAPE), text=text)


def loads_space(text: str, source: str = "<space>") -> SearchSpace:
    return parse_space(*load_yaml(text, source, SearchError, SPACE_SHAPE), text=text)
