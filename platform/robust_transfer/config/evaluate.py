"""`evaluate`: the configuration of a robustness evaluation, and the suites it names.

A suite is a preset: the attacks it runs (in cascade order, clean first), the attack budget they run
with, and whether the gradient-masking diagnostics run (and `<suite>_worst_acc`, or the reference's `aa_acc`, is
reported) — one entry per suite in `SUITES`, the shape of Croce & Hein's `AutoAttack.set_version`. The table lives here, beside the
config that validates a suite name, because `config/` may import the attacks' grammar and budget
(`attacks/specs.py`, `attacks/budget.py`) but not the evaluation library; `robust_transfer.evaluation`
runs what it says (docs/evaluation.md says what each suite is comparable with).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

from ..attacks.budget import BUDGET_KNOBS, AttackBudget
from ..attacks.specs import AttackSpec, check_attack_norm, parse_attacks
from ..norms import check_norm, check_threat_numbers
from ..device import check_device
from ..errors import ConfigError, one_of
from .common import MODEL_URI_HELP, _check_positive_int, check_experiment, check_seed


@dataclass(frozen=True)
class SuitePreset:
    attacks: tuple[str, ...]     # attack names (attacks/specs.py), in cascade order
    budget: AttackBudget         # how hard APGD, Square and DeepFool try
    diagnosed: bool              # gradient-masking diagnostics run, and an AutoAttack(-like) number is reported

    def specs(self, override: str | tuple = "") -> list[AttackSpec]:
        """The attack specs this suite runs, or those of an `attacks=` override (canonical, clean first)."""
        return parse_attacks(override or self.attacks)

    def budget_with(self, **overrides) -> AttackBudget:
        """The suite's budget with every non-None knob overridden (ConfigError for a bad or unknown knob)."""
        return self.budget.with_overrides(**overrides)


_CPU_BUDGET = AttackBudget(apgd_iters=50, apgd_targets=3, square_queries=300, deepfool_iters=50)
_AUTOATTACK_BUDGET = AttackBudget(apgd_iters=100, apgd_targets=9, square_queries=5000, deepfool_iters=100)
# `standard` is sized for CPU runs: ≤ 10× the cost of `quick` on a robust model (issue 15; docs/evaluation.md says
# why 300 Square queries); `full` has AutoAttack's budget (APGD 100 iterations, 9 target classes, Square 5000
# queries). Attacks cheapest-and-strongest first; Square (black box) last, after every white-box attack.
SUITES: dict[str, SuitePreset] = {
    # clean, PGD-20 (CE), CW-20 (margin); the worst case per example (`worst_acc`)
    "quick": SuitePreset(("clean", "pgd20", "cw20"), _CPU_BUDGET, diagnosed=False),
    # quick + APGD-CE + APGD-T (3 target classes) + Square (300 queries): AutoAttack's pipeline without FAB-T at
    # a CPU budget, with Croce & Hein's own APGD and Square code; `standard_worst_acc` = the worst case (never `aa_acc`)
    "standard": SuitePreset(("clean", "pgd20", "cw20", "apgd-ce", "apgd-t", "square"), _CPU_BUDGET, diagnosed=True),
    # APGD-CE, APGD-DLR (+ targeted on 9 classes), DeepFool in FAB's place (ART), Square at AutoAttack's budget,
    # plus PGD-100 with 5 restarts
    "full": SuitePreset(("clean", "pgd20", "cw20", "apgd-ce", "apgd-dlr", "deepfool", "square", "pgd100r5"),
                        _AUTOATTACK_BUDGET, diagnosed=True),
    # the reference: Croce & Hein's AutoAttack (standard) from pyautoattack; its budget is fixed inside it
    "autoattack": SuitePreset(("clean", "autoattack"), _AUTOATTACK_BUDGET, diagnosed=True),
}
SPLITS = ("test", "train", "val")


def suite_preset(suite: str) -> SuitePreset:
    """The preset of a suite name (ConfigError naming the suites otherwise)."""
    if suite not in SUITES:
        raise one_of("suite", suite, tuple(SUITES))
    return SUITES[suite]


@dataclass
class EvaluateConfig:
    """`evaluate`: robustness of a model on a test split (or its validation split: split=val), under the
    model's own threat (recorded at training or import) unless norm / epsilon / step_size are given."""

    ENTRY_POINT = "evaluate"
    SPLITS: ClassVar[tuple[str, ...]] = SPLITS

    epsilon: float | None = None    # radius: linf on the 0-255 scale, l2 the l2 norm in [0,1] pixels (default: the
                                    # model's own when the norm is its own, else linf 8, l2 0.5)
    step_size: float | None = None  # PGD step size on the same scale (default: the model's own, else linf 2,
                                    # l2 epsilon/4)
    norm: str | None = None         # the threat model's norm, linf or l2 (default: the model's own, else linf)

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
        for name in ("download", "progress", "diagnostics", "resume", "cascade"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be true or false")
        preset = suite_preset(self.suite)
        preset.specs(self.attacks)
        preset.budget_with(**self.budget_overrides())

    def check_threat(self):
        """The given numbers on their norm's scale (without a norm: the model's, known once it is loaded; checked
        here on the range both norms allow, ℓ∞'s (0, 255], and again on the model's when the threat is built),
        and no ℓ∞-only attack under ℓ2."""
        if self.norm is not None:
            check_norm(self.norm)
        norm = self.norm or "linf"
        check_threat_numbers(norm, 1.0 if self.epsilon is None else self.epsilon,
                             1.0 if self.step_size is None else self.step_size)
        if self.norm is not None and self.norm != "linf":
            for spec in suite_preset(self.suite).specs(self.attacks):
                check_attack_norm(spec, self.norm)

    def budget_overrides(self) -> dict:
        """The budget knobs as given (None: the suite's)."""
        return {k: getattr(self, k) for k in BUDGET_KNOBS}

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "") and k not in ("progress", "data_dir")}
