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
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import ConfigError, ModelError
from .io import atomic_dir_write
from .models import HeadSpec, ImageClassifier, create_model

FORMAT = "robust-transfer-checkpoint/1"
WEIGHTS = "model.safetensors"
META = "meta.json"
TRAIN_STATE = "train_state.safetensors"
TRAIN_STATE_META = "train_state.json"
OUR_FILES = frozenset({WEIGHTS, META, TRAIN_STATE, TRAIN_STATE_META})


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


def check_checkpoint_target(path: str | Path, name: str = "checkpoint_dir") -> Path:
    """A checkpoint may only replace nothing, an empty directory or a checkpoint of ours (issue 17 §1):
    a directory with anything else in it, or a file, is the user's and is refused (ConfigError, exit 2)."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ConfigError(f"{name}={str(path)!r} is an existing file, not a directory; give a new or empty "
                          "directory, or one that holds a checkpoint of ours")
    if path.is_dir():
        entries = sorted(p.name for p in path.iterdir())
        others = [e for e in entries if e not in OUR_FILES]
        if others or (entries and not _is_our_meta(path / META)):
            what = f"{others[0]!r}" if others else f"no {META} of ours"
            raise ConfigError(f"{name}={str(path)!r} is a directory that is not a checkpoint of ours (it holds "
                              f"{what}); nothing was changed: give a new or empty directory, or one holding only "
                              f"a checkpoint ({', '.join(sorted(OUR_FILES))})")
    return path


def _is_our_meta(meta: Path) -> bool:
    try:
        return meta.is_file() and json.loads(meta.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def _atomic_dir_write(path: Path, write) -> None:
    """io.atomic_dir_write, only over nothing, an empty directory or a checkpoint of ours
    (`check_checkpoint_target`)."""
    check_checkpoint_target(path)
    atomic_dir_write(path, write)


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

    _atomic_dir_write(Path(path), write)
    return Path(path)


def read_metadata(path: str | Path) -> dict:
    path = Path(path)
    if not (path / META).is_file() or not (path / WEIGHTS).is_file():
        raise ModelError(f"checkpoint {str(path)!r} not found: expected a directory with {WEIGHTS} and {META}")
    if (path / META).stat().st_size > MAX_META_BYTES:
        raise ModelError(f"checkpoint {str(path)!r} has a {META} of {(path / META).stat().st_size} bytes; "
                         f"at most {MAX_META_BYTES} are read")
    try:
        meta = json.loads((path / META).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"checkpoint {str(path)!r} has a corrupted {META}: {e}") from None
    except RecursionError:
        raise ModelError(f"checkpoint {str(path)!r} has a {META} nested too deeply to be ours") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"checkpoint {str(path)!r} is not a robust-transfer checkpoint (format={meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r})")
    check_metadata(meta, path)
    return meta


MAX_META_BYTES = 16 * 2**20   # meta.json: a few KB in practice (classes, lineage, evaluation)


def check_metadata(meta: dict, path: str | Path) -> None:
    """The fields a model is built from, validated before anything is built (ModelError, exit 4)."""
    from .models import check_arch

    def bad(field: str, allowed: str):
        return ModelError(f"checkpoint {str(path)!r} has {META} {field}={meta.get(field)!r}; allowed: {allowed}")

    for key in ("arch", "num_classes", "mean", "std"):
        if key not in meta:
            raise ModelError(f"checkpoint {str(path)!r} has a {META} without {key!r}")
    if not isinstance(meta["arch"], str):
        raise bad("arch", "an architecture name")
    try:
        check_arch(meta["arch"])
    except ConfigError as e:
        raise ModelError(f"checkpoint {str(path)!r}: {META}: {e}") from None
    for key, low, high in (("num_classes", 2, 100_000), ("input_size", 8, 1024)):
        v = meta.get(key, 32)
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise bad(key, f"a whole number in [{low}, {high}]")
    for key in ("mean", "std"):
        v = meta[key]
        if (not isinstance(v, list) or len(v) != 3
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
                or (key == "std" and not all(x > 0 for x in v))):
            raise bad(key, "a list of 3 finite numbers" + (" > 0" if key == "std" else ""))
    head = meta.get("head", {})
    if not isinstance(head, dict):
        raise bad("head", "a mapping of kind, mlp_depth, width, dropout, batch_norm")
    try:
        HeadSpec(**head)
    except TypeError:
        raise bad("head", "a mapping of kind, mlp_depth, width, dropout, batch_norm") from None
    except ConfigError as e:
        raise ModelError(f"checkpoint {str(path)!r}: {META} head: {e}") from None


def _weights_header(path: Path) -> dict[str, tuple]:
    """Tensor name → shape from the safetensors header (reads the header only, allocates no tensor)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path / WEIGHTS), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"checkpoint {str(path)!r} has corrupted weights ({WEIGHTS}): {e}") from None


def _check_shapes(path: Path, meta: dict, expected: dict[str, tuple], found: dict[str, tuple]) -> None:
    missing, unexpected = set(expected) - set(found), set(found) - set(expected)
    if missing or unexpected:
        raise ModelError(f"checkpoint {str(path)!r} does not match arch={meta['arch']!r}: "
                         f"{len(missing)} missing and {len(unexpected)} unexpected tensors (e.g. {sorted(missing or unexpected)[0]!r})")
    for k, shape in expected.items():
        if found[k] != shape:
            raise ModelError(f"checkpoint {str(path)!r} does not match arch={meta['arch']!r}: tensor {k!r} has shape "
                             f"{found[k]}, expected {shape}")


def _build(meta: dict) -> ImageClassifier:
    return create_model(meta["arch"], int(meta["num_classes"]), head=HeadSpec(**meta.get("head", {})),
                        input_size=int(meta.get("input_size", 32)), mean=tuple(meta["mean"]), std=tuple(meta["std"]))


def load_checkpoint(path: str | Path, *, expect_arch: str | None = None,
                    expect_classes: int | None = None) -> tuple[ImageClassifier, dict]:
    """Rebuild the model from metadata and load its weights (strict: every tensor must fit).

    The metadata is checked against the weights file's header before the model is built: the model is first
    built on the `meta` device (no memory), its tensor shapes compared with the header's, and only then built
    for real, so a meta.json that describes a 17 GB head over a 100 KB file is refused without allocating it."""
    path = Path(path)
    meta = read_metadata(path)
    if expect_arch is not None and meta["arch"] != expect_arch:
        raise ModelError(f"checkpoint {str(path)!r} is arch={meta['arch']!r}, but arch={expect_arch!r} was asked for")
    if expect_classes is not None and meta["num_classes"] != expect_classes:
        raise ModelError(f"checkpoint {str(path)!r} has num_classes={meta['num_classes']}, but the data has {expect_classes} classes")
    found = _weights_header(path)
    with torch.device("meta"):
        skeleton = _build(meta)
    _check_shapes(path, meta, {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}, found)
    model = _build(meta)
    try:
        state = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"checkpoint {str(path)!r} has corrupted weights ({WEIGHTS}): {e}") from None
    _check_shapes(path, meta, {k: tuple(v.shape) for k, v in model.state_dict().items()},
                  {k: tuple(v.shape) for k, v in state.items()})
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
