"""The threat model: an ℓ∞ or ℓ2 ball around pixels in [0,1].

Users give `epsilon` and `step_size` on the scale each literature uses: ℓ∞ on the familiar 0–255 scale
(the paper: ε=8, step 2; its ImageNet models: ε=5), ℓ2 as the ℓ2 norm of the perturbation in [0,1] pixels
(RobustBench's CIFAR-10: 0.5; Salman et al.'s ImageNet sources: 3.0). They are converted to the [0,1] pixel
scale exactly once, here (`eps`, `alpha`), so no other module divides by 255; uint8 images become pixels here
too (`to_pixels`). `metric_suffix` is the one place an evaluation's numbers learn which norm they are under
(docs/evaluation.md, "Threat models").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..errors import ConfigError, check_range, one_of

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


@dataclass(frozen=True)
class ThreatModel:
    epsilon: float | None = None     # radius of the ball: ℓ∞ on 0–255, ℓ2 in [0,1] pixels (None: the norm's default)
    step_size: float | None = None   # PGD step α on the same scale (None: `default_step`)
    norm: str = "linf"

    def __post_init__(self):
        check_norm(self.norm)
        if self.epsilon is None:
            object.__setattr__(self, "epsilon", DEFAULT_EPSILON[self.norm])
        if self.step_size is None and isinstance(self.epsilon, (int, float)):
            object.__setattr__(self, "step_size", default_step(self.norm, self.epsilon))
        check_threat_numbers(self.norm, self.epsilon, self.step_size)

    @property
    def eps(self) -> float:
        """ε on the [0,1] pixel scale."""
        return self.epsilon / SCALE[self.norm]

    @property
    def alpha(self) -> float:
        """Step size α on the [0,1] pixel scale."""
        return self.step_size / SCALE[self.norm]

    @property
    def suffix(self) -> str:
        return metric_suffix(self.norm)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "ThreatModel | None":
        """The threat recorded in a checkpoint's metadata (`threat_model`, `eval_threat`), or None."""
        if not d or d.get("epsilon") is None:
            return None
        return cls(float(d["epsilon"]), None if d.get("step_size") is None else float(d["step_size"]),
                   str(d.get("norm", "linf")))


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (0-255) → float32 pixels in [0,1]; float pixels → float32, unchanged otherwise."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()
