"""One MLflow run per entry point: params, tags, per-epoch metrics, FAILED on error.

A run records the process that runs it (tags `rtl.host`, `rtl.pid`, `rtl.pid_start`): a `kill -9` leaves it
RUNNING with nobody to end it, so every new top-level run first closes, as KILLED, the RUNNING runs of its
experiment whose process ran on this host and is gone (`close_dead_runs`; suites do the same for their steps).
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import mlflow
from mlflow.tracking import MlflowClient

from ..processes import identity, is_gone

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow 3's embedded default; file stores are refused


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("postgres"):
        from ..extras import require_for_url

        require_for_url(uri, "MLFLOW_TRACKING_URI")
    return uri


def mlflow_client(*, fluent: bool = False) -> MlflowClient:
    """The one way to get an MlflowClient: on the configured tracking URI (MLFLOW_TRACKING_URI, else
    sqlite:///mlflow.db). `fluent=True` also points mlflow's fluent API (`mlflow.register_model`, ...) there."""
    uri = tracking_uri()
    if fluent:
        mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def absolute_tracking_uri(uri: str) -> str:
    """Processes that run elsewhere (a Ray worker, a suite step in the project root) must not move a
    relative sqlite store: make its path absolute."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


class MLflowLogger:
    """`RunLogger` over one MLflow run (by id, so it also works off the fluent run stack)."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.client = mlflow_client()

    def log_params(self, params: dict) -> None:
        """Log params; one already on the run keeps its value (MLflow refuses a change). That happens under
        `mlflow run`, which logs every MLproject parameter first, a None default as '': a value resolved later
        (the model's own threat, `norm=''` → `linf`) goes to the tag `rtl.resolved.<key>` instead."""
        # One batch (one database commit) per 100 params, not one per param: a search trial logs ~30.
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params
        resolved = {f"rtl.resolved.{k}": str(v) for k, v in params.items() if k in logged and logged[k] != str(v)}
        if resolved:
            self.set_tags(resolved)
        items = [Param(k, str(v)) for k, v in params.items() if k not in logged]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        ts = int(time.time() * 1000)
        from mlflow.entities import Metric

        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), ts, step or 0) for k, v in metrics.items()])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, tags=items[i:i + 100])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)


class TeeLogger:
    """A `RunLogger` that forwards every call to several loggers (the run's, plus e.g. a search trial's)."""

    def __init__(self, *loggers):
        self.loggers = [lg for lg in loggers if lg is not None]
        self.run_id = next((getattr(lg, "run_id", None) for lg in self.loggers if getattr(lg, "run_id", None)), None)

    def log_params(self, params):
        for lg in self.loggers:
            lg.log_params(params)

    def log_metrics(self, metrics, step=None):
        for lg in self.loggers:
            lg.log_metrics(metrics, step=step)

    def set_tags(self, tags):
        for lg in self.loggers:
            lg.set_tags(tags)

    def log_artifact(self, path, artifact_path=None):
        for lg in self.loggers:
            lg.log_artifact(path, artifact_path)


@dataclass
class RunContext:
    """How `tracked_run` should start the next run: as a child of `parent_run_id`, with an extra logger.

    Set by `run_context(...)` around a command call (a search trial), so any entry point can run
    as a nested child run without knowing it is part of a study.
    """

    parent_run_id: str | None = None
    experiment_id: str | None = None
    tags: dict = field(default_factory=dict)
    run_name: str | None = None
    extra_logger: object | None = None            # a RunLogger that also receives everything
    on_start: Callable[[str], None] | None = None  # called with the child run id as soon as it exists


_RUN_CONTEXT: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("rtl_run_context", default=None)


@contextlib.contextmanager
def run_context(**kwargs):
    """Within this block, the next `tracked_run` starts a child run as described by RunContext(**kwargs)."""
    token = _RUN_CONTEXT.set(RunContext(**kwargs))
    try:
        yield
    finally:
        _RUN_CONTEXT.reset(token)


def _run_status(exc: BaseException) -> str:
    """FAILED, unless the exception says otherwise (a pruned search trial or a clean exit ends KILLED)."""
    if isinstance(exc, SystemExit) and exc.code in (0, None):
        return "KILLED"  # told to stop, e.g. Ray Tune's `report` exits 0 when ASHA stops a trial
    return getattr(exc, "rtl_run_status", "FAILED")


