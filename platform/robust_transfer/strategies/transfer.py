"""`transfer`: recycle a source's feature extractor, train a new head on the target (paper section 4):

    min_w  l( h_w( z(x, θ*) ), y )                                        (Eq. 2)

θ* is the source's feature extractor, frozen and in eval mode (its BatchNorm statistics never
move); h_w is a linear head (Tables 2–3) or an MLP with `mlp_depth` hidden layers of `width`
(Fig. 4). With augmentation off, z(x, θ*) of the training set never changes, so it is computed
once and stored (`features.cached_features`) and the head trains on those vectors; with
augmentation on, z is computed per batch. Both see the same examples in the same order, so they
train the same head. Evaluation always attacks the whole model h_w∘z in pixel space, never the
stored features. The paper's defaults are at the top of config/transfer.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import TransferConfig
from ..data import ImageData
from ..reporting import RunLogger
from .common import FastPath, freeze, on_device, set_modes
from .engine import Batch, Objective, StepOutput, Training, TrainingResult, fit
from .features import cached_features
from .source_model import Source, replace_head, setup, source_lineage


class HeadLoss(Objective):
    """Eq. 2: only w receives gradients; z from the stored features when there are some."""

    def __init__(self, model, z_all: torch.Tensor | None, threads: int | None):
        self.model, self.z_all, self.threads = model, z_all, threads

    def loss(self, batch: Batch, update: int) -> StepOutput:
        if self.z_all is not None:
            z = self.z_all[batch.idx]
        else:
            with torch.no_grad():  # θ* is frozen: no graph through the extractor
                z = self.model.features(batch.x)
        logits = self.model.head(z)
        return StepOutput(F.cross_entropy(logits, batch.y), logits)


def head_objective(model, train: ImageData, cfg: TransferConfig, device: torch.device) -> HeadLoss:
    """Eq. 2's loss for `model`'s head, its extractor frozen in eval mode (BatchNorm statistics stay the source's);
    z from stored features when augmentation is off (computed once, `features.cached_features`)."""
    freeze(model.body)
    set_modes(model, frozen=[model.body])
    cached = cfg.feature_cache and not cfg.augment
    z_all = cached_features(model, train, device=device, progress=cfg.progress).to(device) if cached else None
    # On stored features a small head is a stream of tiny matrix products: waking intra-op threads
    # costs more than they save (10-20x slower on a shared 2-core CPU; benchmarks/bench_transfer.py).
    tiny = device.type == "cpu" and cached and sum(p.numel() for p in model.head.parameters()) < 1_000_000
    return HeadLoss(model, z_all, 1 if tiny else None)


def transfer(cfg: TransferConfig, logger: RunLogger, *, source: Source, run_id: str | None = None) -> TrainingResult:
    """A new head on `source`'s frozen features (`source`: resolved by the command layer from cfg.source_model)."""
    s = setup(cfg, logger, source)
    cached = cfg.feature_cache and not cfg.augment
    logger.set_tags({"rtl.feature_cache": str(cached).lower()})
    model = replace_head(source.model, cfg.head_spec(), s.data.train.num_classes)
    fast = FastPath.of(cfg, s.device, model.arch)
    model = on_device(model, s.device, fast)
    objective = head_objective(model, s.data.train, cfg, s.device)
    training = Training("transfer", cfg, model, list(model.head.parameters()), s.data, s.device, fast,
                        meta={"training": {"feature_cache": cached}, "lineage": source_lineage(source, frozen="body")},
                        checkpoint_dir=cfg.checkpoint_dir, run_id=run_id, desc="transfer head")
    return fit(training, objective, logger)
