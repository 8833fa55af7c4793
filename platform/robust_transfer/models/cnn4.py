"""`cnn4`: a plain 4-layer CNN of 0.39M parameters, sized for the `cpu` scale on 2 cores.

Four conv-BN-ReLU-maxpool blocks (32 → 16 → 8 → 4 → 2 pixels), widths 32-64-128-256, then global
average pooling: 256 features. Pooling after *every* conv keeps the multiply-adds at ~13M per 32×32
image (small-cnn's unpooled second conv costs more), so it trains ~2× faster than the 4× smaller
small-cnn while holding 4× the parameters.

Measured on a 2-core AMD EPYC host (benchmarks/bench_train.py, batch 128, one process), side by side:
small-cnn 514 train img/s (0.10M params), cnn4 1190 train img/s (0.39M params); eval 2.9k img/s both.
"""
from __future__ import annotations

from torch import nn

from .base import GlobalPool, conv_bn_relu

WIDTHS = (32, 64, 128, 256)


def cnn4_body(widths=WIDTHS) -> tuple[nn.Sequential, int]:
    w1, w2, w3, w4 = widths
    body = nn.Sequential(
        conv_bn_relu(3, w1, pool=True),    # 32 → 16
        conv_bn_relu(w1, w2, pool=True),   # 16 → 8
        conv_bn_relu(w2, w3, pool=True),   # 8 → 4
        nn.Sequential(conv_bn_relu(w3, w4, pool=True), GlobalPool()),   # 4 → 2 → 256 features
    )
    return body, w4
