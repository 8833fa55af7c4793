"""`transfer`: frozen source features and a new linear or MLP head (strategies/transfer.py)."""
from __future__ import annotations

from ..config import TransferConfig
from .common import run_source_strategy
from .registry import entry_point


@entry_point(TransferConfig, help="Frozen source features + a new linear/MLP head (Eq. 2, Tables 2-3, Fig. 3-4).")
def run_transfer(cfg: TransferConfig) -> dict:
    from ..strategies.transfer import transfer

    return run_source_strategy("transfer", cfg, transfer, f"transfer ({cfg.head} head) from {cfg.source_model}")
