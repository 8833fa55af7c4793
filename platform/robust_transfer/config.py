"""Typed configuration, validated once at the boundary.

Each entry point has a dataclass here. `cli.py` builds its argparse flags from the fields
(`lambda_d` → `--lambda-d`), MLproject passes the same names in snake_case, and every
`__post_init__` checks ranges so a bad value fails before any data is read or run is started.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields

from .data.spec import parse_spec
from .errors import ConfigError, check_range, one_of
from .models import check_arch

TRAIN_MODES = ("natural", "pgd", "free", "fgsm-rs")
SCHEDULES = ("constant", "step", "cosine")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
CHANNELS_LAST = ("auto", "true", "false")
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
    precision: str = "auto"         # training autocast: auto (bf16 on CUDA with bf16 support, else fp32) | fp32 | bf16
    channels_last: str = "auto"     # auto (on for conv nets: measured faster or even on CPU and CUDA) | true | false
    compile: bool = False           # torch.compile the model's body for training (inductor; slow first step)

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
        if self.precision not in PRECISIONS:
            raise one_of("precision", self.precision, PRECISIONS)
        if isinstance(self.channels_last, bool):  # the Python API may pass a bool
            self.channels_last = str(self.channels_last).lower()
        if self.channels_last not in CHANNELS_LAST:
            raise one_of("channels_last", self.channels_last, CHANNELS_LAST)
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compile={self.compile!r} must be true or false")

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
        parse_spec(self.dataset)
        check_arch(self.arch)
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
    diagnostics: bool = True         # gradient-masking checks with suite=standard|full (false: skip them)
    resume: bool = True              # reuse per-attack results stored under cache_dir()/eval/ (interrupted runs)
    apgd_iters: int | None = None    # budget knobs; default: the suite's (evaluation.SUITE_BUDGETS)
    apgd_restarts: int | None = None
    apgd_targets: int | None = None  # target classes of targeted APGD-DLR (0: untargeted only)
    square_queries: int | None = None
    square_restarts: int | None = None
    deepfool_iters: int | None = None

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
        from .evaluation import BUDGET_KNOBS, suite_attacks, suite_budget

        suite_attacks(self.suite, self.attacks)
        suite_budget(self.suite, **{k: getattr(self, k) for k in BUDGET_KNOBS})

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "") and k not in ("progress", "data_dir")}


# --- transfer strategies (issue #3): retrain_blocks, transfer, finetune_adv, lwf -----------------
LWF_DISTANCES = ("l2", "l1", "l2sq")
LWF_TEACHERS = ("offline", "online")


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
class RetrainBlocksConfig(CommonConfig, ThreatConfig, SourceConfig):
    """`retrain_blocks` (Fig. 1): re-initialise the k deepest blocks, re-train them on natural examples."""

    lr: float = 0.001                 # paper: momentum SGD, lr 0.001, 20,000 iterations
    iterations: int | None = 20_000   # wins over epochs; give iterations= (empty) to budget by epochs
    dataset: str = ""                 # default: the source's own dataset (the paper re-trains on it)
    k: str = "1"                      # one k, or a list/range (k=1,2,3): one nested run per k
    augment: bool = True              # paper footnote 3: standard augmentation

    def __post_init__(self):
        CommonConfig.__post_init__(self)
        self.check_threat()
        self.check_source()
        parse_k_list(self.k)

    def k_values(self) -> list[int]:
        return parse_k_list(self.k)


@dataclass
class TransferConfig(CommonConfig, ThreatConfig, SourceConfig):
    """`transfer` (Eq. 2, Tables 2–3, Fig. 3–4): frozen source features, a new linear or MLP head."""

    epochs: int = 50                  # paper A.2: 50 epochs, batch 128, lr 0.01 → 0.001 at epoch 30
    lr: float = 0.01
    schedule: str = "step"
    milestones: str = "0.6"
    target: str = ""                  # default: the source's own dataset (Table 2, "same 50% of classes")
    head: str = "linear"
    mlp_depth: int = 1                # hidden layers of an mlp head (Fig. 4)
    width: int = 2048
    dropout: float = 0.0
    batch_norm: bool = False
    feature_cache: bool = True        # frozen extractor + no augmentation: compute z(x) once, train on it

    def __post_init__(self):
        CommonConfig.__post_init__(self)
        self.check_threat()
        self.check_source()
        self.head_spec()

    def head_spec(self):
        from .models import HeadSpec

        return HeadSpec(self.head, mlp_depth=self.mlp_depth, width=self.width, dropout=self.dropout,
                        batch_norm=self.batch_norm)


@dataclass
class FinetuneAdvConfig(CommonConfig, ThreatConfig, SourceConfig):
    """`finetune_adv` (Fig. 3 baseline, Hendrycks et al. 2019): end-to-end fine-tuning on PGD-k examples."""

    epsilon: float = 5.0              # paper A.2 (ImageNet sources): PGD-3, step 3, ε 5
    step_size: float = 3.0
    steps: int = 3
    epochs: int = 50
    lr: float = 0.01
    schedule: str = "step"
    milestones: str = "0.6"
    target: str = ""
    augment: bool = True

    def __post_init__(self):
        CommonConfig.__post_init__(self)
        self.check_threat()
        self.check_source()
        _check_positive_int("steps", self.steps, 1000)


@dataclass
class LwfConfig(CommonConfig, ThreatConfig, SourceConfig):
    """`lwf` (section 6, Tables 4–7): CE(f(x), y) + λ_d · d(z(x, θ), z0(x, θ_r*)) with warm start."""

    iterations: int | None = 20_000   # paper: batch 128, 20,000 iterations, lr 0.001 (A.1 says 1e-2)
    lr: float = 0.001
    target: str = ""                  # default: the source's own dataset (Tables 5 and 7)
    lambda_d: float = 0.01
    distance: str = "l2"              # l2: mean ‖z−z0‖₂ (paper text); l1: mean ‖z−z0‖₁ (authors' code); l2sq
    warm_start: float = 0.5           # fraction of the updates that train only the head
    finetune_lr: float | None = None  # lr once the extractor trains too ("we then cut the learning rate"); default lr
    freeze_bn: bool = True            # A.1: BatchNorm statistics and affine parameters stay as in the source
    teacher: str = "offline"          # offline: stored z0 of un-augmented images (paper); online: frozen source per batch

    def __post_init__(self):
        CommonConfig.__post_init__(self)
        self.check_threat()
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


def config_fields(cls) -> list:
    return [f for f in fields(cls)]


__all__ = ["CommonConfig", "ThreatConfig", "TrainConfig", "EvaluateConfig", "TRAIN_MODES", "SCHEDULES",
           "config_fields", "field"]
__all__ += ["SourceConfig", "RetrainBlocksConfig", "TransferConfig", "FinetuneAdvConfig", "LwfConfig",
            "LWF_DISTANCES", "LWF_TEACHERS", "milestone_fractions", "parse_k_list"]


# --- search and registry (issue #4): search, promote ------------------------------------------------
SEARCH_BACKENDS = ("optuna", "ray")


@dataclass
class SearchConfig:
    """`search`: explore a search space (search_spaces/*.yaml) over any entry point, trials tracked in MLflow."""

    space: str = ""                    # a search_spaces/*.yaml file
    backend: str = "optuna"            # optuna (in-process trials) | ray (Ray Tune workers)
    storage: str = "sqlite:///optuna.db"  # or postgresql://..., journal:PATH, redis://host:6379/0
    study_name: str = ""               # default: the space's `study`, else its file name
    trials: int | None = None          # trials to add (default: the space's `trials`, else 10)
    timeout: float | None = None       # seconds; stop starting trials after this
    n_jobs: int = 1                    # optuna: parallel trials (threads) in this process; ray: max concurrent trials (0 = as resources allow)
    set: str = ""                      # override fixed parameters: set="epochs=1 per_class=20"
    seed: int | None = None            # sampler seed (default: the space's)
    resources_per_trial: str = "cpu=1"  # ray: e.g. cpu=2,gpu=0.5
    address: str = ""                  # ray: an existing cluster (ray://host:10001 or host:6379); default a local one
    num_cpus: int = 2                  # ray: CPUs of the local cluster
    experiment: str = "robust-transfer"
    quiet: bool = False                # no line per finished trial (they are log lines, not bars: on by default)

    def __post_init__(self):
        if not self.space:
            raise ConfigError("space is required: a search space YAML, e.g. search_spaces/mlp_head.yaml")
        if self.backend not in SEARCH_BACKENDS:
            raise one_of("backend", self.backend, SEARCH_BACKENDS)
        if self.trials is not None:
            _check_positive_int("trials", self.trials, 10**6)
        if self.timeout is not None:
            check_range("timeout", _check_finite("timeout", self.timeout), 0.0, None, low_inclusive=False)
        if not isinstance(self.n_jobs, int) or isinstance(self.n_jobs, bool) or not 0 <= self.n_jobs <= 1024:
            raise ConfigError(f"n_jobs={self.n_jobs!r} must be a whole number in [0, 1024]")
        if self.backend == "optuna" and self.n_jobs == 0:
            raise ConfigError("n_jobs=0 means 'as resources allow' for backend=ray only; give n_jobs >= 1")
        _check_positive_int("num_cpus", self.num_cpus, 4096)
        if self.study_name and not _NAME.match(self.study_name):
            raise ConfigError(f"study_name={self.study_name!r} is not a valid name; use letters, digits, '.', '_' or '-'")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ConfigError(f"seed={self.seed!r} must be a whole number >= 0")
        from .search.ray_runner import parse_resources

        parse_resources(self.resources_per_trial)

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "") and k != "quiet"}


@dataclass
class PromoteConfig:
    """`promote`: move the `champion` alias of a registered model only if a stated policy says so."""

    name: str = ""                     # the registered model
    policy: str = "max (clean_acc + pgd20_acc) / 2"  # e.g. "max pgd20_acc subject to clean_acc >= 0.7"
    version: int | None = None         # the candidate version (default: the `alias` version)
    alias: str = "challenger"          # the candidate alias when no version/study is given
    study: str = ""                    # or: the best trial of this Optuna study (registered as a new version)
    storage: str = "sqlite:///optuna.db"  # where `study` lives
    min_delta: float = 0.0             # the candidate must beat the champion by more than this
    allow_flagged: bool = False        # promote even a version tagged with gradient-masking flags
    dry_run: bool = False              # decide and report, change nothing
    experiment: str = "robust-transfer"

    def __post_init__(self):
        if not self.name:
            raise ConfigError("name is required: the registered model whose champion to decide")
        if not _NAME.match(self.name):
            raise ConfigError(f"name={self.name!r} is not a valid model name; use letters, digits, '.', '_' or '-'")
        if self.version is not None:
            _check_positive_int("version", self.version, 10**9)
        if self.version is not None and self.study:
            raise ConfigError("give version or study, not both")
        if not _NAME.match(self.alias):
            raise ConfigError(f"alias={self.alias!r} is not a valid alias")
        check_range("min_delta", _check_finite("min_delta", self.min_delta), 0.0, None)
        from .registry import Policy

        Policy.parse(self.policy)

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


__all__ += ["SearchConfig", "PromoteConfig", "SEARCH_BACKENDS"]


# --- analysis (issue #6): analyze ------------------------------------------------------------------
ANALYSES = ("gradients", "feature-distance")
ANALYZE_DEFAULT_N_IMAGES = {"gradients": 8, "feature-distance": 1000}  # feature-distance: capped at the split
ANALYZE_MAX_GRID_IMAGES = 64   # columns of the gradient grid
ANALYZE_MAX_MODELS = 16        # rows of the gradient grid (besides the images)
_MODEL_URI_HELP = "a checkpoint path, runs:/<id>/..., models:/<name>/<version> or models:/<name>@<alias>"


def _comma_list(text) -> list[str]:
    return [s.strip() for s in str(text or "").split(",")]


@dataclass
class AnalyzeConfig:
    """`analyze` (Fig. 5, Fig. 7 / appendix B): input-gradient images of one or more models, or the distance
    between the features of images and of their augmented copies."""

    what: str = "gradients"            # gradients (Fig. 5) | feature-distance (Fig. 7)
    model: str = ""                    # a model URI/path; gradients: a comma list, one grid row each
    labels: str = ""                   # row labels, one per model (comma list); default: the model URIs
    dataset: str = ""                  # default: the dataset recorded in the (first) model's metadata
    split: str = "test"
    n_images: int | None = None        # default: 8 (gradients), 1000 or the whole split if smaller (feature-distance)
    seed: int = 0                      # which images, and the augmentation's randomness
    batch_size: int = 128
    device: str = "auto"
    experiment: str = "robust-transfer"
    data_dir: str | None = None
    progress: bool = True

    def __post_init__(self):
        self.model, self.labels, self.dataset = self.model or "", self.labels or "", self.dataset or ""
        if self.what not in ANALYSES:
            raise one_of("what", self.what, ANALYSES)
        if not self.model.strip():
            raise ConfigError(f"model is required: {_MODEL_URI_HELP} (what=gradients: a comma list of them)")
        models = self.models()
        if any(not m for m in models):
            raise ConfigError(f"model={self.model!r} has an empty entry; give a comma list of {_MODEL_URI_HELP}")
        if self.what == "feature-distance" and len(models) != 1:
            raise ConfigError(f"what=feature-distance takes exactly one model; model={self.model!r} names {len(models)}")
        if len(models) > ANALYZE_MAX_MODELS:
            raise ConfigError(f"model={self.model!r} names {len(models)} models; at most {ANALYZE_MAX_MODELS} rows fit a grid")
        if self.labels:
            labels = _comma_list(self.labels)
            if len(labels) != len(models):
                raise ConfigError(f"labels={self.labels!r} gives {len(labels)} label(s) for {len(models)} models; "
                                  "give one label per model (comma list), or none")
            if any(not s for s in labels):
                raise ConfigError(f"labels={self.labels!r} has an empty label; give one non-empty label per model")
            if len(set(labels)) != len(labels):
                raise ConfigError(f"labels={self.labels!r} repeats a label; give each model its own")
        if self.dataset:
            parse_spec(self.dataset)
        if self.split not in ("train", "test"):
            raise one_of("split", self.split, ("train", "test"))
        if self.n_images is not None:
            if not isinstance(self.n_images, int) or isinstance(self.n_images, bool):
                raise ConfigError(f"n_images={self.n_images!r} must be a whole number")
            if self.what == "gradients":
                check_range("n_images", self.n_images, 1, ANALYZE_MAX_GRID_IMAGES)
            else:  # a distance to a *different* image needs two
                check_range("n_images", self.n_images, 2, 10**7)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r} must be a whole number >= 0")
        _check_positive_int("batch_size", self.batch_size, 65_536)
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise one_of("device", self.device, DEVICES)

    def models(self) -> list[str]:
        return _comma_list(self.model)

    def label_list(self) -> list[str]:
        """One label per model: the given ones, else the model URIs/paths."""
        return _comma_list(self.labels) if self.labels else self.models()

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "") and k not in ("progress", "data_dir")}


__all__ += ["AnalyzeConfig", "ANALYSES"]


# --- reports (issue #6): report --------------------------------------------------------------------
REPORT_SUFFIXES = (".yaml", ".yml")


@dataclass
class ReportConfig:
    """`report`: the tables and figures of a projects/*.yaml suite, from its newest FINISHED step runs."""

    project: str = ""                  # a projects/*.yaml suite
    scale: str = "cpu"                 # one of the suite's `scales` (checked when the suite is read)
    out: str = "docs/results"          # writes <out>/<scale>/<table or figure name>.{md,csv,png} and index.md
    experiment: str = ""               # select runs from this experiment only (default: all experiments);
                                       # the report's own run is logged there too (default robust-transfer)

    def __post_init__(self):
        from pathlib import Path

        from .resources import resolve

        if not self.project:
            raise ConfigError("project is required: a suite YAML, e.g. projects/table2.yaml")
        self.project = resolve("projects", self.project)  # a file, or a shipped suite by name (table2)
        path = Path(self.project)
        if path.suffix.lower() not in REPORT_SUFFIXES:
            raise ConfigError(f"project={self.project!r} is not a suite YAML; give a .yaml or .yml file, "
                              "e.g. projects/table2.yaml")
        if not path.is_file():
            raise ConfigError(f"project={self.project!r} does not exist (or is not a file); "
                              "give a suite YAML, e.g. projects/table2.yaml")
        if not self.scale:
            raise ConfigError("scale is required: one of the suite's `scales`, e.g. cpu or paper")
        if not isinstance(self.scale, str) or not _NAME.match(self.scale):
            raise ConfigError(f"scale={self.scale!r} is not a scale name; give one of the suite's `scales`, e.g. cpu")
        if not self.out:
            raise ConfigError("out is required: the folder for the results, e.g. docs/results")
        if self.experiment and not isinstance(self.experiment, str):
            raise ConfigError(f"experiment={self.experiment!r} must be an experiment name")

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


__all__ += ["ReportConfig", "REPORT_SUFFIXES"]


# --- suites (issue #6): suite ----------------------------------------------------------------------
SUITE_REUSE = ("exact", "params", "never")


@dataclass
class SuiteConfig:
    """`suite`: run a projects/*.yaml (a paper table/figure) as child runs, reusing finished steps, then `report`."""

    project: str = ""                  # projects/<table or figure>.yaml
    scale: str = "cpu"                 # a scale the file defines (cpu | paper)
    reuse: str = "exact"               # exact: same entry, params and code version; params: any code version; never
    only: str = ""                     # run only these steps (comma list) and what they need; no report
    dry_run: bool = False              # print the plan (steps, keys, parameters) and stop
    report: bool = True                # end with the `report` step
    out: str = "docs/results"          # where `report` writes <scale>/<table>.md|csv|png
    experiment: str = "robust-transfer"

    def __post_init__(self):
        if not self.project:
            raise ConfigError("project is required: a suite file, e.g. projects/table2.yaml")
        from .resources import resolve

        self.project = resolve("projects", self.project)  # a file, or a shipped suite by name (table2)
        if self.reuse not in SUITE_REUSE:
            raise one_of("reuse", self.reuse, SUITE_REUSE)
        if not _NAME.match(str(self.scale)):
            raise ConfigError(f"scale={self.scale!r} is not a valid scale name (letters, digits, '.', '_', '-')")

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


__all__ += ["SuiteConfig", "SUITE_REUSE"]
