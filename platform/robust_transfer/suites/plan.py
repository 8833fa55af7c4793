"""Suite plans: a paper table/figure (projects/*.yaml) as a chain of entry points, each a child MLflow run.

Modelled on MLflow's multistep-workflow example: every step is `mlflow.projects.run(<entry point>)`
under the suite's run, and a step that already FINISHED with the same entry point, parameters and
code version is reused instead of re-run (so a suite killed part-way resumes from its finished
steps). Models flow between steps through the registry: a step that makes a model registers it as
`<scale>-<step>` and the suite points the alias `s-<key>` (the step's reuse key) at that version;
`{model:<step>}` in a later step's params becomes `models:/<scale>-<step>@s-<key>`, so a changed
upstream step changes every downstream key too. A step with `seeds: [0, 1, 2]` is planned as one run per
seed (the entry point's `seed` param set, its own key, tag rtl.seed); `{model:<step>}` of a seeded step
is its FIRST seed's model. Format: projects/README.md. Running a plan: suites/run.py.

A *select* step runs no entry point: it chooses one of several earlier model-making steps by a validation
expression when the suite reaches it, and exposes the winner as `{model:<select step>}` to later steps:

    - name: table4-best-lwf
      select: {among: [table4-lwf-0p01, table4-lwf-0p1], by: "(val_clean_acc + val_pgd10_acc) / 2"}

Its key covers the candidates' keys and `by`, so a rerun reuses its recorded choice (suites/run.py).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..config import CONFIGS, canonical_entry_point, mlproject_name
from ..config.coerce import coerce_values
from ..errors import ConfigError, SuiteError, UserError
from ..io import load_yaml
from .paper import apply_overrides, check_block, scale_variables
from .variables import STEP_KEY_VAR, substitute as _substitute, step_model_name

PACKAGE_DIR = Path(__file__).resolve().parent.parent   # the robust_transfer package: its code version
SHARED_STEPS_FILE = "sources.yaml"
TOP_KEYS = {"name", "title", "paper", "description", "scales", "steps", "report"}
STEP_KEYS = {"name", "entry", "params", "scales", "registers", "use", "paper", "seeds", "resources"}
MAX_SEEDS = 100                # `seeds: N` runs seeds 0..N-1
SELECT_KEYS = {"name", "select", "scales"}
SELECT_ENTRY = "select"        # what a select step shows where other steps show their entry point
# Entry points whose run ends with a model worth passing on (they take `register_as`).
MAKES_MODEL = {"train", "transfer", "finetune_adv", "lwf"}
DEFAULT_RESOURCES = {"cpu": 1.0, "gpu": 0.0}
_STEP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,60}$")


@dataclass
class Step:
    name: str
    entry: str                     # MLproject spelling (snake_case)
    params: dict[str, str]         # after substitution
    registers: bool
    key: str = ""                  # sha256(entry, params, code version)
    params_key: str = ""           # sha256(entry, params) with upstream models named by *their* params_key
    upstream: list[str] = field(default_factory=list)
    config: object = None          # the entry point's config built from `params`: checked at planning time
    paper: dict = field(default_factory=dict)   # the paper's setting (suites/paper.py), printed by --dry-run
    seed: int | None = None        # `seeds:` — this run's seed (the entry point's `seed` param); None: unseeded
    seeds: tuple[int, ...] = ()    # every seed of the step (tag rtl.seeds: what the report averages over)
    seeds_key: str = ""            # params_key without the seed: the same for every seed of one step (rtl.seeds_key)
    select: dict | None = None     # a select step: {among: [step names], by: "<val_* expression>"}
    # what one run of the step takes from a Ray cluster (`suite --workers N`); not part of the key
    resources: dict = field(default_factory=lambda: dict(DEFAULT_RESOURCES))

    @property
    def alias(self) -> str:
        return f"s-{self.key[:16]}"

    @property
    def label(self) -> str:
        """The step's name, with its seed when it has several: `tr-large-robust-c10 (seed 1)`."""
        return self.name if self.seed is None else f"{self.name} (seed {self.seed})"


