"""`transfer`: recycle a source's feature extractor, train a new head on the target (paper section 4):

    min_w  l( h_w( z(x, θ*) ), y )                                        (Eq. 2)

θ* is the source's feature extractor, frozen and in eval mode (its BatchNorm statistics never
move); h_w is a linear head (Tables 2–3) or an MLP with `mlp_depth` hidden layers of `width`
(Fig. 4). With augmentation off, z(x, θ*) of the training set never changes, so it is computed
once and stored (`features.cached_features`) and the head trains on those vectors; with
augmentation on, z is computed per batch. Evaluation always attacks the whole model h_w∘z in
pixel space, never the stored features.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data import ImageData
from ..reporting import RunLogger
from .common import Budget, FastPath, freeze, lr_at, make_sgd
from .features import cached_features
from .source import (IndexedImages, Source, StrategyResult, cpu_threads, default_checkpoint_dir, finish,
                     input_format, on_device, replace_head, set_modes, setup, source_lineage, tag_run, train_loop)
from .validate import Validator, eval_threat

# The paper's settings (appendix A.2), the `transfer` entry point's defaults (config/transfer.py takes them
# from here; every one can be overridden: `rtl transfer --head mlp --mlp-depth 2`, ...).
DEFAULTS = dict(
    epochs=50,           # 50 epochs, batch 128,
    lr=0.01,             # lr 0.01 ...
    schedule="step",
    milestones="0.6",    # ... → 0.001 at epoch 30 (60% of the budget)
    head="linear",       # Tables 2-3; Fig. 4: mlp with mlp_depth hidden layers of width
    mlp_depth=1,
    width=2048,
)



def head_batches(model, train: ImageData, cfg, device):
    """(batches(epoch) → (z, y) batches, batches per epoch): z from stored features when possible.

    Both paths see the same examples in the same order, so they train the same head.
    """
    data = IndexedImages(train, cfg.batch_size, seed=cfg.seed, device=device, augment=cfg.augment,
                         memory_format=input_format(model, FastPath.of(cfg, device, model.arch)))
    if cfg.feature_cache and not cfg.augment:
        z_all = cached_features(model, train, device=device, progress=cfg.progress).to(device)

        def from_cache(epoch):
            for idx in data.epoch(epoch):
                yield z_all[idx], data.labels[idx]
        return from_cache, len(data)

    def online(epoch):
        for idx in data.epoch(epoch):
            with torch.no_grad():  # θ* is frozen: no graph through the extractor
                z = model.features(data.pixels(idx))
            yield z, data.labels[idx]  # (outside the no_grad block: a generator suspends inside it)
    return online, len(data)


def fit_head(model, train: ImageData, cfg, logger: RunLogger, device, validate=None) -> int:
    """Train `model.head` on z(x, θ*) with the extractor frozen; returns the number of updates."""
    freeze(model.body)
    set_modes(model, frozen=[model.body])  # eval-mode extractor: BatchNorm statistics stay the source's
    opt = make_sgd(model.head.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    batches, per_epoch = head_batches(model, train, cfg, device)
    budget = Budget.of(cfg.epochs, cfg.iterations, per_epoch)
    milestones = cfg.milestone_fractions()
    # On stored features a small head is a stream of tiny matrix products: waking intra-op threads
    # costs more than they save (10-20x slower on a shared 2-core CPU; benchmarks/bench_transfer.py).
    tiny = (torch.device(device).type == "cpu" and cfg.feature_cache and not cfg.augment
            and sum(p.numel() for p in model.head.parameters()) < 1_000_000)

    def update(batch, step):
        z, y = batch
        logits = model.head(z)
        loss = F.cross_entropy(logits, y)   # Eq. 2: only w receives gradients
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach(), logits.detach(), y

    with cpu_threads(1 if tiny else None):
        return train_loop(budget, batches, update, opt=opt, logger=logger, progress=cfg.progress,
                          desc="transfer head", fast=FastPath.of(cfg, device, model.arch), model=model,
                          validate=validate,
                          lr_for=lambda step: lr_at(step, budget.total_updates, cfg.lr, cfg.schedule, milestones))


def transfer(cfg, logger: RunLogger, *, run_id: str | None = None,
             source: Source | None = None) -> StrategyResult:
    """`cfg`: a config.TransferConfig; `source`: the source model if the caller loaded it already (else `cfg.source_model` is loaded)."""
    s = setup(cfg, logger, source=source)
    device, source, train, val, test = s.device, s.source, s.train, s.val, s.test
    tag_run(logger, source, train)
    cached = cfg.feature_cache and not cfg.augment
    logger.set_tags({"rtl.feature_cache": str(cached).lower()})

    model = replace_head(source.model, cfg.head_spec(), train.num_classes)
    model = on_device(model, device, FastPath.of(cfg, device, model.arch))
    validate = Validator(model, val, eval_threat(cfg), seed=cfg.seed, device=device)
    updates = fit_head(model, train, cfg, logger, device, validate)

    meta = {"training": {"strategy": "transfer", "updates": updates, "seed": cfg.seed, "feature_cache": cached},
            "lineage": source_lineage("transfer", source, run_id, frozen="body")}
    ckpt = cfg.checkpoint_dir or default_checkpoint_dir("transfer", train.spec, run_id)
    return finish(model, test, train, cfg, logger, meta=meta, checkpoint_dir=ckpt, threat=None, device=device,
                  val=validate.last)
