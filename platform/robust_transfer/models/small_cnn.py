"""`small-cnn`: four conv-BN-ReLU blocks, fast enough to adversarially train on 2 CPU cores."""
from __future__ import annotations

from torch import nn

from .base import GlobalPool, conv_bn_relu

WIDTHS = (16, 32, 64, 128)  # ~15M multiply-adds per 32×32 image: CPU-friendly


def small_cnn_body(widths=WIDTHS) -> tuple[nn.Sequential, int]:
    w1, w2, w3, w4 = widths
    body = nn.Sequential(
        conv_bn_relu(3, w1),
        conv_bn_relu(w1, w2, pool=True),   # 32 → 16
        conv_bn_relu(w2, w3, pool=True),   # 16 → 8
        nn.Sequential(conv_bn_relu(w3, w4), GlobalPool()),
    )
    return body, w4
