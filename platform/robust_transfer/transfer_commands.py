"""The `retrain-blocks`, `transfer`, `finetune-adv` and `lwf` commands around their strategies.

One MLflow run each (a parent with one nested child run per k for `retrain_blocks k=1,2,3`),
tagged with the source model; the result is saved as a checkpoint whose lineage names the source,
logged as an MLflow model and optionally registered.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from types import SimpleNamespace

from .config import FinetuneAdvConfig, LwfConfig, RetrainBlocksConfig, TransferConfig
from .tracking import log_checkpoint_model, register_checkpoint_model, tracked_run


def _source_tags(cfg) -> dict[str, str]:
    return {"rtl.source_model": cfg.source_model}


def _publish(cfg, log, result, strategy: str, name_suffix: str = "") -> str:
    """Log the checkpoint as an MLflow model; register it when `register_as` asks."""
    from .commands import registered_name, version_tags
    from .tracking.naming import name_run, run_name

    name_run(log.run_id, run_name(strategy, result.meta["data_spec"], result.meta.get("arch", result.model.arch)))
    model_uri = log_checkpoint_model(result.checkpoint_dir, result.metrics)
    naming = SimpleNamespace(register_as=cfg.register_as, dataset=result.meta["data_spec"],
                             arch=result.meta.get("arch", result.model.arch))
    name = registered_name(naming, strategy)
    if name:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", name + name_suffix)[:128]
        lineage = {k: v for k, v in result.meta.get("lineage", {}).items() if k != "source_meta"}
        tags = version_tags({**result.meta, "lineage": lineage}, result.metrics)
        mv = register_checkpoint_model(model_uri, name, tags)
        log.set_tags({"rtl.registered_model": f"{name}/{mv.version}"})
    return model_uri


def _report(title: str, log, result, model_uri: str) -> dict:
    from .commands import print_table

    print_table(f"{title} — run {log.run_id}", result.metrics | {"checkpoint": str(result.checkpoint_dir)})
    return {"run_id": log.run_id, "metrics": result.metrics, "model_uri": model_uri,
            "checkpoint": str(result.checkpoint_dir)}


def _run_one(strategy: str, cfg, fn, title: str) -> dict:
    with tracked_run(strategy, cfg.to_params(), _source_tags(cfg), experiment=cfg.experiment) as log:
        result = fn(cfg, log, run_id=log.run_id)
        return _report(title, log, result, _publish(cfg, log, result, strategy))


def run_transfer(cfg: TransferConfig) -> dict:
    from .strategies.transfer import transfer

    return _run_one("transfer", cfg, transfer, f"transfer ({cfg.head} head) from {cfg.source_model}")


def run_finetune_adv(cfg: FinetuneAdvConfig) -> dict:
    from .strategies.finetune_adv import finetune_adv

    return _run_one("finetune_adv", cfg, finetune_adv, f"finetune_adv (PGD-{cfg.steps}) from {cfg.source_model}")


def run_lwf(cfg: LwfConfig) -> dict:
    from .strategies.lwf import lwf

    return _run_one("lwf", cfg, lwf, f"lwf (λ_d={cfg.lambda_d}, {cfg.distance}) from {cfg.source_model}")


def run_retrain_blocks(cfg: RetrainBlocksConfig) -> dict:
    """One run for one k; for several, a parent run with a nested child per k and Fig. 1's plot."""
    from .strategies.retrain_blocks import check_k, plot_robustness_vs_k, retrain_blocks, source_baseline
    from .strategies.source import load_source

    ks = cfg.k_values()
    with tracked_run("retrain_blocks", cfg.to_params(), _source_tags(cfg), experiment=cfg.experiment) as parent:
        if len(ks) == 1:
            result = retrain_blocks(cfg, ks[0], parent, run_id=parent.run_id)
            return _report(f"retrain_blocks k={ks[0]}", parent, result,
                           _publish(cfg, parent, result, "retrain_blocks", f"-k{ks[0]}"))
        check_k(max(ks), load_source(cfg.source_model).model)  # every k, before any is trained
        rows, children = {}, {}
        for k in ks:
            # nested: a child in its parent's experiment, even under `mlflow run` (see tracked_run)
            with tracked_run("retrain_blocks", {**cfg.to_params(), "k": k}, _source_tags(cfg) | {"rtl.k": str(k)},
                             nested=True, run_name=f"k={k}") as child:
                ckpt = Path(cfg.checkpoint_dir) / f"k{k}" if cfg.checkpoint_dir else None
                result = retrain_blocks(cfg, k, child, run_id=child.run_id, checkpoint_dir=ckpt)
                model_uri = _publish(cfg, child, result, "retrain_blocks", f"-k{k}")
                _report(f"retrain_blocks k={k}", child, result, model_uri)
            rows[k], children[k] = result.metrics, child.run_id
            parent.log_metrics({f"{name}_vs_k": v for name, v in result.metrics.items()}, step=k)
        baseline = source_baseline(cfg)
        parent.log_metrics({f"source_{name}": v for name, v in baseline.items()})
        parent.set_tags({"rtl.data": result.meta["data_spec"], "rtl.data_sha256": result.meta["data_sha256"],
                         "rtl.k_runs": ",".join(f"{k}:{r}" for k, r in children.items())})
        with tempfile.TemporaryDirectory(prefix="rtl-plot-") as tmp:
            png = plot_robustness_vs_k(rows, baseline, Path(tmp) / "robustness_vs_k.png",
                                       title=f"{cfg.source_model} on {result.meta['data_spec']}")
            parent.log_artifact(png)
        from .commands import print_table

        print_table(f"retrain_blocks — parent run {parent.run_id}",
                    {f"k={k} {name}": v for k, m in rows.items() for name, v in m.items()}
                    | {f"source {name}": v for name, v in baseline.items()})
        return {"run_id": parent.run_id, "children": children, "metrics": rows, "baseline": baseline}
