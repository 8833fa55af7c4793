"""Running a suite plan (suites/plan.py): each step reused or run through `mlflow.projects.run`, synchronously,
as a child run; the suite's own run and its report step are in commands/suite.py."""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from ..device import machine_description
from ..errors import RegistryError, SuiteError
from ..tracking.runs import close_dead_runs
from .plan import Step, Suite, step_model_name


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
    return close_dead_runs(client, all_experiments(client), f"tags.`rtl.step_key` = '{key}'")


def _alias_model(client, suite: Suite, step: Step, run) -> str:
    """Point `s-<key>` of `<scale>-<step>` at the version the step's run registered."""
    registered = run.data.tags.get("rtl.registered_model", "")
    name, _, version = registered.rpartition("/")
    if not name or not version:
        raise RegistryError(f"step {step.name!r} (run {run.info.run_id}) registered no model; "
                            "its entry point must take register_as")
    client.set_registered_model_alias(name, step.alias, version)
    uri = f"models:/{name}@{step.alias}"
    client.set_tag(run.info.run_id, "rtl.model_uri", uri)
    return uri


def find_reusable(client, suite: Suite, step: Step, reuse: str):
    """The FINISHED run that stands for `step` under `reuse` (exact, params, never), or None; a RUNNING run of
    the step whose process is gone is closed KILLED first."""
    close_orphans(client, step.key)
    done = None if reuse == "never" else find_finished(client, step.key)
    if done is None and reuse == "params":
        # Same entry point and parameters under any code version (what changed was elsewhere).
        runs = client.search_runs(all_experiments(client), f"tags.`rtl.step` = '{step.name}' and tags.`rtl.scale` = "
                                  f"'{suite.scale}' and tags.`rtl.params_key` = '{step.params_key}' and "
                                  "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
                                  max_results=1)
        done = runs[0] if runs else None
    return done


def run_step(client, suite: Suite, step: Step, experiment_id: str, project_root: Path, reuse: str,
             finished: dict | None = None, parent_run_id: str | None = None):
    """Reuse or run one step; returns (run, reused). `finished`: step name → the runs this suite used for it
    (what a select step chooses among); `parent_run_id`: the suite's run (a select step's run is its child)."""
    done = find_reusable(client, suite, step, reuse)
    if done is not None:
        if step.registers:
            _alias_model(client, suite, step, done)
        return done, True
    if step.select is not None:
        run = run_select(client, suite, step, experiment_id, finished or {}, parent_run_id)
        _alias_model(client, suite, step, run)
        return client.get_run(run.info.run_id), False
    run_id = launch_step(step, experiment_id, project_root, step_tags(suite, step))
    if run_id is None:
        raise step_failure(client, step, experiment_id)
    return finish_step(client, suite, step, run_id), False


def launch_step(step: Step, experiment_id: str, project_root: Path, tags: dict[str, str]) -> str | None:
    """Run one step's entry point through `mlflow.projects.run`, synchronously: its run id, None if it failed.
    In the suite's process (`--workers 1`) or in a Ray worker (suites/dag.py)."""
    import mlflow.projects
    from mlflow.exceptions import ExecutionException

    # The step's own process tags its run as it starts (tracking.runs reads RTL_LAUNCHER_TAGS), so even a
    # step killed mid-way can be recognised, and closed, by the rerun. Synchronous: no extra `mlflow` CLI.
    os.environ["RTL_LAUNCHER_TAGS"] = json.dumps(tags)
    try:
        submitted = mlflow.projects.run(str(project_root), entry_point=step.entry, parameters=step.params,
                                        env_manager="local", experiment_id=experiment_id, synchronous=True,
                                        run_name=step.label)
        return submitted.run_id
    except ExecutionException:
        return None
    finally:
        os.environ.pop("RTL_LAUNCHER_TAGS", None)


def step_failure(client, step: Step, experiment_id: str) -> SuiteError:
    """The one line that says a step failed, and where its run is."""
    failed = client.search_runs([experiment_id], f"tags.`rtl.step_key` = '{step.key}'",
                                order_by=["attributes.start_time DESC"], max_results=1)
    where = f"run {failed[0].info.run_id} is {failed[0].info.status}" if failed else "no run was recorded"
    return SuiteError(f"step {step.name!r} ({step.entry}) failed: {where}; its error is printed above; "
                      "fix it and rerun the suite (finished steps are reused)")


def finish_step(client, suite: Suite, step: Step, run_id: str):
    """A step that ran: point its alias at the model it registered; its run, as stored now."""
    if step.registers:
        _alias_model(client, suite, step, client.get_run(run_id))
    return client.get_run(run_id)


# ------------------------------------------------------------------------------------------- select steps
def candidate_runs(client, suite: Suite, name: str, finished: dict) -> list:
    """The FINISHED runs that stand for candidate step `name`: the ones this suite used for it (one per seed of a
    seeded step, the first seed first), else the newest FINISHED run of each of its keys. A select step scores a
    candidate by the mean of `by` over these runs and exposes the first one's model (as `{model:<step>}` does)."""
    if name in finished:
        return list(finished[name])
    runs = [find_finished(client, s.key) for s in suite.steps if s.name == name]
    return [r for r in runs if r is not None]


