"""What an evaluation returns: `EvalResult` (metrics and per-example correctness) inside `Evaluation`
(with the model's metadata, the data, the diagnostics and the budget), and the warning it raises.

Per-example correctness, as `evaluation/per_example.json` (`EvalResult.per_example_record`; written by the training
engine's test evaluation and by `rtl evaluate`, read by the claim engine: analysis/per_example.py):

    {"split": "test", "n_examples": n, "indices_sha256": "...", "indices": [int, ...], "cascade": bool,
     "correct": {"clean": [0/1, ...], "pgd20": [...], "aa": [...], "worst": [...], ...}}

One key per logged accuracy (`expr.per_example_key`: the metric without `_acc`, an ℓ2 one's `_l2` kept), each the
0/1 vector whose mean IS that metric, over the evaluated examples in index order. `indices` are the evaluated
positions of the split: `inputs.select_examples(len(split), n_examples, seed)`, a sorted seeded prefix of one
permutation, the one selection every evaluation runs through — so an `rtl evaluate` on n examples of a split and a
training run's final evaluation on the same n, split and seed (its `eval_seed`) log equal `indices_sha256`, and a
claim pairs their numbers.

What a key's 1 means:
- `clean`: classified correctly; `<attack>` with `cascade=false`: correct on the clean image and not fooled by that
  attack (it ran on every clean-correct example; a clean-wrong one is 0);
- `<attack>` under the cascade (`cascade=true`, the default of `rtl evaluate`): correct after this attack AND every
  earlier one. An attack ran only on the examples the earlier ones left standing; the others were already broken
  and count 0 here too. This is not the attack's own per-example correctness (which is unknown where it did not
  run), but exactly the per-example form of the cascade's logged per-attack number (the one `rtl.cascade_metrics`
  and the report's † mark): a claim on that number is paired on what the number counts. The first attack of a
  cascade ran on every clean-correct example, so its vector is its own;
- `worst` (and a substitute suite's `<suite>_worst`): correct under every attack run (clean included), in either
  mode — an example an attack did not reach because an earlier one broke it is 0, as it is in the worst case;
- `aa`: the reference AutoAttack's final robust flag per example, read from the flags it returns (its state file's
  `robust_flags`: reference.py), never from a rerun; `aa_<sub-attack>` (`aa_apgd_ce`, ...): its own cascade's
  flags after that sub-attack (AutoAttack is a cascade whatever our `cascade` says).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..attacks.budget import AttackBudget
from ..data import ImageData
from ..expr import per_example_key
from .diagnostics import Diagnostics


class MaskingWarning(UserWarning):
    """An evaluation found signs of gradient masking (see Evaluation.diagnostics)."""


@dataclass
class EvalResult:
    metrics: dict[str, float]            # f"{attack}_acc" and "worst_acc" (+ aa_acc, diag_*), fractions in [0,1]
    correct: dict[str, torch.Tensor]     # per attack name: bool [n_examples], in index order
    n_examples: int
    indices_sha256: str                  # digests.indices_sha256 of the evaluated positions
    seconds: float
    images_per_s: float                  # examples fully evaluated (every attack) per second
    params: dict = field(default_factory=dict)   # what was run: attacks, threat model, seed, ...
    indices: torch.Tensor | None = None          # the evaluated positions of the split (inputs.select_examples)
    # metric name → bool [n_examples]: the examples each logged accuracy counts (its mean is the metric)
    per_example: dict[str, torch.Tensor] = field(default_factory=dict)

    def per_example_record(self, split: str = "test", metrics=None) -> dict:
        """`evaluation/per_example.json` (module doc) of the accuracies in `metrics` (names; default: all)."""
        if self.indices is None:
            raise ValueError("this result has no evaluated indices: it cannot say which examples it counted")
        names = [m for m in (self.per_example if metrics is None else metrics) if m in self.per_example]
        correct = {}
        for name in names:
            key = per_example_key(name)
            if key is not None:
                correct[key] = [int(c) for c in self.per_example[name].tolist()]
        return {"split": split, "n_examples": self.n_examples, "indices_sha256": self.indices_sha256,
                "indices": [int(i) for i in self.indices.tolist()], "cascade": bool(self.params.get("cascade", True)),
                "correct": correct}


@dataclass
class Evaluation:
    result: EvalResult
    meta: dict
    data: ImageData | None
    suite: str = "quick"
    diagnostics: Diagnostics | None = None     # None when the suite runs none (quick)
    budget: AttackBudget | None = None
    extra: dict = field(default_factory=dict)  # resumed batches, skipped attacks, per-attack seconds

    @property
    def masking_flags(self) -> list[str]:
        return self.diagnostics.flag_names if self.diagnostics else []
