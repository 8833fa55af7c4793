"""The shape every model here has: pixels in [0,1] → normalise → features z → head → logits.

Normalisation lives *inside* the model so that attacks work in pixel space with the ε-ball and
the [0,1] box exactly where the threat model says (docs/architecture.md).
"""
from __future__ import annotations

import torch
from torch import nn

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageClassifier(nn.Module):
    """`body` is an `nn.Sequential` of blocks (input → output) ending in a flat feature vector z.

    `blocks()` returns the body's blocks followed by the head: the units the paper re-initialises
    from the output end in Fig. 1 (for WRN-32-10, the 17 blocks of its Fig. 2).
    """

    def __init__(self, body: nn.Sequential, head: nn.Module, feature_dim: int, *, arch: str,
                 num_classes: int, input_size: int, mean=CIFAR_MEAN, std=CIFAR_STD):
        super().__init__()
        self.body = body
        self.head = head
        self.feature_dim = feature_dim
        self.arch = arch
        self.num_classes = num_classes
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate representation z(x) of pixels x ∈ [0,1]."""
        return self.body(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def blocks(self) -> list[nn.Module]:
        return [*self.body, self.head]

    def feature_extractor_modules(self) -> list[nn.Module]:
        return list(self.body)


def conv_bn_relu(c_in: int, c_out: int, *, pool: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class GlobalPool(nn.Module):
    """BN-ReLU (optional) then global average pool and flatten: the last body block."""

    def __init__(self, channels: int | None = None):
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True)) if channels else nn.Identity()

    def forward(self, x):
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.pre(x), 1), 1)
