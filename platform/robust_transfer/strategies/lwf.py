"""`lwf`: end-to-end fine-tuning without forgetting the robust features (paper section 6):

    L(θ, w) = CE( w·z(x, θ), y ) + λ_d · d( z(x, θ), z0(x, θ_r*) )            (Eq. 3)

z are the penultimate features (`model.features`) of the model being trained, z0 those of the
frozen source θ_r*. d (per example, averaged over the batch):
    l2    ‖z − z0‖₂     (the paper's text)
    l1    ‖z − z0‖₁     (the authors' code)
    l2sq  ‖z − z0‖₂²

Warm start (A.1): the first `warm_start` fraction of the updates trains only the head w — θ is
still θ_r*, in eval mode, so z = z0 exactly and the distance is 0. Then θ trains too, except
BatchNorm: its statistics and affine parameters stay the source's (modules in eval mode).

Teacher: `offline` (the paper) computes z0 once for the un-augmented target training set and
stores it (the feature cache), so training cannot use augmentation (appendix B: z0 of an
augmented image differs). `online` runs the frozen source on each (augmented) batch instead.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..models import HeadSpec
from ..reporting import RunLogger
from .common import Budget, FastPath, freeze, lr_at, make_sgd
from .features import cached_features
from .source import (IndexedImages, Source, StrategyResult, batchnorm_modules, default_checkpoint_dir, finish,
                     input_format, on_device, replace_head, same_classes, set_modes, setup, source_lineage,
                     tag_run, train_loop)
from .validate import Validator, eval_threat

# The paper's settings (section 6, appendix A.1), the `lwf` entry point's defaults (config/transfer.py
# takes them from here; every one can be overridden: `rtl lwf --lambda-d 0.1`, ...).
DEFAULTS = dict(
    iterations=20_000,   # batch 128, 20,000 iterations
    lr=0.001,            # the text's 0.001 (appendix A.1 says 1e-2)
    lambda_d=0.01,       # the weight of the feature distance d(z, z0)
    distance="l2",       # l2: mean ‖z−z0‖₂ (paper text); l1: mean ‖z−z0‖₁ (authors' code); l2sq
    warm_start=0.5,      # the fraction of the updates that train only the head
    freeze_bn=True,      # A.1: BatchNorm statistics and affine parameters stay as in the source
    teacher="offline",   # offline: stored z0 of un-augmented images (paper); online: frozen source per batch
)



def feature_distance(z: torch.Tensor, z0: torch.Tensor, distance: str) -> torch.Tensor:
    """d(z, z0) per example, averaged over the batch."""
    diff = (z - z0).flatten(1)
    if distance == "l2":
        return diff.norm(p=2, dim=1).mean()
    if distance == "l1":
        return diff.abs().sum(dim=1).mean()
    if distance == "l2sq":
        return diff.pow(2).sum(dim=1).mean()
    raise ValueError(f"unknown distance {distance!r}")


def lwf_loss(logits, y, z, z0, lambda_d: float, distance: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3: (CE(logits, y) + λ_d · d(z, z0), d(z, z0))."""
    d = feature_distance(z, z0, distance)
    return F.cross_entropy(logits, y) + lambda_d * d, d


def lwf(cfg, logger: RunLogger, *, run_id: str | None = None, source: Source | None = None) -> StrategyResult:
    """`cfg`: a config.LwfConfig; `source`: the source model if the caller loaded it already (else `cfg.source_model` is loaded)."""
    s = setup(cfg, logger, source=source)
    device, source, train, val, test = s.device, s.source, s.train, s.val, s.test
    tag_run(logger, source, train)

    teacher = copy.deepcopy(source.model).to(device).eval()  # θ_r*: never trained
    freeze(teacher)
    keep_head = same_classes(source, train)  # same-dataset mode (Tables 5, 7): the source's head fits
    model = source.model if keep_head else replace_head(source.model, HeadSpec(), train.num_classes)
    fast = FastPath.of(cfg, device, model.arch)   # precision, channels_last, compile
    model = on_device(model, device, fast)
    z0_all = (cached_features(teacher, train, device=device, progress=cfg.progress).to(device)
              if cfg.teacher == "offline" else None)  # the paper's offline trick: z0 stored, computed once
    data = IndexedImages(train, cfg.batch_size, seed=cfg.seed, device=device, augment=cfg.augment,
                         memory_format=input_format(model, fast))

    bn = batchnorm_modules(model.body)
    bn_params = {id(p) for m in bn for p in m.parameters()}
    trainable_later = [p for p in model.body.parameters() if not (cfg.freeze_bn and id(p) in bn_params)]
    freeze(model.body)
    set_modes(model, frozen=[model.body])  # warm start: θ = θ_r*, in eval mode
    opt = make_sgd([*model.head.parameters(), *trainable_later], cfg.lr, cfg.momentum, cfg.weight_decay)

    budget = Budget.of(cfg.epochs, cfg.iterations, len(data))
    warm_updates = round(cfg.warm_start * budget.total_updates)
    milestones = cfg.milestone_fractions()

    def lr_for(step):
        base = cfg.lr if step < warm_updates else (cfg.finetune_lr or cfg.lr)
        return lr_at(step, budget.total_updates, base, cfg.schedule, milestones)

    def update(idx, step):
        y = data.labels[idx]
        if step == warm_updates:  # end of warm start: θ trains too, BatchNorm stays frozen in eval mode
            for p in trainable_later:
                p.requires_grad_(True)
            set_modes(model, frozen=bn if cfg.freeze_bn else [])
        if step < warm_updates:
            # θ = θ_r* in eval mode ⇒ z(x, θ) = z0(x, θ_r*): train w on the stored features (d = 0)
            if z0_all is not None:
                z = z0_all[idx]
            else:
                with torch.no_grad():
                    z = model.features(data.pixels(idx))
            logits = model.head(z)
            loss, d = F.cross_entropy(logits, y), torch.zeros(())
        else:
            x = data.pixels(idx)
            z = model.features(x)
            logits = model.head(z)
            if z0_all is not None:
                z0 = z0_all[idx]
            else:
                with torch.no_grad():
                    z0 = teacher.features(x)
            loss, d = lwf_loss(logits, y, z, z0, cfg.lambda_d, cfg.distance)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach(), logits.detach(), y, {"train_feature_distance": float(d.detach())}

    validate = Validator(model, val, eval_threat(cfg), seed=cfg.seed, device=device)
    updates = train_loop(budget, data.epoch, update, opt=opt, logger=logger, progress=cfg.progress, validate=validate,
                         desc=f"lwf λ_d={cfg.lambda_d}", lr_for=lr_for, fast=fast, model=model)
    meta = {"training": {"strategy": "lwf", "updates": updates, "warm_updates": warm_updates, "seed": cfg.seed,
                         "lambda_d": cfg.lambda_d, "distance": cfg.distance, "teacher": cfg.teacher,
                         "freeze_bn": cfg.freeze_bn, "head": "source" if keep_head else "new"},
            "lineage": source_lineage("lwf", source, run_id)}
    ckpt = cfg.checkpoint_dir or default_checkpoint_dir("lwf", train.spec, run_id)
    return finish(model, test, train, cfg, logger, meta=meta, checkpoint_dir=ckpt, threat=None, device=device,
                  val=validate.last)