@dataclass
class Suite:
    name: str
    title: str
    paper: str
    scale: str
    description: str
    steps: list[Step]
    path: Path
    code_version: str



# ------------------------------------------------------------------------------------------- code version
def code_version() -> str:
    """sha256 over the package's Python sources: a step re-runs when the code that ran it changed."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(str(path.relative_to(PACKAGE_DIR)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def step_key(entry: str, params: dict[str, str], version: str) -> str:
    blob = json.dumps({"entry": entry, "params": params, "code_version": version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def params_key(entry: str, params: dict[str, str]) -> str:
    """What `reuse=params` compares: the key without the code version."""
    return hashlib.sha256(json.dumps({"entry": entry, "params": params}, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------------------- loading
def _entry_parameters() -> dict[str, set[str]]:
    """MLproject entry point → its parameter names (from the same dataclasses MLproject is generated from)."""
    return {mlproject_name(name): {f.name for f in fields(cls)} for name, cls in CONFIGS.items()}


def _read(path: Path, what: str):
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise SuiteError(f"{what} {str(path)!r} is not UTF-8 text (offset {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise SuiteError(f"{what} {str(path)!r} cannot be read ({e.strerror})") from None
    return load_yaml(text, str(path), SuiteError, "a suite is a YAML mapping (name, scales, steps, report)")


def load_suite(path: str | Path, scale: str, version: str | None = None,
               overrides: dict[str, str] | None = None) -> Suite:
    """Read, validate and plan a suite at one scale: every mistake is `FILE:LINE: key: what is wrong`.
    `overrides` (`rtl suite --set`) replace scale variables, e.g. a `requires:` model URI (suites/paper.py)."""
    path = Path(path)
    data, where = _read(path, "project")
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise where.error((sorted(unknown)[0],), f"unknown key; allowed: {', '.join(sorted(TOP_KEYS))}")
    for key in ("name", "steps", "scales"):
        if key not in data:
            raise where.error((), f"missing `{key}`")
    scales = data["scales"]
    if not isinstance(scales, dict) or not scales:
        raise where.error(("scales",), "a mapping of scale name → variables, e.g. cpu: {target: cifar10-jpeg}")
    if scale not in scales:
        raise ConfigError(f"scale={scale!r} is not defined in {path}; choose one of: {', '.join(scales)}")
    suite_vars, description = scale_variables(scales[scale], where, ("scales", scale))
    raw_steps = data["steps"]
    if not isinstance(raw_steps, list) or not raw_steps:
        raise where.error(("steps",), "a non-empty list of steps")
    # Shared steps (projects/sources.yaml) are planned with the shared file's variables only, so every
    # suite that uses one gets the same parameters, the same key, and reuses one run.
    shared_vars, shared = {}, {}
    if (path.parent / SHARED_STEPS_FILE).is_file() and path.name != SHARED_STEPS_FILE:
        shared_vars, shared = _shared_steps(path.parent / SHARED_STEPS_FILE, scale)
    overrides = dict(overrides or {})
    unknown_set = sorted(set(overrides) - set(shared_vars) - set(suite_vars))
    if unknown_set:
        raise ConfigError(f"set: {unknown_set[0]!r} is not a variable of {path.name} at scale {scale}; variables: "
                          f"{', '.join(sorted({*shared_vars, *suite_vars})) or '(none)'}")
    shared_vars, suite_vars = apply_overrides(shared_vars, overrides), apply_overrides(suite_vars, overrides)
    variables = {**shared_vars, **suite_vars, "scale": scale}
    expanded = []
    for i, raw in enumerate(raw_steps):
        if not isinstance(raw, dict):
            raise where.error(("steps", i), "a step is a mapping (name, entry, params) or {use: <shared step>}")
        if "use" in raw:
            only = raw.get("scales")  # `{use: name, scales: [cpu]}`: the shared step at these scales only
            if only is not None and scale not in (only if isinstance(only, list) else [only]):
                continue
            if raw["use"] not in shared:
                raise where.error(("steps", i, "use"), f"{raw['use']!r} is not a step of {SHARED_STEPS_FILE}; "
                                  f"choose one of: {', '.join(shared) or '(none)'}")
            expanded.append((*shared[raw["use"]], {**shared_vars, "scale": scale}))
        else:
            expanded.append((raw, where, ("steps", i), variables))

    version = version or code_version()
    entries = _entry_parameters()
    steps: list[Step] = []
    by_name: dict[str, Step] = {}
    for raw, w, at, step_vars in expanded:
        planned = _plan_step(raw, w, at, step_vars, entries, by_name, scale, version)
        if not planned:  # not at this scale
            continue
        if planned[0].name in by_name:
            raise w.error(at + ("name",), f"step name {planned[0].name!r} is used twice")
        by_name[planned[0].name] = planned[0]   # {model:<step>} of a seeded step: its FIRST seed's model
        steps += planned
    return Suite(name=str(data["name"]), title=str(data.get("title", data["name"])), paper=str(data.get("paper", "")),
                 scale=scale, description=description, steps=steps, path=path, code_version=version)


def _shared_steps(path: Path, scale: str) -> tuple[dict, dict[str, tuple]]:
    data, where = _read(path, "shared steps file")
    shared_vars, _ = scale_variables((data.get("scales") or {}).get(scale), where, ("scales", scale))
    out = {}
    for i, raw in enumerate(data.get("steps") or []):
        if not isinstance(raw, dict) or "name" not in raw:
            raise where.error(("steps", i), "a shared step needs a `name`")
        out[raw["name"]] = (raw, where, ("steps", i))
    return shared_vars, out


def parse_seeds(value, scale: str, error, name: str = "seeds") -> list[int] | None:
    """A step's `seeds:` at `scale`: a list of distinct seeds, a count N (seeds 0..N-1), or a mapping
    scale → either (a scale it does not name runs the step once, unseeded). None: no seeds."""
    from ..config.common import MAX_SEED

    allowed = (f"allowed: a list of distinct whole numbers in [0, {MAX_SEED}] (e.g. [0, 1, 2]), a count N in "
               f"[1, {MAX_SEEDS}] (seeds 0..N-1), or a mapping scale → either (e.g. {{cpu: [0, 1, 2]}})")
    if value is None:
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or isinstance(v, dict):
                raise error(f"{name}={value!r}: {allowed}")
            parse_seeds(v, scale, error, f"{name}.{k}")   # every scale's value is checked, not only this one's
        return parse_seeds(value[scale], scale, error, f"{name}.{scale}") if scale in value else None
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    if whole(value):
        if not 1 <= value <= MAX_SEEDS:
            raise error(f"{name}={value!r}: {allowed}")
        return list(range(value))
    if (not isinstance(value, list) or not value or not all(whole(v) and 0 <= v <= MAX_SEED for v in value)
            or len(set(value)) != len(value) or len(value) > MAX_SEEDS):
        raise error(f"{name}={value!r}: {allowed}")
    return list(value)


def parse_resources(value, scale: str, error) -> dict[str, float]:
    """A step's `resources:` at `scale`: `{cpu: N, gpu: N}` (either may be left out: cpu 1, gpu 0), or a mapping
    scale → that (`{cpu: {cpu: 1}, paper: {cpu: 4, gpu: 1}}`; a scale it leaves out gets the defaults)."""
    allowed = ("allowed: {cpu: N, gpu: N} with N >= 0 (fractions of one GPU up to 1, or whole GPUs), or a mapping "
               "scale → that, e.g. {cpu: {cpu: 1}, paper: {cpu: 4, gpu: 1}}")
    if value is None:
        return dict(DEFAULT_RESOURCES)
    if not isinstance(value, dict) or not value:
        raise error(f"resources={value!r}: {allowed}")
    if all(isinstance(v, dict) for v in value.values()):   # per scale
        for k, v in value.items():
            parse_resources(v, str(k), error)               # every scale's value is checked, not only this one's
        return parse_resources(value[scale], scale, error) if scale in value else dict(DEFAULT_RESOURCES)
    out = dict(DEFAULT_RESOURCES)
    for k, v in value.items():
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if k not in DEFAULT_RESOURCES or not number or v < 0 or (k == "gpu" and v > 1 and not float(v).is_integer()):
            raise error(f"resources.{k}={v!r}: {allowed}")
        out[k] = float(v)
    if out["cpu"] == 0 and out["gpu"] == 0:
        raise error(f"resources={value!r} asks for nothing: {allowed}")
    return out


def _plan_step(raw, where, at, variables, entries, by_name, scale, version) -> list[Step]:
    if "select" in raw:
        chosen = _plan_select(raw, where, at, by_name, scale, version)
        return [chosen] if chosen else []
    unknown = set(raw) - STEP_KEYS
    if unknown:
        raise where.error(at + (sorted(unknown)[0],), f"unknown key; allowed: {', '.join(sorted(STEP_KEYS - {'use'}))}")
    only = raw.get("scales")
    if only is not None and scale not in (only if isinstance(only, list) else [only]):
        return []
    name, entry = raw.get("name"), str(raw.get("entry", ""))
    entry = mlproject_name(canonical_entry_point(entry)) if canonical_entry_point(entry) else entry  # MLproject's
    if not isinstance(name, str) or not _STEP_NAME.match(name):
        raise where.error(at + ("name",), f"step name {name!r}: lower-case letters, digits and '-'")
    if entry not in entries:
        raise where.error(at + ("entry",), f"entry point {raw.get('entry')!r} is unknown; choose one of: "
                          f"{', '.join(sorted(entries))}")
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        raise where.error(at + ("params",), "a mapping of parameter → value")
    paper = check_block(raw.get("paper"), entries[entry], where, at + ("paper",))
    seeds = parse_seeds(raw.get("seeds"), scale, lambda m: where.error(at + ("seeds",), m))
    if seeds is not None and "seed" not in entries[entry]:
        raise where.error(at + ("seeds",), f"{entry} has no `seed` parameter; seeds: is for entry points that take one")
    if seeds is not None and "seed" in params_raw:
        raise where.error(at + ("params", "seed"), f"step {name!r} has `seeds:`, which sets each run's seed; drop params.seed")
    registers = bool(raw.get("registers", entry in MAKES_MODEL))
    resources = parse_resources(raw.get("resources"), scale, lambda m: where.error(at + ("resources",), m))
    params: dict[str, str] = {}
    by_params: dict[str, str] = {}
    upstream: list[str] = []
    for k, v in params_raw.items():
        if k not in entries[entry]:
            raise where.error(at + ("params", k), f"{entry} has no parameter {k!r}")
        if k == "register_as":
            raise where.error(at + ("params", k), "the suite names registered models itself (<scale>-<step>)")
        params[k] = _substitute(v, variables, by_name, scale, upstream, lambda m: where.error(at + ("params", k), m))
        # the same value with upstream models named by parameters only: what reuse=params compares
        by_params[k] = _substitute(v, variables, by_name, scale, [], lambda m: where.error(at + ("params", k), m),
                                   alias=lambda step: f"p-{step.params_key[:16]}")
    if registers:
        if "register_as" not in entries[entry]:
            raise where.error(at + ("registers",), f"{entry} does not register models")
        params["register_as"] = by_params["register_as"] = step_model_name(scale, name)
    error = lambda m: where.error(at + ("params",), f"step {name!r}: {m}")  # noqa: E731
    # `{step_key}`: the step's own key (16 hex digits), e.g. a study name that a rerun of the same step resumes and a
    # changed step (code, parameters, upstream models) does not. The keys are computed over the text with it unexpanded.
    def with_key(p: dict, key: str) -> dict:
        return {k: v.replace(STEP_KEY_VAR, key[:16]) for k, v in p.items()}

    if seeds is None:
        key = step_key(entry, params, version)
        params = with_key(params, key)
        return [Step(name=name, entry=entry, params=params, registers=registers, key=key,
                     params_key=params_key(entry, by_params), upstream=upstream, paper=paper,
                     config=_build_config(entry, params, error), resources=resources)]
    # One run per seed: its own params (seed=<s>), key and params_key, so each seed is reused on its own; every
    # seed registers a version of the same model <scale>-<step>, each under its own alias s-<key>.
    out = []
    for seed in seeds:
        p, bp = {**params, "seed": str(seed)}, {**by_params, "seed": str(seed)}
        key = step_key(entry, p, version)
        p = with_key(p, key)
        out.append(Step(name=name, entry=entry, params=p, registers=registers, key=key,
                        params_key=params_key(entry, bp), upstream=list(upstream), paper=paper,
                        config=_build_config(entry, p, error), seed=seed, seeds=tuple(seeds),
                        seeds_key=params_key(entry, by_params), resources=dict(resources)))
    return out


def _plan_select(raw, where, at, by_name, scale, version) -> Step | None:
    """`{name, select: {among: [...], by: "..."}}`: choose among earlier model-making steps on validation."""
    from ..expr import Expr, ExprError

    unknown = set(raw) - SELECT_KEYS
    if unknown:
        raise where.error(at + (sorted(unknown)[0],), f"unknown key of a select step; allowed: {', '.join(sorted(SELECT_KEYS))}")
    only = raw.get("scales")
    if only is not None and scale not in (only if isinstance(only, list) else [only]):
        return None
    name, sel = raw.get("name"), raw.get("select")
    if not isinstance(name, str) or not _STEP_NAME.match(name):
        raise where.error(at + ("name",), f"step name {name!r}: lower-case letters, digits and '-'")
    if not isinstance(sel, dict) or set(sel) != {"among", "by"}:
        raise where.error(at + ("select",), 'select is {among: [step, ...], by: "<val_* expression>"}')
    among = sel["among"]
    if not isinstance(among, list) or len(among) < 2 or not all(isinstance(a, str) for a in among):
        raise where.error(at + ("select", "among"), "list at least two earlier steps of this suite")
    for a in among:
        if a not in by_name:
            raise where.error(at + ("select", "among"), f"{a!r} names no earlier step of this suite")
        if not by_name[a].registers:
            raise where.error(at + ("select", "among"), f"step {a!r} makes no model to select")
    if len(set(among)) != len(among):
        raise where.error(at + ("select", "among"), "a step is listed twice")
    try:
        by = Expr.parse(str(sel["by"]))
    except ExprError as e:
        raise where.error(at + ("select", "by"), str(e)) from None
    test = [n for n in by.names if not n.startswith("val_")]
    if test:
        raise where.error(at + ("select", "by"), f"{sel['by']!r} names {', '.join(test)}; select on validation "
                          "metrics (val_clean_acc, val_pgd10_acc): choosing on test data biases what is reported")
    by_text = " ".join(str(sel["by"]).split())
    # The candidates by key: a changed candidate (or code) makes a new choice; the same ones reuse the recorded one.
    # TODO(seeds): a step with several runs (seeds) is scored by the mean of its runs (suites/run.py, candidate_runs).
    params = {"among": ",".join(among), "by": by_text}
    keyed = {"among": ",".join(f"{a}={by_name[a].key}" for a in among), "by": by_text}
    by_params = {"among": ",".join(f"{a}={by_name[a].params_key}" for a in among), "by": by_text}
    return Step(name=name, entry=SELECT_ENTRY, params=params, registers=True, key=step_key(SELECT_ENTRY, keyed, version),
                params_key=params_key(SELECT_ENTRY, by_params), upstream=list(among),
                select={"among": list(among), "by": by_text})


def _build_config(entry: str, params: dict[str, str], error):
    """The step's config, as its entry point will build it from these parameters (the same coercion as
    `rtl`/MLproject): a bad value fails now, naming the step, not when the step starts."""
    cls = CONFIGS[canonical_entry_point(entry)]
    try:
        return cls(**coerce_values(cls, params))
    except UserError as e:
        raise error(str(e)) from None


def with_upstream(steps: list[Step], wanted: list[str]) -> list[Step]:
    by_name = {s.name: s for s in steps}
    need: set[str] = set()

    def add(name):
        if name not in need:
            need.add(name)
            for u in by_name[name].upstream:
                add(u)

    for w in wanted:
        add(w)
    return [s for s in steps if s.name in need]
