"""`train`: a source model from scratch — natural, PGD-k (Madry), free (Shafahi 2019) or FGSM-RS (Wong 2020).

Each mode is one function that performs the optimiser update(s) for one minibatch:

    natural   θ ← θ − η ∇θ CE(f(x), y)
    pgd       x' = PGD_k(x) in the ε-ball;           θ ← θ − η ∇θ CE(f(x'), y)
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

from ..attacks import ThreatModel, evaluate_robustness, fgsm, pgd
from ..checkpoints import load_checkpoint, load_train_state, save_checkpoint
from ..config import TrainConfig
from ..data import BatchLoader, ImageData, load_dataset, resize_images, stratified_subset
from ..device import resolve_device
from ..errors import ModelError
from ..models import create_model
from ..reporting import RunLogger
from .common import (Budget, EpochMeter, FastPath, load_optimizer_tensors, lr_at, make_sgd, optimizer_tensors,
                     set_lr)

HELDOUT = 256  # per-epoch clean/PGD check on a fixed held-out batch of the test split


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
        mode, eps, alpha = self.cfg.mode, self.threat.eps, self.threat.alpha
        if mode == "natural":
            out = self._update(x, y)
        elif mode == "pgd":
            x_adv = pgd(self.model, x, y, eps=eps, alpha=alpha, steps=self.cfg.steps, generator=self.gen)
            self.model.train()
            out = self._update(x_adv, y)
        elif mode == "fgsm-rs":
            x_adv = fgsm(self.model, x, y, eps=eps, random_start_alpha=1.25 * eps, generator=self.gen)
            self.model.train()
            out = self._update(x_adv, y)
        else:
            return self._free(x, y, on_update)
        on_update()
        return out

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


def load_training_data(cfg: TrainConfig) -> tuple[ImageData, ImageData]:
    train = load_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, progress=cfg.progress, download=cfg.download)
    test = load_dataset(cfg.dataset, "test", data_dir=cfg.data_dir, progress=cfg.progress)
    if cfg.per_class is not None:
        train = stratified_subset(train, cfg.per_class, seed=cfg.seed)
    if cfg.resize is not None:
        train, test = resize_images(train, cfg.resize), resize_images(test, cfg.resize)
    return train, test


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


def heldout_metrics(model, test: ImageData, threat: ThreatModel, seed: int, device) -> dict[str, float]:
    res = evaluate_robustness(model, test.images, test.labels, attacks=("clean", "pgd10"), threat=threat,
                              n_examples=min(HELDOUT, len(test)), seed=seed, device=device, progress=False)
    return {"heldout_clean_acc": res.metrics["clean_acc"], "heldout_pgd10_acc": res.metrics["pgd10_acc"]}


def train(cfg: TrainConfig, logger: RunLogger, *, run_id: str | None = None) -> TrainResult:
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    threat = ThreatModel(cfg.epsilon, cfg.step_size)
    train_data, test_data = load_training_data(cfg)
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
            "threat_model": threat.to_dict(), "training": {"mode": cfg.mode, "epochs": budget.epochs,
            "updates": budget.total_updates, "seed": cfg.seed, "precision": fast.precision},
            "lineage": {"strategy": "train", "run_id": run_id}}
    logger.set_tags({"rtl.data_sha256": train_data.sha256()})

    def on_update() -> bool:
        nonlocal updates
        updates += 1
        set_lr(opt, lr_at(updates, budget.total_updates, cfg.lr, cfg.schedule, milestones))
        return updates < budget.total_updates

    set_lr(opt, lr_at(updates, budget.total_updates, cfg.lr, cfg.schedule, milestones))
    for epoch in range(start_epoch, budget.epochs):
        if updates >= budget.total_updates:
            break
        model.train()
        loader.set_epoch(epoch)
        gen.manual_seed(cfg.seed * 100_003 + epoch)
        meter = EpochMeter()
        bar = tqdm(loader, desc=f"{cfg.mode} epoch {epoch + 1}/{budget.epochs}", disable=not cfg.progress,
                   leave=False, unit="batch")
        with fast.compiled(model):   # eager again for the held-out check below
            for x, y in bar:   # x already in `fmt` (BatchLoader's memory_format)
                loss, logits = step(x, y, on_update)
                meter.update(loss, logits, y)
                bar.set_postfix(loss=f"{float(loss):.3f}", lr=f"{opt.param_groups[0]['lr']:.4f}")
                if updates >= budget.total_updates:
                    break
        metrics = meter.metrics() | heldout_metrics(model, test_data, threat, cfg.seed, device)
        if cfg.mode != "natural":  # the meter saw the adversarial batch: name its accuracy for what it is
            metrics["train_adv_acc"] = metrics.pop("train_clean_acc")
        metrics["lr"] = opt.param_groups[0]["lr"]
        logger.log_metrics(metrics, step=epoch)
        if cfg.progress:
            tqdm.write(f"epoch {epoch + 1}/{budget.epochs}  loss {metrics['train_loss']:.3f}  "
                       f"train acc {metrics.get('train_clean_acc', metrics.get('train_adv_acc')):.3f}  held-out clean {metrics['heldout_clean_acc']:.3f} "
                       f"pgd10 {metrics['heldout_pgd10_acc']:.3f}  {metrics['images_per_s']:.0f} img/s")
        tensors = optimizer_tensors(opt) | {"rng.torch": torch.get_rng_state()}
        if step.delta is not None:
            tensors["free.delta"] = step.delta
        save_checkpoint(ckpt_dir, model, meta, train_state={
            "tensors": tensors, "json": {"epochs_done": epoch + 1, "updates": updates, "run_id": run_id,
                                         "fingerprint": config_fingerprint(cfg)}})

    final = evaluate_robustness(model, test_data.images, test_data.labels,
                                attacks=("clean", f"pgd{cfg.eval_steps}"), threat=threat,
                                n_examples=min(cfg.n_examples, len(test_data)), seed=cfg.seed, device=device,
                                progress=cfg.progress)
    metrics = {k: v for k, v in final.metrics.items() if k != "worst_acc"}
    logger.log_metrics(metrics)
    logger.set_tags({"rtl.eval_indices_sha256": final.indices_sha256})
    meta["evaluation"] = metrics | {"n_examples": final.n_examples, "indices_sha256": final.indices_sha256}
    save_checkpoint(ckpt_dir, model, meta, train_state=load_train_state(ckpt_dir))
    return TrainResult(model=model, metrics=metrics, checkpoint_dir=ckpt_dir, meta=meta)