def select_scores(client, suite: Suite, step: Step, finished: dict) -> tuple[dict[str, float | None], dict[str, list]]:
    """{candidate: mean of `by` over its runs, or None if a run lacks a metric}, {candidate: its runs}."""
    from ..expr import Expr

    by = Expr.parse(step.select["by"])
    scores, runs = {}, {}
    for name in step.select["among"]:
        runs[name] = candidate_runs(client, suite, name, finished)
        try:
            values = [by({k: float(v) for k, v in r.data.metrics.items()}) for r in runs[name]]
        except (KeyError, ZeroDivisionError):
            values = []
        scores[name] = sum(values) / len(values) if values else None
    return scores, runs


def run_select(client, suite: Suite, step: Step, experiment_id: str, finished: dict, parent_run_id: str | None):
    """Choose the candidate with the largest validation score (ties: the first listed), record the choice as
    a run (tags rtl.step/rtl.step_key like any step, the chosen run's metrics copied, `select_score`), and copy
    the chosen model version to `<scale>-<step>` (registry: copy_model_version), so `{model:<step>}` reads it."""
    scores, runs = select_scores(client, suite, step, finished)
    known = {k: v for k, v in scores.items() if v is not None}
    if not known:
        missing = [k for k in scores if not runs[k]]
        why = (f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no FINISHED run" if missing else
               f"no candidate's run logged every metric of {step.select['by']!r}")
        raise SuiteError(f"select step {step.name!r}: nothing to choose: {why}")
    chosen = max(known, key=known.get)     # max keeps the first of equal scores: the order of `among`
    source = runs[chosen][0]
    registered = source.data.tags.get("rtl.registered_model", "")
    src_name, _, src_version = registered.rpartition("/")
    if not src_name or not src_version:
        raise SuiteError(f"select step {step.name!r}: the chosen step {chosen!r} (run {source.info.run_id}) "
                         "registered no model")
    tags = {**step_tags(suite, step), "rtl.selected_step": chosen,
            "rtl.selected_run_id": source.info.run_id, "rtl.selected_model": registered,
            "rtl.select_scores": json.dumps(scores, sort_keys=True)}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, tags=tags, run_name=step.name)
    rid = run.info.run_id
    try:
        from mlflow.entities import Metric, Param

        own = {"among": step.params["among"], "by": step.params["by"], "chosen": chosen}
        # the chosen run's params (lambda_d, ...) and final metrics: a report row or claim reads the select step as it
        params = {**{k: v for k, v in source.data.params.items() if k not in own}, **own}
        now = int(time.time() * 1000)
        metrics = {**source.data.metrics, "select_score": known[chosen]}
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            client.log_batch(rid, params=items[i:i + 100])
        client.log_batch(rid, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        mv = client.copy_model_version(f"models:/{src_name}/{src_version}", step_model_name(suite.scale, step.name))
        client.set_model_version_tag(mv.name, mv.version, "rtl.selected_from", registered)
        client.set_tag(rid, "rtl.registered_model", f"{mv.name}/{mv.version}")
    except Exception:
        client.set_terminated(rid, "FAILED")
        raise
    client.set_terminated(rid, "FINISHED")
    return client.get_run(rid)


def step_tags(suite: Suite, step: Step) -> dict[str, str]:
    """Every seed of a seeded step carries rtl.step (its name) and, to tell the seeds apart, rtl.seed, rtl.seeds
    (all of the step's seeds) and rtl.seeds_key (the same for every seed of one step): what `report` averages;
    rtl.machine says what the step's wall time was measured on (a report's timing)."""
    seeded = {} if step.seed is None else {"rtl.seed": str(step.seed), "rtl.seeds": ",".join(map(str, step.seeds)),
                                           "rtl.seeds_key": step.seeds_key}
    return {"rtl.project": suite.name, "rtl.step": step.name, "rtl.scale": suite.scale, "rtl.step_key": step.key,
            "rtl.params_key": step.params_key, "rtl.code_version": suite.code_version,
            "rtl.host": socket.gethostname(), "rtl.suite_pid": str(os.getpid()),
            "rtl.machine": machine_description(), **seeded}


def suite_tags(suite: Suite) -> dict[str, str]:
    """The suite's own run: what a report finds it by (project, scale) and the machine it ran on."""
    return {"rtl.project": suite.name, "rtl.scale": suite.scale, "rtl.code_version": suite.code_version,
            "rtl.machine": machine_description()}


def project_root_for(path: Path) -> Path:
    """The directory holding MLproject: above the suite file, else the working directory."""
    for d in [path.resolve().parent, *path.resolve().parents, Path.cwd()]:
        if (d / "MLproject").is_file():
            return d
    raise SuiteError(f"no MLproject found above {str(path)!r} or in the working directory; run the suite from "
                     "the robust-transfer project")


def run_report_step(client, suite: Suite, cfg, experiment_id: str, project_root: Path) -> None:
    """The suite's last step: `report` as a child run, tagged with the suite (SuiteError if it fails); `cfg` is
    the suite's `SuiteConfig` (its project, out and experiment)."""
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
