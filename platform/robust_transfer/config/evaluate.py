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

    ENTRY_POINT = "evaluate"
    SPLITS: ClassVar[tuple[str, ...]] = ("test", "train", "val")

    model: str = ""                # the model: a checkpoint path, runs:/<id>/..., models:/<name>/<version> or
                                   # models:/<name>@<alias>
    dataset: str = ""              # the data, a dataset spec (default: the one recorded in the model's metadata)
    suite: str = "quick"           # attack suite: quick (PGD-20, CW-20), standard (+ APGD-CE/DLR, Square), full
                                   # (AutoAttack-style) or autoattack (the reference AutoAttack)
    attacks: str = ""              # comma list overriding the suite's attacks, e.g. clean,pgd50,cw20
    n_examples: int = 1000          # examples evaluated (the first n of a seeded order of the split)
    batch_size: int = 256           # examples per attack batch
    seed: int = 0                   # random seed: which examples, and the attacks' random starts
    split: str = "test"             # the split evaluated; val: the validation split its training carved from train
    device: str = "auto"            # where to run (auto: cuda when available)
    experiment: str = "robust-transfer"  # the MLflow experiment of the run
    data_dir: str | None = None     # where datasets are read and unpacked (default: $RTL_DATA_DIR, else
                                    # ../shared/data when it exists, else ~/.cache/robust-transfer/data)
    download: bool = False           # fetch cifar10/cifar100/tiny-imagenet into the data root if missing
    progress: bool = True           # show progress bars
    diagnostics: bool = True         # gradient-masking checks with suite=standard|full (false: skip them)
    resume: bool = True              # an interrupted evaluation continues from the attacks it finished (kept in
                                     # the cache folder, $RTL_CACHE_DIR)
    cascade: bool = True             # each attack only on what earlier attacks left correct (false: on every example)
    apgd_iters: int | None = None    # APGD iterations per restart (default: the suite's)
    apgd_restarts: int | None = None  # APGD restarts (default: the suite's)
    apgd_targets: int | None = None  # target classes of targeted APGD-DLR, 0: untargeted only (default: the suite's)
    square_queries: int | None = None  # Square attack queries (default: the suite's)
    square_restarts: int | None = None  # Square attack restarts (default: the suite's)
    deepfool_iters: int | None = None  # DeepFool iterations (default: the suite's)

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

