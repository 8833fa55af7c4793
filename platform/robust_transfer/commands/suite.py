"""`suite`: a paper table/figure (projects/*.yaml) as child runs, reusing finished steps, then `report`
(the plan: suites/plan.py; running a step: suites/run.py)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ..config import SuiteConfig
from ..errors import ConfigError
from .registry import entry_point


@entry_point(SuiteConfig, help="Run a paper table/figure (projects/*.yaml) as child runs, reusing finished steps, "
                               "passing models by registry alias, ending with report.")
def run_suite(cfg: SuiteConfig) -> dict:
    """Plan, then reuse/run every step as a child run of this suite's run, then `report`."""
    import mlflow

    from ..suites.plan import load_suite, with_upstream
    from ..suites.run import project_root_for, run_report_step, run_step, suite_tags
    from ..tracking import mlflow_client, tracked_run
    from ..tracking.runs import absolute_tracking_uri, tracking_uri

    # steps run with the project root as working directory: a relative sqlite store must not move
    os.environ["MLFLOW_TRACKING_URI"] = absolute_tracking_uri(tracking_uri())
    # Steps run `rtl` (and asynchronous project runs the `mlflow` CLI) from this Python environment.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    from ..search.space import parse_set
    from ..suites.registration import record as record_registration

    suite = load_suite(cfg.project, cfg.scale, overrides=parse_set(cfg.set))
    spec: dict = {"report": []}
    if cfg.report or cfg.dry_run:  # a malformed report: say so now, not after hours of steps
        from ..analysis.report_spec import load_report_spec

        spec = load_report_spec(cfg.project)
    project_root = project_root_for(Path(cfg.project))
    steps = suite.steps
    if cfg.only:
        wanted = [s.strip() for s in cfg.only.split(",") if s.strip()]
        missing = [w for w in wanted if w not in {s.name for s in steps}]
        if missing:
            raise ConfigError(f"only={missing[0]!r} is not a step of {suite.name} at scale {suite.scale}; "
                              f"steps: {', '.join(s.name for s in steps)}")
        steps = with_upstream(steps, wanted)
    if cfg.dry_run:
        from ..suites.paper import render

        print(f"suite {suite.name} ({suite.paper}) at scale {suite.scale}: {suite.description}")
        for i, s in enumerate(steps, 1):
            print(f"[{i}/{len(steps)}] {s.label:<28} {s.entry:<14} key {s.key[:12]}  "
                  + " ".join(f"{k}={v}" for k, v in s.params.items()))
            for line in render(s, suite.scale):
                print(line)
        if cfg.workers > 1:
            from ..suites.dag import waves

            for k, wave in enumerate(waves(steps), 1):
                print(f"together {k}: {', '.join(wave)}")
        # every claim at this scale, sized on the whole plan (not only `--only`'s steps): what it could detect
        from ..analysis.claim_plan import claims_at, load_priors, plan_claims, render as render_claims

        priors = load_priors(cfg.priors) if cfg.priors else None
        planned = plan_claims(suite.steps, claims_at(spec, suite.scale), priors)
        for line in render_claims(planned, suite.scale, priors=bool(priors)):
            print(line)
        return {"steps": [s.label for s in steps], "claims": planned}

    from ..suites.dag import check_concurrent_store

    check_concurrent_store(os.environ["MLFLOW_TRACKING_URI"], cfg.workers)   # before anything is written

    tags = suite_tags(suite)
    params = {"project": str(cfg.project), "scale": cfg.scale, "reuse": cfg.reuse, **({"set": cfg.set} if cfg.set else {}),
              **({"workers": cfg.workers, "ray_address": cfg.ray_address} if cfg.workers > 1 else {})}
    with tracked_run("suite", params, tags, experiment=cfg.experiment, run_name=f"suite {suite.name} ({suite.scale})") as log:
        client = mlflow_client()
        experiment_id = mlflow.get_run(log.run_id).info.experiment_id
        print(f"suite {suite.name} — {suite.title} — scale {suite.scale}: {len(steps)} steps (run {log.run_id})",
              flush=True)
        # before the first step starts: every claim and step budget as they stand now (suites/registration.py)
        snap = record_registration(client, log.run_id, suite, parse_set(cfg.set))
        print(f"registered {len(snap['claims'])} claims and {len(snap['steps'])} steps"
              + (f" ({len(snap['problems'])} suite file(s) not read: {', '.join(snap['problems'])})"
                 if snap["problems"] else ""), flush=True)
        plan, t_start, finished = [], time.time(), {}
        reused = 0

        def done(i, step, run, was_reused, seconds):
            nonlocal reused
            reused += was_reused
            how = f"reused run {run.info.run_id}" if was_reused else f"ran in {seconds:.0f} s (run {run.info.run_id})"
            metrics = {k: v for k, v in run.data.metrics.items() if k.endswith("_acc") and k != "train_clean_acc"}
            shown = "  ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items()))
            chose = f"  chose {run.data.tags['rtl.selected_step']}" if step.select is not None else ""
            print(f"[{i}/{len(steps)}] {step.label}: {how}{chose}  {shown}", flush=True)
            plan.append({"step": step.name, "seed": step.seed, "entry": step.entry, "key": step.key, "run_id": run.info.run_id,
                         "reused": bool(was_reused), "params": step.params,
                         "model_uri": run.data.tags.get("rtl.model_uri", "")})

        if cfg.workers == 1:   # in order, in this process: no Ray
            for i, step in enumerate(steps, 1):
                t0 = time.time()
                print(f"[{i}/{len(steps)}] {step.label} ({step.entry}) ...", flush=True)
                run, was_reused = run_step(client, suite, step, experiment_id, project_root, cfg.reuse,
                                           finished=finished, parent_run_id=log.run_id)
                finished.setdefault(step.name, []).append(run)   # a seeded step: one run per seed, the first first
                done(i, step, run, was_reused, time.time() - t0)
        else:                  # steps whose inputs are ready at once, as Ray tasks (suites/dag.py)
            from ..suites.dag import run_dag

            print(f"running the steps as a DAG on Ray, {cfg.workers} at once "
                  f"({cfg.ray_address or 'a local cluster'})", flush=True)
            run_dag(client, suite, steps, experiment_id, project_root, cfg.reuse, log.run_id, workers=cfg.workers,
                    address=cfg.ray_address, on_done=lambda i, *rest: done(i + 1, *rest))
            plan.sort(key=lambda row: [s.key for s in steps].index(row["key"]))   # the plan's order
        log.log_metrics({"steps_run": len(steps) - reused, "steps_reused": reused,
                         "suite_time_s": time.time() - t_start})
        client.log_dict(log.run_id, plan, "suite_plan.json")
        if cfg.report and not cfg.only:
            print(f"[report] {suite.name} → {cfg.out}/{suite.scale}/", flush=True)
            run_report_step(client, suite, cfg, experiment_id, project_root)
        print(f"suite {suite.name}: {len(steps) - reused} steps run, {reused} reused, "
              f"{time.time() - t_start:.0f} s", flush=True)
        return {"run_id": log.run_id, "plan": plan}
