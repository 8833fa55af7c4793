"""Device selection (`device=auto|cpu|cuda`) and CPU thread settings."""
from __future__ import annotations

import torch

from .errors import one_of

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    if name not in DEVICES and not name.startswith("cuda:"):
        raise one_of("device", name, DEVICES)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise one_of("device", name, ("auto", "cpu") + (" (no CUDA device is visible)",))
    return torch.device(name)
