"""Device selection (`device=auto|cpu|cuda|cuda:N`): one check (configs) and one resolution (strategies)."""
from __future__ import annotations

from .errors import one_of

DEVICES = ("auto", "cpu", "cuda")


def check_device(name) -> str:
    """`name` if it is a device we accept (auto, cpu, cuda, cuda:N), else ConfigError; no torch needed."""
    if name not in DEVICES and not str(name).startswith("cuda:"):
        raise one_of("device", name, DEVICES)
    return name


def resolve_device(name: str = "auto"):
    """The torch.device for `name`; a CUDA device that is not visible is refused in one line."""
    import torch

    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise one_of("device", name, ("auto", "cpu") + (" (no CUDA device is visible)",))
    return torch.device(name)
