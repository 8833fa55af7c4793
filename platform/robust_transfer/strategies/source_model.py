"""The source model a transfer strategy starts from, and its lineage: the `Source` (resolved by the command
layer and handed in), the strategies' shared opening (`setup`: seed, device, the target data checked against
the source's input size), a new head, and the lineage recorded in the result's checkpoint. Used by
`retrain_blocks`, `transfer`, `finetune_adv` and `lwf`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..attacks import ThreatModel
from ..data import ImageData, load_dataset, resize_images, stratified_subset
from ..errors import ConfigError, ModelError
from ..models import HeadSpec, ImageClassifier, create_head
from ..reporting import RunLogger
from .engine import TrainingData
from .validate import split_training

SOURCE_META_KEYS = ("arch", "num_classes", "input_size", "classes", "data_spec", "data_sha256", "threat_model",
                    "training", "head", "lineage", "evaluation")


@dataclass
class Source:
    model: ImageClassifier
    meta: dict
    uri: str

    @classmethod
    def of(cls, model, meta: dict, uri: str) -> "Source":
        """The source loaded from `uri` (by the command layer), checked: ModelError unless it is one of ours."""
        if not isinstance(model, ImageClassifier) or not isinstance(model.body, nn.Sequential):
            raise ModelError(f"source_model {uri!r} is not a robust-transfer ImageClassifier with a block body")
        return cls(model, meta, uri)


@dataclass
class Setup:
    """What a source-based strategy starts from (`setup`)."""

    device: torch.device
    threat: ThreatModel | None   # the TRAINING threat (finetune_adv); None for strategies that train on natural examples
    source: Source
    data: TrainingData


def setup(cfg, logger: RunLogger, source: Source, *, data: str = "target", seed: bool = True) -> Setup:
    """The opening every source-based strategy shares: the seed (unless `seed=False`), the device, the training
    threat model (if the config has one), and the train, validation and test splits of the dataset named by the
    config field `data` (`target`; retrain_blocks: `dataset`; empty: the source's own data) at the source's input
    size; the run tagged with the source and the data."""
    from ..device import resolve_device

    if seed:
        torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    threat = ThreatModel(cfg.epsilon, cfg.step_size, cfg.norm) if hasattr(cfg, "epsilon") else None
    if getattr(cfg, "eval_norm", "") is None:     # the evaluation threat defaults to the source's recorded norm
        cfg.resolve_source_eval_threat(recorded_norm(source.meta))
        logger.log_params({k: getattr(cfg, k) for k in ("eval_norm", "eval_epsilon", "eval_step_size")})
    splits = load_splits(getattr(cfg, data), source, cfg, param=data)
    logger.set_tags({"rtl.source_model": source.uri, "rtl.source_arch": source.model.arch,
                     "rtl.data": splits.train.spec, "rtl.data_sha256": splits.train.sha256()})
    return Setup(device, threat, source, splits)


def recorded_norm(meta: dict) -> str | None:
    """The norm a model's metadata records: its evaluation threat's, else its training / published threat's."""
    for key in ("eval_threat", "threat_model"):
        if (meta.get(key) or {}).get("norm"):
            return str(meta[key]["norm"])
    return None


def load_data(spec: str, source: Source, *, per_class: int | None, seed: int, upsample: bool, data_dir=None,
              progress: bool = True, param: str = "target", download: bool = False) -> tuple[ImageData, ImageData]:
    """Train (optionally `per_class` per class) and test splits of `spec` (default: the source's own
    dataset), at the source's input size: a different size is an error unless `upsample`."""
    train, test = _raw_splits(spec, source, data_dir, progress, param, download)
    if per_class is not None:
        train = stratified_subset(train, per_class, seed=seed)
    train, test = _at_source_size(source, (train, test), upsample, param)
    return train, test


def _raw_splits(spec, source: Source, data_dir, progress, param, download: bool = False) -> tuple[ImageData, ImageData]:
    spec = spec or source.meta.get("data_spec")
    if not spec:
        raise ConfigError(f"{param} is required: the source model's metadata records no dataset")
    return (load_dataset(spec, "train", data_dir=data_dir, progress=progress, download=download),
            load_dataset(spec, "test", data_dir=data_dir, progress=progress))


def _at_source_size(source: Source, splits, upsample: bool, param: str) -> tuple:
    size = source.model.input_size
    if splits[0].image_size == size:
        return tuple(splits)
    if not upsample:
        raise ModelError(f"{param}={splits[0].spec!r} has {splits[0].image_size}x{splits[0].image_size} images but "
                         f"the source model takes {size}x{size}; pass upsample=true to resize them to the source's size")
    return tuple(resize_images(d, size) for d in splits)


def load_splits(spec: str, source: Source, cfg, *, param: str = "target") -> TrainingData:
    """(train, val, test, split) of `spec` (default: the source's dataset): the validation set carved out of the
    training split (`cfg.val_fraction` / `cfg.val_per_class`, seeded, stratified), then `cfg.per_class` of the
    rest; all at the source's input size (see `load_data`)."""
    full, test = _raw_splits(spec, source, cfg.data_dir, cfg.progress, param, getattr(cfg, "download", False))
    split = split_training(full, cfg)
    train, val, test = _at_source_size(source, (split.train, split.val, test), cfg.upsample, param)
    return TrainingData(train, val, test, split)


def same_classes(source: Source, data: ImageData) -> bool:
    return source.model.num_classes == data.num_classes and tuple(source.meta.get("classes", ())) == data.classes


def replace_head(model: ImageClassifier, spec: HeadSpec, num_classes: int) -> ImageClassifier:
    """A freshly initialised head for the target's classes on top of the source's features."""
    model.head = create_head(spec, model.feature_dim, num_classes)
    model.head_spec = spec
    model.num_classes = num_classes
    return model


def source_lineage(source: Source, **extra) -> dict:
    """The checkpoint's `lineage` beyond the strategy and run (the engine adds those): the source and its metadata."""
    return {"source_model": source.uri, "source_meta": {k: source.meta[k] for k in SOURCE_META_KEYS if k in source.meta},
            **extra}
