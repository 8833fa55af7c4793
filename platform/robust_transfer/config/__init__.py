"""Typed configuration, validated once at the boundary: one dataclass per entry point.

`cli.py` builds its argparse flags from the fields (`lambda_d` → `--lambda-d`), MLproject passes the
same names in snake_case, search spaces and suite plans build the same objects (`config.coerce` turns
their texts into field values), and every `__post_init__` checks ranges, so a bad value fails before
any data is read or run is started. A field's trailing `# comment` is its documentation (`rtl --help`).

`CONFIGS` (entry point → config class) is derived from the classes that name an entry point
(`ENTRY_POINT = "train"`; config/entry_points.py). Importing config/ stays light (no torch, no mlflow):
`rtl --help` reads it.
"""
from __future__ import annotations

from dataclasses import field

from .analysis import (ANALYSES, ANALYZE_DEFAULT_N_IMAGES, ANALYZE_MAX_GRID_IMAGES, ANALYZE_MAX_MODELS,
                       REPORT_SUFFIXES, SUITE_REUSE, AnalyzeConfig, ReportConfig, SuiteConfig)
from .choices import field_choices
from .common import (CHANNELS_LAST, PRECISIONS, SCHEDULES, CommonConfig, EvalThreatConfig, ThreatConfig,
                     ValidationConfig, milestone_fractions)
from .entry_points import CONFIGS, canonical_entry_point, mlproject_name, spellings
from .evaluate import EvaluateConfig
from .import_model import ImportConfig
from .search import SEARCH_BACKENDS, PromoteConfig, SearchConfig, parse_resources
from .train import TRAIN_MODES, TrainConfig
from .transfer import (LWF_DISTANCES, LWF_TEACHERS, FinetuneAdvConfig, LwfConfig, RetrainBlocksConfig, SourceConfig,
                       TransferConfig, parse_k_list)


__all__ = ["CONFIGS", "canonical_entry_point", "mlproject_name", "spellings", "field_choices", "field",
           "CommonConfig", "ThreatConfig", "EvalThreatConfig", "ValidationConfig", "SourceConfig", "TrainConfig",
           "EvaluateConfig", "RetrainBlocksConfig", "TransferConfig", "ImportConfig", "FinetuneAdvConfig", "LwfConfig",
           "SearchConfig", "PromoteConfig", "AnalyzeConfig", "ReportConfig", "SuiteConfig", "TRAIN_MODES", "SCHEDULES",
           "PRECISIONS", "CHANNELS_LAST", "LWF_DISTANCES", "LWF_TEACHERS", "SEARCH_BACKENDS", "ANALYSES",
           "ANALYZE_DEFAULT_N_IMAGES", "ANALYZE_MAX_GRID_IMAGES", "ANALYZE_MAX_MODELS", "REPORT_SUFFIXES",
           "SUITE_REUSE", "milestone_fractions", "parse_k_list", "parse_resources"]
