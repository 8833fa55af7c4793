"""`search backend=ray`: the same YAML through Ray Tune — `Tuner` + `OptunaSearch` (the study in the same
Optuna storage) + ASHA for single-objective studies.

Each trial runs in a Ray worker process, as a nested MLflow child run of the study's parent run; the
worker gets the experiment id and parent run id explicitly (`mlflow.set_experiment` exports
MLFLOW_EXPERIMENT_ID, which would otherwise win in the workers). A local cluster (`ray.init(num_cpus=...)`)
is started when no `address` is given; Ray turns token authentication on by default for it and leaves
RAY_AUTH_MODE=token in the process environment afterwards: we restore the environment on shutdown.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..config.search import parse_resources  # noqa: F401  (re-exported: ray workers' resources)
from ..errors import SearchError
from ..ray_session import ray_cluster
from .space import SearchSpace
from .study import feasible, optuna_quiet, set_constraints
from .trial import TrialReporter, quiet_stdout, run_trial

FORWARD_ENV = ("MLFLOW_TRACKING_URI", "RTL_CACHE_DIR", "RTL_DATA_DIR", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
               "MLFLOW_REGISTRY_URI")




def _ray_trial(config: dict, payload: dict) -> None:
    """The Ray Tune function trainable: runs in a worker process."""
    from ray import tune

    os.chdir(payload["cwd"])
    for k, v in payload["env"].items():
        os.environ[k] = v
    for k in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        os.environ.pop(k, None)
    space: SearchSpace = payload["space"]
    config = dict(config)
    number = int(config.pop("rtl_trial_number", -1))
    name = space.objectives[0].name
    state = {"run_id": None}

    def on_epoch(value, step, metrics):
        tune.report({name: value, "rtl_final": False, "epoch": step, "mlflow_run_id": state["run_id"] or "",
                     **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})

    def started(run_id):
        state["run_id"] = run_id

    reporter = TrialReporter(space, on_epoch if payload["prune"] else None)
    with quiet_stdout(True):
        outcome = run_trial(space, config, study_name=payload["study_name"], trial_number=number,
                            parent_run_id=payload["parent_run_id"], experiment_id=payload["experiment_id"],
                            reporter=reporter, on_start=started, backend="ray",
                            run_entry=payload["run_entry"])
    final = {o.name: v for o, v in zip(space.objectives, outcome.values)}
    final |= {f"rtl_violation_{i}": v for i, v in enumerate(outcome.violations)}
    tune.report({**outcome.metrics, **final, "rtl_final": True, "mlflow_run_id": outcome.run_id or "",
                 "model_uri": outcome.model_uri or "", "entry_point": outcome.entry_point,
                 "seconds": outcome.seconds})


def _searcher_class():
    from ray.tune.search.optuna import OptunaSearch

    class StudySearch(OptunaSearch):
        """OptunaSearch that tells our study what we know: the trial's MLflow run, metrics, constraints,
        and PRUNED (not COMPLETE with an intermediate value) for trials ASHA stopped early."""

        def __init__(self, *a, space_obj: SearchSpace, **kw):
            super().__init__(*a, **kw)
            self._rtl_space = space_obj

        def suggest(self, trial_id):
            cfg = super().suggest(trial_id)
            if isinstance(cfg, dict) and trial_id in self._ot_trials:
                cfg["rtl_trial_number"] = self._ot_trials[trial_id].number
            return cfg

        def on_trial_complete(self, trial_id, result=None, error=False):
            import optuna

            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return super().on_trial_complete(trial_id, result, error)
            ot_trial = self._ot_trials[trial_id]
            space = self._rtl_space
            result = result or {}
            if result.get("mlflow_run_id"):
                ot_trial.set_user_attr("mlflow_run_id", result["mlflow_run_id"])
            if result.get("rtl_final") and not error:
                metrics = {k: float(v) for k, v in result.items() if isinstance(v, (int, float))
                           and not isinstance(v, bool) and (k.endswith("_acc") or k.endswith("_loss"))}
                ot_trial.set_user_attr("metrics", metrics)
                set_constraints(ot_trial, space, [result[f"rtl_violation_{i}"] for i in range(len(space.constraints))])
                ot_trial.set_user_attr("entry_point", result.get("entry_point", ""))
                if result.get("model_uri"):
                    ot_trial.set_user_attr("model_uri", result["model_uri"])
                values = [float(result[o.name]) for o in space.objectives]
                self._ot_study.tell(ot_trial, values if space.multi_objective else values[0],
                                    state=optuna.trial.TrialState.COMPLETE)
            elif error:
                ot_trial.set_user_attr("error", "the Ray trial raised (see its error file under ray_results)")
                self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
            else:
                ot_trial.set_user_attr("pruned", "stopped early by ASHA")
                self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)

    return StudySearch


def _progress_callback(progress, study_ref):
    from ray.tune import Callback

    class PrintTrials(Callback):
        def __init__(self):
            self.numbers: dict[str, int] = {}

        def _done(self, trial, error: bool):
            from ..tracking import mlflow_client

            number = trial.config.get("rtl_trial_number", -1)
            study = study_ref["study"]
            frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
            state = frozen.state.name if frozen is not None else ("FAIL" if error else "COMPLETE")
            run_id = (trial.last_result or {}).get("mlflow_run_id") or (frozen.user_attrs.get("mlflow_run_id")
                                                                         if frozen else None)
            if run_id:
                client = mlflow_client()
                client.set_tag(run_id, "rtl.trial_state", state)
                status = client.get_run(run_id).info.status
                # A trial ASHA stops is KILLED, even when stopping its actor already ended the run FAILED
                # (on a busy machine the worker can see the stop as an error before this callback runs).
                if state == "PRUNED" and status in ("RUNNING", "FAILED"):
                    client.set_terminated(run_id, "KILLED")
                elif state == "FAIL" and status == "RUNNING":
                    client.set_terminated(run_id, "FAILED")
            values = frozen.values if frozen is not None and state == "COMPLETE" else None
            metrics = frozen.user_attrs.get("metrics") if frozen is not None else {}
            err = None
            if state == "FAIL":
                err = _trial_error(trial)
            secs = (trial.last_result or {}).get("time_total_s")
            progress.line(number, state, values, metrics or {}, {k: v for k, v in trial.config.items()
                                                                   if k != "rtl_trial_number"},
                          secs, err or (frozen.user_attrs.get("pruned") if frozen is not None else None),
                          feasible(frozen) if frozen is not None and state == "COMPLETE" else True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._done(trial, False)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._done(trial, True)

    return PrintTrials()


def _trial_error(trial) -> str:
    """The last line of the worker's exception (Ray keeps the traceback in the trial's error file)."""
    try:
        path = getattr(trial, "error_file", None) or ""
        text = Path(path).read_text() if path and Path(path).exists() else ""
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        return lines[-1][:500] if lines else "the Ray trial raised"
    except Exception:
        return "the Ray trial raised"


def optimize_ray(space: SearchSpace, cfg, study, storage, *, parent_run_id: str, experiment_id: str, progress,
                 run_entry) -> None:
    """`run_entry(entry_point, config) -> dict` runs one trial's command (pickled to the workers by reference)."""
    from ..extras import require

    require("ray")
    from ..tracking.runs import absolute_tracking_uri, tracking_uri

    resources = parse_resources(cfg.resources_per_trial)
    env = {k: os.environ[k] for k in FORWARD_ENV if os.environ.get(k)}
    env["MLFLOW_TRACKING_URI"] = absolute_tracking_uri(tracking_uri())
    if env.get("RTL_CACHE_DIR"):
        env["RTL_CACHE_DIR"] = str(Path(env["RTL_CACHE_DIR"]).resolve())
    single = not space.multi_objective
    prune = single and space.pruner["type"] != "none"
    names = [o.name for o in space.objectives]
    modes = ["max" if d == "maximize" else "min" for d in space.directions]
    payload = {"space": space, "study_name": study.study_name, "parent_run_id": parent_run_id,
               "experiment_id": experiment_id, "cwd": str(Path.cwd()), "env": env, "prune": prune,
               "run_entry": run_entry}
    restore = optuna_quiet()
    try:
        _fit(space, cfg, study, storage, env, payload, progress, single, prune, names, modes, parent_run_id,
             resources)
    finally:
        restore()


