"""`create_model(arch, num_classes)`: the architecture registry (timm-style).

Light to import: the registry holds names and factories that import torch only when a model is built,
so configs can check `arch` and `rtl --help` can list the architectures without loading torch
(tests/test_cli.py holds it). The torch-backed names (`ImageClassifier`, `CIFAR_MEAN`, ...) load on
first use (module `__getattr__`).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable

from ..errors import ConfigError, check_range
from .heads import HEAD_KINDS, HeadSpec, create_head

if TYPE_CHECKING:
    from torch import nn

    from .base import ImageClassifier

_WRN = re.compile(r"^wrn-(\d+)-(\d+)$")
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "wide_resnet50_2")
WRN_FAMILY = "wrn-<depth>-<width>"   # wrn-16-4, wrn-28-10, wrn-34-10 (Madry's WRN-32-10 is wrn-32-10)


def _small_cnn():
    from .small_cnn import small_cnn_body

    return small_cnn_body()


def _cnn4():
    from .cnn4 import cnn4_body

    return cnn4_body()


def _preact_resnet18():
    from .resnet import preact_resnet18_body

    return preact_resnet18_body()


def _preact_resnet18_rb():
    from .resnet import preact_resnet18_rb_body

    return preact_resnet18_rb_body()


def _torchvision(name: str):
    def body():
        from .resnet import torchvision_resnet_body

        return torchvision_resnet_body(name)
    return body


# name → body factory returning (nn.Sequential of blocks, feature_dim); wrn-<depth>-<width> is built by pattern
_REGISTRY: dict[str, Callable[[], tuple[nn.Sequential, int]]] = {
    "small-cnn": _small_cnn,
    "cnn4": _cnn4,
    "preact-resnet18": _preact_resnet18,
    "preact-resnet18-rb": _preact_resnet18_rb,
    **{name: _torchvision(name) for name in TORCHVISION_RESNETS},
}


def register_arch(name: str, body_factory: Callable[[], tuple[nn.Sequential, int]]) -> None:
    _REGISTRY[name] = body_factory


def list_archs() -> list[str]:
    """Every architecture name `create_model` takes, the WRN family as its pattern."""
    return sorted(_REGISTRY) + [WRN_FAMILY]


def _arch_help() -> str:
    return ", ".join(list_archs()) + " (e.g. wrn-16-4, wrn-28-10, wrn-34-10)"


def check_arch(arch: str) -> str:
    """Validate an arch name without building it (configs call this at the boundary)."""
    if arch in _REGISTRY:
        return arch
    m = _WRN.match(str(arch))
    if m:
        _wrn_size(arch, m)
        return arch
    raise ConfigError(f"arch={arch!r} is not known; choose one of: {_arch_help()}")


WRN_MAX_DEPTH, WRN_MAX_WIDTH = 1000, 64   # wrn-<depth>-<width>: bounded before anything is built


def _wrn_size(arch: str, m: re.Match) -> tuple[int, int]:
    from .wide_resnet import units_per_stage

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
        from .wide_resnet import wide_resnet_body

        return wide_resnet_body(*_wrn_size(arch, m))
    raise ConfigError(f"arch={arch!r} is not known; choose one of: {_arch_help()}")


def default_normalization(arch: str) -> tuple[tuple, tuple]:
    from .base import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD

    return (IMAGENET_MEAN, IMAGENET_STD) if arch in TORCHVISION_RESNETS else (CIFAR_MEAN, CIFAR_STD)


def create_model(arch: str, num_classes: int, *, head: HeadSpec | None = None, input_size: int = 32,
                 mean=None, std=None) -> ImageClassifier:
    """Build `arch` with a fresh `head` for `num_classes`; inputs are pixels in [0,1]."""
    from .base import ImageClassifier

    if not isinstance(num_classes, int) or isinstance(num_classes, bool):
        raise ConfigError(f"num_classes={num_classes!r} must be a whole number >= 2")
    check_range("num_classes", num_classes, 2, 100_000)
    check_range("input_size", input_size, 8, 1024)
    body, dim = _body(arch)
    d_mean, d_std = default_normalization(arch)
    model = ImageClassifier(body, create_head(head or HeadSpec(), dim, num_classes), dim, arch=arch,
                            num_classes=num_classes, input_size=input_size,
                            mean=mean or d_mean, std=std or d_std)
    model.head_spec = head or HeadSpec()
    return model


_FROM_BASE = ("ImageClassifier", "CIFAR_MEAN", "CIFAR_STD", "IMAGENET_MEAN", "IMAGENET_STD")


def __getattr__(name: str):
    """The torch-backed names, imported on first use (so importing the registry stays light)."""
    if name in _FROM_BASE:
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["create_model", "check_arch", "register_arch", "list_archs", "ImageClassifier", "HeadSpec", "create_head",
           "HEAD_KINDS", "CIFAR_MEAN", "CIFAR_STD", "IMAGENET_MEAN", "IMAGENET_STD", "TORCHVISION_RESNETS"]
