"""The training engine: the one loop every strategy trains with (`train` and the transfer strategies).

A strategy says what it trains (`Training`: the model, the parameters, the data, its metadata) and
supplies an `Objective` — the loss of a batch, plus hooks (the shape of MadryLab `robustness`'s one
`_model_loop` with `custom_train_loss` / `iteration_hook`, with our typed configs instead of its `args`).
Everything else happens here, the same way for every strategy:

    for each epoch (data.BatchLoader: the order and augmentation seeded by (seed, epoch)):
        for each batch, objective.updates_per_batch times (free training replays a batch m times):
            lr ← schedule(update);  objective.before_update(update)
            loss ← objective.loss(batch, update)   (under the config's autocast)
            θ ← θ − η ∇θ loss;  objective.after_update(batch, update)
        the epoch's metrics and the validation check (val_*, seeded by eval_seed), logged with step=epoch
        a resumable run: its checkpoint and training state (optimiser, RNG, the objective's own tensors)
    finish: the test evaluation (eval_seed), its per-example correctness, metadata, the checkpoint

One place for each thing that will change: `BatchLoader.order` makes an epoch's index order;
`log_epoch` and `save_state` / `finish` write the logs and checkpoints; `common.resolve_precision`
(through `FastPath.of`) picks the autocast; `common.pgd_examples` turns the training threat model into
examples.

**Data-parallel** (launched by torchrun, `distributed.py` says how and why): every rank walks the same
batches and trains on its share of each (`train_epoch`), gradients are reduced over the ranks after each
backward (`optimiser_updates`), and rank 0 alone validates, logs, evaluates and writes checkpoints. In one
process none of this runs.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed
from ..attacks import ThreatModel
from ..checkpoints import load_checkpoint, load_train_state, save_checkpoint
from ..data import BatchLoader, ImageData
from ..data.loader import batch_count, epoch_seed
from ..data.validation import Split
from ..distributed import Ranks
from ..errors import ModelError
from ..evaluation.inputs import evaluation_tags
from ..progress import bar_disabled
from ..reporting import RunLogger
from .common import (EpochMeter, FastPath, TrainingBudget, cpu_threads, load_optimizer_tensors, lr_at, make_sgd,
                     optimizer_tensors, set_lr)
from .validate import eval_threat, log_per_example, record_split, reported_metrics, val_metrics

# The tags that identify the run a resumable checkpoint belongs to (`--resume` continues only that run).
FINGERPRINT_TAG, CHECKPOINT_TAG = "rtl.train_fingerprint", "rtl.checkpoint_dir"


class TrainingData(NamedTuple):
    train: ImageData
    val: ImageData      # carved out of the training split (validate.split_training): what choices read
    test: ImageData
    split: Split        # how val was carved (recorded on the run and in the checkpoint)


@dataclass
class TrainingResult:
    """What every strategy returns."""

    model: nn.Module
    metrics: dict[str, float]   # the test metrics and the last epoch's val_* (what choices read)
    checkpoint_dir: Path
    meta: dict


@dataclass
class StepOutput:
    loss: torch.Tensor
    logits: torch.Tensor                                     # for the epoch's training accuracy
    extras: dict[str, float] = field(default_factory=dict)   # more per-update numbers: logged as epoch means


class Batch:
    """One minibatch: its indices into the training data (`idx`, on the device), labels `y`, pixels `x` in
    [0,1] (made, and augmented, when first asked for: a head trained on stored features never needs them),
    and `generator`, seeded per (seed, epoch), for the random starts of the attacks made on it."""

    def __init__(self, idx: torch.Tensor | None, y: torch.Tensor, x: torch.Tensor | Callable[[], torch.Tensor],
                 generator: torch.Generator, share: float = 1.0):
        self.idx, self.y, self.generator, self._x = idx, y, generator, x
        self.share = share   # this rank's fraction of the global batch (1: one process)

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> "Batch":
        """A batch of given pixels (benchmarks, tests)."""
        return cls(None, y, x, generator)

    @property
    def x(self) -> torch.Tensor:
        if callable(self._x):
            self._x = self._x()
        return self._x


class Objective:
    """What a strategy supplies to the engine: `loss` for a batch; the other hooks default to nothing."""

    updates_per_batch: int = 1   # optimiser updates per batch (free training replays it m times)
    adversarial: bool = False    # the loss sees adversarial examples: the epoch's accuracy is `train_adv_acc`
    threads: int | None = None   # intra-op CPU threads while training (None: unchanged)

    def loss(self, batch: Batch, update: int) -> StepOutput:
        raise NotImplementedError

    def before_update(self, update: int) -> None:
        """Before optimiser update `update` (lwf: the end of the warm start)."""

    def after_update(self, batch: Batch, update: int) -> None:
        """After the optimiser step, gradients still in place (free training: the step of its δ)."""

    def base_lr(self, update: int, lr: float) -> float:
        """The learning rate the schedule scales at `update` (lwf: `finetune_lr` after the warm start)."""
        return lr

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors a resumable run saves with its checkpoint (free training: its carried δ)."""
        return {}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what `state` saved."""


@dataclass
class Training:
    """What one training run trains, on what, and where its results go."""

    strategy: str                    # the lineage and tag name: train, transfer, lwf, ...
    cfg: Any                         # the entry point's typed config (config/train.py, config/transfer.py)
    model: nn.Module
    params: list[nn.Parameter]       # what the optimiser updates (lwf: some join after the warm start)
    data: TrainingData
    device: torch.device
    fast: FastPath                   # autocast, memory format, compile
    threat: ThreatModel | None = None   # the TRAINING threat (None: natural examples; the checkpoint then
                                        # records the evaluation threat)
    meta: dict = field(default_factory=dict)   # the strategy's own metadata; "training"/"lineage" are merged
    checkpoint_dir: str | Path | None = None   # None: default_checkpoint_dir(strategy, data spec, run id)
    run_id: str | None = None
    resumable: bool = False          # checkpoint + training state after every epoch; honours cfg.resume
    desc: str = ""                   # the progress bar's label

    def __post_init__(self):
        if self.checkpoint_dir is None:
            self.checkpoint_dir = default_checkpoint_dir(self.strategy, self.data.train.spec,
                                                         self.run_id[:12] if self.run_id else None)
        self.checkpoint_dir = Path(self.checkpoint_dir)


def default_checkpoint_dir(strategy: str, what: str, key: str | None) -> Path:
    """checkpoints/<strategy>-<what>-<key>: `key` makes the folder this run's (a resumable run: its config
    fingerprint, so --resume finds it again; else the run id's first 12 characters; none: the time)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{strategy}-{what}")
    return Path("checkpoints") / f"{safe}-{key or time.strftime('%Y%m%d-%H%M%S')}"


