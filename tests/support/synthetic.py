"""Synthetic data builders: a learnable ImageFolder on disk, learnable tensors in memory."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

SIZE, NUM_CLASSES = 16, 10   # `synthetic`'s images: 16×16, 10 classes


def write_imagefolder(root: Path, n_classes: int = 3, n_train: int = 24, n_test: int = 12, size: int = 16,
                      seed: int = 0) -> Path:
    """A learnable ImageFolder tree (PNG): each class is a colour with noise and a class-specific stripe."""
    assert 1 <= n_classes <= size, f"{n_classes} classes need {n_classes} distinct stripe columns, size={size}"
    rng = np.random.default_rng(seed)
    palette = rng.uniform(0.15, 0.85, size=(n_classes, 3))
    for split, n in (("train", n_train), ("test", n_test)):
        for c in range(n_classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = palette[c] + rng.normal(0, 0.08, size=(size, size, 3))
                img[:, (c * size) // n_classes] += 0.3
                Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(d / f"{i:04d}.png")
    return root


def synthetic(n: int, seed: int):
    """Learnable 10-class images: a class colour (robust but noisy cue) + a faint ±0.03 class
    texture over every pixel (very predictive but breakable within ε=8/255) + pixel noise."""
    templates = torch.Generator().manual_seed(1234)          # the same classes for every split
    texture = torch.randint(0, 2, (NUM_CLASSES, 3, SIZE, SIZE), generator=templates).float() * 2 - 1
    colour = 0.3 + 0.4 * torch.rand(NUM_CLASSES, 3, 1, 1, generator=templates)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    x = (colour[y] + 0.06 * torch.randn(n, 3, 1, 1, generator=g) + 0.03 * texture[y]
         + 0.05 * torch.randn(n, 3, SIZE, SIZE, generator=g))
    return x.clamp(0, 1), y


def as_images(x: torch.Tensor) -> torch.Tensor:
    """Pixels in [0,1] → the uint8 images the evaluation front door takes."""
    assert x.min() >= 0 and x.max() <= 1, "pixels outside [0,1] would wrap around in uint8"
    return (x * 255).round().to(torch.uint8)
