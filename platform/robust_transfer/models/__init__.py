"""`create_model(arch, num_classes)`: the architecture registry (timm-style)."""
from __future__ import annotations

import re
from typing import Callable

from torch import nn

from ..errors import ConfigError, check_range
from .base import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from .heads import HEAD_KINDS, HeadSpec, create_head
from .resnet import TORCHVISION_RESNETS, preact_resnet18_body, preact_resnet18_rb_body, torchvision_resnet_body
from .cnn4 import cnn4_body
from .small_cnn import small_cnn_body
from .wide_resnet import units_per_stage, wide_resnet_body

_WRN = re.compile(r"^wrn-(\d+)-(\d+)$")

# name → body factory returning (nn.Sequential of blocks, feature_dim)
_REGISTRY: dict[str, Callable[[], tuple[nn.Sequential, int]]] = {
    "small-cnn": small_cnn_body,
    "cnn4": cnn4_body,
    "preact-resnet18": preact_resnet18_body,
    "preact-resnet18-rb": preact_resnet18_rb_body,
    **{name: (lambda name=name: torchvision_resnet_body(name)) for name in TORCHVISION_RESNETS},
}
MAX_CLASSES = 100_000   # a model's classes (create_model); imports refuse a head asking for more
ARCH_HELP = ("small-cnn, cnn4, wrn-<depth>-<width> (e.g. wrn-16-4, wrn-28-10, wrn-34-10), preact-resnet18, "
             "preact-resnet18-rb, " + ", ".join(TORCHVISION_RESNETS))


def register_arch(name: str, body_factory: Callable[[], tuple[nn.Sequential, int]]) -> None:
    _REGISTRY[name] = body_factory


def list_archs() -> list[str]:
    return sorted(_REGISTRY) + ["wrn-<depth>-<width>"]


def check_arch(arch: str) -> str:
    """Validate an arch name without building it (configs call this at the boundary)."""
    if arch in _REGISTRY:
        return arch
    m = _WRN.match(str(arch))
    if m:
        _wrn_size(arch, m)
        return arch
    raise ConfigError(f"arch={arch!r} is not known; choose one of: {ARCH_HELP}")


WRN_MAX_DEPTH, WRN_MAX_WIDTH = 1000, 64   # wrn-<depth>-<width>: bounded before anything is built


def _wrn_size(arch: str, m: re.Match) -> tuple[int, int]:
    depth, width = int(m.group(1)), int(m.group(2))
    if not 1 <= width <= WRN_MAX_WIDTH:
        raise ConfigError(f"arch={arch!r}: wrn width={width} is not allowed; use 1 to {WRN_MAX_WIDTH} (e.g. wrn-16-4)")
    if depth > WRN_MAX_DEPTH:
        raise ConfigError(f"arch={arch!r}: wrn depth={depth} is not allowed; at most {WRN_MAX_DEPTH}")
    units_per_stage(depth)
    return depth, width


def _body(arch: str) -> tuple[nn.Sequential, int]:
    if arch in _REGISTRY:
        return _REGISTRY[arch]()
    m = _WRN.match(arch)
    if m:
        return wide_resnet_body(*_wrn_size(arch, m))
    raise ConfigError(f"arch={arch!r} is not known; choose one of: {ARCH_HELP}")


def default_normalization(arch: str) -> tuple[tuple, tuple]:
    return (IMAGENET_MEAN, IMAGENET_STD) if arch in TORCHVISION_RESNETS else (CIFAR_MEAN, CIFAR_STD)


def create_model(arch: str, num_classes: int, *, head: HeadSpec | None = None, input_size: int = 32,
                 mean=None, std=None) -> ImageClassifier:
    """Build `arch` with a fresh `head` for `num_classes`; inputs are pixels in [0,1]."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool):
        raise ConfigError(f"num_classes={num_classes!r} must be a whole number >= 2")
    check_range("num_classes", num_classes, 2, MAX_CLASSES)
    check_range("input_size", input_size, 8, 1024)
    body, dim = _body(arch)
    d_mean, d_std = default_normalization(arch)
    model = ImageClassifier(body, create_head(head or HeadSpec(), dim, num_classes), dim, arch=arch,
                            num_classes=num_classes, input_size=input_size,
                            mean=mean or d_mean, std=std or d_std)
    model.head_spec = head or HeadSpec()
    return model


__all__ = ["create_model", "MAX_CLASSES", "check_arch", "register_arch", "list_archs", "ImageClassifier", "HeadSpec", "create_head",
           "HEAD_KINDS", "CIFAR_MEAN", "CIFAR_STD", "IMAGENET_MEAN", "IMAGENET_STD"]
