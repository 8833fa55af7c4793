"""A suite as a DAG on Ray (`rtl suite --workers N`, N > 1): steps whose inputs are ready run at the same time.

A step depends on the steps its parameters read (`{model:<step>}`) and on a select step's candidates (both are
`Step.upstream`; every seed of a seeded step counts). The suite's process schedules: a step whose upstream all
FINISHED is reused (its key, as with `--workers 1`), chosen (a select step: quick, here) or sent to a Ray task
with its `resources`, which runs the entry point through `mlflow.projects.run` exactly as `--workers 1` does
(suites/run.py `launch_step`), as a child run of the suite's run (tag mlflow.parentRunId, set by the step's
own process). A failed step fails only the steps that need it; the others go on, and the suite then ends with
one line naming the failures. `--workers 1` never comes here (commands/suite.py runs the plan in order).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ..errors import ConfigError, SuiteError, UserError
from .plan import Step, Suite
from .run import find_reusable, finish_step, launch_step, run_step, step_failure, step_tags

# What a step's process needs from the suite's environment (absolute paths: a Ray worker runs elsewhere).
FORWARD_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "RTL_CACHE_DIR", "RTL_DATA_DIR", "RTL_STUDY_DIR",
               "RTL_GIT_COMMIT", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "OMP_NUM_THREADS", "PATH")
CONCURRENT_STORES = "an MLflow tracking server (http://host:5000, e.g. `mlflow server --backend-store-uri " \
                    "postgresql://...`) or a database URI (postgresql://, mysql://, mssql://)"


def check_concurrent_store(uri: str, workers: int) -> None:
    """Several steps write the tracking store at once with workers > 1: a plain sqlite file (or a local
    folder) is refused in one line; a server or a database that takes concurrent writers is allowed."""
    if workers <= 1:
        return
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else "file"
    if scheme in ("sqlite", "file"):
        raise ConfigError(f"MLFLOW_TRACKING_URI={uri!r} is a local store that several steps cannot write at once "
                          f"(workers={workers}); with workers > 1 use {CONCURRENT_STORES}, or workers=1")


# ------------------------------------------------------------------------------------------- the graph
def dependencies(steps: list[Step]) -> list[set[int]]:
    """For each step (by position), the positions of the steps it reads: every run of each upstream name."""
    where: dict[str, list[int]] = {}
    for i, s in enumerate(steps):
        where.setdefault(s.name, []).append(i)
    return [{j for name in s.upstream for j in where.get(name, []) if j != i} for i, s in enumerate(steps)]


def waves(steps: list[Step]) -> list[list[str]]:
    """The steps that can run together: wave k holds the steps whose longest chain of upstream steps is k long
    (labels, in plan order). With enough workers every step of a wave runs at once."""
    deps = dependencies(steps)
    depth: list[int] = []
    for i in range(len(steps)):         # the plan lists upstream steps first (planning refuses forward references)
        depth.append(1 + max((depth[j] for j in deps[i]), default=-1))
    out: list[list[str]] = [[] for _ in range(max(depth, default=-1) + 1)]
    for i, d in enumerate(depth):
        out[d].append(steps[i].label)
    return out


# ------------------------------------------------------------------------------------------- the Ray side
def _remote_step(payload: dict) -> str | None:
    """A Ray task: one step's entry point, as `--workers 1` runs it; its run id, None if it failed."""
    os.chdir(payload["cwd"])
    for k in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        os.environ.pop(k, None)     # set_experiment in a worker would otherwise pick the experiment
    os.environ.update(payload["env"])
    import mlflow

    mlflow.set_tracking_uri(payload["env"]["MLFLOW_TRACKING_URI"])
    return launch_step(payload["step"], payload["experiment_id"], Path(payload["project_root"]), payload["tags"])


def worker_env() -> dict[str, str]:
    """The suite's environment as its steps need it, wherever they run: absolute store and cache paths, and this
    checkout's package first on PYTHONPATH (an editable install may point at another checkout)."""
    from ..tracking.runs import absolute_tracking_uri, tracking_uri

    env = {k: os.environ[k] for k in FORWARD_ENV if os.environ.get(k)}
    env["MLFLOW_TRACKING_URI"] = absolute_tracking_uri(tracking_uri())
    for k in ("RTL_CACHE_DIR", "RTL_DATA_DIR", "RTL_STUDY_DIR"):
        if env.get(k):
            env[k] = str(Path(env[k]).resolve())
    package_root = str(Path(__file__).resolve().parents[2])
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and str(Path(p).resolve()) != package_root]
    env["PYTHONPATH"] = os.pathsep.join([package_root, *[str(Path(p).resolve()) for p in rest]])
    return env


def _check_fits(ray, steps: list[Step], address: str, workers: int) -> None:
    """A step that asks for more than the whole cluster has would wait forever: refuse it before anything runs."""
    have = ray.cluster_resources()
    cluster = f"the Ray cluster at {address!r}" if address else f"the local Ray cluster (workers={workers} CPUs)"
    for s in steps:
        if s.select is not None:
            continue
        for name, key in (("cpu", "CPU"), ("gpu", "GPU")):
            if s.resources.get(name, 0) > have.get(key, 0):
                raise SuiteError(f"step {s.name!r} asks for resources {name}={s.resources[name]:g} but {cluster} has "
                                 f"{have.get(key, 0):g}; lower the step's `resources:` or use a larger cluster")


