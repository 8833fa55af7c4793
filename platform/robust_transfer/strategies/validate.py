"""What a training entry point measures, and on which data (issue 13; DESIGN.md "Conventions").

- Choices read VALIDATION metrics: per epoch, `val_clean_acc` and `val_pgd10_acc` (PGD-10, cheap) on up
  to `VAL_EXAMPLES` images of the validation split carved from the training split
  (`data.validation.carve_validation`); the last epoch's values are also in the result's metrics (so a
  search objective, a constraint or a promotion policy can read them).
- The TEST metrics (`clean_acc`, `pgd{eval_steps}_acc`) are computed once, at the end, and reported.

Both run through the engine `rtl evaluate` runs (`evaluation.evaluate_tensors`, suite quick) at the
EVALUATION threat (`eval_epsilon`, `eval_step_size`), so `<attack>_acc` means the same everywhere:
correct on the clean image and not fooled by the attack; and a strategy's test numbers equal
`rtl evaluate`'s on the same model, examples (`n_examples`, `seed`) and batch size.
"""
from __future__ import annotations

from ..attacks import ThreatModel
from ..data import ImageData
from ..data.validation import Split, carve_validation
from ..reporting import RunLogger

VAL_EXAMPLES = 256       # per-epoch validation check: at most this many validation images (cost of PGD-10)
VAL_ATTACK = "pgd10"
EVAL_BATCH_SIZE = 256    # as `rtl evaluate`'s default: the same batches, hence the same random starts


def eval_threat(cfg) -> ThreatModel:
    """The threat every reported `<attack>_acc` is measured at (default 8/255, step 2/255)."""
    return ThreatModel(cfg.eval_epsilon, cfg.eval_step_size)


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
    """`rtl evaluate`'s quick engine on in-memory data (no result store): an EvalResult."""
    from ..evaluation import evaluate_tensors

    n = None if n_examples is None else min(n_examples, len(data))
    ev = evaluate_tensors(model, data.images, data.labels, suite="quick", attacks=",".join(attacks),
                          epsilon=threat.epsilon, step_size=threat.step_size, n_examples=n, seed=seed,
                          batch_size=EVAL_BATCH_SIZE, device=device, progress=progress, diagnostics=False,
                          resume=False)
    return ev.result


def val_metrics(model, val: ImageData, threat: ThreatModel, *, seed: int, device) -> dict[str, float]:
    """The per-epoch validation check: `val_clean_acc`, `val_pgd10_acc`."""
    res = accuracies(model, val, threat, ("clean", VAL_ATTACK), n_examples=VAL_EXAMPLES, seed=seed, device=device)
    return {"val_clean_acc": res.metrics["clean_acc"], f"val_{VAL_ATTACK}_acc": res.metrics[f"{VAL_ATTACK}_acc"]}


def reported_metrics(model, test: ImageData, threat: ThreatModel, *, eval_steps: int, n_examples: int, seed: int,
                 device, progress: bool) -> tuple[dict[str, float], dict]:
    """The reported numbers: clean and PGD-`eval_steps` accuracy on the test split, once, at the end."""
    res = accuracies(model, test, threat, ("clean", f"pgd{eval_steps}"), n_examples=n_examples, seed=seed,
                     device=device, progress=progress)
    metrics = {k: v for k, v in res.metrics.items() if k != "worst_acc"}
    return metrics, {"n_examples": res.n_examples, "indices_sha256": res.indices_sha256}


class Validator:
    """The per-epoch check as a callable for `source.train_loop(validate=...)`; remembers the last result."""

    def __init__(self, model, val: ImageData, threat: ThreatModel, *, seed: int, device):
        self.model, self.val, self.threat, self.seed, self.device = model, val, threat, seed, device
        self.last: dict[str, float] = {}

    def __call__(self) -> dict[str, float]:
        self.last = val_metrics(self.model, self.val, self.threat, seed=self.seed, device=self.device)
        return self.last
