"""`retrain_blocks`, `transfer`, `finetune_adv`, `lwf`: the strategies that start from a source model.
Their paper defaults are written at the top of each strategy's file (`DEFAULTS`) and read from there."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError, check_range, one_of
from ..strategies.finetune_adv import DEFAULTS as FINETUNE_ADV
from ..strategies.lwf import DEFAULTS as LWF
from ..strategies.retrain_blocks import DEFAULTS as RETRAIN_BLOCKS
from ..strategies.transfer import DEFAULTS as TRANSFER
from .common import SCHEDULES, CommonConfig, EvalThreatConfig, ThreatConfig, ValidationConfig, _check_finite, _check_positive_int, milestone_fractions

LWF_DISTANCES = ("l2", "l1", "l2sq")
LWF_TEACHERS = ("offline", "online")

def parse_k_list(text) -> list[int]:
    """`k=2` → [2]; `k=1,2,3` or `k=1-3` → [1, 2, 3] (the number of deepest blocks to re-train)."""
    out: list[int] = []
    for token in str(text).replace(" ", "").split(","):
        m = re.match(r"^(\d+)(?:-(\d+))?$", token)
        if not m or int(m.group(1)) < 1 or int(m.group(2) or m.group(1)) < int(m.group(1)):
            raise ConfigError(f"k={text!r} must be whole numbers >= 1: one (k=2), a list (k=1,2,3) or a range (k=1-3)")
        out.extend(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
    return sorted(set(out))


@dataclass
class SourceConfig:
    """What every strategy that starts from a source model shares (mixed into the configs below)."""

    source_model: str = ""          # models:/name@alias, models:/name/version, runs:/... or a checkpoint path
    upsample: bool = False          # resize the data to the source's input size (paper: CIFAR 32 → 224)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "constant"
    milestones: str = ""            # step schedule: fractions of the budget where lr drops ×0.1
    augment: bool = False
    eval_steps: int = 20            # the final PGD-k evaluation (pgd20_acc)
    checkpoint_dir: str | None = None

    def check_source(self):
        if not self.source_model:
            raise ConfigError("source_model is required: a checkpoint path, runs:/<id>/..., "
                              "models:/<name>/<version> or models:/<name>@<alias>")
        if self.schedule not in SCHEDULES:
            raise one_of("schedule", self.schedule, SCHEDULES)
        milestone_fractions(self.milestones)
        check_range("momentum", _check_finite("momentum", self.momentum), 0.0, 1.0, high_inclusive=False)
        check_range("weight_decay", _check_finite("weight_decay", self.weight_decay), 0.0, 1.0)
        _check_positive_int("eval_steps", self.eval_steps, 10_000)

    def milestone_fractions(self) -> list[float]:
        return milestone_fractions(self.milestones)


@dataclass
class RetrainBlocksConfig(CommonConfig, EvalThreatConfig, ValidationConfig, SourceConfig):
    """`retrain_blocks` (Fig. 1): re-initialise the k deepest blocks, re-train them on natural examples."""

    lr: float = RETRAIN_BLOCKS["lr"]
    iterations: int | None = RETRAIN_BLOCKS["iterations"]   # wins over epochs; iterations= (empty): by epochs
    dataset: str = ""                 # default: the source's own dataset (the paper re-trains on it)
    k: str = "1"                      # one k, or a list/range (k=1,2,3): one nested run per k
    augment: bool = RETRAIN_BLOCKS["augment"]

    def __post_init__(self):
        CommonConfig.__post_init__(self)
        self.check_eval_threat()
        self.check_validation()
        self.check_source()
        parse_k_list(self.k)

    def k_values(self) -> list[int]:
        return parse_k_list(self.k)


@dataclass
class TransferConfig(CommonConfig, EvalThreatConfig, ValidationConfig, SourceConfig):
    """`transfer` (Eq. 2, Tables 2–3, Fig. 3–4): frozen source features, a new linear or MLP head."""

    epochs: int = TRANSFER["epochs"]
    lr: float = TRANSFER["lr"]
    schedule: str = TRANSFER["schedule"]
    milestones: str = TRANSFER["milestones"]
    target: str = ""                  # default: the source's own dataset (Table 2, "same 50% of classes")
    head: str = TRANSFER["head"]
    mlp_depth: int = TRANSFER["mlp_depth"]   # hidden layers of an mlp head (Fig. 4)
    width: int = TRANSFER["width"]
    dropout: float = 0.0
    batch_norm: bool = False
    feature_cache: bool = True        # frozen extractor + no augmentation: compute z(x) once, train on it

    def __post_init__(self):
        CommonConfig.__post_init__(self)
        self.check_eval_threat()
        self.check_validation()
        self.check_source()
        self.head_spec()

    def head_spec(self):
        from ..models import HeadSpec

        return HeadSpec(self.head, mlp_depth=self.mlp_depth, width=self.width, dropout=self.dropout,
                        batch_norm=self.batch_norm)


@dataclass
class FinetuneAdvConfig(CommonConfig, ThreatConfig, EvalThreatConfig, ValidationConfig, SourceConfig):
    """`finetune_adv` (Fig. 3 baseline, Hendrycks et al. 2019): end-to-end fine-tuning on PGD-k examples."""

    epsilon: float = FINETUNE_ADV["epsilon"]
    step_size: float = FINETUNE_ADV["step_size"]
    steps: int = FINETUNE_ADV["steps"]
    epochs: int = FINETUNE_ADV["epochs"]
    lr: float = FINETUNE_ADV["lr"]
    schedule: str = FINETUNE_ADV["schedule"]
    milestones: str = FINETUNE_ADV["milestones"]
    target: str = ""
    augment: bool = FINETUNE_ADV["augment"]

    def __post_init__(self):
        CommonConfig.__post_init__(self)
        self.check_threat()
        self.check_eval_threat()
        self.check_validation()
        self.check_source()
        _check_positive_int("steps", self.steps, 1000)


@dataclass
class LwfConfig(CommonConfig, EvalThreatConfig, ValidationConfig, SourceConfig):
    """`lwf` (section 6, Tables 4–7): CE(f(x), y) + λ_d · d(z(x, θ), z0(x, θ_r*)) with warm start."""

    iterations: int | None = LWF["iterations"]
    lr: float = LWF["lr"]
    target: str = ""                  # default: the source's own dataset (Tables 5 and 7)
    lambda_d: float = LWF["lambda_d"]
    distance: str = LWF["distance"]   # l2: mean ‖z−z0‖₂ (paper text); l1: mean ‖z−z0‖₁ (authors' code); l2sq
    warm_start: float = LWF["warm_start"]   # fraction of the updates that train only the head
    finetune_lr: float | None = None  # lr once the extractor trains too ("we then cut the learning rate"); default lr
    freeze_bn: bool = LWF["freeze_bn"]      # A.1: BatchNorm statistics and affine parameters stay the source's
    teacher: str = LWF["teacher"]     # offline: stored z0 of un-augmented images (paper); online: frozen source per batch

    def __post_init__(self):
        CommonConfig.__post_init__(self)
        self.check_eval_threat()
        self.check_validation()
        self.check_source()
        check_range("lambda_d", _check_finite("lambda_d", self.lambda_d), 0.0, None)
        check_range("warm_start", _check_finite("warm_start", self.warm_start), 0.0, 1.0)
        if self.distance not in LWF_DISTANCES:
            raise one_of("distance", self.distance, LWF_DISTANCES)
        if self.teacher not in LWF_TEACHERS:
            raise one_of("teacher", self.teacher, LWF_TEACHERS)
        if self.finetune_lr is not None:
            check_range("finetune_lr", _check_finite("finetune_lr", self.finetune_lr), 0.0, 10.0, low_inclusive=False)
        if self.augment and self.teacher == "offline":
            raise ConfigError("augment=true needs teacher=online: the stored z0 are features of un-augmented "
                              "images (paper appendix B); use teacher=online or augment=false")