@contextlib.contextmanager
def launcher_run_hidden():
    """Under `mlflow run`, MLFLOW_RUN_ID names the launcher's run (our parent); MLflow's start_run
    would resume it instead of creating a child run. Hide it for the block."""
    saved = os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MLFLOW_RUN_ID"] = saved


def _launcher_tags(run_id: str) -> dict:
    """Tags a `suite` asks its step's run to carry (RTL_LAUNCHER_TAGS), on the launcher's run only."""
    raw = os.environ.get("RTL_LAUNCHER_TAGS")
    if not raw or run_id != os.environ.get("MLFLOW_RUN_ID"):
        return {}
    import json

    return {str(k): str(v) for k, v in json.loads(raw).items()}


def process_tags() -> dict[str, str]:
    """This process, as the tags `close_dead_runs` reads."""
    host, pid, start = identity()
    return {"rtl.host": host, "rtl.pid": str(pid), "rtl.pid_start": start}


def close_dead_runs(client, experiment_ids: list[str], where: str = "") -> int:
    """Mark KILLED the RUNNING runs (in `experiment_ids`, matching the search filter `where`) whose process ran on
    this host and is gone: `rtl.pid` (with `rtl.pid_start`), else `rtl.suite_pid` (a step's suite, on runs tagged
    before steps recorded their own process). A run that records no process is never touched. How many closed."""
    import socket

    host = socket.gethostname().replace("'", "")
    query = f"attributes.status = 'RUNNING' and tags.`rtl.host` = '{host}'" + (f" and {where}" if where else "")
    closed = 0
    for run in client.search_runs(experiment_ids, query, max_results=1000):
        tags = run.data.tags
        own = tags.get("rtl.pid", "")
        pid = own or tags.get("rtl.suite_pid", "")
        if pid.isdigit() and is_gone(tags.get("rtl.host", ""), int(pid), tags.get("rtl.pid_start", "") if own else ""):
            client.set_terminated(run.info.run_id, "KILLED")
            closed += 1
    return closed


def check_experiment_usable(name: str) -> None:
    """ConfigError (exit 2) for a deleted experiment, before a command changes anything (a search checks this
    before it creates its study)."""
    from ..errors import ConfigError

    exp = MlflowClient(tracking_uri()).get_experiment_by_name(name)
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise ConfigError(f"experiment={name!r} is deleted; restore it (mlflow experiments restore "
                          f"--experiment-id {exp.experiment_id}) or give another name")


def check_resume_run(run_id, where: str, expect_tags: dict[str, str]) -> str:
    """The run `--resume` may continue: the one that wrote the saved state (issue 17 §1). `run_id` (from the
    state) must name an existing run that carries `expect_tags` (the strategy, the checkpoint's fingerprint and
    directory), is not deleted and is not FINISHED (a finished run is never reopened). ModelError (exit 4) otherwise, naming
    `where` (the checkpoint); returns the run id."""
    from mlflow.exceptions import MlflowException

    from ..errors import ModelError

    if not isinstance(run_id, str) or not run_id:
        raise ModelError(f"{where} names no run (run_id={run_id!r}); drop --resume to train anew")
    try:
        run = mlflow_client().get_run(run_id)
    except MlflowException:
        raise ModelError(f"{where} names run_id={run_id!r}, which does not exist in the tracking store "
                         f"{tracking_uri()!r}; drop --resume to train anew") from None
    if run.info.lifecycle_stage == "deleted":   # (its status still reads as it ended: say what matters)
        raise ModelError(f"{where} names run {run_id}, which is deleted; restore it (mlflow runs restore "
                         f"--run-id {run_id}) to resume it, or drop --resume to train anew")
    if any(run.data.tags.get(k) != v for k, v in expect_tags.items()):
        raise ModelError(f"{where} names run {run_id}, which did not write it (its tags "
                         f"{'/'.join(k for k in expect_tags if k != 'rtl.strategy')} do not match); "
                         "drop --resume to train anew")
    if run.info.status == "FINISHED":
        raise ModelError(f"{where}: run {run_id} is FINISHED and a finished run is never reopened; "
                         "drop --resume to train anew (or give another checkpoint_dir)")
    return run_id


