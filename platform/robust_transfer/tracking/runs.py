"""One MLflow run per entry point: params, tags, per-epoch metrics, FAILED on error."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow 3's embedded default; file stores are refused


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


class MLflowLogger:
    """`RunLogger` over one MLflow run (by id, so it also works off the fluent run stack)."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.client = MlflowClient(tracking_uri())

    def log_params(self, params: dict) -> None:
        for k, v in params.items():
            self.client.log_param(self.run_id, k, v)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        ts = int(time.time() * 1000)
        from mlflow.entities import Metric

        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), ts, step or 0) for k, v in metrics.items()])

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)


@contextlib.contextmanager
def tracked_run(strategy: str, params: dict, tags: dict | None = None, *, experiment: str = "robust-transfer",
                run_id: str | None = None, nested: bool = False, run_name: str | None = None):
    """Start (or resume, with `run_id`) a run; mark it FAILED if the body raises, KILLED on Ctrl-C."""
    mlflow.set_tracking_uri(tracking_uri())
    # Inside `mlflow run`, MLFLOW_RUN_ID names the run the project launcher created: use it.
    run_id = run_id or os.environ.get("MLFLOW_RUN_ID") if not nested else run_id
    if run_id is None:
        exp = mlflow.set_experiment(experiment)
        run = mlflow.start_run(experiment_id=exp.experiment_id, nested=nested, run_name=run_name)
    else:
        run = mlflow.start_run(run_id=run_id, nested=nested)
    logger = MLflowLogger(run.info.run_id)
    try:
        existing = MlflowClient(tracking_uri()).get_run(run.info.run_id).data.params
        logger.log_params({k: v for k, v in params.items() if k not in existing})
        logger.set_tags({"rtl.strategy": strategy, **(tags or {})})
        yield logger
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")
