"""One trial = one entry point run in-process, as a nested MLflow child run of the study's run.

The strategy reports per-epoch metrics through the `RunLogger` interface; `TrialReporter` is the extra
logger that receives them too and turns them into intermediate objective values (for pruning). Running
in-process keeps caches warm across trials (decoded datasets, frozen-feature caches).
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import SearchError
from ..expr import evaluate_intermediate
from .space import SearchSpace


class TrialPruned(Exception):
    """Raised from a per-epoch report when the pruner says stop; the child run ends KILLED."""

    rtl_run_status = "KILLED"


class TrialReporter:
    """A `RunLogger` that computes the first objective on per-epoch metrics and hands it to `on_epoch`
    (Optuna: trial.report + should_prune; Ray: tune.report). Keeps the final metrics too."""

    def __init__(self, space: SearchSpace, on_epoch: Callable[[float, int, dict], None] | None = None):
        self.space, self.on_epoch = space, on_epoch
        self.final: dict[str, float] = {}
        self.epochs = 0
        self.run_id: str | None = None

    def log_params(self, params):
        pass

    def set_tags(self, tags):
        pass

    def log_artifact(self, path, artifact_path=None):
        pass

    def log_metrics(self, metrics, step=None):
        if step is None:
            self.final.update(metrics)
            return
        self.epochs += 1
        if self.on_epoch is None or self.space.multi_objective:
            return
        obj = self.space.objectives[0]
        value = obj.report(metrics) if obj.report is not None and set(obj.report.names) <= set(metrics) \
            else evaluate_intermediate(obj.expr, metrics)
        if value is not None:
            self.on_epoch(float(value), int(step), dict(metrics))


@dataclass
class TrialOutcome:
    entry_point: str
    metrics: dict[str, float]
    values: list[float]
    violations: list[float]
    run_id: str | None
    model_uri: str | None
    seconds: float
    params: dict = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.violations)


def objective_values(space: SearchSpace, metrics: dict, entry_point: str) -> tuple[list[float], list[float]]:
    try:
        values = [o.expr(metrics) for o in space.objectives]
        violations = [c.violation(metrics) for c in space.constraints]
    except KeyError as e:
        raise SearchError(f"{entry_point} reported no {e.args[0]} (it reports: {', '.join(sorted(metrics))}); "
                          "change the objective/constraints or the entry point's evaluation") from None
    except ZeroDivisionError:
        raise SearchError("an objective divides by zero for this trial's metrics") from None
    return values, violations


@contextlib.contextmanager
def quiet_stdout(enabled: bool = True):
    """Commands print their result tables; during a study, one progress line per trial is enough."""
    if not enabled:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def run_trial(space: SearchSpace, sampled: dict, *, study_name: str, trial_number: int, parent_run_id: str | None,
              experiment_id: str | None, reporter: TrialReporter, on_start: Callable[[str], None] | None = None,
              backend: str = "optuna", log_objectives: bool = True, run_entry=None) -> TrialOutcome:
    """Build the entry point's config from the sampled values and run it as a child run:
    `run_entry(entry_point, config) -> dict` is the command (search is handed it; it knows no command table)."""
    from ..tracking.runs import run_context

    t0 = time.perf_counter()
    ep, cfg = space.build_config(sampled)
    if "progress" not in space.fixed and "progress" not in space.fixed_by_entry_point.get(ep, {}) \
            and hasattr(cfg, "progress"):
        cfg.progress = False
    tags = {"rtl.study": study_name, "rtl.trial_number": str(trial_number), "rtl.search_backend": backend}

    def started(run_id: str) -> None:
        reporter.run_id = run_id
        if on_start is not None:
            on_start(run_id)

    with run_context(parent_run_id=parent_run_id, experiment_id=experiment_id, tags=tags,
                     run_name=f"{study_name}-trial-{trial_number}", extra_logger=reporter, on_start=started):
        result = run_entry(ep, cfg) or {}
    metrics = {k: float(v) for k, v in (reporter.final | dict(result.get("metrics") or {})).items()
               if isinstance(v, (int, float))}
    values, violations = objective_values(space, metrics, ep)
    run_id = result.get("run_id") or reporter.run_id
    if run_id and log_objectives:
        log_objectives_to_run(run_id, space, values, violations)
    return TrialOutcome(ep, metrics, values, violations, run_id, result.get("model_uri"),
                        time.perf_counter() - t0, params=dict(sampled))


def log_objectives_to_run(run_id: str, space: SearchSpace, values, violations, tags: dict | None = None) -> None:
    """The trial's objective values on its own run (`objective.<name>`), next to the raw metrics (one batch)."""
    from mlflow.entities import Metric, RunTag
    from ..tracking import mlflow_client

    ts = int(time.time() * 1000)
    ms = [Metric(f"objective.{o.name}", float(v), ts, 0) for o, v in zip(space.objectives, values or [])]
    ms += [Metric(f"constraint_violation.{i}", float(v), ts, 0) for i, v in enumerate(violations or [])]
    mlflow_client().log_batch(run_id, metrics=ms, tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])


def format_values(names, values) -> str:
    return " ".join(f"{n}={v:.4f}" for n, v in zip(names, values))


def format_params(params: dict) -> str:
    out = []
    for k, v in params.items():
        out.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(out)
