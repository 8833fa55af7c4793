"""`lwf`: fine-tuning without forgetting, CE + λ_d · d(z, z0) (strategies/lwf.py)."""
from __future__ import annotations

from ..config import LwfConfig
from .common import run_source_strategy
from .registry import entry_point


@entry_point(LwfConfig, help="Fine-tuning without forgetting: CE + lambda_d * d(z, z0) (Sec. 6, Tables 4-7).")
def run_lwf(cfg: LwfConfig) -> dict:
    from ..strategies.lwf import lwf

    return run_source_strategy("lwf", cfg, lwf, f"lwf (λ_d={cfg.lambda_d}, {cfg.distance}) from {cfg.source_model}")
