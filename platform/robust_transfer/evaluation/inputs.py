"""What the evaluation takes in: one check of the tensors and the request at the front door, and the
seeded subset of examples it evaluates.

Images are uint8 [N, C, H, W] (0-255, the data module's format; scaled to [0,1] per batch) or float
pixels in [0,1]; labels are int [N]. A bad tensor is a DataError (exit 3), a bad request value
(batch size, number of examples) a ConfigError (exit 2), each one line naming the value.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError, DataError

# The run tags that say which test examples a run's final evaluation measured: their indices' digest (what lets a
# claim pair two runs) and how many (what a standard error divides by: the split can hold fewer than were asked for).
EVAL_INDICES_TAG, EVAL_EXAMPLES_TAG = "rtl.eval_indices_sha256", "rtl.eval_examples"


def evaluation_tags(n_examples: int, indices_sha256: str) -> dict[str, str]:
    return {EVAL_INDICES_TAG: indices_sha256, EVAL_EXAMPLES_TAG: str(int(n_examples))}


def select_examples(n_total: int, n_examples: int | None, seed: int) -> torch.Tensor:
    """A seeded random subset of range(n_total), sorted; None means all examples.

    The subset for n is a prefix of one seeded permutation, so with the same seed a smaller
    evaluation uses a subset of a larger one's examples.
    """
    if n_examples is None:
        return torch.arange(n_total)
    if isinstance(n_examples, bool) or not isinstance(n_examples, int) or not 1 <= n_examples <= n_total:
        raise ConfigError(f"n_examples={n_examples!r} is out of range; the split has {n_total} examples "
                          f"(allowed: 1..{n_total}, or None for all)")
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n_total, generator=g)[:n_examples].sort().values


def checked_examples(images, labels, *, n_examples: int | None, seed: int, batch_size) -> torch.Tensor:
    """The one input check of the evaluation; returns the evaluated positions (`select_examples`)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be a whole number >= 1")
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        raise DataError(f"images must be a non-empty tensor [N, C, H, W]; got {getattr(images, 'shape', type(images))}")
    if not (images.dtype == torch.uint8 or images.is_floating_point()):
        raise DataError(f"images must be uint8 (0-255) or float pixels in [0,1]; got dtype {images.dtype}")
    if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
        raise DataError(f"labels must be a tensor [{images.shape[0]}] matching images; "
                        f"got {getattr(labels, 'shape', type(labels))}")
    idx = select_examples(images.shape[0], n_examples, seed)
    if images.is_floating_point():
        chosen = images[idx]
        if chosen.min() < 0 or chosen.max() > 1:
            raise DataError(f"float images must be pixels in [0,1]; got values in "
                            f"[{chosen.min().item():.3g}, {chosen.max().item():.3g}] (pass uint8 0-255 instead?)")
    return idx

