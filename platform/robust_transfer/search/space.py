"""Search spaces: one YAML per study → a validated `SearchSpace` → Optuna distributions / Ray Tune domains.
This module is the model (`SearchSpace`, `ParamSpec`, `Objective`, values coerced to config fields); reading
and checking the YAML is search/space_yaml.py (`load_space`, `loads_space`).

    entry_point: lwf                       # any entry point of config.CONFIGS (or search it, see below)
    study: lwf-lambda                      # default study name
    fixed: {source_model: "models:/src@champion", target: "cifar10-jpeg:half-b"}
    params:
      lambda_d: {type: float, low: 1.0e-7, high: 0.1, log: true}
      distance: {type: categorical, choices: [l2, l1]}
    objective: {expr: "(clean_acc + pgd20_acc) / 2", direction: maximize}
    # or: objectives: [{metric: clean_acc, direction: maximize}, {metric: pgd20_acc, direction: maximize}]
    constraints: ["clean_acc >= 0.7"]
    pruner: {type: median}                 # median | hyperband | threshold | none (single objective only)
    sampler: {type: tpe, seed: 0}          # tpe | random | nsga2 | grid

Searching the strategy itself: `params: {entry_point: {type: categorical, choices: [transfer, train]}}`,
with `fixed_by_entry_point: {train: {...}}` for what differs per strategy.

Values that follow a searched categorical's choice (a conditional): `fixed_when: {teacher: {online: {augment: true}}}`
sets augment=true in the trials that sample teacher=online (and leaves it at `fixed`/the default otherwise).

Every mistake is reported before any trial runs, as `FILE:LINE: key: what is wrong` (line numbers come
from the YAML node marks, `yaml.compose`).
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field, fields

from ..config import CONFIGS, canonical_entry_point, coerce, mlproject_name  # noqa: F401  (re-exported)
from ..config.coerce import field_types
from ..errors import ConfigError, SearchError, UserError
from ..expr import Constraint, Expr
from ..io import Where

ENTRY_POINT_PARAM = "entry_point"


def entry_point_names() -> str:
    return ", ".join(mlproject_name(n) for n in CONFIGS if n not in ("search", "promote", "evaluate"))


# ---------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str                       # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def distribution(self):
        import optuna.distributions as od

        if self.type == "float":
            return od.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return od.IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return od.CategoricalDistribution(list(self.choices))

    def ray_domain(self):
        from ray import tune

        if self.type == "categorical":
            return tune.choice(list(self.choices))
        if self.type == "float":
            if self.step:
                return tune.qloguniform(self.low, self.high, self.step) if self.log else \
                    tune.quniform(self.low, self.high, self.step)
            return tune.loguniform(self.low, self.high) if self.log else tune.uniform(self.low, self.high)
        if self.log:
            return tune.lograndint(int(self.low), int(self.high) + 1)
        if self.step and self.step != 1:
            return tune.qrandint(int(self.low), int(self.high), int(self.step))
        return tune.randint(int(self.low), int(self.high) + 1)  # randint's upper bound is exclusive

    def describe(self) -> str:
        if self.type == "categorical":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        extra = " log" if self.log else (f" step {self.step:g}" if self.step else "")
        return f"[{self.low:g}, {self.high:g}]{extra}"


@dataclass(frozen=True)
class Objective:
    name: str                       # the column/metric name the value is stored under
    expr: Expr
    direction: str                  # maximize | minimize
    report: Expr | None = None      # what per-epoch reports use (pruning); default: expr on held-out metrics


@dataclass
class SearchSpace:
    source: str
    entry_points: tuple[str, ...]
    params: dict[str, ParamSpec]
    objectives: list[Objective]
    fixed: dict = field(default_factory=dict)
    fixed_by_entry_point: dict[str, dict] = field(default_factory=dict)
    fixed_when: dict[str, dict] = field(default_factory=dict)   # searched categorical → {choice: {name: value}}
    constraints: list[Constraint] = field(default_factory=list)
    pruner: dict = field(default_factory=lambda: {"type": "median"})
    sampler: dict = field(default_factory=lambda: {"type": "tpe"})
    study: str | None = None
    trials: int | None = None
    timeout: float | None = None
    text: str = ""

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def distributions(self) -> dict:
        return {n: p.distribution() for n, p in self.params.items()}

    def ray_param_space(self) -> dict:
        return {n: p.ray_domain() for n, p in self.params.items()}

    def entry_point_of(self, sampled: dict) -> str:
        return sampled.get(ENTRY_POINT_PARAM, self.entry_points[0])

    def config_values(self, sampled: dict) -> tuple[str, dict]:
        """(entry point, the keyword arguments of its config) for one set of sampled values."""
        ep = self.entry_point_of(sampled)
        by_ep = self.fixed_by_entry_point.get(ep, {})   # (with `set` overrides: they win over fixed_when)
        values = dict(self.fixed) | by_ep | {k: v for k, v in sampled.items() if k != ENTRY_POINT_PARAM}
        for name, by_choice in self.fixed_when.items():
            chosen = values.get(name)
            for k, v in next((vals for c, vals in by_choice.items() if c == chosen or str(c) == str(chosen)),
                             {}).items():
                if k not in by_ep:
                    values[k] = v
        return ep, coerce_values(ep, values)

    def build_config(self, sampled: dict):
        ep, values = self.config_values(sampled)
        cls = CONFIGS[ep]
        try:
            return ep, cls(**values)
        except UserError:
            raise
        except TypeError as e:  # an unknown keyword: validate() rules it out, but say it plainly
            raise ConfigError(f"{ep}: {e}") from None

    def apply_overrides(self, text: str) -> list[str]:
        """`set="epochs=1 per_class=20"`: override fixed parameters (a searched one becomes fixed)."""
        notes = []
        for name, raw in parse_set(text).items():
            eps = [ep for ep in self.entry_points if name in config_field_names(ep)]
            if not eps:
                raise SearchError(f"set: {name!r} is not a parameter of {'/'.join(self.entry_points)}; "
                                  f"allowed: {', '.join(sorted(set().union(*map(config_field_names, self.entry_points))))}")
            if name in self.params:
                del self.params[name]
                notes.append(f"set: {name} is fixed to {raw!r} instead of searched")
            for ep in eps:
                self.fixed_by_entry_point.setdefault(ep, {})[name] = coerce_value(ep, name, raw)
            self.fixed.pop(name, None)
        if not self.params:
            raise SearchError("set: every searched parameter is now fixed; nothing is left to search")
        self.check_configs()
        return notes

    def check_configs(self, where: "Where | None" = None) -> None:
        """Build each entry point's config for every end of every range and every choice (others at their
        first value), so a bad fixed value or an impossible choice fails now, not in trial 7."""
        base = {n: (p.choices[0] if p.type == "categorical" else (int(p.low) if p.type == "int" else p.low))
                for n, p in self.params.items() if n != ENTRY_POINT_PARAM}
        probes: list[tuple[tuple, dict]] = [((), {})]
        for n, p in self.params.items():
            if n == ENTRY_POINT_PARAM:
                continue
            if p.type == "categorical":
                probes += [(("params", n, "choices", i), {n: c}) for i, c in enumerate(p.choices)]
            else:
                probes += [(("params", n, k), {n: int(v) if p.type == "int" else v})
                           for k, v in (("low", p.low), ("high", p.high))]
        for ep in self.entry_points:
            for path, probe in probes:
                try:
                    self.build_config(base | probe | {ENTRY_POINT_PARAM: ep})
                except UserError as e:
                    if path and where is not None:
                        raise where.error(path, f"{ep}: {e}") from None
                    raise SearchError(f"{self.source}: fixed parameters are not valid for {ep}: {e}") from None

# ---------------------------------------------------------------------------------------------- config fields
def config_field_names(entry_point: str) -> set[str]:
    return {f.name for f in fields(CONFIGS[entry_point])}


def _field_type(entry_point: str, name: str):
    return field_types(CONFIGS[entry_point])[name]


def coerce_value(entry_point: str, name: str, value):
    """A YAML/`set`/sampled value as the entry point's config field type (config.coerce)."""
    return coerce.coerce_value(CONFIGS[entry_point], name, value)


def coerce_values(entry_point: str, values: dict) -> dict:
    return coerce.coerce_values(CONFIGS[entry_point], values)


def parse_set(text: str | None) -> dict[str, str]:
    """`"epochs=1 per_class=20"` (spaces or ';' between pairs) → {"epochs": "1", "per_class": "20"}."""
    out: dict[str, str] = {}
    if not text:
        return out
    try:
        tokens = shlex.split(str(text).replace(";", " "))
    except ValueError as e:
        raise SearchError(f"set={text!r}: {e}") from None
    for tok in tokens:
        if "=" not in tok or not tok.split("=", 1)[0]:
            raise SearchError(f"set: {tok!r} is not name=value; write set=\"epochs=1 per_class=20\"")
        k, v = tok.split("=", 1)
        out[k.strip().replace("-", "_")] = v
    return out


def grid_values(space: SearchSpace) -> dict[str, list]:
    """The full grid of a `sampler: grid` space."""
    out = {}
    for n, p in space.params.items():
        out[n] = list(p.choices) if p.type == "categorical" else list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
    return out

