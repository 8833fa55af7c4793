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

from ..attacks import ThreatModel, evaluate_robustness
from ..checkpoints import save_checkpoint
from ..data import ImageData, load_dataset, resize_images, stratified_subset
from ..data.transforms import random_crop_flip
from ..errors import ConfigError, ModelError
from ..models import HeadSpec, ImageClassifier, create_head
from ..reporting import RunLogger
from .common import Budget, EpochMeter, FastPath, memory_format_for, set_lr

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
    threat: ThreatModel
    source: Source
    train: ImageData
    test: ImageData


def setup(cfg, logger: RunLogger, *, source: Source | None = None, data: str = "target", seed: bool = True) -> Setup:
    """The opening every source-based strategy shares: the seed (unless `seed=False`), the device, the threat
    model, the source (loaded from `cfg.source_model` unless the command resolved it already), and the train
    and test splits of the dataset named by the config field `data` (`target`; retrain_blocks: `dataset`;
    empty: the source's own data) at the source's input size."""
    from ..device import resolve_device

    if seed:
        torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    threat = ThreatModel(cfg.epsilon, cfg.step_size)
    source = source if source is not None else load_source(cfg.source_model)
    train, test = load_data(getattr(cfg, data), source, per_class=cfg.per_class, seed=cfg.seed, upsample=cfg.upsample,
                            data_dir=cfg.data_dir, progress=cfg.progress, param=data)
    return Setup(device, threat, source, train, test)


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
    spec = spec or source.meta.get("data_spec")
    if not spec:
        raise ConfigError(f"{param} is required: the source model's metadata records no dataset")
    train = load_dataset(spec, "train", data_dir=data_dir, progress=progress)
    test = load_dataset(spec, "test", data_dir=data_dir, progress=progress)
    if per_class is not None:
        train = stratified_subset(train, per_class, seed=seed)
    size = source.model.input_size
    if train.image_size != size:
        if not upsample:
            raise ModelError(f"{param}={spec!r} has {train.image_size}x{train.image_size} images but the source "
                             f"model takes {size}x{size}; pass upsample=true to resize them to the source's size")
        train, test = resize_images(train, size), resize_images(test, size)
    return train, test


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
               model: nn.Module | None = None) -> int:
    """`budget.total_updates` optimiser updates over epochs of `batches(epoch)`.

    `update(batch, step)` performs update number `step` and returns (loss, logits, y[, extras]);
    `lr_for(step)` is its learning rate. Per epoch (step=epoch): train_loss, `acc_name`,
    epoch_time_s, images_per_s, lr and the epoch means of any extras. With `fast`, each update runs
    under its autocast (attacks inside stay fp32) and `model`'s body is compiled if it asks.
    """
    bar = tqdm(total=budget.total_updates, desc=desc, unit="it", disable=not progress, leave=False)
    compiled = fast.compiled(model) if fast is not None and model is not None else contextlib.nullcontext()
    with compiled:
        step = _epochs(budget, batches, update, opt, lr_for, logger, bar, acc_name, fast)
    bar.close()
    return step


def _epochs(budget, batches, update, opt, lr_for, logger, bar, acc_name, fast) -> int:
    step = 0
    autocast = fast.autocast if fast is not None else contextlib.nullcontext
    for epoch in range(budget.epochs):
        meter, extras, seen = EpochMeter(), {}, 0
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
        logger.log_metrics(metrics, step=epoch)
        if step >= budget.total_updates:
            break
    return step


def source_lineage(strategy: str, source: Source, run_id: str | None, **extra) -> dict:
    return {"strategy": strategy, "source_model": source.uri, "run_id": run_id,
            "source_meta": {k: source.meta[k] for k in SOURCE_META_KEYS if k in source.meta}, **extra}


def final_evaluation(model: nn.Module, test: ImageData, threat: ThreatModel, *, eval_steps: int, n_examples: int,
                     seed: int, device, progress: bool) -> tuple[dict[str, float], dict]:
    """Clean and PGD-k accuracy of the WHOLE model (extractor + head), attacked in pixel space."""
    res = evaluate_robustness(model, test.images, test.labels, attacks=("clean", f"pgd{eval_steps}"),
                              threat=threat, n_examples=min(n_examples, len(test)), seed=seed, device=device,
                              progress=progress)
    metrics = {k: v for k, v in res.metrics.items() if k != "worst_acc"}
    return metrics, {"n_examples": res.n_examples, "indices_sha256": res.indices_sha256}


def default_checkpoint_dir(strategy: str, spec: str, run_id: str | None, suffix: str = "") -> Path:
    tag = (run_id or time.strftime("%Y%m%d-%H%M%S"))[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{strategy}-{spec}{suffix}")
    return Path("checkpoints") / f"{safe}-{tag}"


def finish(model: ImageClassifier, test: ImageData, train: ImageData, cfg, logger: RunLogger, *, meta: dict,
           checkpoint_dir: Path, threat: ThreatModel, device) -> StrategyResult:
    """Final evaluation, logged and written into the checkpoint's metadata with the model."""
    metrics, where = final_evaluation(model, test, threat, eval_steps=cfg.eval_steps, n_examples=cfg.n_examples,
                                      seed=cfg.seed, device=device, progress=cfg.progress)
    logger.log_metrics(metrics)
    logger.set_tags({"rtl.eval_indices_sha256": where["indices_sha256"]})
    meta = {"classes": list(train.classes), "data_spec": train.spec, "data_sha256": train.sha256(),
            "threat_model": threat.to_dict(), **meta, "evaluation": metrics | where}
    save_checkpoint(checkpoint_dir, model.cpu(), meta)
    return StrategyResult(model=model, metrics=metrics, checkpoint_dir=checkpoint_dir, meta=meta)
