"""Which images an evaluation runs on: a split of a dataset (`data_for_model`), resized to the model's
input size, and for `split=val` the validation split the model's training carved out of its training
split (`validation_split`), so `val_*` metrics are measured on images the model never trained on.
"""
from __future__ import annotations

from ..config.common import ValidationConfig
from ..data import ImageData, load_dataset, resize_images
from ..data.validation import carve_validation
from ..digests import indices_sha256
from ..errors import ConfigError, DataError, ModelError


# The training entry points' defaults (config.common.ValidationConfig): what a model that records no split used.
VAL_DEFAULTS = {"val_fraction": ValidationConfig.val_fraction, "val_seed": ValidationConfig.val_seed}


def validation_split(meta: dict, data: ImageData) -> tuple[ImageData, str]:
    """(the validation set, which split it is in words) for `split=val`: carved from the training split `data`
    (`data.validation.carve_validation`) with what the model's training recorded (`meta["validation"]`:
    val_fraction or val_per_class, and val_seed), else the training defaults (val_fraction=0.1, val_seed=0).

    When the training recorded the SHA-256 of its validation indices, the carved split must match it;
    checkpoints written before the recipe was recorded (seed and size only) are matched by trying the
    default fraction, then the recorded size as images per class, then as a fraction. DataError (exit 3)
    when nothing matches: evaluating on a different split would silently mix training images in."""
    rec = meta.get("validation") if isinstance(meta.get("validation"), dict) else {}
    same_data = not meta.get("data_spec") or data.spec == meta.get("data_spec")
    if not rec or not same_data:
        why = "the model records no validation split" if not rec else \
            f"dataset {data.spec!r} is not the one the model was trained on ({meta.get('data_spec')!r})"
        split = carve_validation(data, val_fraction=VAL_DEFAULTS["val_fraction"], seed=VAL_DEFAULTS["val_seed"])
        return split.val, (f"training defaults val_fraction={VAL_DEFAULTS['val_fraction']}, "
                           f"val_seed={VAL_DEFAULTS['val_seed']} ({why}; {len(split.val)} images)")
    seed = rec.get("val_seed", VAL_DEFAULTS["val_seed"])
    if rec.get("val_per_class") is not None:
        asks = [({"val_per_class": rec["val_per_class"]}, "recorded")]
    elif rec.get("val_fraction") is not None:
        asks = [({"val_fraction": rec["val_fraction"]}, "recorded")]
    else:                        # older checkpoints: seed and sizes only
        asks = [({"val_fraction": VAL_DEFAULTS["val_fraction"]}, "default, not recorded")]
        size, classes = rec.get("val_size"), data.num_classes
        if isinstance(size, int) and size > 0:
            if size % classes == 0:
                asks.append(({"val_per_class": size // classes}, "from the recorded val_size"))
            if size / len(data) <= 0.5:
                asks.append(({"val_fraction": size / len(data)}, "from the recorded val_size"))
    want = rec.get("val_indices_sha256")
    for ask, how in asks:
        try:
            split = carve_validation(data, seed=seed, **ask)
        except (ConfigError, DataError):
            continue
        if want is None or indices_sha256(split.val_indices) == want:
            (k, v), = ask.items()
            check = "; its indices match the recorded SHA-256" if want else ""
            return split.val, (f"recorded by the model's training: {k}={v:g} ({how}), val_seed={seed} "
                               f"({len(split.val)} images{check})")
    raise DataError(f"split=val: no validation split of {data.spec} train carved with val_seed={seed} matches the "
                    f"one the model's training recorded (val_indices_sha256={str(want)[:16]}…); tried "
                    + ", ".join(f"{k}={v:g}" for ask, _ in asks for k, v in ask.items()))


def data_for_model(meta: dict, dataset: str, split: str, data_dir=None, progress=True, model=None,
                   download: bool = False) -> tuple[ImageData, str]:
    """(images to evaluate on, which validation split in words or ''): `split` (test | train | val) of
    `dataset` (default: the model's own), resized to the model's input size. `val` is the validation split
    the model's training carved out of its training split (`validation_split`)."""
    spec = dataset or meta.get("data_spec")
    if not spec:
        raise ConfigError("dataset is required: the model's metadata records none")
    data = load_dataset(spec, "train" if split == "val" else split, data_dir=data_dir, progress=progress,
                        download=download)
    val_split = ""
    if split == "val":
        data, val_split = validation_split(meta, data)
    num_classes = getattr(model, "num_classes", meta.get("num_classes"))
    if num_classes is not None and data.num_classes != num_classes:
        raise ModelError(f"the model has {num_classes} classes but dataset={spec!r} has {data.num_classes}; "
                         "evaluate on the data the model was trained for")
    size = getattr(model, "input_size", meta.get("input_size"))
    if size and data.image_size != size:
        data = resize_images(data, int(size))
    return data, val_split
