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
    from .evaluation import run_evaluate as _run_evaluate

    return _run_evaluate(cfg)


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


# --- search and registry (issue #4) ------------------------------------------------------------------
from .config import PromoteConfig, SearchConfig  # noqa: E402


def run_search(cfg: SearchConfig) -> dict:
    from .search.runner import run_search as _run_search

    return _run_search(cfg)


def run_promote(cfg: PromoteConfig) -> dict:
    from .registry import run_promote as _run_promote

    return _run_promote(cfg)


COMMANDS["search"] = (SearchConfig, run_search, "Search a space (search_spaces/*.yaml) with Optuna or Ray Tune; "
                      "one MLflow child run per trial.")
COMMANDS["promote"] = (PromoteConfig, run_promote, "Move the champion alias of a registered model if a policy "
                       "says so; records the decision and a model card.")
