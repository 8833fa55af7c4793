"""What several entry points share: the common training parameters, the threat model, the checks."""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import ClassVar

from ..norms import DEFAULT_EPSILON, NORMS, check_norm, check_threat_numbers, default_step
from ..device import check_device
from ..errors import ConfigError, check_range, one_of

SCHEDULES = ("constant", "step", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")
CHANNELS_LAST = ("auto", "true", "false")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MODEL_URI_HELP = "a checkpoint path, runs:/<id>/..., models:/<name>/<version> or models:/<name>@<alias>"


def _check_positive_int(name: str, value, high: int = 10**9):
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} must be a whole number")
    return check_range(name, value, 1, high)


MAX_SEED = 2**32 - 1        # numpy's and Optuna's samplers take seeds below 2**32
MAX_EXPERIMENT_CHARS = 256  # MLflow's experiment name column


def check_seed(name: str, value, optional: bool = False):
    if optional and value is None:
        return value
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{name}={value!r} must be a whole number in [0, {MAX_SEED}]")
    return value


def check_experiment(value, allow_empty: bool = False):
    if allow_empty and value in ("", None):
        return value
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_EXPERIMENT_CHARS:
        shown = value if not isinstance(value, str) or len(value) <= 40 else value[:40] + "..."
        raise ConfigError(f"experiment={shown!r} is not an experiment name; give 1 to {MAX_EXPERIMENT_CHARS} "
                          "characters, not only spaces")
    return value


def check_checkpoint_dir(value):
    """A checkpoint directory that is the user's is refused before anything runs (checkpoints.check_checkpoint_target)."""
    if value is not None:
        from ..checkpoints import check_checkpoint_target

        check_checkpoint_target(value)


