"""`suite`: a paper table/figure (projects/*.yaml) as a chain of entry points, each a child MLflow run.

Modelled on MLflow's multistep-workflow example: every step is `mlflow.projects.run(<entry point>)`
under the suite's run, and a step that already FINISHED with the same entry point, parameters and
code version is reused instead of re-run (so a suite killed part-way resumes from its finished
steps). Models flow between steps through the registry: a step that makes a model registers it as
`<scale>-<step>` and the suite points the alias `s-<key>` (the step's reuse key) at that version;
`{model:<step>}` in a later step's params becomes `models:/<scale>-<step>@s-<key>`, so a changed
upstream step changes every downstream key too. Format: projects/README.md.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, SuiteError

PACKAGE_DIR = Path(__file__).resolve().parent
SHARED_STEPS_FILE = "sources.yaml"
TOP_KEYS = {"name", "title", "paper", "description", "scales", "steps", "report"}
STEP_KEYS = {"name", "entry", "params", "scales", "registers", "use", "paper"}
# Entry points whose run ends with a model worth passing on (they take `register_as`).
MAKES_MODEL = {"train", "transfer", "finetune_adv", "lwf"}
_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z0-9_.-]+))?\}")
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
    paper: dict = field(default_factory=dict)   # the paper's setting (suite_paper.py), printed by --dry-run

    @property
    def alias(self) -> str:
        return f"s-{self.key[:16]}"


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



def registered_name(scale: str, step: str) -> str:
    """The registered model a step's model becomes (and later steps read by alias)."""
    return f"{scale}-{step}"


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
    from dataclasses import fields

    from .commands import COMMANDS

    return {name.replace("-", "_"): {f.name for f in fields(cls)} for name, (cls, _, _) in COMMANDS.items()}


def _read(path: Path, what: str):
    from .search.space import load_yaml

    try:
        text = path.read_text()
    except OSError as e:
        raise SuiteError(f"{what} {str(path)!r} cannot be read ({e.strerror})") from None
    return load_yaml(text, str(path), SuiteError, "a suite is a YAML mapping (name, scales, steps, report)")


def load_suite(path: str | Path, scale: str, version: str | None = None,
               overrides: dict[str, str] | None = None) -> Suite:
    """Read, validate and plan a suite at one scale: every mistake is `FILE:LINE: key: what is wrong`.
    `overrides` (`rtl suite --set`) replace scale variables, e.g. a `requires:` model URI."""
    from .suite_paper import apply_overrides, scale_variables

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
        step = _plan_step(raw, w, at, step_vars, entries, by_name, scale, version)
        if step is None:  # not at this scale
            continue
        if step.name in by_name:
            raise w.error(at + ("name",), f"step name {step.name!r} is used twice")
        by_name[step.name] = step
        steps.append(step)
    return Suite(name=str(data["name"]), title=str(data.get("title", data["name"])), paper=str(data.get("paper", "")),
                 scale=scale, description=description, steps=steps, path=path, code_version=version)


def _shared_steps(path: Path, scale: str) -> tuple[dict, dict[str, tuple]]:
    data, where = _read(path, "shared steps file")
    from .suite_paper import scale_variables

    shared_vars, _ = scale_variables((data.get("scales") or {}).get(scale), where, ("scales", scale))
    out = {}
    for i, raw in enumerate(data.get("steps") or []):
        if not isinstance(raw, dict) or "name" not in raw:
            raise where.error(("steps", i), "a shared step needs a `name`")
        out[raw["name"]] = (raw, where, ("steps", i))
    return shared_vars, out


