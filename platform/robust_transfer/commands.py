"""What each `rtl` subcommand / MLproject entry point does, around its strategy."""
from __future__ import annotations

import re

from .config import EvaluateConfig, TrainConfig
from .config import FinetuneAdvConfig, LwfConfig, RetrainBlocksConfig, TransferConfig
from .tracking import log_checkpoint_model, register_checkpoint_model, tracked_run
from .transfer_commands import run_finetune_adv, run_lwf, run_retrain_blocks, run_transfer


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
        from .tracking.naming import name_run, run_name

        name_run(log.run_id, run_name("train", cfg.dataset, cfg.arch, cfg.mode))
        result = train(cfg, log, run_id=log.run_id)
        model_uri = log_checkpoint_model(result.checkpoint_dir, result.metrics)
        name = registered_name(cfg, f"train-{cfg.mode}")
        if name:
            mv = register_checkpoint_model(model_uri, name, version_tags(result.meta, result.metrics))
            log.set_tags({"rtl.registered_model": f"{name}/{mv.version}"})
        print_table(f"train ({cfg.mode}) — run {log.run_id}", result.metrics | {"checkpoint": str(result.checkpoint_dir)})
        return {"run_id": log.run_id, "metrics": result.metrics, "model_uri": model_uri,
                "checkpoint": str(result.checkpoint_dir)}


def _lazy(module: str, name: str):
    """A command implemented in `module`, imported only when it runs (keeps `rtl --help` and MLproject fast)."""
    def run(cfg) -> dict:
        import importlib

        return getattr(importlib.import_module(module, __package__), name)(cfg)

    run.__name__ = run.__qualname__ = name
    return run


run_evaluate = _lazy(".evaluation", "run_evaluate")


# name → (config class, function, help)
COMMANDS = {
    "train": (TrainConfig, run_train, "Train a source model: natural, pgd, free or fgsm-rs (Table 1)."),
    "evaluate": (EvaluateConfig, run_evaluate, "Robust accuracy per attack and worst case per example: suite=quick "
                 "(PGD-20, CW-20), standard (+ APGD-CE/DLR, Square; masking diagnostics) or full (AutoAttack-style)."),
    "retrain-blocks": (RetrainBlocksConfig, run_retrain_blocks,
                       "Re-initialise and re-train the k deepest blocks on natural examples (Fig. 1)."),
    "transfer": (TransferConfig, run_transfer,
                 "Frozen source features + a new linear/MLP head (Eq. 2, Tables 2-3, Fig. 3-4)."),
    "finetune-adv": (FinetuneAdvConfig, run_finetune_adv,
                     "End-to-end fine-tuning of the source on PGD-k examples of the target (Fig. 3 baseline)."),
    "lwf": (LwfConfig, run_lwf, "Fine-tuning without forgetting: CE + lambda_d * d(z, z0) (Sec. 6, Tables 4-7)."),
}


# --- search and registry (issue #4); analysis, reports and suites (issue #6) ---------------------------
from .config import AnalyzeConfig, PromoteConfig, ReportConfig, SearchConfig, SuiteConfig  # noqa: E402

run_search = _lazy(".search.runner", "run_search")
run_promote = _lazy(".registry", "run_promote")
run_analyze = _lazy(".analysis.analyze", "run_analyze")
run_report = _lazy(".analysis.report", "run_report")
run_suite = _lazy(".suite", "run_suite")

COMMANDS["search"] = (SearchConfig, run_search, "Search a space (search_spaces/*.yaml) with Optuna or Ray Tune; "
                      "one MLflow child run per trial.")
COMMANDS["promote"] = (PromoteConfig, run_promote, "Move the champion alias of a registered model if a policy "
                       "says so; records the decision and a model card.")
COMMANDS["analyze"] = (AnalyzeConfig, run_analyze, "Input-gradient images of models (what=gradients, Fig. 5) or "
                       "feature distances between images and their augmented copies (what=feature-distance, Fig. 7).")
COMMANDS["report"] = (ReportConfig, run_report, "Write a suite's tables, figures and claim verdicts "
                      "(projects/*.yaml `report:`) from its newest FINISHED step runs to <out>/<scale>/.")
COMMANDS["suite"] = (SuiteConfig, run_suite, "Run a paper table/figure (projects/*.yaml) as child runs, reusing "
                     "finished steps, passing models by registry alias, ending with report.")
