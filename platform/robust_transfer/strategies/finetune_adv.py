"""`finetune_adv`: the Fig. 3 baseline (Hendrycks et al. 2019) — adversarial fine-tuning of the source.

Start from the source c(θ_r), replace the head for the target's classes, and train everything
end to end on PGD-k adversarial examples of the target:

    min_{θ, w}  CE( f(x', θ, w), y ),   x' = PGD_k(x) in B∞(x, ε) ∩ [0,1]

Paper (A.2, ImageNet sources): k=3, step 3, ε=5; 50 epochs, batch 128, lr 0.01 → 0.001 at epoch
30. It costs about k+1 forward/backward passes per update, against `transfer`'s ~0 (cached z):
that is the paper's "3× faster" comparison.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attacks import ThreatModel, pgd
from ..config import FinetuneAdvConfig
from ..data import BatchLoader
from ..device import resolve_device
from ..models import HeadSpec
from ..reporting import RunLogger
from .common import Budget, FastPath, lr_at, make_sgd
from .source import (StrategyResult, default_checkpoint_dir, drop_last, finish, input_format, load_data,
                     load_source, on_device, replace_head, source_lineage, tag_run, train_loop)


def finetune_adv(cfg: FinetuneAdvConfig, logger: RunLogger, *, run_id: str | None = None) -> StrategyResult:
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    threat = ThreatModel(cfg.epsilon, cfg.step_size)
    source = load_source(cfg.source_model)
    train, test = load_data(cfg.target, source, per_class=cfg.per_class, seed=cfg.seed, upsample=cfg.upsample,
                            download=cfg.download,
                            data_dir=cfg.data_dir, progress=cfg.progress)
    tag_run(logger, source, train)

    model = replace_head(source.model, HeadSpec(), train.num_classes)
    fast = FastPath.of(cfg, device, model.arch)   # precision, channels_last, compile (the PGD stays fp32)
    model = on_device(model, device, fast)
    fmt = input_format(model, fast)
    model.train()  # end to end: every parameter and BatchNorm statistic adapts to the target
    opt = make_sgd(model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    loader = BatchLoader(train, cfg.batch_size, shuffle=True, augment=cfg.augment, seed=cfg.seed, device=device,
                         drop_last=drop_last(len(train), cfg.batch_size))
    budget = Budget.of(cfg.epochs, cfg.iterations, len(loader))
    milestones = cfg.milestone_fractions()
    gen = torch.Generator().manual_seed(cfg.seed)  # PGD random starts (CPU generator: same on every device)

    def batches(epoch):
        loader.set_epoch(epoch)
        return iter(loader)

    def update(batch, step):
        x, y = batch
        x = x.contiguous(memory_format=fmt)
        # PGD runs in eval mode (attacks/pgd.eval_mode) and restores train mode afterwards
        x_adv = pgd(model, x, y, eps=threat.eps, alpha=threat.alpha, steps=cfg.steps, generator=gen)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach(), logits.detach(), y

    # the meter sees the adversarial logits: their accuracy is logged as train_adv_acc
    updates = train_loop(budget, batches, update, opt=opt, logger=logger, progress=cfg.progress,
                         desc=f"finetune_adv pgd{cfg.steps}", acc_name="train_adv_acc", fast=fast, model=model,
                         lr_for=lambda step: lr_at(step, budget.total_updates, cfg.lr, cfg.schedule, milestones))
    meta = {"training": {"strategy": "finetune_adv", "updates": updates, "seed": cfg.seed, "steps": cfg.steps,
                         "epsilon": cfg.epsilon, "step_size": cfg.step_size},
            "lineage": source_lineage("finetune_adv", source, run_id)}
    ckpt = cfg.checkpoint_dir or default_checkpoint_dir("finetune_adv", train.spec, run_id)
    return finish(model, test, train, cfg, logger, meta=meta, checkpoint_dir=ckpt, threat=threat, device=device)
