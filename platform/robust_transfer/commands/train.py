"""`train`: a source model from scratch (natural, PGD, free or FGSM-RS; strategies/train.py)."""
from __future__ import annotations

from ..config import TrainConfig
from ..errors import ModelError
from .common import other_rank_result, print_table, rank_run
from .registry import entry_point


@entry_point(TrainConfig, help="Train a source model: natural, pgd, free or fgsm-rs (Table 1).")
def run_train(cfg: TrainConfig) -> dict:
    from .. import distributed
    from ..strategies.engine import resume_state, resume_tags
    from ..strategies.train import checkpoint_dir, train
    from ..tracking.naming import name_run, run_name
    from ..tracking.registry import publish_model
    from ..tracking.runs import check_resume_run

    ranks = distributed.start(cfg.device, cfg.batch_size)   # under torchrun: join the job (one process: nothing)
    ckpt = checkpoint_dir(cfg)
    state = resume_state(cfg, ckpt) if cfg.resume else None
    if cfg.resume and state is None:   # (training from scratch instead would hide a wrong checkpoint_dir)
        raise ModelError(f"--resume: checkpoint {str(ckpt)!r} holds no saved training state to continue; "
                         "drop --resume to train anew (or give the checkpoint_dir of the interrupted run)")
    run_id = (check_resume_run(state["json"].get("run_id"), f"--resume: checkpoint {str(ckpt)!r}",
                               resume_tags("train", cfg, ckpt)) if state else None)
    tags = {"rtl.data": cfg.dataset, "rtl.mode": cfg.mode}
    with rank_run("train", cfg.to_params(), tags, experiment=cfg.experiment, run_id=run_id) as log:
        if not ranks.main:
            train(cfg, log, run_id=run_id)
            return other_rank_result()
        name_run(log.run_id, run_name("train", cfg.dataset, cfg.arch, cfg.mode))
        result = train(cfg, log, run_id=log.run_id)
        model_uri = publish_model(log, result, f"train-{cfg.mode}", cfg.register_as, cfg.dataset, cfg.arch)
        print_table(f"train ({cfg.mode}) — run {log.run_id}", result.metrics | {"checkpoint": str(result.checkpoint_dir)})
        return {"run_id": log.run_id, "metrics": result.metrics, "model_uri": model_uri,
                "checkpoint": str(result.checkpoint_dir)}
