"""What each `rtl` subcommand / MLproject entry point does, around its strategy."""
from __future__ import annotations

import re

from .config import EvaluateConfig, TrainConfig
from .tracking import log_checkpoint_model, register_checkpoint_model, tracked_run


def registered_name(cfg, strategy: str) -> str | None:
    """DESIGN.md: `<dataset>-<arch>-<strategy>` unless given; `register_as=auto` asks for that default."""
    if not cfg.register_as:
        return None
    if cfg.register_as != "auto":
        return cfg.register_as
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{cfg.dataset}-{cfg.arch}-{strategy}").strip("-")


def version_tags(meta: dict, metrics: dict) -> dict[str, str]:
    tags = {f"metric.{k}": f"{v:.4f}" for k, v in metrics.items()}
    threat = meta.get("threat_model", {})
    tags.update({f"threat.{k}": str(v) for k, v in threat.items()})
    tags["data_spec"] = str(meta.get("data_spec", ""))
    tags["arch"] = str(meta.get("arch", ""))
    lineage = meta.get("lineage", {})
    tags.update({f"lineage.{k}": str(v) for k, v in lineage.items() if v is not None})
    return tags


def print_table(title: str, rows: dict[str, float]) -> None:
    print(f"\n{title}")
    for k, v in rows.items():
        print(f"  {k:<20} {v:.4f}" if isinstance(v, float) else f"  {k:<20} {v}")


def run_train(cfg: TrainConfig) -> dict:
    from .strategies.train import resume_state, train

    state = resume_state(cfg) if cfg.resume else None
    tags = {"rtl.data": cfg.dataset, "rtl.mode": cfg.mode}
    with tracked_run("train", cfg.to_params(), tags, experiment=cfg.experiment,
                     run_id=state["json"].get("run_id") if state else None) as log:
        result = train(cfg, log, run_id=log.run_id)
        model_uri = log_checkpoint_model(result.checkpoint_dir)
        name = registered_name(cfg, f"train-{cfg.mode}")
        if name:
            mv = register_checkpoint_model(model_uri, name, version_tags(result.meta, result.metrics))
            log.set_tags({"rtl.registered_model": f"{name}/{mv.version}"})
        print_table(f"train ({cfg.mode}) — run {log.run_id}", result.metrics | {"checkpoint": str(result.checkpoint_dir)})
        return {"run_id": log.run_id, "metrics": result.metrics, "model_uri": model_uri,
                "checkpoint": str(result.checkpoint_dir)}


def run_evaluate(cfg: EvaluateConfig) -> dict:
    from .evaluation import evaluate

    tags = {"rtl.model": cfg.model, "rtl.suite": cfg.suite}
    with tracked_run("evaluate", cfg.to_params(), tags, experiment=cfg.experiment) as log:
        ev = evaluate(cfg.model, cfg.dataset, split=cfg.split, suite=cfg.suite, attacks=cfg.attacks,
                      epsilon=cfg.epsilon, step_size=cfg.step_size, n_examples=cfg.n_examples, seed=cfg.seed,
                      batch_size=cfg.batch_size, device=cfg.device, data_dir=cfg.data_dir, progress=cfg.progress)
        res = ev.result
        log.log_metrics(res.metrics)
        log.set_tags({"rtl.data": ev.data.spec, "rtl.data_sha256": ev.data.sha256(),
                      "rtl.eval_indices_sha256": res.indices_sha256})
        print_table(f"evaluate {cfg.model} on {ev.data.spec}:{cfg.split} (n={res.n_examples}, "
                    f"ε={cfg.epsilon}/255) — run {log.run_id}", res.metrics)
        return {"run_id": log.run_id, "metrics": res.metrics}


# name → (config class, function, help)
COMMANDS = {
    "train": (TrainConfig, run_train, "Train a source model: natural, pgd, free or fgsm-rs (Table 1)."),
    "evaluate": (EvaluateConfig, run_evaluate, "Clean, PGD-k and CW-k accuracy, worst case per example."),
}