def config_fingerprint(cfg) -> str:
    """What must match for --resume to continue the same run (budget and recipe, not progress flags)."""
    skip = ("resume", "progress", "device", "data_dir", "register_as", "compile", "channels_last")
    keep = {k: v for k, v in asdict(cfg).items() if k not in skip}
    # (so checkpoints written before these fields existed still match)
    for name, default in (("precision", "auto"), ("eval_seed", 0), ("sync_bn", False), ("norm", "linf"),
                          ("eval_norm", "linf"), ("eval_norm", None)):
        if name in keep and keep[name] == default:
            keep.pop(name)
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resume_state(cfg, ckpt: str | Path) -> dict | None:
    """The saved training state in `ckpt` to continue from, or None (refuses a checkpoint of another recipe)."""
    state = load_train_state(ckpt) if Path(ckpt).exists() else None
    if state is None:
        return None
    if state["json"].get("fingerprint") != config_fingerprint(cfg):
        raise ModelError(f"--resume: checkpoint {str(ckpt)!r} was written by a different configuration; "
                         "use the same parameters or another checkpoint_dir")
    saved, world = state["json"].get("world_size", 1), distributed.current().world_size
    if saved != world:   # each rank's own state (free training's δ) cannot be re-split over another count
        how = f"torchrun --nproc_per_node={saved}" if saved > 1 else "one process (no torchrun)"
        raise ModelError(f"--resume: checkpoint {str(ckpt)!r} was written by {saved} process(es) and this job "
                         f"has {world}; resume it with {how}")
    return state


def resume_tags(strategy: str, cfg, ckpt: str | Path) -> dict[str, str]:
    """The tags a resumable run carries, and a run `--resume` continues must carry."""
    return {"rtl.strategy": strategy, FINGERPRINT_TAG: config_fingerprint(cfg), CHECKPOINT_TAG: str(Path(ckpt).resolve())}


