"""The threat models' norms and their scales, in plain Python (no torch: `config/` checks with it, and `rtl --help`
must not import torch). ℓ∞ ε and step are on the 0–255 pixel scale, ℓ2 ones the ℓ2 norm in [0,1] pixels;
`SCALE` is what `attacks.threat.ThreatModel` divides by — the one conversion (docs/evaluation.md, "Threat models").
"""
from __future__ import annotations

from .errors import ConfigError, check_range, one_of

NORMS = ("linf", "l2")
SCALE = {"linf": 255.0, "l2": 1.0}            # user number ÷ SCALE = the radius on [0,1] pixels
DEFAULT_EPSILON = {"linf": 8.0, "l2": 0.5}    # the paper's 8/255; RobustBench's ℓ2 CIFAR-10 radius
MAX_EPSILON = {"linf": 255.0, "l2": 1000.0}   # ℓ2: above the diameter of [0,1]^d for any image we load
LINF_STEP = 2.0                                # the paper's PGD step (0–255 scale) when none is given
# ℓ2 without a step: ε/4, the ratio of the paper's ℓ∞ step to its radius (2/8)
STEP_FRACTION_L2 = 0.25
NORM_HELP = "linf (epsilon on the 0-255 scale) or l2 (epsilon = the l2 norm in [0,1] pixels)"


def check_norm(norm) -> str:
    if norm not in NORMS:
        raise one_of("norm", norm, NORMS)
    return norm


def default_step(norm: str, epsilon: float) -> float:
    """The PGD step on the user's scale when none is given: 2 (0–255) for ℓ∞, ε/4 for ℓ2."""
    return LINF_STEP if check_norm(norm) == "linf" else STEP_FRACTION_L2 * float(epsilon)


def check_threat_numbers(norm: str, epsilon, step_size, prefix: str = "") -> None:
    """ε and step on the norm's scale: numbers in (0, MAX_EPSILON[norm]] (one line naming the bad value)."""
    check_norm(norm)
    for name, value in (("epsilon", epsilon), ("step_size", step_size)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (
                float("inf"), float("-inf")):
            scale = "0-255 pixel scale, e.g. 8" if norm == "linf" else "l2 norm in [0,1] pixels, e.g. 0.5"
            raise ConfigError(f"{prefix}{name}={value!r} must be a number on the {scale}")
        check_range(prefix + name, value, 0, MAX_EPSILON[norm], low_inclusive=False)


def metric_suffix(norm: str) -> str:
    """What an evaluation's metric names carry for this norm: '' for ℓ∞ (the names stored runs have),
    '_l2' for ℓ2 (`pgd20_acc_l2`), so an ℓ2 number never overwrites an ℓ∞ one."""
    return "" if check_norm(norm) == "linf" else f"_{norm}"
