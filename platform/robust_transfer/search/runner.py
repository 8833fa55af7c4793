"""`search`: drive any entry point over a search space with tracked trials (Optuna in-process, or Ray Tune).

One parent MLflow run per invocation, one nested child run per trial; the study lives in Optuna storage
(resumable: running again adds trials). One progress line per finished trial.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import tempfile
import warnings
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SearchError
from ..venvtools import tool_command
from .space import SearchSpace
from .space_yaml import load_space
from .storage import kind as storage_kind
from .storage import open_storage, redact
from .storage import resolve as resolve_storage
from ..expr import choosing_on_test_warning, names_of_test_metrics
from .study import (best_trials, create_or_load_study, feasible, make_pruner, make_sampler, optuna_quiet,
                    set_constraints, suggest, violations)
from .trial import (TrialPruned, TrialReporter, format_params, format_values, log_objectives_to_run, quiet_stdout,
                    run_trial)

STOP_AFTER_SAME_FAILURES = 3  # the first trials all failing alike: a problem with the study, not a trial


@dataclass
class Progress:
    """Prints one line per finished trial (thread-safe), tracks the best so far and early failures."""

    space: SearchSpace
    out: object = field(default_factory=lambda: sys.stdout)
    enabled: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: int = 0
    completed: int = 0
    states: dict = field(default_factory=lambda: {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0})
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    best: tuple | None = None  # (value, number)
    started: float = field(default_factory=time.perf_counter)

    def __getstate__(self):  # Ray Tune pickles its callbacks with the experiment state
        state = dict(self.__dict__)
        state.pop("lock", None)
        state["out"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.lock = threading.Lock()
        self.out = self.out or sys.stdout

    def line(self, number: int, state: str, values, metrics: dict, params: dict, seconds: float | None,
             error: str | None = None, feasible_: bool = True) -> None:
        names = [o.name for o in self.space.objectives]
        with self.lock:
            self.finished += 1
            self.states[state] = self.states.get(state, 0) + 1
            if state == "COMPLETE":
                self.completed += 1
                if not self.space.multi_objective and feasible_:
                    sign = 1 if self.space.directions[0] == "maximize" else -1
                    if self.best is None or sign * values[0] > sign * self.best[0]:
                        self.best = (values[0], number)
            elif state == "FAIL":
                self.errors.append(error or "unknown error")
            if not self.enabled:
                return
            parts = [f"trial {number:>3} {state:<8}"]
            if values and state == "COMPLETE":
                parts.append(format_values(names, values))
            shown = {k: metrics[k] for k in ("clean_acc", "pgd20_acc") if k in metrics and k not in names}
            if shown:
                parts.append("(" + format_values(shown.keys(), shown.values()) + ")")
            if state == "COMPLETE" and not feasible_:
                parts.append("[violates constraints]")
            parts.append("| " + format_params(params))
            if seconds is not None:
                parts.append(f"{seconds:.1f}s")
            if self.best is not None:
                parts.append(f"best {self.best[0]:.4f} (#{self.best[1]})")
            if error:
                parts.append(f"error: {error}" if state == "FAIL" else f"({error})")
            print("  ".join(parts), file=self.out, flush=True)


def study_name_for(cfg, space: SearchSpace) -> str:
    return cfg.study_name or space.study or Path(cfg.space).stem


def optimize_optuna(space: SearchSpace, cfg, study, *, parent_run_id: str, experiment_id: str,
                    progress: Progress, run_entry, callbacks=()) -> None:
    import optuna

    study_name = study.study_name
    single = not space.multi_objective
    prune = single and space.pruner["type"] != "none"

    def objective(trial):
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # which process ran it
        sampled = suggest(trial, space)

        def on_epoch(value, step, metrics):
            if not prune:
                return
            trial.report(value, step)
            if trial.should_prune():
                raise TrialPruned(f"pruned at epoch {step + 1} ({value:.4f})")

        reporter = TrialReporter(space, on_epoch)
        try:
            outcome = run_trial(space, sampled, study_name=study_name, trial_number=trial.number,
                                parent_run_id=parent_run_id, experiment_id=experiment_id, reporter=reporter,
                                on_start=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
                                log_objectives=False, run_entry=run_entry)  # `after` logs them with the trial's state, one batch
        except TrialPruned as e:
            trial.set_user_attr("pruned", str(e))
            raise optuna.TrialPruned(str(e)) from None
        except Exception as e:
            trial.set_user_attr("error", (str(e).splitlines() or [type(e).__name__])[0][:500]
                                if str(e) else type(e).__name__)
            raise
        trial.set_user_attr("metrics", outcome.metrics)
        set_constraints(trial, space, outcome.violations)
        if outcome.model_uri:
            trial.set_user_attr("model_uri", outcome.model_uri)
        return outcome.values[0] if single else outcome.values

    def after(study_, frozen):
        from ..tracking import mlflow_client

        run_id = frozen.user_attrs.get("mlflow_run_id")
        if run_id:
            complete = frozen.state.name == "COMPLETE"
            log_objectives_to_run(run_id, space, frozen.values if complete else None,
                                  violations(frozen) if complete else None, {"rtl.trial_state": frozen.state.name})
            if frozen.state.name == "PRUNED":
                mlflow_client().set_terminated(run_id, "KILLED")
        secs = frozen.duration.total_seconds() if frozen.duration else None
        progress.line(frozen.number, frozen.state.name, frozen.values, frozen.user_attrs.get("metrics") or {},
                      frozen.params, secs, frozen.user_attrs.get("error") or frozen.user_attrs.get("pruned"),
                      feasible(frozen))
        errs = progress.errors
        if progress.completed == 0 and len(errs) >= STOP_AFTER_SAME_FAILURES and len(set(errs)) == 1:
            stopped_early.append(True)
            study_.stop()

    # `trials` counts this invocation's trials that end COMPLETE or PRUNED: a failed trial is replaced by another
    # (at most `trials` replacements), so a transient failure does not shrink the study. Trials of a dead worker
    # are failed and re-queued by the storage's heartbeat (storage.retry_stale_trial); `study.ask` runs the
    # re-queued ones first, and each counts for the worker that runs it.
    stopped_early: list[bool] = []
    wanted, timeout = cfg_trials(cfg, space), cfg_timeout(cfg, space)
    t0 = time.perf_counter()
    restore = optuna_quiet()
    try:
        with quiet_stdout(True), collect_warnings(progress), split_threads(cfg.n_jobs):
            while True:
                need = wanted - progress.states.get("COMPLETE", 0) - progress.states.get("PRUNED", 0)
                left = None if timeout is None else timeout - (time.perf_counter() - t0)
                if need <= 0 or stopped_early or (left is not None and left <= 0) \
                        or progress.states.get("FAIL", 0) > wanted or _grid_exhausted(study):
                    break
                study.optimize(objective, n_trials=need, timeout=left, n_jobs=min(cfg.n_jobs, need) if cfg.n_jobs > 0
                               else cfg.n_jobs, catch=(Exception,), callbacks=[after, *callbacks])
                if getattr(study, "_stop_flag", False) and not stopped_early:
                    break  # an extra callback (or the sampler) stopped the study
    finally:
        restore()


def _grid_exhausted(study) -> bool:
    import optuna

    sampler = study.sampler
    return isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study)


@contextlib.contextmanager
def split_threads(n_jobs: int):
    """n_jobs trials in parallel threads share the CPU: give each its share of torch's intra-op threads
    (oversubscribed threads spin against each other; on 2 cores that is ~10x slower), and attack
    models unfolded (torch.fx tracing in one thread breaks model calls in the others)."""
    if n_jobs <= 1:
        yield
        return
    import torch

    from ..attacks.fold import threads_share_process

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before // n_jobs))
    try:
        with threads_share_process():   # torch.fx tracing is not thread-safe (attacks/fold.py)
            yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def collect_warnings(progress: Progress):
    """Python warnings raised inside trials are kept (search/warnings.txt on the parent run), not printed
    between the progress lines. `record=True` also catches libraries that force `simplefilter("once")`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                text = f"{w.category.__name__}: {str(w.message).strip()}"
                if text not in progress.warnings:
                    progress.warnings.append(text)


