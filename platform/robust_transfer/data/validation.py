"""The validation split: every choice (epochs to keep, λ_d, a head, a champion) reads `val_*` metrics
measured here, never the test split, which is only reported.

`carve_validation` takes a seeded, stratified validation set out of the TRAINING split with
scikit-learn's `train_test_split(..., stratify=labels)` (`val_fraction` of it, or `val_per_class`
images of every class), then applies `per_class` to what is left, so `per_class` counts training
images after the split. Validation and training indices never overlap; both are positions in the
loaded training split, recorded on the run as sizes, seed and SHA-256 (`Split.params`, `Split.tags`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..digests import indices_sha256
from ..errors import ConfigError, DataError
from .imagedata import ImageData
from .subsets import stratified_indices

VAL_TAG = "rtl.val_indices_sha256"
TRAIN_TAG = "rtl.train_indices_sha256"


@dataclass(frozen=True, eq=False)
class Split:
    train: ImageData
    val: ImageData
    train_indices: torch.Tensor   # sorted positions in the loaded training split
    val_indices: torch.Tensor     # sorted positions in the loaded training split, disjoint from train_indices
    seed: int
    fraction: float | None = None   # what was asked: val_fraction, or val_per_class (which wins)
    per_class: int | None = None

    def params(self) -> dict:
        return {"val_size": len(self.val), "train_size": len(self.train), "val_seed": self.seed}

    def tags(self) -> dict[str, str]:
        return {VAL_TAG: indices_sha256(self.val_indices), TRAIN_TAG: indices_sha256(self.train_indices)}

    def record(self) -> dict:
        """For checkpoint metadata: what was held out and what was trained on."""
        asked = {"val_per_class": self.per_class} if self.per_class is not None else {"val_fraction": self.fraction}
        return self.params() | {k: v for k, v in asked.items() if v is not None} | {
            "val_indices_sha256": indices_sha256(self.val_indices),
            "train_indices_sha256": indices_sha256(self.train_indices)}


def carve_validation(data: ImageData, *, val_fraction: float = 0.1, val_per_class: int | None = None,
                     seed: int = 0, per_class: int | None = None, per_class_seed: int | None = None) -> Split:
    """Training and validation sets from the training split `data` (see the module docstring). `seed` picks
    the validation images; `per_class_seed` (default `seed`) the `per_class` training images of the rest.

    ConfigError (exit 2) for a val_fraction outside (0, 0.5]; DataError (exit 3) when the data cannot
    meet the request: a class that would get no validation image or keep no training image.
    """
    from sklearn.model_selection import train_test_split

    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction <= 0.5:
        raise ConfigError(f"val_fraction={val_fraction!r} is out of range; allowed: (0, 0.5]")
    n, labels = len(data), data.labels.cpu().numpy()
    counts = np.bincount(labels, minlength=data.num_classes)
    if val_per_class is not None:
        if isinstance(val_per_class, bool) or not isinstance(val_per_class, int) or val_per_class < 1:
            raise ConfigError(f"val_per_class={val_per_class!r} must be a whole number >= 1")
        low = int(counts.argmin())
        if counts[low] <= val_per_class:
            raise DataError(f"val_per_class={val_per_class} leaves class {data.classes[low]!r} of {data.spec} "
                            f"with no training image (it has {counts[low]}); allowed: 1..{max(counts[low] - 1, 0)}")
        test_size: float | int = val_per_class
        asked = f"val_per_class={val_per_class}"
    else:
        test_size, asked = float(val_fraction), f"val_fraction={val_fraction}"
    low = int(counts.argmin())
    if counts[low] < 2:
        raise DataError(f"{asked}: class {data.classes[low]!r} of {data.spec} has {counts[low]} training "
                        "image(s); a validation split needs at least 2 per class (one to train on, one to validate)")
    state = int(seed) % 2**32
    try:
        if val_per_class is not None:   # exactly val_per_class of every class, whatever the class sizes
            parts = [train_test_split(np.flatnonzero(labels == c), test_size=val_per_class, random_state=state)
                     for c in range(data.num_classes)]
            train_idx = np.concatenate([p[0] for p in parts])
            val_idx = np.concatenate([p[1] for p in parts])
        else:
            train_idx, val_idx = train_test_split(np.arange(n), test_size=test_size, stratify=labels,
                                                  random_state=state, shuffle=True)
    except ValueError as e:
        raise DataError(f"{asked} cannot be carved from {data.spec} train ({n} images, {data.num_classes} "
                        f"classes): {e}") from None
    missing = sorted(set(range(data.num_classes)) - set(labels[val_idx].tolist()))
    if missing:
        c = missing[0]
        raise DataError(f"{asked} leaves class {data.classes[c]!r} of {data.spec} with no validation image "
                        f"({counts[c]} training images); raise val_fraction or give val_per_class")
    train_idx = torch.as_tensor(np.sort(train_idx), dtype=torch.int64)
    val_idx = torch.as_tensor(np.sort(val_idx), dtype=torch.int64)
    rest = data.subset(train_idx)
    if per_class is not None:
        try:
            keep = stratified_indices(rest, per_class, seed=seed if per_class_seed is None else per_class_seed)
        except DataError as e:
            raise DataError(f"{e} (after the validation split, {asked})") from None
        train_idx = train_idx[keep]
        rest = data.subset(train_idx)
    return Split(train=rest, val=data.subset(val_idx), train_indices=train_idx, val_indices=val_idx, seed=int(seed),
                 fraction=None if val_per_class is not None else float(val_fraction), per_class=val_per_class)
