"""`finetune_adv`: the Fig. 3 baseline (Hendrycks et al. 2019) — adversarial fine-tuning of the source.

Start from the source c(θ_r), replace the head for the target's classes, and train everything
end to end on PGD-k adversarial examples of the target:

    min_{θ, w}  CE( f(x', θ, w), y ),   x' = PGD_k(x) in B(x, ε) ∩ [0,1]   (ℓ∞, or ℓ2 with norm=l2)

Paper (A.2, ImageNet sources): k=3, step 3, ε=5; 50 epochs, batch 128, lr 0.01 → 0.001 at epoch
30. PGD_k is Madry's (the last iterate, `attacks.pgd_train`) at the TRAINING threat `epsilon`/`step_size`;
the reported `pgd20_acc` is measured at the evaluation threat `eval_epsilon`/`eval_step_size` (ℓ∞ 8/2; under
`norm=l2` the evaluation is ℓ2 too by default and reports `pgd20_acc_l2`), as
every other row of a table. It costs about k+1 forward/backward passes per update, against `transfer`'s ~0 (cached z):
that is the paper's "3× faster" comparison. The paper's defaults are at the top of config/transfer.py.
"""
from __future__ import annotations

import torch.nn.functional as F

from ..config import FinetuneAdvConfig
from ..models import HeadSpec
from ..reporting import RunLogger
from .common import FastPath, on_device, pgd_examples
from .engine import Batch, Objective, StepOutput, Training, TrainingResult, fit
from .source_model import Source, replace_head, setup, source_lineage


class AdversarialLoss(Objective):
    """CE on Madry's PGD-k examples of the batch, at the training threat."""

    adversarial = True   # the meter sees the adversarial logits: their accuracy is logged as train_adv_acc

    def __init__(self, model, threat, steps: int):
        self.model, self.threat, self.steps = model, threat, steps

    def loss(self, batch: Batch, update: int) -> StepOutput:
        x_adv = pgd_examples(self.model, batch.x, batch.y, self.threat, self.steps, batch.generator)
        logits = self.model(x_adv)
        return StepOutput(F.cross_entropy(logits, batch.y), logits)


def finetune_adv(cfg: FinetuneAdvConfig, logger: RunLogger, *, source: Source,
                 run_id: str | None = None) -> TrainingResult:
    """Adversarial fine-tuning of `source` (resolved by the command layer from cfg.source_model)."""
    s = setup(cfg, logger, source)
    model = replace_head(source.model, HeadSpec(), s.data.train.num_classes)
    fast = FastPath.of(cfg, s.device, model.arch)   # precision, channels_last, compile (the PGD stays fp32)
    model = on_device(model, s.device, fast)
    model.train()  # end to end: every parameter and BatchNorm statistic adapts to the target
    # the training threat is the checkpoint's threat_model; pgd20_acc is measured at the evaluation threat
    training = Training("finetune_adv", cfg, model, list(model.parameters()), s.data, s.device, fast, threat=s.threat,
                        meta={"training": {"steps": cfg.steps, "epsilon": cfg.epsilon, "step_size": cfg.step_size},
                              "lineage": source_lineage(source)},
                        checkpoint_dir=cfg.checkpoint_dir, run_id=run_id, desc=f"finetune_adv pgd{cfg.steps}")
    return fit(training, AdversarialLoss(model, s.threat, cfg.steps), logger)
