"""`train`: a source model from scratch — natural, PGD-k (Madry), free (Shafahi 2019) or FGSM-RS (Wong 2020).

Each mode is one function that performs the optimiser update(s) for one minibatch:

    natural   θ ← θ − η ∇θ CE(f(x), y)
    pgd       x' = PGD_k(x) in the ε-ball (Madry: the LAST of k steps from a random start;
              attacks.pgd_train);                    θ ← θ − η ∇θ CE(f(x'), y)
    fgsm-rs   δ ~ U(−ε, ε), δ ← Π(δ + 1.25ε·sign ∇δ);  θ ← θ − η ∇θ CE(f(x+δ), y)
    free      replay the minibatch m times; ONE backward gives ∇θ and ∇δ:
              θ ← θ − η ∇θ CE(f(x+δ), y),  δ ← Π(δ + ε·sign ∇δ)   (δ carries over between minibatches)

So free training costs one forward+backward per update, like natural training, and the paper's
"Free-4" is replay=4.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..attacks import ThreatModel, fgsm, pgd_train
from ..checkpoints import load_checkpoint, load_train_state, save_checkpoint
from ..config import TrainConfig
from ..data import BatchLoader, ImageData, load_dataset, resize_images
from ..data.validation import Split
from ..device import resolve_device
from ..errors import ModelError
from ..models import create_model
from ..reporting import RunLogger
from .common import (Budget, EpochMeter, FastPath, load_optimizer_tensors, lr_at, make_sgd, optimizer_tensors,
                     set_lr)
from .validate import eval_threat, record_split, split_training, reported_metrics, val_metrics

@dataclass
class TrainResult:
    model: torch.nn.Module
    metrics: dict[str, float]
    checkpoint_dir: Path
    meta: dict


class ModeStep:
    """One minibatch of a training mode; returns (loss, logits) of the last update for the meters."""

    def __init__(self, cfg: TrainConfig, model, opt, threat: ThreatModel, generator: torch.Generator,
                 fast: FastPath | None = None):
        self.cfg, self.model, self.opt, self.threat, self.gen = cfg, model, opt, threat, generator
        # the update's forward runs under the fast path's autocast (bf16 or none); the attacks that
        # make adversarial examples always run in fp32 (attacks.pgd.attack_precision)
        self.fast = fast or FastPath(generator.device, None, torch.channels_last)
        self.delta: torch.Tensor | None = None  # free training's carried perturbation
        self.updates_per_batch = cfg.replay if cfg.mode == "free" else 1

    def _update(self, x, y):
        with self.fast.autocast():
            logits = self.model(x)
            loss = F.cross_entropy(logits.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach(), logits.detach()

    def __call__(self, x, y, on_update):
        mode = self.cfg.mode
        if mode == "natural":
            out = self._update(x, y)
        elif mode in ("pgd", "fgsm-rs"):
            x_adv = self.adversarial(x, y)
            self.model.train()
            out = self._update(x_adv, y)
        else:
            return self._free(x, y, on_update)
        on_update()
        return out

    def adversarial(self, x, y) -> torch.Tensor:
        """The examples a pgd / fgsm-rs update trains on (the attack runs in eval mode, fp32)."""
        eps, alpha = self.threat.eps, self.threat.alpha
        if self.cfg.mode == "pgd":   # Madry's PGD-k: the last iterate, not the evaluation attack's "first that fools"
            return pgd_train(self.model, x, y, eps=eps, alpha=alpha, steps=self.cfg.steps, generator=self.gen)
        return fgsm(self.model, x, y, eps=eps, random_start_alpha=1.25 * eps, generator=self.gen)

    def _free(self, x, y, on_update):
        eps = self.threat.eps
        if self.delta is None or self.delta.shape[1:] != x.shape[1:] or self.delta.shape[0] < x.shape[0]:
            self.delta = torch.zeros_like(x)
        out = None
        for _ in range(self.cfg.replay):
            delta = self.delta[: x.shape[0]].clone().requires_grad_(True)
            x_adv = (x + delta).clamp(0, 1)
            with self.fast.autocast():
                logits = self.model(x_adv)
                loss = F.cross_entropy(logits.float(), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()  # one backward: gradients for θ and for δ
            self.opt.step()
            with torch.no_grad():
                self.delta[: x.shape[0]] = (delta + eps * delta.grad.sign()).clamp(-eps, eps)
            out = (loss.detach(), logits.detach())
            if not on_update():
                break
        return out


def load_training_data(cfg: TrainConfig) -> tuple[ImageData, ImageData, ImageData, Split]:
    """(train, val, test, split): the validation set carved out of the training split (seeded, stratified;
    `val_fraction` / `val_per_class`), `per_class` of the rest, then any `resize`."""
    full = load_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, progress=cfg.progress)
    test = load_dataset(cfg.dataset, "test", data_dir=cfg.data_dir, progress=cfg.progress)
    split = split_training(full, cfg)
    train, val = split.train, split.val
    if cfg.resize is not None:
        train, val, test = (resize_images(d, cfg.resize) for d in (train, val, test))
    return train, val, test, split


def config_fingerprint(cfg: TrainConfig) -> str:
    """What must match for --resume to continue the same run (budget and recipe, not progress flags)."""
    skip = ("resume", "progress", "device", "data_dir", "register_as", "compile", "channels_last")
    keep = {k: v for k, v in asdict(cfg).items() if k not in skip}
    if keep.get("precision") == "auto":   # (so checkpoints written before the field existed still match)
        keep.pop("precision")
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def default_checkpoint_dir(cfg: TrainConfig) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{cfg.dataset}-{cfg.arch}-{cfg.mode}-s{cfg.seed}")
    return Path("checkpoints") / f"train-{safe}-{config_fingerprint(cfg)}"


def resume_state(cfg: TrainConfig) -> dict | None:
    """The saved training state to continue from, or None (refuses a checkpoint of another recipe)."""
    ckpt = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else default_checkpoint_dir(cfg)
    state = load_train_state(ckpt) if ckpt.exists() else None
    if state is None:
        return None
    if state["json"].get("fingerprint") != config_fingerprint(cfg):
        raise ModelError(f"--resume: checkpoint {str(ckpt)!r} was written by a different configuration; "
                         "use the same parameters or another checkpoint_dir")
    return state


def train(cfg: TrainConfig, logger: RunLogger, *, run_id: str | None = None) -> TrainResult:
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    threat = ThreatModel(cfg.epsilon, cfg.step_size)      # the training threat (pgd, free, fgsm-rs)
    evt = eval_threat(cfg)                                  # what every reported <attack>_acc is measured at
    train_data, val_data, test_data, split = load_training_data(cfg)
    record_split(logger, split)
    ckpt_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else default_checkpoint_dir(cfg)

    fast = FastPath.of(cfg, device, cfg.arch)   # precision, channels_last, compile
    fmt = fast.memory_format
    model = create_model(cfg.arch, train_data.num_classes, input_size=train_data.image_size).to(device)
    model = model.to(memory_format=fmt)
    opt = make_sgd(model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    loader = BatchLoader(train_data, cfg.batch_size, shuffle=True, augment=cfg.augment, seed=cfg.seed,
                         device=device, drop_last=len(train_data) >= 2 * cfg.batch_size, memory_format=fmt)
    gen = torch.Generator(device=device)
    step = ModeStep(cfg, model, opt, threat, gen, fast)
    budget = Budget.of(cfg.epochs, cfg.iterations, len(loader), step.updates_per_batch)
    milestones = cfg.milestone_fractions()

    start_epoch, updates = 0, 0
    state = resume_state(cfg) if cfg.resume else None
    if state is not None:
        resumed, _ = load_checkpoint(ckpt_dir)
        model.load_state_dict(resumed.state_dict())
        load_optimizer_tensors(opt, state["tensors"])
        torch.set_rng_state(state["tensors"]["rng.torch"])
        if "free.delta" in state["tensors"]:
            step.delta = state["tensors"]["free.delta"].to(device)
        start_epoch, updates = state["json"]["epochs_done"], state["json"]["updates"]
        logger.set_tags({"rtl.resumed_from_epoch": str(start_epoch)})

    meta = {"classes": list(train_data.classes), "data_spec": cfg.dataset, "data_sha256": train_data.sha256(),
            "threat_model": threat.to_dict(), "eval_threat": evt.to_dict(), "validation": split.record(),
            "training": {"mode": cfg.mode, "epochs": budget.epochs,
            "updates": budget.total_updates, "seed": cfg.seed, "precision": fast.precision},
            "lineage": {"strategy": "train", "run_id": run_id}}
    logger.set_tags({"rtl.data_sha256": train_data.sha256()})

    def on_update() -> bool:
        nonlocal updates
        updates += 1
        set_lr(opt, lr_at(updates, budget.total_updates, cfg.lr, cfg.schedule, milestones))
        return updates < budget.total_updates

    set_lr(opt, lr_at(updates, budget.total_updates, cfg.lr, cfg.schedule, milestones))
    last_val: dict[str, float] = {}
    for epoch in range(start_epoch, budget.epochs):
        if updates >= budget.total_updates:
            break
        model.train()
        loader.set_epoch(epoch)
        gen.manual_seed(cfg.seed * 100_003 + epoch)
        meter = EpochMeter()
        bar = tqdm(loader, desc=f"{cfg.mode} epoch {epoch + 1}/{budget.epochs}", disable=not cfg.progress,
                   leave=False, unit="batch")
        with fast.compiled(model):   # eager again for the validation check below
            for x, y in bar:   # x already in `fmt` (BatchLoader's memory_format)
                loss, logits = step(x, y, on_update)
                meter.update(loss, logits, y)
                bar.set_postfix(loss=f"{float(loss):.3f}", lr=f"{opt.param_groups[0]['lr']:.4f}")
                if updates >= budget.total_updates:
                    break
        last_val = val_metrics(model, val_data, evt, seed=cfg.seed, device=device)
        metrics = meter.metrics() | last_val
        if cfg.mode != "natural":  # the meter saw the adversarial batch: name its accuracy for what it is
            metrics["train_adv_acc"] = metrics.pop("train_clean_acc")
        metrics["lr"] = opt.param_groups[0]["lr"]
        logger.log_metrics(metrics, step=epoch)
        if cfg.progress:
            tqdm.write(f"epoch {epoch + 1}/{budget.epochs}  loss {metrics['train_loss']:.3f}  "
                       f"train acc {metrics.get('train_clean_acc', metrics.get('train_adv_acc')):.3f}  val clean {metrics['val_clean_acc']:.3f} "
                       f"pgd10 {metrics['val_pgd10_acc']:.3f}  {metrics['images_per_s']:.0f} img/s")
        tensors = optimizer_tensors(opt) | {"rng.torch": torch.get_rng_state()}
        if step.delta is not None:
            tensors["free.delta"] = step.delta
        save_checkpoint(ckpt_dir, model, meta, train_state={
            "tensors": tensors, "json": {"epochs_done": epoch + 1, "updates": updates, "run_id": run_id,
                                         "fingerprint": config_fingerprint(cfg)}})

    if not last_val:   # resumed after the last epoch: the validation check of the final model
        last_val = val_metrics(model, val_data, evt, seed=cfg.seed, device=device)
    metrics, where = reported_metrics(model, test_data, evt, eval_steps=cfg.eval_steps, n_examples=cfg.n_examples,
                                  seed=cfg.seed, device=device, progress=cfg.progress)
    logger.log_metrics(metrics)
    logger.set_tags({"rtl.eval_indices_sha256": where["indices_sha256"]})
    meta["evaluation"] = metrics | where
    save_checkpoint(ckpt_dir, model, meta, train_state=load_train_state(ckpt_dir))
    return TrainResult(model=model, metrics=metrics | last_val, checkpoint_dir=ckpt_dir, meta=meta)
