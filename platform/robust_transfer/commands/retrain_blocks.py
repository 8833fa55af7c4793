"""`retrain-blocks`: re-initialise and re-train the k deepest blocks on natural examples (Fig. 1;
strategies/retrain_blocks.py). One run for one k; for several, a parent run with a nested child per k."""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

from ..config import RetrainBlocksConfig
from .common import other_rank_result, print_table, publish, rank_run, report, resolve_source, source_tags
from .registry import entry_point


@entry_point(RetrainBlocksConfig, help="Re-initialise and re-train the k deepest blocks on natural examples "
                                       "(Fig. 1).")
def run_retrain_blocks(cfg: RetrainBlocksConfig) -> dict:
    """One run for one k; for several, a parent run with a nested child per k and Fig. 1's plot."""
    from .. import distributed
    from ..strategies.retrain_blocks import check_k, plot_robustness_vs_k, retrain_blocks, source_baseline

    ranks = distributed.start(cfg.device, cfg.batch_size)   # under torchrun: join the job (one process: nothing)
    ks = cfg.k_values()
    source = resolve_source(cfg.source_model)  # once: each k re-trains its own copy, the baseline reads it unchanged
    with rank_run("retrain_blocks", cfg.to_params(), source_tags(cfg), experiment=cfg.experiment) as parent:
        if len(ks) == 1:
            result = retrain_blocks(cfg, ks[0], parent, run_id=parent.run_id, source=source)
            if not ranks.main:
                return other_rank_result()
            return report(f"retrain_blocks k={ks[0]}", parent, result,
                          publish(cfg, parent, result, "retrain_blocks", f"-k{ks[0]}"))
        check_k(max(ks), source.model)  # every k, before any is trained
        rows, children = {}, {}
        for k in ks:
            # nested: a child in its parent's experiment, even under `mlflow run` (see tracked_run)
            with rank_run("retrain_blocks", {**cfg.to_params(), "k": k}, source_tags(cfg) | {"rtl.k": str(k)},
                          nested=True, run_name=f"k={k}") as child:
                ckpt = Path(cfg.checkpoint_dir) / f"k{k}" if cfg.checkpoint_dir else None
                result = retrain_blocks(cfg, k, child, run_id=child.run_id, checkpoint_dir=ckpt,
                                        source=copy.deepcopy(source))
                if not ranks.main:   # (the other ranks train every k with rank 0, and only that)
                    continue
                model_uri = publish(cfg, child, result, "retrain_blocks", f"-k{k}")
                report(f"retrain_blocks k={k}", child, result, model_uri)
            rows[k], children[k] = result.metrics, child.run_id
            parent.log_metrics({f"{name}_vs_k": v for name, v in result.metrics.items()}, step=k)
        if not ranks.main:
            return other_rank_result()
        baseline = source_baseline(cfg, source)
        parent.log_metrics({f"source_{name}": v for name, v in baseline.items()})
        parent.set_tags({"rtl.data": result.meta["data_spec"], "rtl.data_sha256": result.meta["data_sha256"],
                         "rtl.k_runs": ",".join(f"{k}:{r}" for k, r in children.items())})
        with tempfile.TemporaryDirectory(prefix="rtl-plot-") as tmp:
            png = plot_robustness_vs_k(rows, baseline, Path(tmp) / "robustness_vs_k.png",
                                       title=f"{cfg.source_model} on {result.meta['data_spec']}")
            parent.log_artifact(png)
        print_table(f"retrain_blocks — parent run {parent.run_id}",
                    {f"k={k} {name}": v for k, m in rows.items() for name, v in m.items()}
                    | {f"source {name}": v for name, v in baseline.items()})
        return {"run_id": parent.run_id, "children": children, "metrics": rows, "baseline": baseline}
