"""Per-example correctness of a run (`evaluation/per_example.json`): what lets a claim compare two runs PAIRED.

Training, transfer and evaluate runs log, beside their accuracies,

    {"split": "test", "n_examples": n, "indices_sha256": "...", "indices": [int, ...],
     "correct": {"clean": [0/1, ...], "pgd20": [0/1, ...]}}

(written by evaluation.EvalResult.per_example_record, whose module says what each 1 means). A metric's key is
`expr.per_example_key`: the metric name without `_acc` (`pgd20_acc` → `pgd20`, `aa_acc` → `aa`, `worst_acc` →
`worst`), an ℓ2 one's `_l2` kept (`pgd20_acc_l2` → `pgd20_l2`); files written before ℓ2 keys existed have none, so
their ℓ2 numbers stay unpaired, as they were. Two runs whose `indices_sha256` are equal and whose dataset (the
`rtl.data` tag) is the same were evaluated on the same examples, in the same order, so the engine
(analysis/claim_verdicts.py, `example_id`) can resample the examples once for both sides. A file that is absent,
malformed, or disagrees with the run's logged metric is not used: the claim then falls back to the unpaired rule,
and the warning says why.

`analyze` runs log one row per image (analysis/analyze.py): `gradients.csv` (`grad_edge_corr` per model key: the
metric `grad_edge_corr_<key>`) and `feature_distance.csv` (`distance_to_augmented`, `distance_to_partner`,
`feature_norm`: the metrics `feature_distance_mean`, `feature_distance_between_images_mean`, `feature_norm_mean`).
Their images are identified by `image_index` the same way, so Fig. 5 and Fig. 7's claims are paired too.
"""
from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import numpy as np

from ..digests import indices_sha256
from ..expr import per_example_key, per_example_metric

ARTIFACT = "evaluation/per_example.json"
_TOLERANCE = 1e-6     # a logged accuracy and the mean of its per-example correctness must agree
_CSV_TOLERANCE = 1e-4  # relative: the per-image CSVs hold 6 significant digits
# metric → (artifact, column, the column naming the model, or None); `grad_edge_corr_<key>`: rows whose metric_key is key
ANALYSIS_COLUMNS = {"feature_distance_mean": ("feature_distance.csv", "distance_to_augmented"),
                    "feature_distance_between_images_mean": ("feature_distance.csv", "distance_to_partner"),
                    "feature_norm_mean": ("feature_distance.csv", "feature_norm")}
_GRADIENTS = ("gradients.csv", "grad_edge_corr", "grad_edge_corr_")


def _download(run_id: str, artifact: str = ARTIFACT) -> str | None:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=tmp))
            return path.read_text(encoding="utf-8")
        except Exception:   # MlflowException / OSError / UnicodeError: no usable file, the unpaired rule applies
            return None


def parse_rows(text: str, column: str, metric: str, logged, key: str | None = None) -> tuple[dict | None, str | None]:
    """One metric's per-image values from an analysis CSV: ({"sha", "values"}, None) or (None, why not)."""
    try:
        rows = [r for r in csv.DictReader(text.splitlines()) if key is None or r.get("metric_key") == key]
        idx = [int(r["image_index"]) for r in rows]
        values = np.asarray([float(r[column]) for r in rows], dtype=float)
    except (KeyError, TypeError, ValueError):
        return None, f"no {column} per image"
    if not len(values) or not np.all(np.isfinite(values)):
        return None, f"no finite {column} per image"
    if logged is not None and abs(values.mean() - float(logged)) > _CSV_TOLERANCE * max(1.0, abs(float(logged))):
        return None, f"mean of {column} = {values.mean():.6g} but the run logged {metric}={float(logged):.6g}"
    return {"sha": indices_sha256(idx), "values": values}, None


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
        metric = per_example_metric(attack)
        logged = metrics.get(metric)
        if logged is not None and abs(float(vec.mean()) - float(logged)) > _TOLERANCE:
            return None, f"mean of correct[{attack!r}] = {vec.mean():.4f} but the run logged {metric}={logged:.4f}"
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
            text = _download(rid)
            try:
                data = json.loads(text) if text is not None else None
            except ValueError:
                data = "not JSON"
            parsed, why = parse(data, run["metrics"]) if data is not None else (None, None)
            if why:
                self._warn(f"run {rid}: {ARTIFACT} not used ({why}); claims on it use the unpaired rule")
            self._cache[rid] = parsed
        return self._cache[rid]

    def _analysis(self, run: dict, metric: str) -> tuple[str, np.ndarray] | None:
        if metric.startswith(_GRADIENTS[2]):
            artifact, column, key = _GRADIENTS[0], _GRADIENTS[1], metric[len(_GRADIENTS[2]):]
        elif metric in ANALYSIS_COLUMNS:
            (artifact, column), key = ANALYSIS_COLUMNS[metric], None
        else:
            return None
        cache_key = f"{run['run_id']}/{artifact}"
        if cache_key not in self._cache:
            self._cache[cache_key] = _download(run["run_id"], artifact)
        text = self._cache[cache_key]
        if text is None:
            return None
        got, why = parse_rows(text, column, metric, run["metrics"].get(metric), key)
        if why:
            self._warn(f"run {run['run_id']}: {artifact} not used for {metric} ({why}); claims on it use the "
                       "unpaired rule")
            return None
        return got["sha"], got["values"]

    def values(self, run: dict, metric: str) -> tuple[str, np.ndarray] | None:
        """(indices_sha256, per-example values) of a TEST metric of one run: an accuracy → correct[its key]
        (`per_example_key`), `mean` → (clean + pgd20) / 2, an analysis metric → its per-image column; None when the
        run has no usable file or not this metric."""
        if metric.startswith(("val_", "train_")):
            return None
        key = per_example_key(metric)
        if key is None and metric != "mean":
            return self._analysis(run, metric)
        got = self.of(run)
        if got is None:
            return None
        if key is None:       # mean
            parts = [got["correct"].get(a) for a in ("clean", "pgd20")]
            return None if any(p is None for p in parts) else (got["sha"], (parts[0] + parts[1]) / 2)
        if key not in got["correct"]:
            return None
        return got["sha"], got["correct"][key]
