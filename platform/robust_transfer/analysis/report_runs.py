"""Which MLflow runs a report reads: the newest FINISHED run per step at a scale, its children, their metrics.

A seeded step (`seeds:` in the suite, tags rtl.seed / rtl.seeds / rtl.seeds_key) is read as one record
that averages its seeds: the newest FINISHED run of the step names the seeds (rtl.seeds) and the step's
seed group (rtl.seeds_key: its parameters without the seed); for each of those seeds the newest FINISHED
run of that group is taken, and the record's `metrics` are the means over them (`seed_runs` holds the
runs). `metric_stats` gives mean, standard deviation (n-1) and n.
"""
from __future__ import annotations

import math

import pandas as pd

from ..errors import ConfigError
DERIVED_METRICS = {"mean": ("clean_acc", "pgd20_acc")}   # mean = (clean_acc + pgd20_acc) / 2


def is_accuracy(metric: str) -> bool:
    """An accuracy (a fraction: shown as a percentage; the claim engine gives it a binomial SE from its example
    count): `<attack>_acc`, its ℓ2 evaluation's `<attack>_acc_l2` (docs/evaluation.md) and the derived `mean`."""
    return metric.endswith(("_acc", "_acc_l2")) or metric in DERIVED_METRICS


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
            "end_time": row.get("end_time"), "status": row.get("status"),
            "metrics": section("metrics."), "params": section("params."), "tags": section("tags.")}


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def combine_seeds(records: list[dict]) -> dict:
    """One record for the runs of several seeds (newest first): the first run's ids, params and tags,
    `metrics` = the mean of each metric over the runs that logged it, `seed_runs` = the runs by seed."""
    records = sorted(records, key=lambda r: _seed_of(r))
    names = list(dict.fromkeys(k for r in records for k in r["metrics"]))
    metrics = {}
    for k in names:
        values = [float(r["metrics"][k]) for r in records if k in r["metrics"]]
        metrics[k] = sum(values) / len(values)
    newest = max(records, key=lambda r: r.get("start_time") or 0)
    return {**newest, "metrics": metrics, "seed_runs": records, "run_ids": [r["run_id"] for r in records]}


def _seed_of(record: dict) -> int:
    try:
        return int(record["tags"].get("rtl.seed", record["params"].get("seed", 0)))
    except (TypeError, ValueError):
        return 0