# ------------------------------------------------------------------------------------------- scheduling
def run_dag(client, suite: Suite, steps: list[Step], experiment_id: str, project_root: Path, reuse: str,
            parent_run_id: str, *, workers: int, address: str, on_done) -> None:
    """Run `steps` as a DAG on Ray, at most `workers` entry points at once. `on_done(i, step, run, reused,
    seconds)` for each step that FINISHED (reused or run), as it does. SuiteError naming every failed step
    (and what it kept from running) once every step that could run has."""
    from ..extras import require
    from ..ray_session import ray_cluster

    require("ray")
    deps = dependencies(steps)
    n = len(steps)
    env = worker_env()
    state: dict[int, str] = {}           # position → ok | failed | skipped
    runs: dict[int, object] = {}         # position → its FINISHED run
    failures: list[str] = []
    pending = list(range(n))

    def fail(i: int, step: Step, error) -> None:
        state[i] = "failed"
        failures.append(step.label)
        print(f"[{i + 1}/{n}] {step.label}: FAILED: {error}", file=sys.stderr, flush=True)

    with ray_cluster(address, workers, env, error=SuiteError, log_to_driver=True) as ray:
        _check_fits(ray, steps, address, workers)
        remote = ray.remote(_remote_step)
        running: dict = {}               # ObjectRef → (position, start time)
        while pending or running:
            progressed = True
            while progressed:            # reused and select steps finish here at once: look again
                progressed = False
                for i in list(pending):
                    step = steps[i]
                    bad = [steps[j].label for j in sorted(deps[i]) if state.get(j) in ("failed", "skipped")]
                    if bad:
                        pending.remove(i)
                        state[i] = "skipped"
                        progressed = True
                        print(f"[{i + 1}/{n}] {step.label}: not run: it needs {', '.join(bad)}", flush=True)
                        continue
                    if any(state.get(j) != "ok" for j in deps[i]):
                        continue
                    if step.select is None and find_reusable(client, suite, step, reuse) is None:
                        if len(running) >= workers:
                            continue
                        pending.remove(i)
                        tags = {**step_tags(suite, step), "mlflow.parentRunId": parent_run_id}
                        payload = {"step": step, "experiment_id": experiment_id, "project_root": str(project_root),
                                   "tags": tags, "cwd": str(Path.cwd()), "env": _step_env(env, step)}
                        # max_retries=0: a step whose worker died failed (Ray would otherwise run it again, silently)
                        ref = remote.options(num_cpus=step.resources["cpu"], num_gpus=step.resources["gpu"],
                                             max_retries=0, name=f"step {step.label}").remote(payload)
                        running[ref] = (i, time.time())
                        print(f"[{i + 1}/{n}] {step.label} ({step.entry}) started ({_resources_text(step)}; "
                              f"{len(running)} running) ...", flush=True)
                        continue
                    pending.remove(i)
                    progressed = True
                    t0 = time.time()
                    # reused, or a select step: in this process, as --workers 1 does it
                    finished = {s.name: [runs[j] for j in range(n) if steps[j].name == s.name and j in runs]
                                for s in steps}
                    try:
                        run, was_reused = run_step(client, suite, step, experiment_id, project_root, reuse,
                                                   finished={k: v for k, v in finished.items() if v},
                                                   parent_run_id=parent_run_id)
                    except UserError as e:
                        fail(i, step, e)
                        continue
                    state[i], runs[i] = "ok", run
                    on_done(i, step, run, was_reused, time.time() - t0)
            if not running:
                if pending:   # nothing runs and nothing can start: only possible if a dependency is outside the plan
                    raise SuiteError(f"steps {', '.join(steps[i].label for i in pending)} wait for steps that are "
                                     "not in the plan")
                break
            ready, _ = ray.wait(list(running), num_returns=1)
            i, t0 = running.pop(ready[0])
            step = steps[i]
            try:
                run_id = ray.get(ready[0])
                error = None if run_id else step_failure(client, step, experiment_id)
            except Exception as e:     # the Ray task itself died (worker lost, ...)
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                run_id, error = None, SuiteError(f"step {step.name!r} ({step.entry}): its Ray task failed: {first[:300]}")
            if error is not None:
                fail(i, step, error)
                continue
            try:
                run = finish_step(client, suite, step, run_id)
            except UserError as e:
                fail(i, step, e)
                continue
            state[i], runs[i] = "ok", run
            on_done(i, step, run, False, time.time() - t0)
    if failures:
        skipped = [steps[i].label for i in range(n) if state.get(i) == "skipped"]
        raise SuiteError(f"{len(failures)} step(s) failed: {', '.join(failures)}"
                         + (f"; not run because of them: {', '.join(skipped)}" if skipped else "")
                         + f"; {sum(v == 'ok' for v in state.values())} finished (their errors are printed above); "
                         "fix them and rerun the suite (finished steps are reused)")


def _step_env(env: dict[str, str], step: Step) -> dict[str, str]:
    """One step's environment: torch's threads follow the CPUs the step was given, unless the user set them."""
    if "OMP_NUM_THREADS" in env:
        return env
    return {**env, "OMP_NUM_THREADS": str(max(1, int(step.resources["cpu"])))}


def _resources_text(step: Step) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in step.resources.items() if v)