def budget_for(cfg, n_train: int, updates_per_batch: int = 1) -> TrainingBudget:
    """The run's optimiser updates: `iterations`, else `epochs` of `n_train` examples in batches (the loader's
    last-batch rule), `updates_per_batch` per batch."""
    return TrainingBudget.of(cfg.epochs, cfg.iterations, batch_count(n_train, cfg.batch_size), updates_per_batch)


def optimiser_updates(objective: Objective, opt: torch.optim.Optimizer, batch: Batch, update: int, *,
                      fast: FastPath, lr_for: Callable[[int], float], last: int,
                      ranks: Ranks = distributed.ONE_PROCESS) -> tuple[StepOutput | None, int]:
    """`objective.updates_per_batch` optimiser updates on `batch`, numbered from `update`, none at or after
    `last`: (the last update's output, the next update's number). Under torchrun (`ranks.parallel`) each
    update's gradients are those of the global batch (`distributed.average_gradients`)."""
    out = None
    for _ in range(objective.updates_per_batch):
        if update >= last:
            break
        set_lr(opt, lr_for(update))
        objective.before_update(update)
        with fast.autocast():   # attacks inside the loss stay fp32 (attacks.pgd.attack_precision)
            out = objective.loss(batch, update)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if ranks.parallel:
            distributed.average_gradients([p for g in opt.param_groups for p in g["params"]], batch.share)
        opt.step()
        objective.after_update(batch, update)
        update += 1
    return out, update


def train_epoch(objective: Objective, opt: torch.optim.Optimizer, loader: BatchLoader, epoch: int, update: int, *,
                fast: FastPath, lr_for: Callable[[int], float], last: int, bar=None,
                ranks: Ranks = distributed.ONE_PROCESS) -> tuple[dict[str, float], int]:
    """Epoch `epoch` of `loader` in optimiser updates numbered from `update`, none at or after `last`: (the
    epoch's training metrics, the next update's number). The attacks' random starts come from a CPU generator
    seeded by (seed, epoch) (`data.loader.epoch_seed`, stream "attack"): the same on every device and on resume.
    Under torchrun every rank walks the same batches and trains on its share of each (`rank_batch`); the
    epoch's loss and accuracy are over every rank's examples."""
    generator = torch.Generator().manual_seed(epoch_seed(loader.seed, epoch, "attack"))
    meter, extras, batches = EpochMeter(), {}, 0
    for idx in loader.epoch(epoch):
        batch = rank_batch(loader, idx, generator, ranks)
        out, done = optimiser_updates(objective, opt, batch, update, fast=fast, lr_for=lr_for, last=last, ranks=ranks)
        loss = out.loss.detach()
        meter.update(loss, out.logits.detach(), batch.y)
        for k, v in out.extras.items():
            extras[k] = extras.get(k, 0.0) + float(v)
        batches += 1
        if bar is not None:
            bar.update(done - update)
            bar.set_postfix(loss=f"{float(loss):.3f}", lr=f"{opt.param_groups[0]['lr']:.4g}")
        update = done
        if update >= last:
            break
    if ranks.parallel:   # the whole batch's loss and accuracy, not rank 0's share
        meter.loss_sum, meter.correct, meter.seen = distributed.sum_over_ranks([meter.loss_sum, meter.correct, meter.seen])
    metrics = meter.metrics() | {k: v / max(batches, 1) for k, v in extras.items()}
    if objective.adversarial:   # the meter saw the adversarial batch: name its accuracy for what it is
        metrics["train_adv_acc"] = metrics.pop("train_clean_acc")
    return metrics, update


def rank_batch(loader: BatchLoader, idx: torch.Tensor, generator: torch.Generator, ranks: Ranks) -> Batch:
    """The batch `idx` (one process), or this rank's contiguous share of it (torchrun). A share's pixels are
    cut from the whole batch's, so the augmentation (drawn per batch from the epoch's generator) is the one a
    single process draws."""
    if not ranks.parallel:
        return Batch(idx, loader.labels[idx], lambda: loader.pixels(idx), generator)
    lo, hi = distributed.share(len(idx), ranks)
    return Batch(idx[lo:hi], loader.labels[idx[lo:hi]], lambda: loader.pixels(idx)[lo:hi], generator,
                 share=(hi - lo) / len(idx))


