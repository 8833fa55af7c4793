"""`train`: the configuration of a source model trained from scratch."""
from __future__ import annotations

from dataclasses import dataclass

from ..data.spec import parse_spec
from ..errors import ConfigError, check_range, one_of
from ..models import check_arch
from .common import (SCHEDULES, CommonConfig, EvalThreatConfig, ThreatConfig, ValidationConfig, _check_finite,
                     _check_positive_int, check_checkpoint_dir, milestone_fractions)

TRAIN_MODES = ("natural", "pgd", "free", "fgsm-rs")
LINF_ONLY_MODES = ("free", "fgsm-rs")   # Shafahi et al. 2019, Wong et al. 2020: defined for the ℓ∞ ball only


@dataclass
class TrainConfig(CommonConfig, ThreatConfig, EvalThreatConfig, ValidationConfig):
    """`train`: a source model from scratch (Table 1; free training)."""

    ENTRY_POINT = "train"

    dataset: str = "cifar10-jpeg"   # the training data: a dataset spec, e.g. cifar10-jpeg:half-a, imagefolder:/path
    arch: str = "small-cnn"         # the network architecture
    mode: str = "natural"           # training: natural, PGD-k adversarial, free (replay m) or FGSM with random start
    steps: int = 7                  # PGD steps of adversarial training (paper: 7)
    replay: int = 4                 # free training: times each minibatch is replayed, m (paper: Free-4)
    momentum: float = 0.9           # SGD momentum
    weight_decay: float = 5e-4      # SGD weight decay
    schedule: str = "cosine"        # learning-rate schedule
    milestones: str = "0.5,0.75"    # step schedule: fractions of the budget where lr drops ×0.1
    augment: bool = True            # random crop + horizontal flip of training images
    resize: int | None = None       # resize images to this side length in pixels (default: as stored)
    eval_steps: int = 20            # PGD steps of the final robust evaluation (pgd20_acc)
    checkpoint_dir: str | None = None  # where the checkpoint is written (default: under checkpoints/, named
                                       # after the run)
    resume: bool = False            # continue an interrupted run from its checkpoint

    def __post_init__(self):
        CommonConfig.__post_init__(self)
        self.check_threat()
        self.check_eval_threat(self.norm)
        self.check_validation()
        parse_spec(self.dataset)
        check_arch(self.arch)
        if self.mode not in TRAIN_MODES:
            raise one_of("mode", self.mode, TRAIN_MODES)
        if self.norm != "linf" and self.mode in LINF_ONLY_MODES:
            raise ConfigError(f"mode={self.mode} is an l-inf method (signed-gradient steps on a box); with "
                              f"norm={self.norm} use mode=pgd or mode=natural")
        if self.schedule not in SCHEDULES:
            raise one_of("schedule", self.schedule, SCHEDULES)
        _check_positive_int("steps", self.steps, 1000)
        _check_positive_int("replay", self.replay, 100)
        _check_positive_int("eval_steps", self.eval_steps, 10_000)
        check_range("momentum", _check_finite("momentum", self.momentum), 0.0, 1.0, high_inclusive=False)
        check_range("weight_decay", _check_finite("weight_decay", self.weight_decay), 0.0, 1.0)
        if self.resize is not None:
            check_range("resize", self.resize, 8, 1024)
        self.milestone_fractions()
        check_checkpoint_dir(self.checkpoint_dir)

    def milestone_fractions(self) -> list[float]:
        return milestone_fractions(self.milestones)
