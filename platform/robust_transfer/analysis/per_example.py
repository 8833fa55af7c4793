"""Per-example correctness of a run (`evaluation/per_example.json`): what lets a claim compare two runs PAIRED.

Training, transfer and evaluate runs log, beside their accuracies,

    {"split": "test", "n_examples": n, "indices_sha256": "...", "indices": [int, ...],
     "correct": {"clean": [0/1, ...], "pgd20": [0/1, ...]}}

(attack names as in the metric names without `_acc`). Two runs whose `indices_sha256` are equal were evaluated on
the same examples, in the same order, so the engine (analysis/claim_verdicts.py) can resample the examples once for
both sides. A file that is absent, malformed, or disagrees with the run's logged metric is not used: the claim then
falls back to the unpaired rule, and the warning says why.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

ARTIFACT = "evaluation/per_example.json"
_TOLERANCE = 1e-6     # a logged accuracy and the mean of its per-example correctness must agree


def _download(run_id: str) -> dict | None:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ARTIFACT, dst_path=tmp))
            return json.loads(path.read_text(encoding="utf-8"))
        except Exception:   # MlflowException / OSError / ValueError: no usable file, the unpaired rule applies
            return None


def parse(data, metrics: dict[str, float]) -> tuple[dict | None, str | None]:
    """({"sha": ..., "n": n, "correct": {attack: np.ndarray of 0/1}}, None) or (None, why it cannot be used)."""
    if not isinstance(data, dict):
        return None, "not a JSON object"
    n, sha, idx, correct = data.get("n_examples"), data.get("indices_sha256"), data.get("indices"), data.get("correct")
    if data.get("split", "test") != "test":
        return None, f"split={data.get('split')!r} (the engine pairs test examples)"
    if not isinstance(n, int) or n < 1 or not isinstance(sha, str) or not sha or not isinstance(correct, dict):
        return None, "needs n_examples, indices_sha256 and correct"
    if not isinstance(idx, list) or len(idx) != n:
        return None, f"{len(idx) if isinstance(idx, list) else 'no'} indices for n_examples={n}"
    out = {}
    for attack, values in correct.items():
        if not isinstance(values, list) or len(values) != n or any(v not in (0, 1) for v in values):
            return None, f"correct[{attack!r}] is not {n} values of 0/1"
        vec = np.asarray(values, dtype=float)
        logged = metrics.get(f"{attack}_acc")
        if logged is not None and abs(float(vec.mean()) - float(logged)) > _TOLERANCE:
            return None, f"mean of correct[{attack!r}] = {vec.mean():.4f} but the run logged {attack}_acc={logged:.4f}"
        out[attack] = vec
    return {"sha": sha, "n": n, "correct": out}, None


class PerExample:
    """Reads (once per run) and checks the per-example file of runs; `values(run, metric)` is the vector a metric
    is the mean of, or None."""

    def __init__(self, warn=lambda msg: None):
        self._cache: dict[str, dict | None] = {}
        self._warn = warn

    def of(self, run: dict) -> dict | None:
        rid = run["run_id"]
        if rid not in self._cache:
            data = _download(rid)
            parsed, why = parse(data, run["metrics"]) if data is not None else (None, None)
            if why:
                self._warn(f"run {rid}: {ARTIFACT} not used ({why}); claims on it use the unpaired rule")
            self._cache[rid] = parsed
        return self._cache[rid]

    def values(self, run: dict, metric: str) -> tuple[str, np.ndarray] | None:
        """(indices_sha256, per-example values) of a TEST metric of one run: `<attack>_acc` → correct[<attack>],
        `mean` → (clean + pgd20) / 2; None when the run has no usable file or not this attack."""
        if metric.startswith(("val_", "train_")):
            return None
        got = self.of(run)
        if got is None:
            return None
        if metric == "mean":
            parts = [got["correct"].get(a) for a in ("clean", "pgd20")]
            return None if any(p is None for p in parts) else (got["sha"], (parts[0] + parts[1]) / 2)
        if not metric.endswith("_acc") or metric[:-len("_acc")] not in got["correct"]:
            return None
        return got["sha"], got["correct"][metric[:-len("_acc")]]
