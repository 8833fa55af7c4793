"""The attack budget: how hard the APGD, Square and DeepFool attacks try (iterations, restarts, targets,
queries). Not the TRAINING budget (epochs and iterations: `strategies`' `TrainingBudget`).

It lives with the attacks (it is their parameters) and imports nothing above them, so `config/`
checks the budget knobs with it at the boundary. The suites' budgets are in `config.evaluate.SUITES`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..errors import ConfigError
from .specs import MAX_RESTARTS, MAX_STEPS


def _whole(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name}={value!r} is out of range; allowed: whole numbers in [{low}, {high}]")
    return value


@dataclass(frozen=True)
class AttackBudget:
    """Compute knobs of the APGD, Square and DeepFool attacks (AutoAttack's own values are the defaults)."""

    apgd_iters: int = 100        # iterations per APGD run
    apgd_restarts: int = 1       # random restarts of APGD-CE / untargeted APGD-DLR
    apgd_targets: int = 9        # target classes of targeted APGD-DLR (0: untargeted only)
    square_queries: int = 5000   # Square Attack iterations (each queries the model on every live example)
    square_restarts: int = 1
    deepfool_iters: int = 50

    def __post_init__(self):
        _whole("apgd_iters", self.apgd_iters, 1, MAX_STEPS)
        _whole("apgd_restarts", self.apgd_restarts, 1, MAX_RESTARTS)
        _whole("apgd_targets", self.apgd_targets, 0, 10_000)
        _whole("square_queries", self.square_queries, 1, 1_000_000)
        _whole("square_restarts", self.square_restarts, 1, MAX_RESTARTS)
        _whole("deepfool_iters", self.deepfool_iters, 1, MAX_STEPS)

    def with_overrides(self, **overrides) -> "AttackBudget":
        """A copy with the non-None overrides applied (validated); an unknown knob is a ConfigError."""
        unknown = set(overrides) - set(BUDGET_KNOBS)
        if unknown:
            raise ConfigError(f"unknown budget knob(s) {', '.join(sorted(unknown))}; allowed: {', '.join(BUDGET_KNOBS)}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def for_kind(self, kind: str) -> dict:
        """The knobs that change the results of an attack of this kind (part of its stored key)."""
        keys = {"apgd-ce": ("apgd_iters", "apgd_restarts"),
                "apgd-dlr": ("apgd_iters", "apgd_restarts", "apgd_targets"),
                "apgd-t": ("apgd_iters", "apgd_targets"),
                "square": ("square_queries", "square_restarts"),
                "deepfool": ("deepfool_iters",)}.get(kind, ())
        return {k: getattr(self, k) for k in keys}

    def to_dict(self) -> dict:
        return asdict(self)


BUDGET_KNOBS: tuple[str, ...] = tuple(f.name for f in fields(AttackBudget))
