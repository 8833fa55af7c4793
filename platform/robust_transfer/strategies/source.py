"""What every strategy that starts from a source model shares: the source and its lineage, the
target data checked against it, frozen/trainable modes, index batches, the final evaluation and
the result checkpoint. Used by `retrain_blocks`, `transfer`, `finetune_adv` and `lwf`.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..attacks import ThreatModel
from ..checkpoints import save_checkpoint
from ..data import ImageData, load_dataset, resize_images, stratified_subset
from ..data.transforms import random_crop_flip
from ..errors import ConfigError, ModelError
from ..models import HeadSpec, ImageClassifier, create_head
from ..reporting import RunLogger
from .common import Budget, EpochMeter, FastPath, memory_format_for, set_lr
from .validate import eval_threat, record_split, split_training, reported_metrics

SOURCE_META_KEYS = ("arch", "num_classes", "input_size", "classes", "data_spec", "data_sha256", "threat_model",
                    "training", "head", "lineage", "evaluation")


@dataclass
class Source:
    model: ImageClassifier
    meta: dict
    uri: str


@dataclass
class StrategyResult:
    model: ImageClassifier
    metrics: dict[str, float]
    checkpoint_dir: Path
    meta: dict


@dataclass
class Setup:
    """What a source-based strategy starts from (`setup`)."""

    device: torch.device
    threat: ThreatModel | None   # the TRAINING threat (finetune_adv); None for strategies that train on natural examples
    source: Source
    train: ImageData
    test: ImageData
    val: ImageData               # carved out of the training split (validate.split_training): what choices read


def setup(cfg, logger: RunLogger, *, source: Source | None = None, data: str = "target", seed: bool = True) -> Setup:
    """The opening every source-based strategy shares: the seed (unless `seed=False`), the device, the training
    threat model (if the config has one), the source (loaded from `cfg.source_model` unless the command resolved it
    already), and the train, validation and test splits of the dataset named by the config field `data` (`target`;
    retrain_blocks: `dataset`; empty: the source's own data) at the source's input size. The validation split is
    recorded on the run (`load_splits`)."""
    from ..device import resolve_device

    if seed:
        torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    threat = ThreatModel(cfg.epsilon, cfg.step_size) if hasattr(cfg, "epsilon") else None
    source = source if source is not None else load_source(cfg.source_model)
    train, val, test = load_splits(getattr(cfg, data), source, cfg, param=data, logger=logger)
    return Setup(device, threat, source, train, test, val)


def load_source(uri: str) -> Source:
    """The source model (trainable, CPU) and its checkpoint metadata; ModelError if it cannot be had."""
    from ..tracking.models import load_model_with_meta

    model, meta = load_model_with_meta(uri)
    if not isinstance(model, ImageClassifier) or not isinstance(model.body, nn.Sequential):
        raise ModelError(f"source_model {uri!r} is not a robust-transfer ImageClassifier with a block body")
    return Source(model, meta, uri)


def load_data(spec: str, source: Source, *, per_class: int | None, seed: int, upsample: bool, data_dir=None,
              progress: bool = True, param: str = "target") -> tuple[ImageData, ImageData]:
    """Train (optionally `per_class` per class) and test splits of `spec` (default: the source's own
    dataset), at the source's input size: a different size is an error unless `upsample`."""
    train, test = _raw_splits(spec, source, data_dir, progress, param)
    if per_class is not None:
        train = stratified_subset(train, per_class, seed=seed)
    train, test = _at_source_size(source, (train, test), spec, upsample, param)
    return train, test


def _raw_splits(spec, source: Source, data_dir, progress, param) -> tuple[ImageData, ImageData]:
    spec = spec or source.meta.get("data_spec")
    if not spec:
        raise ConfigError(f"{param} is required: the source model's metadata records no dataset")
    return (load_dataset(spec, "train", data_dir=data_dir, progress=progress),
            load_dataset(spec, "test", data_dir=data_dir, progress=progress))


def _at_source_size(source: Source, splits, spec, upsample: bool, param: str) -> tuple:
    size = source.model.input_size
    if splits[0].image_size == size:
        return tuple(splits)
    if not upsample:
        raise ModelError(f"{param}={splits[0].spec!r} has {splits[0].image_size}x{splits[0].image_size} images but "
                         f"the source model takes {size}x{size}; pass upsample=true to resize them to the source's size")
    return tuple(resize_images(d, size) for d in splits)


def load_splits(spec: str, source: Source, cfg, *, param: str = "target", logger: RunLogger | None = None
                ) -> tuple[ImageData, ImageData, ImageData]:
    """(train, val, test) of `spec` (default: the source's dataset): the validation set carved out of the
    training split (`cfg.val_fraction` / `cfg.val_per_class`, seeded, stratified), then `cfg.per_class` of the
    rest; all at the source's input size (see `load_data`). The split is recorded on `logger`'s run."""
    full, test = _raw_splits(spec, source, cfg.data_dir, cfg.progress, param)
    split = split_training(full, cfg)
    if logger is not None:
        record_split(logger, split)
    train, val, test = _at_source_size(source, (split.train, split.val, test), spec, cfg.upsample, param)
    return train, val, test


def tag_run(logger: RunLogger, source: Source, train: ImageData) -> None:
    logger.set_tags({"rtl.source_model": source.uri, "rtl.source_arch": source.model.arch, "rtl.data": train.spec,
                     "rtl.data_sha256": train.sha256()})


def same_classes(source: Source, data: ImageData) -> bool:
    return source.model.num_classes == data.num_classes and tuple(source.meta.get("classes", ())) == data.classes


def replace_head(model: ImageClassifier, spec: HeadSpec, num_classes: int) -> ImageClassifier:
    """A freshly initialised head for the target's classes on top of the source's features."""
    model.head = create_head(spec, model.feature_dim, num_classes)
    model.head_spec = spec
    model.num_classes = num_classes
    return model


def on_device(model: ImageClassifier, device, fast: FastPath | None = None) -> ImageClassifier:
    """`model` on `device` in the memory format its convolutions run fastest in (common.memory_format_for),
    or the one `fast` (the config's channels_last) asks for."""
    return model.to(device=device, memory_format=input_format(model, fast))


def input_format(model: nn.Module, fast: FastPath | None = None) -> torch.memory_format:
    return fast.memory_format if fast is not None else memory_format_for(getattr(model, "arch", ""))


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Run the block with `n` intra-op CPU threads (None: unchanged), then restore the setting."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def set_modes(model: nn.Module, frozen: list[nn.Module]) -> None:
    """Train mode, except the frozen modules: eval mode, so their BatchNorm statistics never move."""
    model.train()
    for m in frozen:
        m.eval()


def batchnorm_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def drop_last(n: int, batch_size: int) -> bool:
    return n >= 2 * batch_size  # as in `train`: no tiny last batch, unless the data is tiny


class IndexedImages:
    """Training images on the device, served as shuffled batches of indices.

    Indices rather than pixels, so per-example data kept beside the images — stored features z,
    the teacher's z0 — is looked up with the same batch; `pixels(idx)` gives the images in [0,1]
    (with pad-crop-flip augmentation when asked). Each epoch's order and augmentation are seeded
    by (seed, epoch), the same on every device and whether or not features are stored.
    """

    def __init__(self, data: ImageData, batch_size: int, *, seed: int, device, augment: bool = False,
                 memory_format: torch.memory_format = torch.contiguous_format):
        self.images, self.labels = data.images.to(device), data.labels.to(device)
        self.n, self.batch_size, self.seed, self.device = len(data), batch_size, seed, device
        self.augment, self.memory_format = augment, memory_format
        self.drop_last = drop_last(self.n, batch_size)
        self.gen = torch.Generator()

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def epoch(self, epoch: int) -> list[torch.Tensor]:
        self.gen.manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.n, generator=self.gen).to(self.device)
        return [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(len(self))]

    def pixels(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.images[idx]
        if self.augment:
            x = random_crop_flip(x, self.gen)
        return x.float().div_(255).contiguous(memory_format=self.memory_format)


def train_loop(budget: Budget, batches, update, *, opt: torch.optim.Optimizer, lr_for, logger: RunLogger,
               progress: bool, desc: str, acc_name: str = "train_clean_acc", fast: FastPath | None = None,
               model: nn.Module | None = None, validate=None) -> int:
    """`budget.total_updates` optimiser updates over epochs of `batches(epoch)`.

    `update(batch, step)` performs update number `step` and returns (loss, logits, y[, extras]);
    `lr_for(step)` is its learning rate. Per epoch (step=epoch): train_loss, `acc_name`,
    epoch_time_s, images_per_s, lr, the epoch means of any extras, and `validate()`'s metrics
    (`val_clean_acc`, `val_pgd10_acc`: validate.val_metrics). With `fast`, each update runs under its
    autocast (attacks inside stay fp32) and `model`'s body is compiled while it trains (eager again
    for the validation check).
    """
    bar = tqdm(total=budget.total_updates, desc=desc, unit="it", disable=not progress, leave=False)
    step = _epochs(budget, batches, update, opt, lr_for, logger, bar, acc_name, fast, model, validate)
    bar.close()
    return step


def _epochs(budget, batches, update, opt, lr_for, logger, bar, acc_name, fast, model, validate) -> int:
    step = 0
    autocast = fast.autocast if fast is not None else contextlib.nullcontext
    for epoch in range(budget.epochs):
        meter, extras, seen = EpochMeter(), {}, 0
        compiled = fast.compiled(model) if fast is not None and model is not None else contextlib.nullcontext()
        with compiled:
            for batch in batches(epoch):
                set_lr(opt, lr_for(step))
                with autocast():
                    loss, logits, y, *rest = update(batch, step)
                meter.update(loss, logits, y)
                for k, v in (rest[0] if rest else {}).items():
                    extras[k] = extras.get(k, 0.0) + float(v)
                seen += 1
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.3f}")
                if step >= budget.total_updates:
                    break
        metrics = meter.metrics()
        metrics[acc_name] = metrics.pop("train_clean_acc")
        metrics |= {k: v / max(seen, 1) for k, v in extras.items()}
        metrics["lr"] = opt.param_groups[0]["lr"]
        if validate is not None:
            metrics |= validate()
        logger.log_metrics(metrics, step=epoch)
        if step >= budget.total_updates:
            break
    return step


