"""`finetune_adv`: the Fig. 3 baseline (Hendrycks et al. 2019) — adversarial fine-tuning of the source.

Start from the source c(θ_r), replace the head for the target's classes, and train everything
end to end on PGD-k adversarial examples of the target:

    min_{θ, w}  CE( f(x', θ, w), y ),   x' = PGD_k(x) in B∞(x, ε) ∩ [0,1]

Paper (A.2, ImageNet sources): k=3, step 3, ε=5; 50 epochs, batch 128, lr 0.01 → 0.001 at epoch
30. PGD_k is Madry's (the last iterate, `attacks.pgd_train`) at the TRAINING threat `epsilon`/`step_size`;
the reported `pgd20_acc` is measured at the evaluation threat `eval_epsilon`/`eval_step_size` (8/2), as
every other row of a table. It costs about k+1 forward/backward passes per update, against `transfer`'s ~0 (cached z):
that is the paper's "3× faster" comparison.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attacks import pgd_train
from ..data import BatchLoader
from ..models import HeadSpec
from ..reporting import RunLogger
from .common import Budget, FastPath, lr_at, make_sgd
from .source import (Source, StrategyResult, default_checkpoint_dir, drop_last, finish, input_format, on_device,
                     replace_head, setup, source_lineage, tag_run, train_loop)
from .validate import Validator, eval_threat

# The paper's settings (appendix A.2, ImageNet sources), the `finetune_adv` entry point's defaults
# (config/transfer.py takes them from here; every one can be overridden: `rtl finetune-adv --steps 7`, ...).
DEFAULTS = dict(
    epsilon=5.0,         # PGD-3, step 3, ε 5 (0-255 scale)
    step_size=3.0,
    steps=3,
    epochs=50,           # as `transfer`: 50 epochs, lr 0.01 → 0.001 at 60% of the budget
    lr=0.01,
    schedule="step",
    milestones="0.6",
    augment=True,
)



def finetune_adv(cfg, logger: RunLogger, *, run_id: str | None = None,
                 source: Source | None = None) -> StrategyResult:
    """`cfg`: a config.FinetuneAdvConfig; `source`: the source model if the caller loaded it already (else `cfg.source_model` is loaded)."""
    s = setup(cfg, logger, source=source)
    device, threat, source, train, val, test = s.device, s.threat, s.source, s.train, s.val, s.test
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
        # Madry's PGD-k (the last iterate, attacks.pgd_train); it runs in eval mode and restores train mode afterwards
        x_adv = pgd_train(model, x, y, eps=threat.eps, alpha=threat.alpha, steps=cfg.steps, generator=gen)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach(), logits.detach(), y

    # the meter sees the adversarial logits: their accuracy is logged as train_adv_acc
    validate = Validator(model, val, eval_threat(cfg), seed=cfg.seed, device=device)
    updates = train_loop(budget, batches, update, opt=opt, logger=logger, progress=cfg.progress, validate=validate,
                         desc=f"finetune_adv pgd{cfg.steps}", acc_name="train_adv_acc", fast=fast, model=model,
                         lr_for=lambda step: lr_at(step, budget.total_updates, cfg.lr, cfg.schedule, milestones))
    meta = {"training": {"strategy": "finetune_adv", "updates": updates, "seed": cfg.seed, "steps": cfg.steps,
                         "epsilon": cfg.epsilon, "step_size": cfg.step_size},
            "lineage": source_lineage("finetune_adv", source, run_id)}
    ckpt = cfg.checkpoint_dir or default_checkpoint_dir("finetune_adv", train.spec, run_id)
    # the training threat is the checkpoint's threat_model; pgd20_acc is measured at the evaluation threat
    return finish(model, test, train, cfg, logger, meta=meta, checkpoint_dir=ckpt, threat=threat, device=device,
                  val=validate.last)
