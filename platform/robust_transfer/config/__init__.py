"""Typed configuration, validated once at the boundary: one dataclass per entry point.

`cli.py` builds its argparse flags from the fields (`lambda_d` → `--lambda-d`), MLproject passes the
same names in snake_case, search spaces and suite plans build the same objects (`config.coerce` turns
their texts into field values), and every `__post_init__` checks ranges, so a bad value fails before
any data is read or run is started. `CONFIGS` names every entry point's class (rtl spelling).
"""
from __future__ import annotations

from dataclasses import field, fields

from .analysis import (ANALYSES, ANALYZE_DEFAULT_N_IMAGES, ANALYZE_MAX_GRID_IMAGES, ANALYZE_MAX_MODELS,
                       REPORT_SUFFIXES, SUITE_REUSE, AnalyzeConfig, ReportConfig, SuiteConfig)
from .common import CHANNELS_LAST, PRECISIONS, SCHEDULES, CommonConfig, EvalThreatConfig, ThreatConfig, ValidationConfig, milestone_fractions
from .evaluate import EvaluateConfig
from .search import SEARCH_BACKENDS, PromoteConfig, SearchConfig, parse_resources
from .train import TRAIN_MODES, TrainConfig
from .transfer import (LWF_DISTANCES, LWF_TEACHERS, FinetuneAdvConfig, LwfConfig, RetrainBlocksConfig, SourceConfig,
                       TransferConfig, parse_k_list)

# entry point (rtl spelling; MLproject writes `-` as `_`) → its config class, in MLproject's order
CONFIGS = {
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "retrain-blocks": RetrainBlocksConfig,
    "transfer": TransferConfig,
    "finetune-adv": FinetuneAdvConfig,
    "lwf": LwfConfig,
    "search": SearchConfig,
    "promote": PromoteConfig,
    "analyze": AnalyzeConfig,
    "report": ReportConfig,
    "suite": SuiteConfig,
}


def canonical_entry_point(name) -> str | None:
    """`finetune_adv` (MLproject spelling) or `finetune-adv` (rtl spelling) → the CONFIGS key; None if unknown."""
    if not isinstance(name, str):
        return None
    for cand in (name, name.replace("_", "-"), name.replace("-", "_")):
        if cand in CONFIGS:
            return cand
    return None


def config_fields(cls) -> list:
    return [f for f in fields(cls)]


__all__ = ["CONFIGS", "canonical_entry_point", "config_fields", "field",
           "CommonConfig", "ThreatConfig", "EvalThreatConfig", "ValidationConfig", "SourceConfig", "TrainConfig", "EvaluateConfig", "RetrainBlocksConfig",
           "TransferConfig", "FinetuneAdvConfig", "LwfConfig", "SearchConfig", "PromoteConfig", "AnalyzeConfig",
           "ReportConfig", "SuiteConfig", "TRAIN_MODES", "SCHEDULES", "PRECISIONS", "CHANNELS_LAST", "LWF_DISTANCES",
           "LWF_TEACHERS", "SEARCH_BACKENDS", "ANALYSES", "ANALYZE_DEFAULT_N_IMAGES", "ANALYZE_MAX_GRID_IMAGES",
           "ANALYZE_MAX_MODELS", "REPORT_SUFFIXES", "SUITE_REUSE", "milestone_fractions", "parse_k_list",
           "parse_resources"]
