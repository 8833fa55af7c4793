"""Typed configuration, validated once at the boundary.

Each entry point has a dataclass here. `cli.py` builds its argparse flags from the fields
(`lambda_d` → `--lambda-d`), MLproject passes the same names in snake_case, and every
`__post_init__` checks ranges so a bad value fails before any data is read or run is started.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields

from .errors import ConfigError, check_range, one_of

TRAIN_MODES = ("natural", "pgd", "free", "fgsm-rs")
SCHEDULES = ("constant", "step", "cosine")
DEVICES = ("auto", "cpu", "cuda")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _check_positive_int(name: str, value, high: int = 10**9):
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} must be a whole number")
    return check_range(name, value, 1, high)


def _check_finite(name: str, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number")
    return value


@dataclass
class CommonConfig:
    """Parameters every training entry point shares (DESIGN.md: common parameters)."""

    epochs: int = 10
    iterations: int | None = None   # wins over epochs when given
    batch_size: int = 128
    lr: float = 0.1
    seed: int = 0
    per_class: int | None = None
    n_examples: int = 1000
    device: str = "auto"
    register_as: str | None = None
    experiment: str = "robust-transfer"
    data_dir: str | None = None
    progress: bool = True

    def __post_init__(self):
        _check_positive_int("epochs", self.epochs, 100_000)
        if self.iterations is not None:
            _check_positive_int("iterations", self.iterations, 10**8)
        _check_positive_int("batch_size", self.batch_size, 65_536)
        _check_finite("lr", self.lr)
        check_range("lr", self.lr, 0.0, 10.0, low_inclusive=False)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r} must be a whole number >= 0")
        if self.per_class is not None:
            _check_positive_int("per_class", self.per_class, 10**7)
        _check_positive_int("n_examples", self.n_examples, 10**7)
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise one_of("device", self.device, DEVICES)
        if self.register_as is not None and not _NAME.match(self.register_as):
            raise ConfigError(f"register_as={self.register_as!r} is not a valid model name; use letters, digits, '.', '_' or '-' (max 128)")

    def to_params(self) -> dict:
        """Flat dict for MLflow params (None → '' is avoided: None values are left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None and k not in ("progress", "data_dir")}


@dataclass
class ThreatConfig:
    """ℓ∞ threat model on the 0–255 scale (converted to [0,1] once, in attacks.ThreatModel)."""

    epsilon: float = 8.0
    step_size: float = 2.0

    def check_threat(self):
        _check_finite("epsilon", self.epsilon)
        _check_finite("step_size", self.step_size)
        check_range("epsilon", self.epsilon, 0.0, 255.0, low_inclusive=False)
        check_range("step_size", self.step_size, 0.0, 255.0, low_inclusive=False)


@dataclass
class TrainConfig(CommonConfig, ThreatConfig):
    """`train`: a source model from scratch (Table 1; free training)."""

    dataset: str = "cifar10-jpeg"
    arch: str = "small-cnn"
    mode: str = "natural"
    steps: int = 7                  # PGD-k adversarial training (paper: 7)
    replay: int = 4                 # free training's m (paper: Free-4)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: str = "0.5,0.75"    # step schedule: fractions of the budget where lr drops ×0.1
    augment: bool = True
    resize: int | None = None
    eval_steps: int = 20            # the final PGD-k evaluation (pgd20_acc)
    checkpoint_dir: str | None = None
    resume: bool = False

    def __post_init__(self):
        CommonConfig.__post_init__(self)
        self.check_threat()
        if self.mode not in TRAIN_MODES:
            raise one_of("mode", self.mode, TRAIN_MODES)
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

    def milestone_fractions(self) -> list[float]:
        try:
            fr = [float(s) for s in str(self.milestones).split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"milestones={self.milestones!r} must be comma-separated fractions in (0,1), e.g. 0.5,0.75") from None
        if any(not 0 < f < 1 for f in fr) or fr != sorted(fr):
            raise ConfigError(f"milestones={self.milestones!r} must be increasing fractions in (0,1), e.g. 0.5,0.75")
        return fr


@dataclass
class EvaluateConfig(ThreatConfig):
    """`evaluate`: robustness of a model on a test split."""

    model: str = ""
    dataset: str = ""              # default: the dataset recorded in the model's metadata
    suite: str = "quick"
    attacks: str = ""              # comma list overriding the suite's attacks, e.g. clean,pgd50,cw20
    n_examples: int = 1000
    batch_size: int = 256
    seed: int = 0
    split: str = "test"
    device: str = "auto"
    experiment: str = "robust-transfer"
    data_dir: str | None = None
    progress: bool = True

    def __post_init__(self):
        self.check_threat()
        if not self.model:
            raise ConfigError("model is required: a checkpoint path, runs:/<id>/..., models:/<name>/<version> or models:/<name>@<alias>")
        _check_positive_int("n_examples", self.n_examples, 10**7)
        _check_positive_int("batch_size", self.batch_size, 65_536)
        if self.split not in ("train", "test"):
            raise one_of("split", self.split, ("train", "test"))
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise one_of("device", self.device, DEVICES)

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "") and k not in ("progress", "data_dir")}


def config_fields(cls) -> list:
    return [f for f in fields(cls)]


__all__ = ["CommonConfig", "ThreatConfig", "TrainConfig", "EvaluateConfig", "TRAIN_MODES", "SCHEDULES",
           "config_fields", "field"]