def fit(t: Training, objective: Objective, logger: RunLogger) -> TrainingResult:
    """Train `t.params` of `t.model` with `objective` for the config's budget; then `finish`."""
    cfg, model, device = t.cfg, t.model, t.device
    ranks = distributed.current()
    if ranks.parallel:   # one model on every rank: rank 0's (as DistributedDataParallel starts)
        distributed.check_batch(cfg.batch_size, ranks)
        model = t.model = distributed.convert_sync_bn(model, device, getattr(cfg, "sync_bn", False), ranks)
        distributed.broadcast_module(model)
    record_split(logger, t.data.split)
    loader = BatchLoader(t.data.train, cfg.batch_size, augment=cfg.augment, seed=cfg.seed, device=device,
                         memory_format=t.fast.memory_format)
    budget = budget_for(cfg, len(t.data.train), objective.updates_per_batch)
    opt = make_sgd(t.params, cfg.lr, cfg.momentum, cfg.weight_decay)
    milestones = cfg.milestone_fractions()

    def lr_for(update: int) -> float:
        return lr_at(update, budget.total_updates, objective.base_lr(update, cfg.lr), cfg.schedule, milestones)

    meta = training_meta(t, budget)
    logger.set_tags({"rtl.data_sha256": t.data.train.sha256(), "rtl.precision": t.fast.precision}
                    | ({"rtl.world_size": str(ranks.world_size)} if ranks.parallel else {}))
    start_epoch, update = resume(t, objective, opt, logger) if t.resumable else (0, 0)
    bar = tqdm(total=budget.total_updates, initial=update, desc=t.desc or t.strategy, unit="it",
               disable=bar_disabled(cfg.progress) if ranks.main else True, leave=False)
    last_val: dict[str, float] = {}
    with cpu_threads(objective.threads):
        for epoch in range(start_epoch, budget.epochs):
            if update >= budget.total_updates:
                break
            with t.fast.compiled(model):   # eager again for the validation check below
                metrics, update = train_epoch(objective, opt, loader, epoch, update, fast=t.fast, lr_for=lr_for,
                                              last=budget.total_updates, bar=bar, ranks=ranks)
            if ranks.parallel:   # rank 0's BatchNorm statistics are the model's (DDP's broadcast_buffers)
                distributed.broadcast_module(model, parameters=False)
            if ranks.main:       # (the other ranks wait for it at their next collective)
                last_val = val_metrics(model, t.data.val, eval_threat(cfg), seed=cfg.eval_seed, device=device)
                log_epoch(logger, metrics | {"lr": opt.param_groups[0]["lr"]} | last_val, epoch, budget, t)
            if t.resumable:      # (every rank under torchrun: each rank's own state is gathered to rank 0)
                save_state(t, meta, opt, objective, epochs_done=epoch + 1, updates=update, ranks=ranks)
    bar.close()
    if not ranks.main:   # rank 0 evaluates, logs and saves the final model
        return TrainingResult(model=model, metrics={}, checkpoint_dir=t.checkpoint_dir, meta=meta)
    if not last_val:   # resumed after the last epoch: the validation check of the final model
        last_val = val_metrics(model, t.data.val, eval_threat(cfg), seed=cfg.eval_seed, device=device)
    return finish(t, meta, logger, last_val)


def training_meta(t: Training, budget: TrainingBudget) -> dict:
    """The checkpoint's metadata: data, threat models, the validation split, the training, the lineage."""
    train, evt = t.data.train, eval_threat(t.cfg)
    own = dict(t.meta)
    return {"classes": list(train.classes), "data_spec": train.spec, "data_sha256": train.sha256(),
            "threat_model": (t.threat or evt).to_dict(), "eval_threat": evt.to_dict(),
            "validation": t.data.split.record(), **own,
            "training": {"strategy": t.strategy, "epochs": budget.epochs, "updates": budget.total_updates,
                         "seed": t.cfg.seed, "precision": t.fast.precision, **own.get("training", {})},
            "lineage": {"strategy": t.strategy, "run_id": t.run_id, **own.get("lineage", {})}}