def _check_finite(name: str, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number")
    return value



def milestone_fractions(text: str) -> list[float]:
    """'0.5,0.75' → [0.5, 0.75]: increasing fractions of the budget where a step schedule drops lr ×0.1."""
    if not text:  # '' (or None from an empty flag): no drops
        return []
    try:
        fr = [float(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"milestones={text!r} must be comma-separated fractions in (0,1), e.g. 0.5,0.75") from None
    if any(not 0 < f < 1 for f in fr) or fr != sorted(fr):
        raise ConfigError(f"milestones={text!r} must be increasing fractions in (0,1), e.g. 0.5,0.75")
    return fr


@dataclass
class CommonConfig:
    """Parameters every training entry point shares (docs/architecture.md: common parameters)."""

    epochs: int = 10                # passes over the training data (iterations wins when given)
    iterations: int | None = None   # optimizer updates; wins over epochs when given
    batch_size: int = 128           # training examples per batch
    lr: float = 0.1                 # learning rate of momentum SGD
    seed: int = 0                   # random seed: initialisation, data order, attacks
    eval_seed: int = 0              # which test examples the final evaluation uses and its attacks' random starts
                                    # (and the validation check's): the same for every training seed by default,
                                    # so seeded runs are compared on the same examples, like val_seed
    per_class: int | None = None    # train on this many examples per class (low-data runs; default: all)
    n_examples: int = 1000          # test examples of the final clean and robust evaluation
    device: str = "auto"            # where to run (auto: cuda when available)
    register_as: str | None = None  # register the model under this name (auto: <dataset>-<arch>-<strategy>)
    experiment: str = "robust-transfer"  # the MLflow experiment of the run
    data_dir: str | None = None     # where datasets are read and unpacked (default: $RTL_DATA_DIR, else
                                    # ../shared/data when it exists, else ~/.cache/robust-transfer/data)
    download: bool = False          # fetch cifar10/cifar100/tiny-imagenet into the data root if missing (RTL_DATA_MIRROR)
    progress: bool = True           # show progress bars
    precision: str = "auto"         # training autocast (auto: bf16 on CUDA with bf16 and CPUs with native bf16)
    channels_last: str = "auto"     # channels-last memory format while training (auto: on for conv nets,
                                    # measured faster or even on CPU and CUDA)
    compile: bool = False           # torch.compile the model's body for training (inductor; slow first step)
    sync_bn: bool = False           # under torchrun: SyncBatchNorm over the global batch (CUDA only)

    def __post_init__(self):
        _check_positive_int("epochs", self.epochs, 100_000)
        if self.iterations is not None:
            _check_positive_int("iterations", self.iterations, 10**8)
        _check_positive_int("batch_size", self.batch_size, 65_536)
        _check_finite("lr", self.lr)
        check_range("lr", self.lr, 0.0, 10.0, low_inclusive=False)
        check_seed("seed", self.seed)
        check_seed("eval_seed", self.eval_seed)
        check_experiment(self.experiment)
        if self.per_class is not None:
            _check_positive_int("per_class", self.per_class, 10**7)
        _check_positive_int("n_examples", self.n_examples, 10**7)
        check_device(self.device)
        if self.register_as is not None and not _NAME.match(self.register_as):
            raise ConfigError(f"register_as={self.register_as!r} is not a valid model name; use letters, digits, '.', '_' or '-' (max 128)")
        if self.precision not in PRECISIONS:
            raise one_of("precision", self.precision, PRECISIONS)
        if isinstance(self.channels_last, bool):  # the Python API may pass a bool
            self.channels_last = str(self.channels_last).lower()
        if self.channels_last not in CHANNELS_LAST:
            raise one_of("channels_last", self.channels_last, CHANNELS_LAST)
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compile={self.compile!r} must be true or false")
        if not isinstance(self.sync_bn, bool):
            raise ConfigError(f"sync_bn={self.sync_bn!r} must be true or false")

    def to_params(self) -> dict:
        """Flat dict for MLflow params (None → '' is avoided: None values are left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None and k not in ("progress", "data_dir")}


@dataclass
class ThreatConfig:
    """The training threat model: ℓ∞ (ε on the 0–255 scale) or ℓ2 (ε = the ℓ2 norm in [0,1] pixels); converted
    to [0,1] once, in attacks.ThreatModel. A missing ε or step is the norm's default (`LINF_DEFAULTS` for ℓ∞:
    the entry point's paper values; ℓ2: ε 0.5, step ε/4)."""

    LINF_DEFAULTS: ClassVar[tuple[float, float]] = (8.0, 2.0)

    epsilon: float | None = None    # radius of the threat model: linf on the 0-255 scale (default 8), l2 the l2 norm
                                    # in [0,1] pixels (default 0.5)
    step_size: float | None = None  # PGD step size on the same scale (default: linf 2, l2 epsilon/4)
    norm: str = "linf"              # the threat model's norm: linf or l2

    def check_threat(self):
        self.epsilon, self.step_size = resolve_threat_numbers(self.norm, self.epsilon, self.step_size,
                                                              self.LINF_DEFAULTS)


def resolve_threat_numbers(norm, epsilon, step_size, linf_defaults=(8.0, 2.0), prefix: str = ""):
    """(ε, step) with the norm's defaults filled in, checked on the norm's scale (one line for a bad value)."""
    check_norm(norm)
    if epsilon is None:
        epsilon = linf_defaults[0] if norm == "linf" else DEFAULT_EPSILON[norm]
    if step_size is None:
        step_size = linf_defaults[1] if norm == "linf" else default_step(norm, epsilon if isinstance(
            epsilon, (int, float)) and not isinstance(epsilon, bool) else 0.0)
    check_threat_numbers(norm, epsilon, step_size, prefix)
    return epsilon, step_size


# --- issue 13: the evaluation threat and the validation split (every entry point that trains) ------------
@dataclass
class EvalThreatConfig:
    """The threat every reported `<attack>_acc` is measured at, whatever the training threat. Its norm defaults
    to the training threat's (train, finetune_adv) or the source's recorded one (transfer, lwf, retrain_blocks:
    resolved when the source is loaded, `resolve_source_eval_threat`), its ε and step to the norm's defaults."""

    eval_norm: str | None = None           # norm of the final robust evaluation (default: the training threat's,
                                           # else the source's recorded norm, else linf)
    eval_epsilon: float | None = None      # its radius: linf on the 0-255 scale (default 8), l2 in [0,1] pixels
                                           # (default 0.5)
    eval_step_size: float | None = None    # its PGD step size on the same scale (default: linf 2, l2 epsilon/4)

    def check_eval_threat(self, training_norm: str | None = None):
        if self.eval_norm is None:
            self.eval_norm = training_norm
        if self.eval_norm is None:      # known once the source is loaded: check the numbers on the widest scale
            check_threat_numbers("l2", 1.0 if self.eval_epsilon is None else self.eval_epsilon,
                                 1.0 if self.eval_step_size is None else self.eval_step_size, "eval_")
            return
        self.eval_epsilon, self.eval_step_size = resolve_threat_numbers(self.eval_norm, self.eval_epsilon,
                                                                        self.eval_step_size, prefix="eval_")

    def resolve_source_eval_threat(self, recorded_norm: str | None) -> None:
        """The source-based strategies' default: the source's recorded norm (linf when none is recorded)."""
        if self.eval_norm is None:
            self.eval_norm = recorded_norm if recorded_norm in NORMS else "linf"
        self.check_eval_threat()


@dataclass
class ValidationConfig:
    """A seeded, stratified validation split carved out of the TRAINING split: what choices read (`val_*`)."""

    val_fraction: float = 0.1          # share of the training split held out for validation, in (0, 0.5]
    val_per_class: int | None = None   # instead: this many validation images per class (wins over val_fraction)
    val_seed: int = 0                  # which images are held out: the same for every training seed by default,
                                       # so candidates (seeds, λ_d, heads) are compared on one validation set

    def check_validation(self):
        check_range("val_fraction", _check_finite("val_fraction", self.val_fraction), 0.0, 0.5, low_inclusive=False)
        if self.val_per_class is not None:
            _check_positive_int("val_per_class", self.val_per_class, 10**6)
        check_seed("val_seed", self.val_seed)   # bounded like every seed (the split takes it mod 2**32: 2**32 = 0)