def cfg_trials(cfg, space: SearchSpace) -> int:
    return cfg.trials or space.trials or 10


def cfg_timeout(cfg, space: SearchSpace):
    return cfg.timeout or space.timeout


def prepare(cfg):
    """Everything that can fail before a run or trial exists: the space, overrides, storage, study."""
    space = load_space(cfg.space)
    notes = space.apply_overrides(cfg.set) if cfg.set else []
    storage_kind(cfg.storage)  # a malformed URL fails here
    return space, notes


def run_search(cfg, run_entry, callbacks=()) -> dict:
    """A study of `cfg.space` in its own MLflow run (the `search` entry point, commands/search.py).
    `run_entry(entry_point, config) -> dict` runs one trial's command. `callbacks`: extra Optuna callbacks
    `(study, frozen_trial)` run after each trial (backend=optuna), e.g. to stop on a condition or to time
    something between trials."""
    from ..tracking import tracked_run
    from ..tracking.runs import launcher_run_hidden

    space, notes = prepare(cfg)
    chosen_by = [n for o in space.objectives for n in o.expr.names] + [n for c in space.constraints for n in c.expr.names]
    test_warning = choosing_on_test_warning(f"space {cfg.space}", chosen_by)
    if test_warning:   # it still runs (issue 13): one line
        print(test_warning, file=sys.stderr, flush=True)
    study_name = study_name_for(cfg, space)
    sampler, pruner = make_sampler(space, cfg.seed), make_pruner(space)  # (bad options fail before any storage exists)
    from ..tracking.runs import check_experiment_usable

    check_experiment_usable(cfg.experiment)
    storage = open_storage(cfg.storage, heartbeat=cfg.backend == "optuna")
    restore = optuna_quiet()
    try:
        study = create_or_load_study(space, storage, cfg.storage, study_name, sampler=sampler, pruner=pruner)
    finally:
        restore()
    before = len(study.get_trials(deepcopy=False))
    wanted = cfg_trials(cfg, space)
    if cfg.trials_scope == "study":   # a fixed budget for the whole study: a rerun adds only the missing trials
        done = sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials(deepcopy=False))
        cfg = dataclasses.replace(cfg, trials=max(wanted - done, 1))
        to_add = max(wanted - done, 0)
    else:
        to_add = wanted
    out = sys.stdout
    params = {"space": cfg.space, "backend": cfg.backend, "storage": redact(cfg.storage), "study_name": study_name,
              "trials": wanted, "trials_scope": cfg.trials_scope, "n_jobs": cfg.n_jobs, "entry_points": ",".join(space.entry_points),
              "objectives": ",".join(f"{o.name}:{o.direction}" for o in space.objectives)}
    if cfg.set:
        params["set"] = cfg.set
    if cfg_timeout(cfg, space):
        params["timeout"] = cfg_timeout(cfg, space)
    tags = {"rtl.study": study_name, "rtl.search_backend": cfg.backend, "rtl.entry_point": ",".join(space.entry_points)}
    if test_warning:
        tags["rtl.chooses_on_test"] = ",".join(names_of_test_metrics(chosen_by))
    with tracked_run("search", params, tags, experiment=cfg.experiment, run_name=f"search-{study_name}") as log, \
            launcher_run_hidden():
        import mlflow

        experiment_id = mlflow.get_run(log.run_id).info.experiment_id
        study.set_user_attr(f"rtl.mlflow_parent_run.{before}", log.run_id)
        for n in notes:
            print(n, file=out)
        if not cfg.quiet:
            print(f"search {study_name}: {to_add} trial(s) of {'/'.join(space.entry_points)} "
                  f"over {', '.join(f'{n} {p.describe()}' for n, p in space.params.items())}; "
                  f"{', '.join(f'{o.direction} {o.name}' for o in space.objectives)}"
                  f"{'; ' + ', '.join(map(str, space.constraints)) if space.constraints else ''} "
                  f"[{cfg.backend}, {redact(resolve_storage(cfg.storage))}, {before} earlier trial(s)] — run {log.run_id}",
                  file=out, flush=True)
        progress = Progress(space, out=out, enabled=not cfg.quiet)
        t0 = time.perf_counter()
        if to_add == 0:
            pass   # trials_scope=study and the study already holds its trials (a resumed suite step)
        elif cfg.backend == "ray":
            from .ray_runner import optimize_ray

            optimize_ray(space, cfg, study, storage, parent_run_id=log.run_id, experiment_id=experiment_id,
                         progress=progress, run_entry=run_entry)
        else:
            optimize_optuna(space, cfg, study, parent_run_id=log.run_id, experiment_id=experiment_id,
                            progress=progress, run_entry=run_entry, callbacks=callbacks)
        wall = time.perf_counter() - t0
        summary = summarize(study, space, log, before, wall, study_name, progress, out, cfg)
        st = progress.states
        if st["COMPLETE"] == 0 and st["PRUNED"] == 0 and st["FAIL"] > 0:
            raise SearchError(f"study {study_name!r}: every trial of this run failed ({st['FAIL']}): "
                              f"{progress.errors[0]}")
        return summary


