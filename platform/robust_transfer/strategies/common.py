"""Pieces every training strategy shares: the training budget, optimiser, schedule, epoch bookkeeping,
modes and threads, the training attack, and the fast path (`FastPath`: autocast precision, memory format,
optional torch.compile)."""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class TrainingBudget:
    """`iterations` wins over `epochs` (docs/architecture.md); both become a count of optimiser updates.
    (Not the attack budget of an evaluation: that is `AttackBudget`.)"""

    epochs: int
    total_updates: int
    updates_per_epoch: int

    @classmethod
    def of(cls, epochs: int, iterations: int | None, batches_per_epoch: int, updates_per_batch: int = 1):
        per_epoch = batches_per_epoch * updates_per_batch
        if iterations is not None:
            return cls(math.ceil(iterations / per_epoch), iterations, per_epoch)
        return cls(epochs, epochs * per_epoch, per_epoch)


def make_sgd(params, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=False)


def lr_at(update: int, total: int, base_lr: float, schedule: str, milestones: list[float] = ()) -> float:
    """Learning rate for optimiser update `update` of `total` (a pure function: resumable)."""
    if schedule == "cosine":
        return base_lr * 0.5 * (1 + math.cos(math.pi * min(update, total) / total))
    if schedule == "step":
        drops = sum(update >= f * total for f in milestones)
        return base_lr * (0.1 ** drops)
    return base_lr


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Momentum buffers as flat named tensors (safetensors holds tensors only; no pickling)."""
    out = {}
    for i, state in opt.state_dict()["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                out[f"opt.{i}.{k}"] = v
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith("opt."):
            _, i, k = name.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    sd["state"] = state
    opt.load_state_dict(sd)


class EpochMeter:
    """Running loss/accuracy and throughput for one epoch."""

    def __init__(self):
        self.loss_sum = 0.0
        self.correct = 0
        self.seen = 0
        self.start = time.perf_counter()

    def update(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        n = y.numel()
        self.loss_sum += float(loss) * n
        self.correct += int((logits.argmax(1) == y).sum())
        self.seen += n

    def metrics(self) -> dict[str, float]:
        dt = time.perf_counter() - self.start
        return {"train_loss": self.loss_sum / max(self.seen, 1), "train_clean_acc": self.correct / max(self.seen, 1),
                "epoch_time_s": dt, "images_per_s": self.seen / max(dt, 1e-9)}


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def set_modes(model: nn.Module, frozen: list[nn.Module]) -> None:
    """Train mode, except the frozen modules: eval mode, so their BatchNorm statistics never move."""
    model.train()
    for m in frozen:
        m.eval()


def batchnorm_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Run the block with `n` intra-op CPU threads (None: unchanged), then restore the setting."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pgd_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat, steps: int,
                 generator: torch.Generator) -> torch.Tensor:
    """The examples a PGD-k training step trains on: Madry's PGD-k at the TRAINING threat `threat` (the LAST
    of k signed steps from a random start, `attacks.pgd_train`; not the evaluation attack's "first that
    fools"). It runs in eval mode and fp32 and restores every module's mode afterwards. `train mode=pgd`
    and `finetune_adv` both call it: the one place a training threat model turns into examples."""
    from ..attacks import pgd_train

    return pgd_train(model, x, y, eps=threat.eps, alpha=threat.alpha, steps=steps, generator=generator,
                     norm=threat.norm)


def memory_format_for(arch: str) -> torch.memory_format:
    """channels_last (NHWC) for every arch: on the CPU it is never slower here, and small-cnn (whose
    max-pooling and BatchNorm are much faster in NHWC) gains ~1.3x per training step and ~1.4x per
    PGD step; wrn-16-4 is about even (benchmarks/bench_train.py, docs/benchmarks.md "## Training")."""
    return torch.channels_last


def resolve_precision(precision: str, device) -> torch.dtype | None:
    """The training autocast dtype: None (fp32) or torch.bfloat16. `auto` = bf16 on a CUDA device that
    supports it and on a CPU with native bf16 (`device.cpu_has_native_bf16`: avx512_bf16/AMX, arm64 bf16),
    fp32 elsewhere (CPUs that emulate bf16 run it slower than fp32). The one place the autocast is picked
    (`FastPath.of`; the engine applies it to the training step; attacks and evaluation stay fp32)."""
    from ..device import cpu_has_native_bf16

    device = torch.device(device)
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None


def resolve_memory_format(channels_last: str, arch: str) -> torch.memory_format:
    """`auto` = `memory_format_for(arch)` (channels_last for the conv nets here), else as asked."""
    if channels_last == "true":
        return torch.channels_last
    if channels_last == "false":
        return torch.contiguous_format
    return memory_format_for(arch)


def on_device(model: nn.Module, device, fast: "FastPath") -> nn.Module:
    """`model` on `device` in the memory format its inputs come in (`fast.memory_format`)."""
    return model.to(device=device, memory_format=fast.memory_format)


@dataclass(frozen=True)
class FastPath:
    """How a training step runs: the device, the autocast dtype (None = fp32), the memory format of
    the model and its inputs, and whether the model's body is torch.compile'd while training.

    Attacks run inside a training step stay fp32 (attacks/pgd.attack_precision), so only the
    parameter update uses the autocast dtype.
    """

    device: torch.device
    autocast_dtype: torch.dtype | None = None
    memory_format: torch.memory_format = torch.channels_last
    compile: bool = False

    @classmethod
    def of(cls, cfg, device, arch: str) -> "FastPath":
        """From a CommonConfig's `precision`, `channels_last` and `compile` (defaults when absent)."""
        device = torch.device(device)
        return cls(device, resolve_precision(getattr(cfg, "precision", "auto"), device),
                   resolve_memory_format(getattr(cfg, "channels_last", "auto"), arch), bool(getattr(cfg, "compile", False)))

    @property
    def precision(self) -> str:
        return "bf16" if self.autocast_dtype == torch.bfloat16 else "fp32"

    def autocast(self):
        """The context a training forward runs in (a no-op in fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    @contextlib.contextmanager
    def compiled(self, model: nn.Module):
        """While training: `model.body` compiled in place (nn.Module.compile: parameters, state_dict and
        checkpoints unchanged), restored to eager afterwards so evaluation does not recompile. A no-op
        unless `compile`; if torch.compile cannot be set up here the step runs eagerly, with a warning."""
        body = getattr(model, "body", None)
        if not self.compile or body is None:
            yield model
            return
        try:
            body.compile()
        except Exception as e:  # noqa: BLE001  (inductor missing pieces: train eagerly rather than fail)
            print(f"warning: compile=true ignored: torch.compile failed ({type(e).__name__}: {e})", file=sys.stderr)
            yield model
            return
        try:
            yield model
        finally:
            body._compiled_call_impl = None   # back to eager (what nn.Module.compile set)
