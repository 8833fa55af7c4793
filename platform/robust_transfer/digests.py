"""SHA-256 digests: one function per kind of thing we hash, so equal digests mean the same thing everywhere.

    file_sha256      a file's bytes (streamed)
    indices_sha256   positions as little-endian int64: which examples (evaluation subsets, validation splits)
    mask_sha256      a bool mask as one byte per element: which examples an attack saw (the cascade)
    tensors_sha256   data given as tensors: (images, labels) with dtype and shape
    weights_sha256   a model: its module structure and every state_dict tensor
    json_sha256      a dict of plain values, as canonical JSON (sorted keys, no spaces)

Only the standard library and torch: every layer may import it. Digests that are recorded (run tags,
checkpoint metadata, store keys) must not change: a new encoding needs a new name.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch


def file_sha256(path: str | Path) -> str:
    """SHA-256 of the file's bytes, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def indices_sha256(indices) -> str:
    """SHA-256 of the indices (a tensor or a sequence of ints) as little-endian int64: equal hashes ⇔ the same
    examples, in the same order."""
    import numpy as np

    if isinstance(indices, torch.Tensor):
        indices = indices.to(torch.int64).cpu().numpy()
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()


def mask_sha256(mask: torch.Tensor) -> str:
    """SHA-256 of a bool mask, one byte (0 or 1) per element."""
    return hashlib.sha256(mask.to(torch.uint8).cpu().contiguous().numpy().tobytes()).hexdigest()


def tensors_sha256(images: torch.Tensor, labels: torch.Tensor) -> str:
    """Content hash of (images, labels) for data given as tensors rather than an ImageData."""
    h = hashlib.sha256(f"{images.dtype}:{tuple(images.shape)}".encode())
    h.update(images.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(labels.detach().to(torch.int64).cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def weights_sha256(model: torch.nn.Module) -> str:
    """Content hash of a model: its module structure (`repr`, class names) and every state_dict tensor.

    Behaviour that lives outside parameters and buffers (a plain Python attribute scaling the
    logits, say) is invisible here except through `repr`: keep such state in buffers.
    """
    h = hashlib.sha256()
    h.update(repr(model).encode())
    h.update(".".join(type(m).__qualname__ for m in model.modules()).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def canonical_json(obj) -> str:
    """One spelling of a dict of plain values: sorted keys, no spaces, anything else as str()."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def json_sha256(obj) -> str:
    """SHA-256 of `canonical_json(obj)`."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()