def _fit(space, cfg, study, storage, env, payload, progress, single, prune, names, modes, parent_run_id,
         resources) -> None:
    from .study import make_sampler

    with ray_cluster(cfg.address, cfg.num_cpus, env):
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler

        searcher = _searcher_class()(space=space.distributions(), metric=names if not single else names[0],
                                     mode=modes if not single else modes[0], sampler=make_sampler(space, cfg.seed),
                                     study_name=study.study_name, storage=storage, space_obj=space)
        # grace period: like the Optuna pruners' n_warmup_steps (median default 1: never stop after epoch 1)
        grace = int(space.pruner.get("grace_period", space.pruner.get("n_warmup_steps", 1) + 1))
        scheduler = ASHAScheduler(metric=names[0], mode=modes[0], time_attr="training_iteration", max_t=10**6,
                                  grace_period=max(1, grace),
                                  reduction_factor=float(space.pruner.get("reduction_factor", 3))) if prune else None
        trainable = tune.with_resources(tune.with_parameters(_ray_trial, payload=payload), resources)
        storage_path = str(Path("ray_results").resolve())
        study_ref = {"study": study}
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=cfg.trials or space.trials or 10,
                                        max_concurrent_trials=cfg.n_jobs if cfg.n_jobs > 0 else None,
                                        time_budget_s=cfg.timeout or space.timeout),
            run_config=tune.RunConfig(name=f"{study.study_name}-{parent_run_id[:8]}", storage_path=storage_path,
                                      verbose=0, callbacks=[_progress_callback(progress, study_ref)],
                                      failure_config=tune.FailureConfig(max_failures=0)))
        with quiet_stdout(True):
            try:
                tuner.fit()
            except Exception as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise SearchError(f"Ray Tune: {first[:300]}") from None
