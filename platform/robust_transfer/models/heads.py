"""Classifier heads: linear (the paper's Eq. 2) and MLP (Fig. 4: depth hidden layers of `width`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError, check_range, one_of

HEAD_KINDS = ("linear", "mlp")
# Bounds on an MLP head, checked before anything is built (issue 17 §2): hidden units (mlp_depth × width) and
# the hidden-to-hidden weights ((mlp_depth − 1) × width²; 2**26 floats = 256 MB).
MAX_HEAD_UNITS = 32_768
MAX_HEAD_HIDDEN_WEIGHTS = 2**26

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class HeadSpec:
    kind: str = "linear"
    mlp_depth: int = 1
    width: int = 2048
    dropout: float = 0.0
    batch_norm: bool = False

    def __post_init__(self):
        if self.kind not in HEAD_KINDS:
            raise one_of("head", self.kind, HEAD_KINDS)
        check_range("mlp_depth", self.mlp_depth, 0, 16)
        check_range("width", self.width, 1, 65536)
        check_range("dropout", self.dropout, 0.0, 1.0, high_inclusive=False)
        if self.kind == "mlp" and self.mlp_depth * self.width > MAX_HEAD_UNITS:
            raise ConfigError(f"mlp_depth={self.mlp_depth} × width={self.width} = {self.mlp_depth * self.width} "
                              f"hidden units; at most {MAX_HEAD_UNITS} are allowed")
        if self.kind == "mlp" and max(self.mlp_depth - 1, 0) * self.width ** 2 > MAX_HEAD_HIDDEN_WEIGHTS:
            raise ConfigError(f"mlp_depth={self.mlp_depth}, width={self.width}: (mlp_depth − 1) × width² = "
                              f"{(self.mlp_depth - 1) * self.width ** 2} hidden weights; at most "
                              f"{MAX_HEAD_HIDDEN_WEIGHTS} are allowed")

    def to_dict(self) -> dict:
        return asdict(self)


def create_head(spec: HeadSpec, in_dim: int, num_classes: int) -> nn.Module:
    from torch import nn  # here, so that HeadSpec and HEAD_KINDS import without torch (`rtl --help`)

    if spec.kind == "linear" or spec.mlp_depth == 0:
        return nn.Linear(in_dim, num_classes)
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(spec.mlp_depth):
        layers.append(nn.Linear(dim, spec.width))
        if spec.batch_norm:
            layers.append(nn.BatchNorm1d(spec.width))
        layers.append(nn.ReLU(inplace=True))
        if spec.dropout > 0:
            layers.append(nn.Dropout(spec.dropout))
        dim = spec.width
    layers.append(nn.Linear(dim, num_classes))
    return nn.Sequential(*layers)
