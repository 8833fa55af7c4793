"""What a training entry point measures, and on which data (issue 13; docs/architecture.md "Conventions").

- Choices read VALIDATION metrics: per epoch, `val_clean_acc` and `val_pgd10_acc` (PGD-10, cheap) on up
  to `VAL_EXAMPLES` images of the validation split carved from the training split
  (`data.validation.carve_validation`); the last epoch's values are also in the result's metrics (so a
  search objective, a constraint or a promotion policy can read them).
- The TEST metrics (`clean_acc`, `pgd{eval_steps}_acc`) are computed once, at the end, and reported.

Both run through the engine `rtl evaluate` runs (`evaluation.evaluate_tensors`, suite quick) at the
EVALUATION threat (`eval_norm`, `eval_epsilon`, `eval_step_size`), so `<attack>_acc` means the same everywhere
(an ℓ2 evaluation's names carry `_l2`: `pgd20_acc_l2`, `val_pgd10_acc_l2`; attacks.threat.metric_suffix):
correct on the clean image and not fooled by the attack; and a strategy's test numbers equal
`rtl evaluate`'s on the same model, examples (`n_examples`, `seed` = the config's `eval_seed`) and batch size.
Both are seeded by `eval_seed` (the same for every training seed by default, like `val_seed`), so seeded runs
are compared on the same examples; the test evaluation's per-example correctness is logged as the run
artifact `evaluation/per_example.json` (`log_per_example`).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..attacks import ThreatModel
from ..data import ImageData
from ..data.validation import Split, carve_validation
from ..reporting import RunLogger

VAL_EXAMPLES = 256       # per-epoch validation check: at most this many validation images (cost of PGD-10)
VAL_ATTACK = "pgd10"
EVAL_BATCH_SIZE = 256    # as `rtl evaluate`'s default: the same batches, hence the same random starts


def eval_threat(cfg) -> ThreatModel:
    """The threat every reported `<attack>_acc` is measured at (default ℓ∞ 8/255, step 2/255)."""
    return ThreatModel(cfg.eval_epsilon, cfg.eval_step_size, cfg.eval_norm or "linf")


def split_training(data: ImageData, cfg) -> Split:
    """The config's validation split of the training split `data` (seeded by `val_seed`, the same for every
    training seed by default), then `per_class` of the rest (seeded by `seed`, as before the split existed)."""
    return carve_validation(data, val_fraction=cfg.val_fraction, val_per_class=cfg.val_per_class, seed=cfg.val_seed,
                            per_class=cfg.per_class, per_class_seed=cfg.seed)


def record_split(logger: RunLogger, split: Split) -> None:
    """Sizes and seed as params, SHA-256 of the validation and training indices as tags."""
    logger.log_params(split.params())
    logger.set_tags(split.tags())


def accuracies(model, data: ImageData, threat: ThreatModel, attacks: tuple[str, ...], *, n_examples: int | None,
               seed: int, device, progress: bool = False):
    """`rtl evaluate`'s quick engine on in-memory data (no result store): its EvalResult, whose `indices` are the
    evaluated examples (`evaluation.select_examples`, which `rtl evaluate` runs through too). The strategies' one
    door into the evaluation library (so its imports are re-pointed in one place)."""
    from ..evaluation import evaluate_tensors

    n = None if n_examples is None else min(n_examples, len(data))
    ev = evaluate_tensors(model, data.images, data.labels, suite="quick", attacks=",".join(attacks),
                          epsilon=threat.epsilon, step_size=threat.step_size, norm=threat.norm, n_examples=n,
                          seed=seed,
                          batch_size=EVAL_BATCH_SIZE, device=device, progress=progress, diagnostics=False,
                          resume=False)
    return ev.result


def val_metrics(model, val: ImageData, threat: ThreatModel, *, seed: int, device) -> dict[str, float]:
    """The per-epoch validation check: `val_clean_acc`, `val_pgd10_acc` (`seed`: the config's eval_seed, which
    picks the checked validation images and the attack's random starts)."""
    res = accuracies(model, val, threat, ("clean", VAL_ATTACK), n_examples=VAL_EXAMPLES, seed=seed, device=device)
    name = f"{VAL_ATTACK}_acc{threat.suffix}"
    return {"val_clean_acc": res.metrics["clean_acc"], f"val_{name}": res.metrics[name]}


@dataclass
class Reported:
    """The final test evaluation: its metrics, where they were measured, and per-example correctness."""

    metrics: dict[str, float]       # clean_acc, pgd{k}_acc
    where: dict                     # n_examples, indices_sha256 (into the checkpoint's `evaluation`)
    per_example: dict               # the `evaluation/per_example.json` artifact (issue 24 reads it)


def reported_metrics(model, test: ImageData, threat: ThreatModel, *, eval_steps: int, n_examples: int, seed: int,
                     device, progress: bool) -> Reported:
    """The reported numbers: clean and PGD-`eval_steps` accuracy on the test split, once, at the end (`seed`: the
    config's eval_seed, which picks the test examples and the attacks' random starts)."""
    res = accuracies(model, test, threat, ("clean", f"pgd{eval_steps}"), n_examples=n_examples, seed=seed,
                     device=device, progress=progress)
    metrics = {k: v for k, v in res.metrics.items() if k != f"worst_acc{threat.suffix}"}
    per_example = res.per_example_record("test", metrics)   # keys as the metric names without _acc (ℓ2: `_l2`)
    return Reported(metrics, {"n_examples": res.n_examples, "indices_sha256": res.indices_sha256}, per_example)


def log_per_example(logger: RunLogger, per_example: dict) -> None:
    """`per_example` as the run artifact `evaluation/per_example.json` (through a temporary file)."""
    with tempfile.TemporaryDirectory(prefix="rtl-eval-") as tmp:
        path = Path(tmp) / "per_example.json"
        path.write_text(json.dumps(per_example))
        logger.log_artifact(path, "evaluation")
