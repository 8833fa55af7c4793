"""One-step attacks and the input gradient they take: FGSM (Goodfellow et al. 2015), FGSM with a random
start (FGSM-RS, Wong et al. 2020), and ∇ₓ CE per example (also the paper's Fig. 5 gradient images).

    FGSM     x' = Π( x + ε · sign(∇ₓ CE(f(x), y)) )
    FGSM-RS  x₀ = Π( x + U(−ε, ε) ),  x' = Π( x₀ + α · sign(∇ₓ CE(f(x₀), y)) )

with Π the projection onto B∞(x, ε) ∩ [0,1]. Conventions as in pgd.py: eval mode (every module's
training flag restored), gradients w.r.t. the input only, fp32 even inside an autocast region.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError, ModelError
from ..models.modes import eval_mode
from .fold import attack_view
from .pgd import _box, _check, _uniform, attack_precision
from .threat import to_pixels


def _check_labels(y: torch.Tensor, num_classes: int) -> None:
    """A label the model has no output for is the user's mistake (ModelError), not an index error deep in
    the loss. Checked where the labels are on the CPU, so a training step on a GPU never waits for it."""
    if len(y) and y.device.type == "cpu" and int(y.max()) >= num_classes:
        raise ModelError(f"label {int(y.max())} is out of range for a model with {num_classes} outputs: "
                         "the cross-entropy needs the model's own classes")


def input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int | None = None,
                    device: str | torch.device | None = None, fold_bn: bool = True) -> torch.Tensor:
    """∂ CE(model(x), y) / ∂x per example, in eval mode: float32, the shape of `x`, on `x`'s device.

    `x`: float pixels in [0,1] or uint8 0-255. The loss is summed, not averaged, so each example's
    gradient is its own CE gradient whatever the batch (in eval mode examples do not interact):
    `batch_size` (default: all at once) only bounds memory. `device`: where the model runs (default:
    `x`'s). `fold_bn=False` differentiates the model as given rather than its BatchNorm-folded view
    (the same function up to float rounding; fold.attack_view) — what a figure of the model's own
    gradients shows. Parameter gradients are not touched.
    """
    if x.dim() < 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise DataError(f"input_gradients needs x [n, ...] and labels [n]; got {list(x.shape)} and {list(y.shape)}")
    dev = torch.device(device) if device is not None else x.device
    step = batch_size or max(len(x), 1)
    out = []
    with eval_mode(model), torch.enable_grad(), attack_precision(dev):
        f = attack_view(model) if fold_bn else model
        for i in range(0, len(x), step):
            xb = to_pixels(x[i:i + step].detach().to(dev)).requires_grad_(True)
            logits = f(xb).float()
            _check_labels(y[i:i + step], logits.shape[1])
            (g,) = torch.autograd.grad(F.cross_entropy(logits, y[i:i + step].to(dev), reduction="sum"), xb)
            out.append(g.detach().to(x.device))
    return torch.cat(out) if out else torch.empty(x.shape, dtype=torch.float32, device=x.device)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, random_start_alpha: float | None = None,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """One signed-gradient step of the CE loss, projected to B∞(x, eps) ∩ [0,1].

    FGSM: x + ε·sign(∇ₓ L(x)). With `random_start_alpha=α` it is Wong et al. (2020)'s FGSM-RS:
    start at x_0 = x + U(−ε, ε) (projected), step x_0 + α·sign(∇ₓ L(x_0)), project again.
    """
    _check(x, y, eps, alpha=random_start_alpha)
    x = x.detach()
    lo, hi = _box(x, eps)
    if random_start_alpha is None:
        x0, step = x, eps
    else:
        x0, step = (x + _uniform(x.shape, eps, x, generator)).clamp_(lo, hi), random_start_alpha
    grad = input_gradients(model, x0, y)
    return (x0 + step * grad.sign()).clamp_(lo, hi)