def _plan_step(raw, where, at, variables, entries, by_name, scale, version) -> Step | None:
    unknown = set(raw) - STEP_KEYS
    if unknown:
        raise where.error(at + (sorted(unknown)[0],), f"unknown key; allowed: {', '.join(sorted(STEP_KEYS - {'use'}))}")
    only = raw.get("scales")
    if only is not None and scale not in (only if isinstance(only, list) else [only]):
        return None
    name, entry = raw.get("name"), str(raw.get("entry", "")).replace("-", "_")
    if not isinstance(name, str) or not _STEP_NAME.match(name):
        raise where.error(at + ("name",), f"step name {name!r}: lower-case letters, digits and '-'")
    if entry not in entries:
        raise where.error(at + ("entry",), f"entry point {raw.get('entry')!r} is unknown; choose one of: "
                          f"{', '.join(sorted(entries))}")
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        raise where.error(at + ("params",), "a mapping of parameter → value")
    from .suite_paper import check_block

    paper = check_block(raw.get("paper"), entries[entry], where, at + ("paper",))
    registers = bool(raw.get("registers", entry in MAKES_MODEL))
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
        params["register_as"] = by_params["register_as"] = registered_name(scale, name)
    return Step(name=name, entry=entry, params=params, registers=registers, key=step_key(entry, params, version),
                params_key=params_key(entry, by_params), upstream=upstream, paper=paper)


def _substitute(value, variables, by_name, scale, upstream, error, alias=lambda step: step.alias) -> str:
    """`{var}` → the scale's variable; `{model:step}` → that step's model by registry alias."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)

    def repl(m):
        var, arg = m.group(1), m.group(2)
        if var == "model":
            if arg not in by_name:
                raise error(f"{{model:{arg}}} names no earlier step of this suite")
            if not by_name[arg].registers:
                raise error(f"{{model:{arg}}}: step {arg!r} does not register a model")
            upstream.append(arg)
            return f"models:/{registered_name(scale, arg)}@{alias(by_name[arg])}"
        if arg is not None or var not in variables:
            raise error(f"{{{m.group(0)[1:-1]}}} is not a variable of this scale; defined: {', '.join(sorted(variables))}")
        from .suite_paper import Required, required_error

        if isinstance(variables[var], Required):
            raise error(required_error(var, variables[var]))
        return _substitute(variables[var], variables, by_name, scale, upstream, error, alias)

    return _VAR.sub(repl, text)


# ------------------------------------------------------------------------------------------- running
def _client():
    from mlflow.tracking import MlflowClient

    from .tracking import tracking_uri

    return MlflowClient(tracking_uri())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def all_experiments(client) -> list[str]:
    """A step's identity is its key, not where it ran: `mlflow run` (experiment Default) and `rtl suite`
    (experiment robust-transfer) reuse each other's steps."""
    return [e.experiment_id for e in client.search_experiments()]


