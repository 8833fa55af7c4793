"""The one way to put a model in eval mode for a while: `with eval_mode(model): ...`.

Every module's own training flag is saved and restored, not only the top one: a transfer model may
have a frozen feature extractor in eval mode under a head in train mode (or a BatchNorm the caller
froze), and `model.train(was_training)` afterwards would switch that extractor back to train mode,
so its BatchNorm statistics would move on the next training batch. Attacks, evaluation, the
diagnostics, feature extraction and input gradients all use this (docs/architecture.md: attacks run
in eval mode).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode inside the block; afterwards every submodule's training flag is what it was."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag
