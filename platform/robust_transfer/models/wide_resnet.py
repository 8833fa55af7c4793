"""Wide ResNets (Zagoruyko & Komodakis 2016) in the pre-activation form Madry et al. used.

`wrn-<depth>-<width>` has n = (depth − 4) / 6 units per stage and stage widths
16·k, 32·k, 64·k. The paper's "WRN 32-10" is Madry's CIFAR model with 5 units per stage and
widths 16/160/320/640 (the same network as wrn-34-10 in the usual counting), so depth 32 is
accepted as that network. Blocks for Fig. 1/2: stem+first unit, the other 14 units, the final
BN-ReLU-pool, and the head: 17 for WRN-32-10.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .base import GlobalPool


class WideBasic(nn.Module):
    """Pre-activation basic block. The projection shortcut sees the pre-activated input
    (`out_shortcut`, Madry's and RobustBench's WRN) or the raw input (RobustBench's PreActBlock)."""

    def __init__(self, c_in: int, c_out: int, stride: int, *, out_shortcut: bool = True):
        super().__init__()
        self.out_shortcut = out_shortcut
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False)

    def forward(self, x):
        o = torch.relu(self.bn1(x))
        # The projection shortcut sees the pre-activated input (as in Madry's implementation).
        shortcut = x if self.shortcut is None else self.shortcut(o if self.out_shortcut else x)
        o = self.conv1(o)
        o = self.conv2(torch.relu(self.bn2(o)))
        return o + shortcut


def units_per_stage(depth: int) -> int:
    if depth == 32:
        return 5
    if depth < 10 or (depth - 4) % 6:
        raise ConfigError(f"wrn depth={depth} is not allowed; use 6n+4 (10, 16, 22, 28, 34, 40, ...) or 32 (Madry's WRN-32-10)")
    return (depth - 4) // 6


def wide_resnet_body(depth: int, width: int) -> tuple[nn.Sequential, int]:
    n = units_per_stage(depth)
    widths = [16, 16 * width, 32 * width, 64 * width]
    stem = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    units: list[nn.Module] = []
    c_in = widths[0]
    for stage, c_out in enumerate(widths[1:]):
        for i in range(n):
            units.append(WideBasic(c_in, c_out, 2 if (stage > 0 and i == 0) else 1))
            c_in = c_out
    units[0] = nn.Sequential(stem, units[0])
    return nn.Sequential(*units, GlobalPool(c_in)), c_in
