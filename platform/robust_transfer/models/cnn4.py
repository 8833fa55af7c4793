"""`cnn4`: a plain 4-layer CNN of 0.39M parameters, sized for the `cpu` scale on 2 cores.

Four conv-BN-ReLU-maxpool blocks (32 → 16 → 8 → 4 → 2 pixels), widths 32-64-128-256, then global
average pooling: 256 features. Pooling after *every* conv keeps the multiply-adds at ~13M per 32×32
image, so it trains as fast as the 4× smaller small-cnn (whose second conv runs unpooled at 32×32).

Measured here (2-core AMD EPYC, batch 128, the library's natural training step at its default layout and
threads, the two interleaved in one run: `bench_train.cpu_scale_arch`, docs/benchmarks.md): cnn4 1,297
and small-cnn 1,281 training images/s (ratio 1.01). In plain NCHW (a one-off script at session start):
cnn4 1,190, small-cnn 514.
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