def find_finished(client, key: str):
    runs = client.search_runs(all_experiments(client), f"tags.`rtl.step_key` = '{key}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def close_orphans(client, key: str) -> int:
    """A step whose launcher was killed stays RUNNING forever: mark it KILLED if its process is gone."""
    closed = 0
    for run in client.search_runs(all_experiments(client), f"tags.`rtl.step_key` = '{key}' and attributes.status = 'RUNNING'"):
        tags = run.data.tags
        same_host = tags.get("rtl.host") == socket.gethostname()
        pid = int(tags.get("rtl.suite_pid", "0") or 0)
        if same_host and pid and not _pid_alive(pid):
            client.set_terminated(run.info.run_id, "KILLED")
            closed += 1
    return closed


def _alias_model(client, suite: Suite, step: Step, run) -> str:
    """Point `s-<key>` of `<scale>-<step>` at the version the step's run registered."""
    from .errors import RegistryError

    registered = run.data.tags.get("rtl.registered_model", "")
    name, _, version = registered.rpartition("/")
    if not name or not version:
        raise RegistryError(f"step {step.name!r} (run {run.info.run_id}) registered no model; "
                            "its entry point must take register_as")
    client.set_registered_model_alias(name, step.alias, version)
    uri = f"models:/{name}@{step.alias}"
    client.set_tag(run.info.run_id, "rtl.model_uri", uri)
    return uri


def run_step(client, suite: Suite, step: Step, experiment_id: str, project_root: Path, reuse: str):
    """Reuse or run one step; returns (run, reused)."""
    import mlflow.projects

    close_orphans(client, step.key)
    done = None if reuse == "never" else find_finished(client, step.key)
    if done is None and reuse == "params":
        # Same entry point and parameters under any code version (what changed was elsewhere).
        runs = client.search_runs(all_experiments(client), f"tags.`rtl.step` = '{step.name}' and tags.`rtl.scale` = "
                                  f"'{suite.scale}' and tags.`rtl.params_key` = '{step.params_key}' and "
                                  "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
                                  max_results=1)
        done = runs[0] if runs else None
    if done is not None:
        if step.registers:
            _alias_model(client, suite, step, done)
        return done, True
    from mlflow.exceptions import ExecutionException

    # The step's own process tags its run as it starts (tracking.runs reads RTL_LAUNCHER_TAGS), so even a
    # step killed mid-way can be recognised, and closed, by the rerun. Synchronous: no extra `mlflow` CLI.
    os.environ["RTL_LAUNCHER_TAGS"] = json.dumps(step_tags(suite, step))
    try:
        submitted = mlflow.projects.run(str(project_root), entry_point=step.entry, parameters=step.params,
                                        env_manager="local", experiment_id=experiment_id, synchronous=True,
                                        run_name=step.name)
        run_id = submitted.run_id
    except ExecutionException:
        run_id = None
    finally:
        os.environ.pop("RTL_LAUNCHER_TAGS", None)
    if run_id is None:
        failed = client.search_runs([experiment_id], f"tags.`rtl.step_key` = '{step.key}'",
                                    order_by=["attributes.start_time DESC"], max_results=1)
        where = f"run {failed[0].info.run_id} is {failed[0].info.status}" if failed else "no run was recorded"
        raise SuiteError(f"step {step.name!r} ({step.entry}) failed: {where}; its error is printed above; "
                         "fix it and rerun the suite (finished steps are reused)")
    run = client.get_run(run_id)
    if step.registers:
        _alias_model(client, suite, step, run)
    return client.get_run(run_id), False


def step_tags(suite: Suite, step: Step) -> dict[str, str]:
    return {"rtl.project": suite.name, "rtl.step": step.name, "rtl.scale": suite.scale, "rtl.step_key": step.key,
            "rtl.params_key": step.params_key, "rtl.code_version": suite.code_version,
            "rtl.host": socket.gethostname(), "rtl.suite_pid": str(os.getpid())}


def project_root_for(path: Path) -> Path:
    """The directory holding MLproject: above the suite file, else the working directory."""
    for d in [path.resolve().parent, *path.resolve().parents, Path.cwd()]:
        if (d / "MLproject").is_file():
            return d
    raise SuiteError(f"no MLproject found above {str(path)!r} or in the working directory; run the suite from "
                     "the robust-transfer project")


def run_suite(cfg) -> dict:
    """Plan, then reuse/run every step as a child run of this suite's run, then `report`."""
    import mlflow

    from .tracking import tracked_run

    from .tracking.runs import absolute_tracking_uri, tracking_uri

    # steps run with the project root as working directory: a relative sqlite store must not move
    os.environ["MLFLOW_TRACKING_URI"] = absolute_tracking_uri(tracking_uri())
    # Steps run `rtl` (and asynchronous project runs the `mlflow` CLI) from this Python environment.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    from .search.space import parse_set

    suite = load_suite(cfg.project, cfg.scale, overrides=parse_set(cfg.set))
    if cfg.report:  # a malformed report: say so now, not after hours of steps
        from .analysis.report import load_report_spec

        load_report_spec(cfg.project)
    project_root = project_root_for(Path(cfg.project))
    steps = suite.steps
    if cfg.only:
        wanted = [s.strip() for s in cfg.only.split(",") if s.strip()]
        missing = [w for w in wanted if w not in {s.name for s in steps}]
        if missing:
            raise ConfigError(f"only={missing[0]!r} is not a step of {suite.name} at scale {suite.scale}; "
                              f"steps: {', '.join(s.name for s in steps)}")
        steps = _with_upstream(steps, wanted)
    if cfg.dry_run:
        from .suite_paper import render

        print(f"suite {suite.name} ({suite.paper}) at scale {suite.scale}: {suite.description}")
        for i, s in enumerate(steps, 1):
            print(f"[{i}/{len(steps)}] {s.name:<28} {s.entry:<14} key {s.key[:12]}  "
                  + " ".join(f"{k}={v}" for k, v in s.params.items()))
            for line in render(s, suite.scale):
                print(line)
        return {"steps": [s.name for s in steps]}

    tags = {"rtl.project": suite.name, "rtl.scale": suite.scale, "rtl.code_version": suite.code_version}
    params = {"project": str(cfg.project), "scale": cfg.scale, "reuse": cfg.reuse, **({"set": cfg.set} if cfg.set else {})}
    with tracked_run("suite", params, tags, experiment=cfg.experiment, run_name=f"suite {suite.name} ({suite.scale})") as log:
        client = _client()
        experiment_id = mlflow.get_run(log.run_id).info.experiment_id
        print(f"suite {suite.name} — {suite.title} — scale {suite.scale}: {len(steps)} steps (run {log.run_id})",
              flush=True)
        plan, reused, t_start = [], 0, time.time()
        for i, step in enumerate(steps, 1):
            t0 = time.time()
            print(f"[{i}/{len(steps)}] {step.name} ({step.entry}) ...", flush=True)
            run, was_reused = run_step(client, suite, step, experiment_id, project_root, cfg.reuse)
            reused += was_reused
            how = f"reused run {run.info.run_id}" if was_reused else f"ran in {time.time() - t0:.0f} s (run {run.info.run_id})"
            metrics = {k: v for k, v in run.data.metrics.items() if k.endswith("_acc") and k != "train_clean_acc"}
            shown = "  ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items()))
            print(f"[{i}/{len(steps)}] {step.name}: {how}  {shown}", flush=True)
            plan.append({"step": step.name, "entry": step.entry, "key": step.key, "run_id": run.info.run_id,
                         "reused": bool(was_reused), "params": step.params,
                         "model_uri": run.data.tags.get("rtl.model_uri", "")})
        log.log_metrics({"steps_run": len(steps) - reused, "steps_reused": reused,
                         "suite_time_s": time.time() - t_start})
        client.log_dict(log.run_id, plan, "suite_plan.json")
        if cfg.report and not cfg.only:
            print(f"[report] {suite.name} → {cfg.out}/{suite.scale}/", flush=True)
            import mlflow.projects

            from mlflow.exceptions import ExecutionException

            try:
                submitted = mlflow.projects.run(str(project_root), entry_point="report", env_manager="local",
                                                parameters={"project": str(Path(cfg.project).resolve()),
                                                            "scale": suite.scale, "out": str(Path(cfg.out).resolve()),
                                                            "experiment": cfg.experiment},
                                                experiment_id=experiment_id, synchronous=True, run_name="report")
            except ExecutionException:
                raise SuiteError(f"the report of {suite.name} failed (its error is printed above); every step "
                                 f"finished: fix the report and run `rtl report --project {cfg.project} "
                                 f"--scale {suite.scale}`") from None
            client.set_tag(submitted.run_id, "rtl.project", suite.name)
        print(f"suite {suite.name}: {len(steps) - reused} steps run, {reused} reused, "
              f"{time.time() - t_start:.0f} s", flush=True)
        return {"run_id": log.run_id, "plan": plan}


def _with_upstream(steps: list[Step], wanted: list[str]) -> list[Step]:
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


__all__ = ["Suite", "Step", "load_suite", "run_suite", "code_version", "step_key", "params_key", "registered_name"]
