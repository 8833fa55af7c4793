"""Checkpoints: safetensors weights + JSON metadata. Loading never unpickles.

A checkpoint is a directory:
    model.safetensors   the model's state_dict (tensors only)
    meta.json           arch, classes, normalisation, head, threat model, data spec, lineage
    train_state.safetensors / train_state.json   (optional) optimizer, RNG and loop state for --resume
Writes go to a temporary sibling directory that is renamed into place, so a kill never leaves a
checkpoint that loads wrong.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import ModelError
from .io import atomic_dir_write
from .models import HeadSpec, ImageClassifier, create_model

FORMAT = "robust-transfer-checkpoint/1"
WEIGHTS = "model.safetensors"
META = "meta.json"
TRAIN_STATE = "train_state.safetensors"
TRAIN_STATE_META = "train_state.json"


def model_metadata(model: ImageClassifier, **extra) -> dict:
    meta = {
        "format": FORMAT,
        "arch": model.arch,
        "num_classes": model.num_classes,
        "input_size": model.input_size,
        "mean": model.mean.flatten().tolist(),
        "std": model.std.flatten().tolist(),
        "head": getattr(model, "head_spec", HeadSpec()).to_dict(),
    }
    meta.update({k: v for k, v in extra.items() if v is not None})
    return meta


def _contiguous_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def save_checkpoint(path: str | Path, model: ImageClassifier, meta: dict | None = None,
                    train_state: dict | None = None) -> Path:
    """Save model (+ optional resumable train state: {'tensors': {...}, 'json': {...}})."""
    full_meta = model_metadata(model, **(meta or {}))

    def write(d: Path):
        save_file(_contiguous_state(model), str(d / WEIGHTS), metadata={"format": FORMAT})
        (d / META).write_text(json.dumps(full_meta, indent=2, sort_keys=True))
        if train_state is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in train_state["tensors"].items()},
                      str(d / TRAIN_STATE))
            (d / TRAIN_STATE_META).write_text(json.dumps(train_state["json"], indent=2, sort_keys=True))

    atomic_dir_write(Path(path), write)
    return Path(path)


def read_metadata(path: str | Path) -> dict:
    path = Path(path)
    if not (path / META).is_file() or not (path / WEIGHTS).is_file():
        raise ModelError(f"checkpoint {str(path)!r} not found: expected a directory with {WEIGHTS} and {META}")
    try:
        meta = json.loads((path / META).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"checkpoint {str(path)!r} has a corrupted {META}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"checkpoint {str(path)!r} is not a robust-transfer checkpoint (format={meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r})")
    return meta


def load_checkpoint(path: str | Path, *, expect_arch: str | None = None,
                    expect_classes: int | None = None) -> tuple[ImageClassifier, dict]:
    """Rebuild the model from metadata and load its weights (strict: every tensor must fit)."""
    path = Path(path)
    meta = read_metadata(path)
    if expect_arch is not None and meta["arch"] != expect_arch:
        raise ModelError(f"checkpoint {str(path)!r} is arch={meta['arch']!r}, but arch={expect_arch!r} was asked for")
    if expect_classes is not None and meta["num_classes"] != expect_classes:
        raise ModelError(f"checkpoint {str(path)!r} has num_classes={meta['num_classes']}, but the data has {expect_classes} classes")
    model = create_model(meta["arch"], int(meta["num_classes"]), head=HeadSpec(**meta.get("head", {})),
                         input_size=int(meta.get("input_size", 32)), mean=tuple(meta["mean"]), std=tuple(meta["std"]))
    try:
        state = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"checkpoint {str(path)!r} has corrupted weights ({WEIGHTS}): {e}") from None
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise ModelError(f"checkpoint {str(path)!r} does not match arch={meta['arch']!r}: "
                         f"{len(missing)} missing and {len(unexpected)} unexpected tensors (e.g. {sorted(missing or unexpected)[0]!r})")
    for k, v in model.state_dict().items():
        if state[k].shape != v.shape:
            raise ModelError(f"checkpoint {str(path)!r} does not match arch={meta['arch']!r}: tensor {k!r} has shape "
                             f"{tuple(state[k].shape)}, expected {tuple(v.shape)}")
    model.load_state_dict(state, strict=True)
    return model, meta


def load_train_state(path: str | Path) -> dict | None:
    path = Path(path)
    if not (path / TRAIN_STATE).is_file():
        return None
    try:
        return {"tensors": load_file(str(path / TRAIN_STATE)),
                "json": json.loads((path / TRAIN_STATE_META).read_text())}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"checkpoint {str(path)!r} has a corrupted training state: {e}") from None
