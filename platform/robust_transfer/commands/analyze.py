"""`analyze`: input-gradient images (Fig. 5) or feature distances (Fig. 7) of models (analysis/analyze.py)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..config import AnalyzeConfig
from .common import print_table
from .registry import entry_point


@entry_point(AnalyzeConfig, help="Input-gradient images of models (what=gradients, Fig. 5) or feature distances "
                                 "between images and their augmented copies (what=feature-distance, Fig. 7).")
def run_analyze(cfg: AnalyzeConfig) -> dict:
    """One MLflow run (`rtl.strategy=analyze`); FAILED if anything raises."""
    from ..tracking import tracked_run

    tags = {"rtl.model": cfg.model, "rtl.what": cfg.what}
    with tracked_run("analyze", cfg.to_params(), tags, experiment=cfg.experiment) as log:
        with tempfile.TemporaryDirectory(prefix="rtl-analyze-") as tmp:
            from ..analysis.analyze import analyze_feature_distance, analyze_gradients

            fn = analyze_gradients if cfg.what == "gradients" else analyze_feature_distance
            metrics = fn(cfg, log, Path(tmp))
        print_table(f"analyze {cfg.what} of {cfg.model} — run {log.run_id}", {k: f"{v:.4g}" for k, v in metrics.items()})
        return {"run_id": log.run_id, "metrics": metrics}