def summarize(study, space, log, before, wall, study_name, progress, out, cfg) -> dict:
    from .artifacts import write_study_artifacts

    trials = study.get_trials(deepcopy=False)
    counts = dict(progress.states)  # this invocation's trials (other workers may share the study)
    n_new = progress.finished
    log.log_metrics({"trials_complete": counts["COMPLETE"], "trials_pruned": counts["PRUNED"],
                     "trials_failed": counts["FAIL"], "study_trials_total": len(trials), "search_wall_s": wall,
                     "trials_per_minute": 60.0 * n_new / max(wall, 1e-9)})
    best = best_trials(study, space)
    names = [o.name for o in space.objectives]
    if len(best) == 1 and not space.multi_objective:
        b = best[0]
        log.log_metrics({f"best.{names[0]}": b.value})
        log.set_tags({"rtl.best_trial": str(b.number), "rtl.best_run_id": b.user_attrs.get("mlflow_run_id", "")})
    with tempfile.TemporaryDirectory(prefix="rtl-search-") as tmp:
        Path(tmp, "space.yaml").write_text(space.text)
        if progress.warnings:
            Path(tmp, "warnings.txt").write_text("\n".join(progress.warnings) + "\n")
        written = write_study_artifacts(study, space, Path(tmp), f"{study_name} ({len(trials)} trials)")
        log.log_artifact(tmp, "search")
    if not cfg.quiet:
        print(f"\nstudy {study_name}: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed "
              f"in {wall:.1f}s ({60.0 * n_new / max(wall, 1e-9):.1f} trials/min); {len(trials)} trial(s) in the study",
              file=out)
        label = "best" if not space.multi_objective else "Pareto front"
        if not best and counts['COMPLETE']:
            violated = "; ".join(c.text for c in space.constraints)
            print(f"  no feasible trial: every complete trial violates a constraint ({violated})", file=out)
        for t in best:
            print(f"  {label}: trial {t.number}  {format_values(names, t.values)}  | {format_params(t.params)}  "
                  f"run {t.user_attrs.get('mlflow_run_id', '?')}", file=out)
        prune = not space.multi_objective and space.pruner["type"] != "none" and cfg.backend == "optuna"
        done = [t for t in trials if t.state.name == "COMPLETE"]
        if prune and done and not any(t.intermediate_values for t in done):
            print(f"  note: {'/'.join(space.entry_points)} logged no per-epoch value of {names[0]} (no held-out "
                  "metrics per epoch), so nothing could be pruned; give the objective a `report:` expression over "
                  "what it logs per epoch (e.g. report: train_clean_acc) or use pruner: none", file=out)
        print(f"  artifacts: {', '.join('search/' + p.name for p in written.values())} on run {log.run_id}", file=out)
        print(f"  watch: {tool_command('optuna-dashboard')} {redact(resolve_storage(cfg.storage))}", file=out,
              flush=True)
    return {"run_id": log.run_id, "study_name": study_name, "counts": counts, "wall_s": wall,
            "best": [{"number": t.number, "values": t.values, "params": t.params,
                      "mlflow_run_id": t.user_attrs.get("mlflow_run_id")} for t in best]}

