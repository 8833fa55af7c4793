"""`rtl import` / MLproject `import_model`: a published checkpoint becomes our checkpoint in one tracked
run and a registered model (docs/importing.md).

    rtl import --file resnet50_l2_eps3.ckpt --format robustness --arch resnet50 --norm l2 --epsilon 3 \
        --register-as imagenet-resnet50-l2-eps3
"""
from __future__ import annotations

from ..config.import_model import ImportConfig
from .common import print_table
from .registry import entry_point


@entry_point(ImportConfig, help="Convert a published checkpoint (torchvision, robustness, RobustBench, or a state "
                                "dict + YAML key map) into ours and register it (docs/importing.md).")
def run_import(cfg: ImportConfig) -> dict:
    from ..importers import import_and_register

    out = import_and_register(cfg)
    meta = out["meta"]
    rows = {"arch": meta["arch"], "num_classes": meta["num_classes"], "input_size": meta["input_size"],
            "sha256": meta["lineage"]["sha256"][:16], "model": out["model_uri"]}
    print_table(f"import ({cfg.format}) — run {out['run_id']}", rows)
    return out
