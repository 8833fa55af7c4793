"""PreAct-ResNet-18 (He et al. 2016, the usual robust-training baseline) and torchvision ResNet-50."""
from __future__ import annotations

import torchvision
from torch import nn

from .base import GlobalPool
# The pre-activation basic block is the same unit in PreAct-ResNet and in Madry's WRN.
from .wide_resnet import WideBasic as PreActBlock


def preact_resnet18_body() -> tuple[nn.Sequential, int]:
    units: list[nn.Module] = []
    c_in = 64
    for stage, c_out in enumerate((64, 128, 256, 512)):
        for i in range(2):
            units.append(PreActBlock(c_in, c_out, 2 if (stage > 0 and i == 0) else 1))
            c_in = c_out
    units[0] = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), units[0])
    return nn.Sequential(*units, GlobalPool(512)), 512


def resnet50_body() -> tuple[nn.Sequential, int]:
    """torchvision's ResNet-50 (random init: no weights are downloaded) cut into blocks."""
    net = torchvision.models.resnet50(weights=None)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    bottlenecks = [b for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]
    bottlenecks[0] = nn.Sequential(stem, bottlenecks[0])
    return nn.Sequential(*bottlenecks, GlobalPool()), 2048
