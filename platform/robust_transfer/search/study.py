"""Optuna study plumbing shared by both backends: samplers, pruners, creating/resuming a study."""
from __future__ import annotations

import warnings

from ..errors import SearchError
from .space import SearchSpace, grid_values
from .storage import creation_lock, redact


def make_sampler(space: SearchSpace, seed: int | None = None):
    """The space's sampler. Constraints reach it through `trial.set_constraint` (Optuna 5; the older
    `constraints_func` is deprecated), which TPE and NSGA-II read for every finished trial."""
    import optuna

    opts = dict(space.sampler)
    kind = opts.pop("type")
    yaml_seed = opts.pop("seed", None)
    seed = seed if seed is not None else yaml_seed
    try:
        if kind == "tpe":
            return optuna.samplers.TPESampler(seed=seed, **opts)
        if kind == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, **opts)
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=seed, **opts)
        return optuna.samplers.GridSampler(grid_values(space), seed=seed, **opts)
    except TypeError as e:
        raise SearchError(f"{space.source}: sampler: {e}") from None


def set_constraints(trial, space: SearchSpace, violations: list[float]) -> None:
    """Record constraint violations (<= 0 feasible) the Optuna 5 way (`trial.constraints`)."""
    for c, v in zip(space.constraints, violations):
        trial.set_constraint(c.text, float(v))


def violations(trial) -> list[float]:
    """A trial's constraint violations (Optuna 5 system attributes; older studies: our user attribute)."""
    try:
        got = list(trial.constraints.values())
    except AttributeError:
        got = []
    return got or list(trial.user_attrs.get("constraints") or [])


def make_pruner(space: SearchSpace):
    import optuna

    opts = dict(space.pruner)
    kind = opts.pop("type")
    try:
        if kind == "median":
            opts.setdefault("n_startup_trials", 3)
            opts.setdefault("n_warmup_steps", 1)
            return optuna.pruners.MedianPruner(**opts)
        if kind == "hyperband":
            opts.setdefault("min_resource", 1)
            return optuna.pruners.HyperbandPruner(**opts)
        if kind == "threshold":
            return optuna.pruners.ThresholdPruner(**opts)
        return optuna.pruners.NopPruner()
    except (TypeError, ValueError) as e:
        raise SearchError(f"{space.source}: pruner: {e}") from None


def create_or_load_study(space: SearchSpace, storage, storage_url: str, study_name: str, *, sampler=None,
                         pruner=None):
    """Create the study (once, under a lock for file storages) or resume it; refuse a study that was created
    for other objectives/directions or another entry point (resuming adds trials to the same question)."""
    import optuna

    objective_names = [o.name for o in space.objectives]
    with creation_lock(storage_url):
        try:
            study = optuna.create_study(storage=storage, study_name=study_name, directions=space.directions,
                                        sampler=sampler, pruner=pruner, load_if_exists=True)
        except optuna.exceptions.DuplicatedStudyError:  # another worker created it between our check and create
            study = optuna.load_study(storage=storage, study_name=study_name, sampler=sampler, pruner=pruner)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SearchError(f"study {study_name!r} in {redact(storage_url)!r}: {first[:300]}") from None
        attrs = study.user_attrs
        if not attrs.get("rtl.objectives"):
            study.set_user_attr("rtl.objectives", objective_names)
            study.set_user_attr("rtl.entry_points", list(space.entry_points))
            study.set_user_attr("rtl.space", str(space.source))
            study.set_user_attr("rtl.params", sorted(space.params))
            with warnings.catch_warnings():  # experimental in Optuna, but it names the axes in optuna-dashboard
                warnings.simplefilter("ignore")
                study.set_metric_names(objective_names)
            attrs = study.user_attrs
    got = [d.name.lower() for d in study.directions]
    if got != space.directions or attrs.get("rtl.objectives") != objective_names:
        raise SearchError(f"study {study_name!r} exists with objectives {attrs.get('rtl.objectives')} "
                          f"({', '.join(got)}); {space.source} asks for {objective_names} "
                          f"({', '.join(space.directions)}): give another study_name")
    if attrs.get("rtl.entry_points") and attrs["rtl.entry_points"] != list(space.entry_points):
        raise SearchError(f"study {study_name!r} exists for entry point(s) {attrs['rtl.entry_points']}; "
                          f"{space.source} drives {list(space.entry_points)}: give another study_name")
    return study


def suggest(trial, space: SearchSpace) -> dict:
    out = {}
    for n, p in space.params.items():
        if p.type == "float":
            out[n] = trial.suggest_float(n, p.low, p.high, log=p.log, step=p.step)
        elif p.type == "int":
            out[n] = trial.suggest_int(n, int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        else:
            out[n] = trial.suggest_categorical(n, list(p.choices))
    return out


def feasible(trial) -> bool:
    return all(v <= 0 for v in violations(trial))


def best_trials(study, space: SearchSpace) -> list:
    """Single objective: the best feasible complete trial; multi-objective: the feasible Pareto front."""
    import optuna

    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if feasible(t)]
    if not done:
        return []
    if not space.multi_objective:
        sign = 1 if space.directions[0] == "maximize" else -1
        return [max(done, key=lambda t: sign * t.value)]
    signs = [1 if d == "maximize" else -1 for d in space.directions]
    pts = [[s * v for s, v in zip(signs, t.values)] for t in done]
    front = []
    for i, p in enumerate(pts):
        dominated = any(all(q_ >= p_ for q_, p_ in zip(q, p)) and any(q_ > p_ for q_, p_ in zip(q, p))
                        for j, q in enumerate(pts) if j != i)
        if not dominated:
            front.append(done[i])
    return sorted(front, key=lambda t: t.number)


def optuna_quiet():
    """Silence Optuna's per-trial log lines; returns the function that restores the previous level."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our progress lines replace Optuna's per-trial logs
    return lambda: optuna.logging.set_verbosity(level)
