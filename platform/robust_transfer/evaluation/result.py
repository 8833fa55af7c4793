"""What an evaluation returns: `EvalResult` (metrics and per-example correctness) inside `Evaluation`
(with the model's metadata, the data, the diagnostics and the budget), and the warning it raises."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..attacks.budget import AttackBudget
from ..data import ImageData
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
