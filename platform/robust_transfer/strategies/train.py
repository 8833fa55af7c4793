"""`train`: a source model from scratch — natural, PGD-k (Madry), free (Shafahi 2019) or FGSM-RS (Wong 2020).

Each mode is the loss of one minibatch (`ModeObjective`); the training engine (engine.py) makes the
optimiser update(s):

    natural   θ ← θ − η ∇θ CE(f(x), y)
    pgd       x' = PGD_k(x) in the ε-ball (Madry: the LAST of k steps from a random start;
              attacks.pgd_train);                    θ ← θ − η ∇θ CE(f(x'), y)
    fgsm-rs   δ ~ U(−ε, ε), δ ← Π(δ + 1.25ε·sign ∇δ);  θ ← θ − η ∇θ CE(f(x+δ), y)
    free      replay the minibatch m times; ONE backward gives ∇θ and ∇δ:
              θ ← θ − η ∇θ CE(f(x+δ), y),  δ ← Π(δ + ε·sign ∇δ)   (δ carries over between minibatches)

So free training costs one forward+backward per update, like natural training, and the paper's
"Free-4" is replay=4: the engine replays each batch `updates_per_batch` times, `after_update` steps δ with
the gradient the update's backward left on it, and δ is saved with a resumable checkpoint (`state`).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..attacks import ThreatModel, fgsm
from ..config import TrainConfig
from ..data import load_dataset, resize_images
from ..device import resolve_device
from ..models import create_model
from ..reporting import RunLogger
from .common import FastPath, on_device, pgd_examples
from .engine import (Batch, Objective, StepOutput, Training, TrainingData, TrainingResult, config_fingerprint,
                     default_checkpoint_dir, fit)
from .validate import split_training


class ModeObjective(Objective):
    """The loss of one minibatch in a training mode (and free training's replay of it)."""

    def __init__(self, cfg: TrainConfig, model, threat: ThreatModel):
        self.cfg, self.model, self.threat = cfg, model, threat
        self.adversarial = cfg.mode != "natural"   # the meter sees the examples trained on: train_adv_acc
        self.updates_per_batch = cfg.replay if cfg.mode == "free" else 1
        self.delta: torch.Tensor | None = None     # free training's carried perturbation
        self._leaf: torch.Tensor | None = None     # this update's δ, whose gradient steps it

    def loss(self, batch: Batch, update: int) -> StepOutput:
        x = batch.x
        if self.cfg.mode == "free":
            x = self._free_examples(x)
        elif self.adversarial:
            x = self.adversarial_examples(batch)
        logits = self.model(x)
        return StepOutput(F.cross_entropy(logits.float(), batch.y), logits)

    def adversarial_examples(self, batch: Batch) -> torch.Tensor:
        """The examples a pgd / fgsm-rs update trains on (the attack runs in eval mode, fp32)."""
        if self.cfg.mode == "pgd":   # Madry's PGD-k: the last iterate, not the evaluation attack's "first that fools"
            return pgd_examples(self.model, batch.x, batch.y, self.threat, self.cfg.steps, batch.generator)
        eps = self.threat.eps
        return fgsm(self.model, batch.x, batch.y, eps=eps, random_start_alpha=1.25 * eps, generator=batch.generator)

    def _free_examples(self, x: torch.Tensor) -> torch.Tensor:
        if self.delta is None or self.delta.shape[1:] != x.shape[1:] or self.delta.shape[0] < x.shape[0]:
            self.delta = torch.zeros_like(x)
        self._leaf = self.delta[: x.shape[0]].clone().requires_grad_(True)
        return (x + self._leaf).clamp(0, 1)

    def after_update(self, batch: Batch, update: int) -> None:
        if self._leaf is None:
            return
        eps, leaf = self.threat.eps, self._leaf   # the same backward gave ∇θ and ∇δ
        with torch.no_grad():
            self.delta[: leaf.shape[0]] = (leaf + eps * leaf.grad.sign()).clamp(-eps, eps)
        self._leaf = None

    def state(self) -> dict[str, torch.Tensor]:
        return {"free.delta": self.delta} if self.delta is not None else {}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if "free.delta" in tensors:
            self.delta = tensors["free.delta"]


def load_training_data(cfg: TrainConfig) -> TrainingData:
    """(train, val, test, split): the validation set carved out of the training split (seeded, stratified;
    `val_fraction` / `val_per_class`), `per_class` of the rest, then any `resize`."""
    full = load_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, progress=cfg.progress, download=cfg.download)
    test = load_dataset(cfg.dataset, "test", data_dir=cfg.data_dir, progress=cfg.progress)
    split = split_training(full, cfg)
    train, val = split.train, split.val
    if cfg.resize is not None:
        train, val, test = (resize_images(d, cfg.resize) for d in (train, val, test))
    return TrainingData(train, val, test, split)


def checkpoint_dir(cfg: TrainConfig) -> Path:
    """`checkpoint_dir`, else one named by the recipe and its fingerprint: --resume finds it again."""
    if cfg.checkpoint_dir:
        return Path(cfg.checkpoint_dir)
    return default_checkpoint_dir("train", f"{cfg.dataset}-{cfg.arch}-{cfg.mode}-s{cfg.seed}", config_fingerprint(cfg))


def train(cfg: TrainConfig, logger: RunLogger, *, run_id: str | None = None) -> TrainingResult:
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    threat = ThreatModel(cfg.epsilon, cfg.step_size, cfg.norm)   # the training threat (pgd, free, fgsm-rs)
    data = load_training_data(cfg)
    fast = FastPath.of(cfg, device, cfg.arch)   # precision, channels_last, compile
    model = on_device(create_model(cfg.arch, data.train.num_classes, input_size=data.train.image_size), device, fast)
    model.train()
    training = Training("train", cfg, model, list(model.parameters()), data, device, fast, threat=threat,
                        meta={"data_spec": cfg.dataset, "training": {"mode": cfg.mode}},
                        checkpoint_dir=checkpoint_dir(cfg), run_id=run_id, resumable=True, desc=cfg.mode)
    return fit(training, ModeObjective(cfg, model, threat), logger)
