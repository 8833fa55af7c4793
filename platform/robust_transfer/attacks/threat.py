"""The threat model: an ℓ∞ ball around pixels in [0,1].

Users give `epsilon` and `step_size` on the familiar 0–255 scale (the paper: ε=8, step 2; its
ImageNet models: ε=5). They are converted to the [0,1] pixel scale exactly once, here
(`eps`, `alpha`), so no other module divides by 255; uint8 images become pixels here too (`to_pixels`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..errors import ConfigError, check_range, one_of

NORMS = ("linf",)


@dataclass(frozen=True)
class ThreatModel:
    epsilon: float = 8.0     # radius of the ℓ∞ ball, 0–255 scale
    step_size: float = 2.0   # PGD step α, 0–255 scale
    norm: str = "linf"

    def __post_init__(self):
        if self.norm not in NORMS:
            raise one_of("norm", self.norm, NORMS)
        for name in ("epsilon", "step_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name}={value!r} must be a number on the 0-255 pixel scale, e.g. 8")
        check_range("epsilon", self.epsilon, 0, 255, low_inclusive=False)
        check_range("step_size", self.step_size, 0, 255, low_inclusive=False)

    @property
    def eps(self) -> float:
        """ε on the [0,1] pixel scale."""
        return self.epsilon / 255

    @property
    def alpha(self) -> float:
        """Step size α on the [0,1] pixel scale."""
        return self.step_size / 255

    def to_dict(self) -> dict:
        return asdict(self)


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (0-255) → float32 pixels in [0,1]; float pixels → float32, unchanged otherwise."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()
