"""Which MLflow runs a report reads: the newest FINISHED run per step at a scale, its children, their metrics."""
from __future__ import annotations

import math

import pandas as pd

from ..errors import ConfigError
DERIVED_METRICS = {"mean": ("clean_acc", "pgd20_acc")}   # mean = (clean_acc + pgd20_acc) / 2

# --- run selection -------------------------------------------------------------------------------------
def _search(filter_string: str, experiment_ids: list[str] | None, max_results: int) -> pd.DataFrame:
    import mlflow

    where = {"experiment_ids": experiment_ids} if experiment_ids else {"search_all_experiments": True}
    return mlflow.search_runs(filter_string=filter_string, order_by=["attributes.start_time DESC"],
                              max_results=max_results, output_format="pandas", **where)


def _record(row: pd.Series) -> dict:
    def section(prefix):
        n = len(prefix)
        return {k[n:]: v for k, v in row.items() if k.startswith(prefix) and not _missing(v)}

    return {"run_id": row["run_id"], "experiment_id": row.get("experiment_id"), "start_time": row.get("start_time"),
            "metrics": section("metrics."), "params": section("params."), "tags": section("tags.")}


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


class RunSelector:
    """Newest FINISHED run per step at one scale (cached), and the FINISHED children of a run."""

    def __init__(self, scale: str, experiment_ids: list[str] | None = None):
        self.scale, self.experiment_ids = scale, experiment_ids
        self._runs: dict[str, dict | None] = {}
        self._children: dict[str, list[dict]] = {}

    def run(self, step: str) -> dict | None:
        if step not in self._runs:
            df = _search(f"tags.`rtl.step` = '{step}' and tags.`rtl.scale` = '{self.scale}' "
                         "and attributes.status = 'FINISHED'", self.experiment_ids, 1)
            self._runs[step] = _record(df.iloc[0]) if len(df) else None
        return self._runs[step]

    def children(self, run: dict) -> list[dict]:
        """Newest first; children live in their parent's experiment."""
        if run["run_id"] not in self._children:
            df = _search(f"tags.`mlflow.parentRunId` = '{run['run_id']}' and attributes.status = 'FINISHED'",
                         [run["experiment_id"]] if run.get("experiment_id") else self.experiment_ids, 10_000)
            self._children[run["run_id"]] = [_record(r) for _, r in df.iterrows()]
        return self._children[run["run_id"]]

    def history(self, run: dict, metric: str) -> list[tuple[int, float]]:
        """(step, value) of every logged value of `metric` in `run`, in step order: a training curve
        (train logs one value per epoch at step = epoch index)."""
        from ..tracking.runs import mlflow_client

        points = mlflow_client().get_metric_history(run["run_id"], metric)
        return sorted((int(m.step), float(m.value)) for m in points)

    def trials(self, run: dict) -> list[dict]:
        """The COMPLETE, FINISHED trial runs of the study a `search` run drove (tag rtl.study), from every
        invocation of that study (a resumed search step's earlier trials are children of the killed run)."""
        study = run["tags"].get("rtl.study")
        if not study:
            return []
        key = f"trials:{study}"
        if key not in self._children:
            df = _search(f"tags.`rtl.study` = '{study}' and tags.`rtl.trial_state` = 'COMPLETE' "
                         "and attributes.status = 'FINISHED'",
                         [run["experiment_id"]] if run.get("experiment_id") else self.experiment_ids, 10_000)
            self._children[key] = [_record(r) for _, r in df.iterrows()]
        return self._children[key]

    def frame(self) -> pd.DataFrame:
        """One row per step looked up so far: run_id (None if not run), start_time, metrics.*."""
        rows = []
        for step, run in self._runs.items():
            row = {"step": step, "run_id": run["run_id"] if run else None,
                   "start_time": run["start_time"] if run else None}
            row.update({f"metrics.{k}": v for k, v in (run["metrics"] if run else {}).items()})
            rows.append(row)
        return pd.DataFrame(rows, columns=None if rows else ["step", "run_id", "start_time"]).set_index("step")


def select_runs(steps, scale: str, experiment_ids: list[str] | None = None) -> pd.DataFrame:
    """The newest FINISHED run of each step at `scale`: a DataFrame indexed by step (run_id None: not run)."""
    sel = RunSelector(scale, experiment_ids)
    for step in steps:
        sel.run(step)
    return sel.frame()


def metric_value(run: dict | None, metric: str) -> float | None:
    """A run's metric; `mean` is (clean_acc + pgd20_acc) / 2 unless the run logged one itself."""
    if run is None:
        return None
    if metric in run["metrics"]:
        return float(run["metrics"][metric])
    if metric in DERIVED_METRICS:
        parts = [run["metrics"].get(m) for m in DERIVED_METRICS[metric]]
        if all(p is not None for p in parts):
            return sum(float(p) for p in parts) / len(parts)
    return None


def experiment_ids_for(name: str | None) -> list[str] | None:
    """None (search all experiments) for no name; ConfigError if the named experiment does not exist."""
    if not name:
        return None
    from ..tracking import mlflow_client

    client = mlflow_client()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ConfigError(f"experiment={name!r} does not exist in the tracking store; "
                          f"existing: {', '.join(names) or 'none'}")
    return [exp.experiment_id]
