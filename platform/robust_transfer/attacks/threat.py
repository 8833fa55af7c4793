"""The threat model: an ℓ∞ or ℓ2 ball around pixels in [0,1].

Users give `epsilon` and `step_size` on the scale each literature uses: ℓ∞ on the familiar 0–255 scale
(the paper: ε=8, step 2; its ImageNet models: ε=5), ℓ2 as the ℓ2 norm of the perturbation in [0,1] pixels
(RobustBench's CIFAR-10: 0.5; Salman et al.'s ImageNet sources: 3.0). They are converted to the [0,1] pixel
scale exactly once, here (`eps`, `alpha`, dividing by `norms.SCALE`), so no other module divides by 255; uint8
images become pixels here too (`to_pixels`). The norms, their scales, defaults and checks are plain Python in
`robust_transfer/norms.py` (config/ checks with them without importing torch); `metric_suffix` is the one place an
evaluation's numbers learn which norm they are under (docs/evaluation.md, "Threat models").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..norms import (DEFAULT_EPSILON, LINF_STEP, MAX_EPSILON, NORM_HELP, NORMS, SCALE,  # noqa: F401  (re-exported)
                     STEP_FRACTION_L2, check_norm, check_threat_numbers, default_step, metric_suffix)

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