class RunSelector:
    """Newest FINISHED run per step at one scale (cached), and the FINISHED children of a run."""

    def __init__(self, scale: str, experiment_ids: list[str] | None = None):
        self.scale, self.experiment_ids = scale, experiment_ids
        self._runs: dict[str, dict | None] = {}
        self._children: dict[str, list[dict]] = {}

    def run(self, step: str) -> dict | None:
        """The newest FINISHED run of `step`; for a seeded step, its seeds combined (combine_seeds)."""
        if step not in self._runs:
            df = _search(f"tags.`rtl.step` = '{step}' and tags.`rtl.scale` = '{self.scale}' "
                         "and attributes.status = 'FINISHED'", self.experiment_ids, 1)
            run = _record(df.iloc[0]) if len(df) else None
            if run is not None and run["tags"].get("rtl.seeds_key"):
                run = self._seeded(step, run)
            self._runs[step] = run
        return self._runs[step]

    def _seeded(self, step: str, newest: dict) -> dict:
        wanted = [s.strip() for s in str(newest["tags"].get("rtl.seeds", "")).split(",") if s.strip()]
        df = _search(f"tags.`rtl.step` = '{step}' and tags.`rtl.scale` = '{self.scale}' and tags.`rtl.seeds_key` = "
                     f"'{newest['tags']['rtl.seeds_key']}' and attributes.status = 'FINISHED'", self.experiment_ids,
                     10_000)
        by_seed: dict[str, dict] = {}
        for _, row in df.iterrows():   # newest first: the first run of each seed wins
            record = _record(row)
            seed = record["tags"].get("rtl.seed")
            if seed not in by_seed and (not wanted or seed in wanted):
                by_seed[seed] = record
        return combine_seeds(list(by_seed.values()) or [newest])

    def step_runs(self) -> list[tuple[str, dict]]:
        """(step, run) for every step run read so far, a seeded step's seeds one by one, each run once (a step read
        under two names counts once): the runs whose time a report's timing adds up (children and trials run
        inside their step's run, so they are not counted again)."""
        out, seen = [], set()
        for step, run in self._runs.items():
            for r in (run.get("seed_runs") or [run]) if run else []:
                if r["run_id"] not in seen:
                    seen.add(r["run_id"])
                    out.append((step, r))
        return out

    def _suite_filter(self, suite: str) -> str:
        return f"tags.`rtl.strategy` = 'suite' and tags.`rtl.project` = '{suite}' and tags.`rtl.scale` = '{self.scale}'"

    def suite_run(self, suite: str) -> dict | None:
        """The newest run of suite `suite` at this scale, whatever its status (a suite whose last step is
        this report is still RUNNING)."""
        df = _search(self._suite_filter(suite), self.experiment_ids, 1)
        return _record(df.iloc[0]) if len(df) else None

    def suite_runs(self, suite: str) -> list[dict]:
        """Every run of suite `suite` at this scale, oldest first, whatever its status: each attempt (a stopped
        one KILLED, a failed one FAILED, this report's own suite RUNNING) is part of a page's history."""
        df = _search(self._suite_filter(suite), self.experiment_ids, 10_000)
        return [_record(r) for _, r in df.iterrows()][::-1]

    def step_children(self, run: dict) -> list[dict]:
        """The child runs of a suite run that are steps (tag rtl.step), whatever their status: the steps it ran
        (a reused step's run belongs to the suite run that made it; the report step has no rtl.step)."""
        df = _search(f"tags.`mlflow.parentRunId` = '{run['run_id']}'",
                     [run["experiment_id"]] if run.get("experiment_id") else self.experiment_ids, 10_000)
        return [r for r in (_record(row) for _, row in df.iterrows()) if r["tags"].get("rtl.step")]

    def children(self, run: dict) -> list[dict]:
        """Newest first; children live in their parent's experiment. For a seeded run: one combined record
        (combine_seeds) per child setting, e.g. per k of retrain_blocks, over the seeds that have it."""
        if run.get("seed_runs"):
            return self._seeded_children(run)
        if run["run_id"] not in self._children:
            df = _search(f"tags.`mlflow.parentRunId` = '{run['run_id']}' and attributes.status = 'FINISHED'",
                         [run["experiment_id"]] if run.get("experiment_id") else self.experiment_ids, 10_000)
            self._children[run["run_id"]] = [_record(r) for _, r in df.iterrows()]
        return self._children[run["run_id"]]

    def _seeded_children(self, run: dict) -> list[dict]:
        per_seed = [self.children(r) for r in run["seed_runs"]]
        # the params that tell one run's children apart (k of retrain_blocks), the seed aside
        varying = set()
        for kids in per_seed:
            for p in {p for c in kids for p in c["params"]} - {"seed"}:
                if len({c["params"].get(p) for c in kids}) > 1:
                    varying.add(p)
        groups: dict[tuple, list[dict]] = {}
        for kids in per_seed:
            seen = set()
            for c in kids:   # newest first: a seed's newest child of a setting is the one read
                key = tuple(str(c["params"].get(p)) for p in sorted(varying))
                if key not in seen:
                    seen.add(key)
                    groups.setdefault(key, []).append(c)
        return [combine_seeds(g) for g in groups.values()]

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


def run_ids(run: dict | None) -> str | None:
    """The run id of a record, or the seeds' run ids joined by commas."""
    if run is None:
        return None
    return ",".join(run.get("run_ids") or [run["run_id"]])


def metric_stats(run: dict | None, metric: str) -> dict | None:
    """{mean, std, n} of a metric: over the seeds of a seeded record (std with n-1); for one run std is None and n 1.
    None when the metric is missing. (A claim's standard errors: analysis/claim_verdicts.standard_error.)"""
    if run is None:
        return None
    if run.get("seed_runs"):
        values = [v for v in (metric_value(r, metric) for r in run["seed_runs"]) if v is not None]
        if not values:
            return None
        if len(values) > 1:
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            return {"mean": mean, "std": std, "n": len(values)}
        run = next(r for r in run["seed_runs"] if metric_value(r, metric) is not None)
    value = metric_value(run, metric)
    return None if value is None else {"mean": value, "std": None, "n": 1}


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
