"""`search` and `promote`: the configuration of a study and of a promotion decision."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ConfigError, check_range, one_of
from .common import _NAME, _check_finite, _check_positive_int, check_experiment, check_seed

SEARCH_BACKENDS = ("optuna", "ray")
TRIALS_SCOPES = ("run", "study")


def parse_resources(text: str) -> dict[str, float]:
    """`cpu=1,gpu=0.5` → {"cpu": 1.0, "gpu": 0.5} (fractional GPUs share one device between trials)."""
    out: dict[str, float] = {}
    for part in str(text or "").replace(" ", "").split(","):
        if not part:
            continue
        k, _, v = part.partition("=")
        try:
            val = float(v)
        except ValueError:
            raise ConfigError(f"resources_per_trial={text!r}: {part!r} is not name=number (e.g. cpu=1,gpu=0.5)") from None
        if k not in ("cpu", "gpu") and not k:
            raise ConfigError(f"resources_per_trial={text!r}: {part!r} names no resource")
        if val < 0 or (k == "gpu" and val > 1 and not val.is_integer()):
            raise ConfigError(f"resources_per_trial={text!r}: {k}={v} must be >= 0 (fractions of a GPU up to 1, "
                              "or whole GPUs)")
        out[k] = val
    out.setdefault("cpu", 1.0)
    return out


@dataclass
class SearchConfig:
    """`search`: explore a search space (search_spaces/*.yaml) over any entry point, trials tracked in MLflow."""

    ENTRY_POINT = "search"

    space: str = ""                    # the search space: a YAML file, or the name of a shipped one
    backend: str = "optuna"            # optuna: trials in this process; ray: Ray Tune workers
    storage: str = "sqlite:///optuna.db"  # the Optuna storage: sqlite:///..., postgresql://..., journal:PATH,
                                          # redis://host:6379/0 or tracking:NAME.db
    study_name: str = ""               # the Optuna study to add trials to (default: the space's `study`, else its
                                       # file name)
    trials: int | None = None          # trials to add (default: the space's `trials`, else 10)
    trials_scope: str = "run"          # run: `trials` is what this invocation adds; study: what the study holds in all
                                       # (a rerun adds only the missing ones: a resumable, fixed budget, e.g. a suite step)
    timeout: float | None = None       # stop starting trials after this many seconds
    n_jobs: int = 1                    # optuna: parallel trials (threads) in this process; ray: max concurrent trials (0 = as resources allow)
    set: str = ""                      # override fixed parameters: set="epochs=1 per_class=20"
    seed: int | None = None            # sampler seed (default: the space's)
    resources_per_trial: str = "cpu=1"  # ray: e.g. cpu=2,gpu=0.5
    address: str = ""                  # ray: an existing cluster to join, ray://host:10001 or host:6379 (default: a
                                       # local one)
    num_cpus: int = 2                  # ray: CPUs of the local cluster
    experiment: str = "robust-transfer"  # the MLflow experiment of the study's runs
    quiet: bool = False                # print no line per finished trial (log lines, not progress bars: shown
                                       # by default)

    def __post_init__(self):
        if not self.space:
            raise ConfigError("space is required: a search space YAML, e.g. search_spaces/mlp_head.yaml")
        if self.backend not in SEARCH_BACKENDS:
            raise one_of("backend", self.backend, SEARCH_BACKENDS)
        if self.trials is not None:
            _check_positive_int("trials", self.trials, 10**6)
        if self.trials_scope not in TRIALS_SCOPES:
            raise one_of("trials_scope", self.trials_scope, TRIALS_SCOPES)
        if self.timeout is not None:
            check_range("timeout", _check_finite("timeout", self.timeout), 0.0, None, low_inclusive=False)
        if not isinstance(self.n_jobs, int) or isinstance(self.n_jobs, bool) or not 0 <= self.n_jobs <= 1024:
            raise ConfigError(f"n_jobs={self.n_jobs!r} must be a whole number in [0, 1024]")
        if self.backend == "optuna" and self.n_jobs == 0:
            raise ConfigError("n_jobs=0 means 'as resources allow' for backend=ray only; give n_jobs >= 1")
        _check_positive_int("num_cpus", self.num_cpus, 4096)
        if self.study_name and not _NAME.match(self.study_name):
            raise ConfigError(f"study_name={self.study_name!r} is not a valid name; use letters, digits, '.', '_' or '-'")
        check_seed("seed", self.seed, optional=True)
        check_experiment(self.experiment)
        parse_resources(self.resources_per_trial)

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "") and k != "quiet"}


@dataclass
class PromoteConfig:
    """`promote`: move the `champion` alias of a registered model only if a stated policy says so."""

    ENTRY_POINT = "promote"

    name: str = ""                     # the registered model whose champion to decide
    policy: str = "max (val_clean_acc + val_pgd10_acc) / 2"  # what to maximise, on validation metrics, e.g.
                                       # "max val_pgd10_acc subject to val_clean_acc >= 0.7"
    version: int | None = None         # the candidate version (default: the `alias` version)
    alias: str = "challenger"          # the candidate alias when no version/study is given
    study: str = ""                    # instead of a version: the best trial of this Optuna study (registered as a
                                       # new version)
    storage: str = "sqlite:///optuna.db"  # the Optuna storage that holds `study`
    min_delta: float = 0.0             # the candidate must beat the champion by more than this
    allow_flagged: bool = False        # promote even a version tagged with gradient-masking flags
    dry_run: bool = False              # decide and report, change nothing
    experiment: str = "robust-transfer"  # the MLflow experiment of the decision's run

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
        check_experiment(self.experiment)
        from ..promotion import Policy

        Policy.parse(self.policy)

    def to_params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}