def _set_experiment(name: str):
    """mlflow.set_experiment, a deleted or unusable experiment refused in one line (ConfigError, exit 2)."""
    from mlflow.exceptions import MlflowException

    from ..errors import ConfigError

    check_experiment_usable(name)
    try:
        return mlflow.set_experiment(name)
    except MlflowException as e:
        first = (str(e.message if hasattr(e, "message") else e).strip().splitlines() or [""])[0]
        shown = name if len(str(name)) <= 40 else str(name)[:40] + "..."
        raise ConfigError(f"experiment={shown!r} cannot be used: {first[:200]}") from None


def _close_dead_runs_quietly(experiment_id: str) -> None:
    """Housekeeping before a new run: never the reason a command fails."""
    from mlflow.exceptions import MlflowException

    try:
        close_dead_runs(mlflow_client(), [experiment_id])
    except MlflowException:
        pass


@contextlib.contextmanager
def tracked_run(strategy: str, params: dict, tags: dict | None = None, *, experiment: str = "robust-transfer",
                run_id: str | None = None, nested: bool = False, run_name: str | None = None):
    """Start (or resume, with `run_id`) a run; mark it FAILED if the body raises, KILLED on Ctrl-C."""
    mlflow.set_tracking_uri(tracking_uri())
    ctx = _RUN_CONTEXT.get()
    if ctx is not None and run_id is None:
        # A search trial: a child run of the study's run, in the study's experiment (explicit ids, so this
        # also works in worker threads and Ray worker processes that have no active parent run).
        _RUN_CONTEXT.set(None)  # only the outermost run of the command is the trial's run
        active = mlflow.active_run()
        # (MLFLOW_RUN_ID, the `mlflow run` launcher's run, is hidden by the search while trials run:
        # start_run would otherwise resume it instead of creating this child.)
        run = mlflow.start_run(experiment_id=ctx.experiment_id, parent_run_id=ctx.parent_run_id,
                               nested=active is not None, run_name=ctx.run_name or run_name,
                               tags={k: str(v) for k, v in ctx.tags.items()})
        if ctx.on_start is not None:
            ctx.on_start(run.info.run_id)
    else:
        # Inside `mlflow run`, MLFLOW_RUN_ID names the run the project launcher created: use it.
        run_id = run_id or os.environ.get("MLFLOW_RUN_ID") if not nested else run_id
        parent = mlflow.active_run() if nested else None
        if run_id is None and parent is not None:
            # A child lives in its parent's experiment; and MLflow's start_run would read MLFLOW_RUN_ID
            # (the `mlflow run` launcher's run, our parent) and resume it instead of creating a child.
            with launcher_run_hidden():
                run = mlflow.start_run(experiment_id=parent.info.experiment_id, nested=True, run_name=run_name)
        elif run_id is None:
            exp = _set_experiment(experiment)
            _close_dead_runs_quietly(exp.experiment_id)
            run = mlflow.start_run(experiment_id=exp.experiment_id, nested=nested, run_name=run_name)
        else:
            run = mlflow.start_run(run_id=run_id, nested=nested)
            if run_name and run_id == os.environ.get("MLFLOW_RUN_ID") and not os.environ.get("RTL_LAUNCHER_TAGS"):
                mlflow_client().update_run(run_id, name=run_name)  # `mlflow run`'s random name
    logger = MLflowLogger(run.info.run_id)
    if ctx is not None and ctx.extra_logger is not None and run_id is None:
        logger = TeeLogger(logger, ctx.extra_logger)
    try:
        from .source import source_tags

        data = mlflow_client().get_run(run.info.run_id).data
        logger.log_params({k: v for k, v in params.items() if k not in data.params})
        logger.set_tags({"rtl.strategy": strategy, **(tags or {}), **_launcher_tags(run.info.run_id), **process_tags(),
                         **source_tags(data.tags)})
        yield logger
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException as e:
        mlflow.end_run(_run_status(e))
        raise
    else:
        mlflow.end_run("FINISHED")
