"""`retrain_blocks`, `transfer`, `finetune_adv`, `lwf`: the strategies that start from a source model, and their
paper defaults (written here, at the top, with where the paper says them; every one can be overridden:
`rtl lwf --lambda-d 0.1`, `rtl finetune-adv --steps 7`, ...)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError, check_range, one_of
from .common import (SCHEDULES, CommonConfig, EvalThreatConfig, ThreatConfig, ValidationConfig, _check_finite,
                     _check_positive_int, check_checkpoint_dir, milestone_fractions)

# `retrain_blocks` (paper section 3, footnote 3)
RETRAIN_BLOCKS = dict(
    lr=0.001,            # momentum SGD, lr 0.001,
    iterations=20_000,   # 20,000 iterations
    augment=True,        # footnote 3: standard augmentation
)
# `transfer` (appendix A.2)
TRANSFER = dict(
    epochs=50,           # 50 epochs, batch 128,
    lr=0.01,             # lr 0.01 ...
    schedule="step",
    milestones="0.6",    # ... → 0.001 at epoch 30 (60% of the budget)
    head="linear",       # Tables 2-3; Fig. 4: mlp with mlp_depth hidden layers of width
    mlp_depth=1,
    width=2048,
)
# `finetune_adv` (appendix A.2, ImageNet sources)
FINETUNE_ADV = dict(
    epsilon=5.0,         # PGD-3, step 3, ε 5 (0-255 scale)
    step_size=3.0,
    steps=3,
    epochs=50,           # as `transfer`: 50 epochs, lr 0.01 → 0.001 at 60% of the budget
    lr=0.01,
    schedule="step",
    milestones="0.6",
    augment=True,
)
# `lwf` (section 6, appendix A.1)
LWF = dict(
    iterations=20_000,   # batch 128, 20,000 iterations
    lr=0.001,            # the text's 0.001 (appendix A.1 says 1e-2)
    lambda_d=0.01,       # the weight of the feature distance d(z, z0)
    distance="l2",       # l2: mean ‖z−z0‖₂ (paper text); l1: mean ‖z−z0‖₁ (authors' code); l2sq
    warm_start=0.5,      # the fraction of the updates that train only the head
    freeze_bn=True,      # A.1: BatchNorm statistics and affine parameters stay as in the source
    teacher="offline",   # offline: stored z0 of un-augmented images (paper); online: frozen source per batch
)

LWF_DISTANCES = ("l2", "l1", "l2sq")
LWF_TEACHERS = ("offline", "online")

MAX_K = 1000


def parse_k_list(text) -> list[int]:
    """`k=2` → [2]; `k=1,2,3` or `k=1-3` → [1, 2, 3] (the number of deepest blocks to re-train)."""
    out: list[int] = []
    for token in str(text).replace(" ", "").split(","):
        m = re.match(r"^(\d+)(?:-(\d+))?$", token)
        if not m or int(m.group(1)) < 1 or int(m.group(2) or m.group(1)) < int(m.group(1)):
            raise ConfigError(f"k={text!r} must be whole numbers >= 1: one (k=2), a list (k=1,2,3) or a range (k=1-3)")
        if int(m.group(2) or m.group(1)) > MAX_K:   # bounded before the range becomes a list
            raise ConfigError(f"k={text!r} goes up to {m.group(2) or m.group(1)}; at most k={MAX_K} "
                              "(no model here has more blocks)")
        out.extend(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
    return sorted(set(out))


@dataclass
class SourceConfig:
    """What every strategy that starts from a source model shares (mixed into the configs below)."""

    source_model: str = ""          # the source model: models:/name@alias, models:/name/version, runs:/... or a
                                    # checkpoint path
    upsample: bool = False          # resize the data to the source's input size (paper: CIFAR 32 → 224)
    momentum: float = 0.9           # SGD momentum
    weight_decay: float = 5e-4      # SGD weight decay
    schedule: str = "constant"      # learning-rate schedule
    milestones: str = ""            # step schedule: fractions of the budget where lr drops ×0.1
    augment: bool = False           # random crop + horizontal flip of training images
    eval_steps: int = 20            # PGD steps of the final robust evaluation (pgd20_acc)
    checkpoint_dir: str | None = None  # where the checkpoint is written (default: under checkpoints/, named
                                       # after the run)

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
        check_checkpoint_dir(self.checkpoint_dir)

    def milestone_fractions(self) -> list[float]:
        return milestone_fractions(self.milestones)


@dataclass
class RetrainBlocksConfig(CommonConfig, EvalThreatConfig, ValidationConfig, SourceConfig):
    """`retrain_blocks` (Fig. 1): re-initialise the k deepest blocks, re-train them on natural examples."""

    ENTRY_POINT = "retrain-blocks"

    lr: float = RETRAIN_BLOCKS["lr"]
    iterations: int | None = RETRAIN_BLOCKS["iterations"]   # optimizer updates; wins over epochs (iterations= empty:
                                                            # budget by epochs)
    dataset: str = ""                 # the data to re-train on, a dataset spec (default: the source's own, as in
                                      # the paper)
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

    ENTRY_POINT = "transfer"

    epochs: int = TRANSFER["epochs"]
    lr: float = TRANSFER["lr"]
    schedule: str = TRANSFER["schedule"]
    milestones: str = TRANSFER["milestones"]
    target: str = ""                  # the dataset to transfer to, a dataset spec (default: the source's own: Table 2,
                                      # "same 50% of classes")
    head: str = TRANSFER["head"]      # the new classifier head
    mlp_depth: int = TRANSFER["mlp_depth"]   # hidden layers of an mlp head (Fig. 4)
    width: int = TRANSFER["width"]    # hidden units of an mlp head
    dropout: float = 0.0              # dropout before each head layer
    batch_norm: bool = False          # batch normalisation in an mlp head
    feature_cache: bool = True        # frozen extractor + no augmentation: compute z(x) once, train on it

    def __post_init__(self):
        CommonConfig.__post_init__(self)
        self.check_eval_threat()
        self.check_validation()
        self.check_source()
        self.head_spec()
        if self.head == "mlp" and self.batch_norm and self.mlp_depth > 0 and self.batch_size < 2:
            raise ConfigError(f"batch_size={self.batch_size} with batch_norm=true: BatchNorm cannot train on "
                              "batches of one example; give batch_size >= 2")

    def head_spec(self):
        from ..models import HeadSpec

        return HeadSpec(self.head, mlp_depth=self.mlp_depth, width=self.width, dropout=self.dropout,
                        batch_norm=self.batch_norm)


@dataclass
class FinetuneAdvConfig(CommonConfig, ThreatConfig, EvalThreatConfig, ValidationConfig, SourceConfig):
    """`finetune_adv` (Fig. 3 baseline, Hendrycks et al. 2019): end-to-end fine-tuning on PGD-k examples."""

    ENTRY_POINT = "finetune-adv"
    LINF_DEFAULTS = (FINETUNE_ADV["epsilon"], FINETUNE_ADV["step_size"])   # ℓ∞ without ε or step: the paper's

    steps: int = FINETUNE_ADV["steps"]   # PGD steps of the adversarial fine-tuning (paper: 3)
    epochs: int = FINETUNE_ADV["epochs"]
    lr: float = FINETUNE_ADV["lr"]
    schedule: str = FINETUNE_ADV["schedule"]
    milestones: str = FINETUNE_ADV["milestones"]
    target: str = ""                  # the dataset to fine-tune on, a dataset spec (default: the source's own)
    augment: bool = FINETUNE_ADV["augment"]

    def __post_init__(self):
        CommonConfig.__post_init__(self)
        self.check_threat()
        self.check_eval_threat(self.norm)
        self.check_validation()
        self.check_source()
        _check_positive_int("steps", self.steps, 1000)


@dataclass
class LwfConfig(CommonConfig, EvalThreatConfig, ValidationConfig, SourceConfig):
    """`lwf` (section 6, Tables 4–7): CE(f(x), y) + λ_d · d(z(x, θ), z0(x, θ_r*)) with warm start."""

    ENTRY_POINT = "lwf"

    iterations: int | None = LWF["iterations"]
    lr: float = LWF["lr"]
    target: str = ""                  # the dataset to fine-tune on, a dataset spec (default: the source's own:
                                      # Tables 5 and 7)
    lambda_d: float = LWF["lambda_d"]   # λ_d: weight of the feature-distance term d(z, z0)
    distance: str = LWF["distance"]   # d(z, z0): l2, mean ‖z−z0‖₂ (paper text); l1, mean ‖z−z0‖₁ (authors' code);
                                      # l2sq, mean ‖z−z0‖₂²
    warm_start: float = LWF["warm_start"]   # fraction of the updates that train only the head
    finetune_lr: float | None = None  # learning rate once the extractor trains too, after the warm start ("we then
                                      # cut the learning rate"; default: lr)
    freeze_bn: bool = LWF["freeze_bn"]      # keep BatchNorm statistics and affine parameters the source's (A.1)
    teacher: str = LWF["teacher"]     # where z0 comes from: offline, stored features of un-augmented images (paper);
                                      # online, the frozen source on every batch

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

