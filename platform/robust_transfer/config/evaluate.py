"""`evaluate`: the configuration of a robustness evaluation."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

from ..device import check_device
from ..errors import ConfigError, one_of
from .common import MODEL_URI_HELP, ThreatConfig, _check_positive_int, check_experiment, check_seed


@dataclass
class EvaluateConfig(ThreatConfig):
    """`evaluate`: robustness of a model on a test split (or its validation split: split=val)."""

    SPLITS: ClassVar[tuple[str, ...]] = ("test", "train", "val")

    model: str = ""
    dataset: str = ""              # default: the dataset recorded in the model's metadata
    suite: str = "quick"
    attacks: str = ""              # comma list overriding the suite's attacks, e.g. clean,pgd50,cw20
    n_examples: int = 1000
    batch_size: int = 256
    seed: int = 0
    split: str = "test"             # which split; val: the validation split the training carved from its train split
    device: str = "auto"
    experiment: str = "robust-transfer"
    data_dir: str | None = None
    download: bool = False           # fetch cifar10/cifar100/tiny-imagenet into the data root if missing
    progress: bool = True
    diagnostics: bool = True         # gradient-masking checks with suite=standard|full (false: skip them)
    resume: bool = True              # reuse per-attack results stored under cache_dir()/eval/ (interrupted runs)
    cascade: bool = True             # each attack only on what earlier attacks left correct (false: on every example)
    apgd_iters: int | None = None    # budget knobs; default: the suite's (evaluation.SUITE_BUDGETS)
    apgd_restarts: int | None = None
    apgd_targets: int | None = None  # target classes of targeted APGD-DLR (0: untargeted only)
    square_queries: int | None = None
    square_restarts: int | None = None
    deepfool_iters: int | None = None

    def __post_init__(self):
        self.check_threat()
        if not self.model:
            raise ConfigError(f"model is required: {MODEL_URI_HELP}")
        _check_positive_int("n_examples", self.n_examples, 10**7)
        _check_positive_int("batch_size", self.batch_size, 65_536)
        if self.split not in self.SPLITS:
            raise one_of("split", self.split, self.SPLITS)
        check_seed("seed", self.seed)
        check_experiment(self.experiment)
        check_device(self.device)
        from ..evaluation import BUDGET_KNOBS, suite_attacks, suite_budget

        suite_attacks(self.suite, self.attacks)
        suite_budget(self.suite, **{k: getattr(self, k) for k in BUDGET_KNOBS})

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "") and k not in ("progress", "data_dir")}

