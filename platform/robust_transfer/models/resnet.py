"""PreAct-ResNet-18 (He et al. 2016, the usual robust-training baseline) and torchvision's ResNets.

`preact-resnet18` is the PreActResNet-18 with the shortcut taken from the pre-activated input and
a BN-ReLU before the pool (RobustBench's `PreActResNet(..., bn_before_fc=True, out_shortcut=True)`,
e.g. Rice2020Overfitting); `preact-resnet18-rb` is RobustBench's default `PreActResNet(PreActBlock,
[2, 2, 2, 2])` (e.g. Wong2020Fast): shortcut from the raw block input, no BN-ReLU before the pool.
The torchvision ResNets (`resnet18/34/50/101`, `wide_resnet50_2`) are built by torchvision itself
(random init: nothing is downloaded) and cut into blocks.
"""
from __future__ import annotations

import torchvision
from torch import nn

from .base import GlobalPool
# The pre-activation basic block is the same unit in PreAct-ResNet and in Madry's WRN.
from .wide_resnet import WideBasic as PreActBlock


def preact_resnet18_body(*, out_shortcut: bool = True, bn_before_pool: bool = True) -> tuple[nn.Sequential, int]:
    units: list[nn.Module] = []
    c_in = 64
    for stage, c_out in enumerate((64, 128, 256, 512)):
        for i in range(2):
            units.append(PreActBlock(c_in, c_out, 2 if (stage > 0 and i == 0) else 1, out_shortcut=out_shortcut))
            c_in = c_out
    units[0] = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), units[0])
    return nn.Sequential(*units, GlobalPool(512 if bn_before_pool else None)), 512


def preact_resnet18_rb_body() -> tuple[nn.Sequential, int]:
    return preact_resnet18_body(out_shortcut=False, bn_before_pool=False)


def torchvision_body(net: torchvision.models.ResNet) -> tuple[nn.Sequential, int]:
    """A torchvision ResNet's modules (shared, not copied) as blocks: stem + first residual block,
    the other residual blocks, the global pool. Its `fc` is the head's place."""
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    blocks = [b for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]
    blocks[0] = nn.Sequential(stem, blocks[0])
    return nn.Sequential(*blocks, GlobalPool()), net.fc.in_features


def torchvision_resnet_body(name: str) -> tuple[nn.Sequential, int]:
    """torchvision's `name` (random init: no weights are downloaded) cut into blocks."""
    return torchvision_body(getattr(torchvision.models, name)(weights=None))


def resnet50_body() -> tuple[nn.Sequential, int]:
    return torchvision_resnet_body("resnet50")
