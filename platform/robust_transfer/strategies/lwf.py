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
The paper's defaults are at the top of config/transfer.py.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..config import LwfConfig
from ..models import HeadSpec
from ..reporting import RunLogger
from .common import FastPath, batchnorm_modules, freeze, on_device, set_modes
from .engine import Batch, Objective, StepOutput, Training, TrainingResult, budget_for, fit
from .features import cached_features
from .source_model import Source, replace_head, same_classes, setup, source_lineage


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


class LwfLoss(Objective):
    """Eq. 3 per batch: the head alone on z0 during the warm start, then everything but BatchNorm."""

    def __init__(self, cfg: LwfConfig, model, teacher, z0_all: torch.Tensor | None, trainable_later, bn, warm: int):
        self.cfg, self.model, self.teacher, self.z0_all = cfg, model, teacher, z0_all
        self.trainable_later, self.bn, self.warm = trainable_later, bn, warm

    def base_lr(self, update: int, lr: float) -> float:
        return lr if update < self.warm else (self.cfg.finetune_lr or lr)

    def before_update(self, update: int) -> None:
        if update == self.warm:  # end of warm start: θ trains too, BatchNorm stays frozen in eval mode
            for p in self.trainable_later:
                p.requires_grad_(True)
            set_modes(self.model, frozen=self.bn if self.cfg.freeze_bn else [])

    def loss(self, batch: Batch, update: int) -> StepOutput:
        model, y = self.model, batch.y
        if update < self.warm:
            # θ = θ_r* in eval mode ⇒ z(x, θ) = z0(x, θ_r*): train w on the stored features (d = 0)
            if self.z0_all is not None:
                z = self.z0_all[batch.idx]
            else:
                with torch.no_grad():
                    z = model.features(batch.x)
            logits = model.head(z)
            return StepOutput(F.cross_entropy(logits, y), logits, {"train_feature_distance": 0.0})
        z = model.features(batch.x)
        logits = model.head(z)
        if self.z0_all is not None:
            z0 = self.z0_all[batch.idx]
        else:
            with torch.no_grad():
                z0 = self.teacher.features(batch.x)
        loss, d = lwf_loss(logits, y, z, z0, self.cfg.lambda_d, self.cfg.distance)
        return StepOutput(loss, logits, {"train_feature_distance": float(d.detach())})


def lwf(cfg: LwfConfig, logger: RunLogger, *, source: Source, run_id: str | None = None) -> TrainingResult:
    """Eq. 3 from `source` (resolved by the command layer from cfg.source_model)."""
    s = setup(cfg, logger, source)
    device, train = s.device, s.data.train

    teacher = copy.deepcopy(source.model).to(device).eval()  # θ_r*: never trained
    freeze(teacher)
    keep_head = same_classes(source, train)  # same-dataset mode (Tables 5, 7): the source's head fits
    model = source.model if keep_head else replace_head(source.model, HeadSpec(), train.num_classes)
    fast = FastPath.of(cfg, device, model.arch)   # precision, channels_last, compile
    model = on_device(model, device, fast)
    z0_all = (cached_features(teacher, train, device=device, progress=cfg.progress).to(device)
              if cfg.teacher == "offline" else None)  # the paper's offline trick: z0 stored, computed once

    bn = batchnorm_modules(model.body)
    bn_params = {id(p) for m in bn for p in m.parameters()}
    trainable_later = [p for p in model.body.parameters() if not (cfg.freeze_bn and id(p) in bn_params)]
    freeze(model.body)
    set_modes(model, frozen=[model.body])  # warm start: θ = θ_r*, in eval mode
    warm = round(cfg.warm_start * budget_for(cfg, len(train)).total_updates)

    training = Training("lwf", cfg, model, [*model.head.parameters(), *trainable_later], s.data, device, fast,
                        meta={"training": {"warm_updates": warm, "lambda_d": cfg.lambda_d, "distance": cfg.distance,
                                           "teacher": cfg.teacher, "freeze_bn": cfg.freeze_bn,
                                           "head": "source" if keep_head else "new"},
                              "lineage": source_lineage(source)},
                        checkpoint_dir=cfg.checkpoint_dir, run_id=run_id, desc=f"lwf λ_d={cfg.lambda_d}")
    return fit(training, LwfLoss(cfg, model, teacher, z0_all, trainable_later, bn, warm), logger)
