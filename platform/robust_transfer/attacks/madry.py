"""The attack adversarial TRAINING uses: Madry et al. (2018)'s PGD-k, the last iterate.

    x_0     = Π( x + U(−ε, ε) )                                   (random start)
    x_{t+1} = Π( x_t + α · sign(∇ₓ CE(f(x_t), y)) ),  t = 0 … k−1
    return x_k                                                      (the LAST iterate, for every example)

with Π the projection onto B∞(x, ε) ∩ [0,1] (one clamp to the intersected box, as in `pgd.py`).

This is not `pgd.pgd_attack`, which is an *evaluation* device: it returns, per example, the first
iterate that fools the model (possibly the random start) and otherwise the highest-loss one, so
that "fooled" means fooled at any iterate. Training on that would train on easier (earlier)
points for the examples that are broken early; Madry et al. and the paper's PGD-7 sources train
on x_k. Same conventions as `pgd.py`: eval mode (per-module training flags restored), gradients
w.r.t. the input only, fp32 even inside an autocast region, BatchNorm folded into the convolutions
for the attack's forward passes (`fold.attack_view`: the same function up to float rounding).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fold import attack_view
from .pgd import _box, _check, _uniform, attack_precision, eval_mode


def pgd_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
              generator: torch.Generator | None = None, fold_bn: bool = True) -> torch.Tensor:
    """Madry's PGD-`steps` training examples: the last iterate from a uniform random start."""
    _check(x, y, eps, alpha, steps)
    x = x.detach()
    lo, hi = _box(x, eps)
    x_adv = (x + _uniform(x.shape, eps, x, generator)).clamp_(lo, hi)
    with eval_mode(model), torch.enable_grad(), attack_precision(x.device):
        f = attack_view(model) if fold_bn else model
        for _ in range(steps):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(f(x_adv).float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)        # input only: parameter gradients untouched
            with torch.no_grad():
                x_adv = x_adv.detach().add_(grad.sign(), alpha=alpha).clamp_(lo, hi)
    return x_adv.detach()