def log_epoch(logger: RunLogger, metrics: dict[str, float], epoch: int, budget: TrainingBudget, t: Training) -> None:
    """The one place per-epoch numbers are logged (step=epoch) and printed."""
    logger.log_metrics(metrics, step=epoch)
    if t.cfg.progress:
        acc = metrics.get("train_clean_acc", metrics.get("train_adv_acc"))
        tqdm.write(f"{t.desc or t.strategy} epoch {epoch + 1}/{budget.epochs}  loss {metrics['train_loss']:.3f}  "
                   f"train acc {acc:.3f}  val clean {metrics['val_clean_acc']:.3f}  "
                   f"pgd10 {next(v for k, v in metrics.items() if k.startswith('val_pgd10_acc')):.3f}  "
                   f"{metrics['images_per_s']:.0f} img/s")


def resume(t: Training, objective: Objective, opt: torch.optim.Optimizer, logger: RunLogger) -> tuple[int, int]:
    """A resumable run: tag it (`resume_tags`) and, with cfg.resume and a saved state in its checkpoint, restore
    the model, optimiser, RNG and the objective's tensors. Returns (epochs done, updates done)."""
    logger.set_tags(resume_tags(t.strategy, t.cfg, t.checkpoint_dir))
    state = resume_state(t.cfg, t.checkpoint_dir) if t.cfg.resume else None
    if state is None:
        return 0, 0
    resumed, _ = load_checkpoint(t.checkpoint_dir)
    t.model.load_state_dict(resumed.state_dict())
    tensors = state["tensors"]
    load_optimizer_tensors(opt, tensors)
    torch.set_rng_state(tensors["rng.torch"])
    own = distributed.own_state({k: v for k, v in tensors.items() if not k.startswith(("opt.", "rng."))},
                                distributed.current())
    objective.load_state({k: v.to(t.device) for k, v in own.items()})
    epochs_done = state["json"]["epochs_done"]
    logger.set_tags({"rtl.resumed_from_epoch": str(epochs_done)})
    return epochs_done, state["json"]["updates"]


def save_state(t: Training, meta: dict, opt: torch.optim.Optimizer, objective: Objective, *, epochs_done: int,
               updates: int, ranks: Ranks = distributed.ONE_PROCESS) -> None:
    """A resumable run's checkpoint after an epoch: the model and everything --resume needs (under torchrun
    written by rank 0, with every rank's own objective state; called on every rank)."""
    own = objective.state()
    if ranks.parallel:
        own = distributed.gather_state(own, ranks)
        if not ranks.main:
            return
    tensors = optimizer_tensors(opt) | {"rng.torch": torch.get_rng_state()} | own
    json_state = {"epochs_done": epochs_done, "updates": updates, "run_id": t.run_id,
                  "fingerprint": config_fingerprint(t.cfg)} | ({"world_size": ranks.world_size} if ranks.parallel else {})
    save_checkpoint(t.checkpoint_dir, t.model, meta, train_state={"tensors": tensors, "json": json_state})


def finish(t: Training, meta: dict, logger: RunLogger, last_val: dict[str, float]) -> TrainingResult:
    """The final evaluation on the test split at the evaluation threat (seeded by cfg.eval_seed), logged with its
    per-example correctness (`evaluation/per_example.json`) and written into the checkpoint's metadata with the
    model. The result's metrics are the test metrics plus `last_val`, the last epoch's `val_*`."""
    cfg = t.cfg
    rep = reported_metrics(t.model, t.data.test, eval_threat(cfg), eval_steps=cfg.eval_steps, n_examples=cfg.n_examples,
                           seed=cfg.eval_seed, device=t.device, progress=cfg.progress)
    logger.log_metrics(rep.metrics)
    logger.set_tags(evaluation_tags(rep.where["n_examples"], rep.where["indices_sha256"]))
    log_per_example(logger, rep.per_example)
    meta = meta | {"evaluation": rep.metrics | rep.where}
    state = load_train_state(t.checkpoint_dir) if t.resumable else None   # kept beside the final model
    model = t.model.cpu()
    save_checkpoint(t.checkpoint_dir, model, meta, train_state=state)
    return TrainingResult(model=model, metrics=rep.metrics | last_val, checkpoint_dir=t.checkpoint_dir, meta=meta)
