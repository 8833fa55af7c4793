"""`finetune-adv`: end-to-end fine-tuning of the source on PGD-k examples (strategies/finetune_adv.py)."""
from __future__ import annotations

from ..config import FinetuneAdvConfig
from .common import run_source_strategy
from .registry import entry_point


@entry_point(FinetuneAdvConfig, help="End-to-end fine-tuning of the source on PGD-k examples of the target "
                                     "(Fig. 3 baseline).")
def run_finetune_adv(cfg: FinetuneAdvConfig) -> dict:
    from ..strategies.finetune_adv import finetune_adv

    return run_source_strategy("finetune_adv", cfg, finetune_adv,
                               f"finetune_adv (PGD-{cfg.steps}) from {cfg.source_model}")