def source_lineage(strategy: str, source: Source, run_id: str | None, **extra) -> dict:
    return {"strategy": strategy, "source_model": source.uri, "run_id": run_id,
            "source_meta": {k: source.meta[k] for k in SOURCE_META_KEYS if k in source.meta}, **extra}


def final_evaluation(model: nn.Module, test: ImageData, threat: ThreatModel, *, eval_steps: int, n_examples: int,
                     seed: int, device, progress: bool) -> tuple[dict[str, float], dict]:
    """Clean and PGD-k accuracy of the WHOLE model (extractor + head), attacked in pixel space, at the
    evaluation threat `threat`: the numbers `rtl evaluate` gives on the same examples (validate.reported_metrics)."""
    return reported_metrics(model, test, threat, eval_steps=eval_steps, n_examples=n_examples, seed=seed, device=device,
                        progress=progress)


def default_checkpoint_dir(strategy: str, spec: str, run_id: str | None, suffix: str = "") -> Path:
    tag = (run_id or time.strftime("%Y%m%d-%H%M%S"))[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{strategy}-{spec}{suffix}")
    return Path("checkpoints") / f"{safe}-{tag}"


def finish(model: ImageClassifier, test: ImageData, train: ImageData, cfg, logger: RunLogger, *, meta: dict,
           checkpoint_dir: Path, threat: ThreatModel | None, device, val: dict | None = None) -> StrategyResult:
    """Final evaluation on the test split at the evaluation threat (cfg.eval_epsilon), logged and written into
    the checkpoint's metadata with the model. `threat` is the training threat (None: natural training; the
    checkpoint's `threat_model` is then the evaluation threat). The result's metrics are the test metrics
    plus `val`, the last epoch's `val_*` (what choices read)."""
    evt = eval_threat(cfg)
    metrics, where = final_evaluation(model, test, evt, eval_steps=cfg.eval_steps, n_examples=cfg.n_examples,
                                      seed=cfg.seed, device=device, progress=cfg.progress)
    logger.log_metrics(metrics)
    logger.set_tags({"rtl.eval_indices_sha256": where["indices_sha256"]})
    meta = {"classes": list(train.classes), "data_spec": train.spec, "data_sha256": train.sha256(),
            "threat_model": (threat or evt).to_dict(), "eval_threat": evt.to_dict(), **meta,
            "evaluation": metrics | where}
    save_checkpoint(checkpoint_dir, model.cpu(), meta)
    return StrategyResult(model=model, metrics=metrics | dict(val or {}), checkpoint_dir=checkpoint_dir,
                          meta=meta)
