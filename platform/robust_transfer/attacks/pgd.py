"""ℓ∞ attacks on pixels in [0,1]: PGD (Madry et al. 2018), FGSM (Goodfellow et al. 2015) and
FGSM with a random start (FGSM-RS, Wong et al. 2020).

PGD solves the paper's Eq. 1, max_δ l(x+δ, y) s.t. ‖δ‖∞ ≤ ε, by repeating

    x ← Π_{B∞(x0,ε) ∩ [0,1]} ( x + α · sign(∇ₓ l(x, y)) )

from a uniform random start in the ball. The ball and the box are intersected once up front,
lo = max(x0 − ε, 0) and hi = min(x0 + ε, 1), so the projection Π is a single clamp.

Conventions (docs/architecture.md): attacks run with the model in eval mode (BatchNorm statistics must not
move; each example is then attacked independently of the rest of the batch) and never touch
parameter gradients: gradients are taken with `torch.autograd.grad` w.r.t. the input only, so
the backward pass skips every weight-gradient product.

Speed: in eval mode BatchNorm after a convolution is a fixed affine map, so PGD attacks a view
of the model with those BatchNorms folded into the convolutions (`fold.attack_view`: the same
function up to float rounding, ~18% less time per step for small-cnn on the CPU;
docs/benchmarks.md). Precision: attacks run in fp32 even inside an autocast region (a training
step under bf16 autocast, say), so robustness numbers are comparable across devices and
precisions; `precision="bf16"` asks for a bf16-autocast attack explicitly (benchmarks only).
"""
from __future__ import annotations

import contextlib
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, check_range, one_of
from .fold import attack_view

LOSSES = ("ce", "cw")
PRECISIONS = ("fp32", "bf16")


def attack_precision(device: torch.device, precision: str = "fp32"):
    """The autocast setting of an attack's forward passes: off (fp32) unless bf16 is asked for."""
    if precision not in PRECISIONS:
        raise one_of("precision", precision, PRECISIONS)
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def cw_margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini–Wagner margin per example: max_{j≠y} z_j − z_y (positive ⇔ misclassified)."""
    z_true = logits.gather(1, y[:, None]).squeeze(1)
    is_true = F.one_hot(y, logits.shape[1]).bool()
    z_other = logits.masked_fill(is_true, float("-inf")).amax(dim=1)
    return z_other - z_true


def _per_example_loss(name: str):
    if name == "ce":
        return lambda logits, y: F.cross_entropy(logits, y, reduction="none")
    if name == "cw":
        return cw_margin_loss
    raise one_of("loss", name, LOSSES)


@contextmanager
def eval_mode(model: nn.Module):
    """Put `model` in eval mode; afterwards restore every submodule's own training flag.

    Per submodule, not `model.train(flag)`: a transfer model may have a frozen feature extractor
    in eval mode under a head in train mode, and that mix must survive an attack.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def _uniform(shape, eps: float, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """U(−ε, ε) noise; drawn on the generator's device, so a CPU generator repeats on any device."""
    device = generator.device if generator is not None else like.device
    u = torch.rand(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)
    return u.mul_(2 * eps).sub_(eps)


def _box(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of B∞(x, ε) ∩ [0,1], elementwise."""
    return (x - eps).clamp(min=0), (x + eps).clamp(max=1)


def _check(x, y, eps, alpha=None, steps=None, restarts=None):
    if x.dim() < 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise ConfigError(f"attack inputs must be x [n, ...] and y [n]; got x {tuple(x.shape)} and y {tuple(y.shape)}")
    check_range("eps", eps, 0, 1)
    if alpha is not None:
        check_range("alpha", alpha, 0, 1, low_inclusive=False)
    if steps is not None:
        check_range("steps", steps, 0, None)
    if restarts is not None:
        check_range("restarts", restarts, 1, None)


@dataclass
class AttackOutput:
    x_adv: torch.Tensor        # [n, ...] adversarial examples in B∞(x, ε) ∩ [0,1]
    fooled: torch.Tensor       # bool [n]: misclassified at some evaluated iterate (x_adv is that iterate)
    forward_images: int        # images pushed through the model: the attack's cost


def pgd_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
               loss: str = "ce", random_start: bool = True, restarts: int = 1, early_exit: bool = False,
               generator: torch.Generator | None = None, fold_bn: bool = True,
               precision: str = "fp32") -> AttackOutput:
    """PGD with per-example best tracking; `pgd` returns just `.x_adv`.

    Every iterate x_0 … x_steps is classified (x_steps by one extra forward without backward).
    Per example we keep the first iterate that fools the model; for the others, the iterate with
    the highest loss over all steps and restarts. So "fooled" means fooled at *any* step, which is
    what makes `early_exit` free: with early_exit a fooled example is dropped from the batch
    (compute only on the rest), without it the example keeps being attacked but its answer stays
    that first fooling iterate — the same answer, with the same randomness.

    A restart only attacks the examples that no earlier restart fooled.

    `fold_bn` attacks the model with its eval-mode BatchNorms folded into the convolutions before
    them (the same function; see `fold.attack_view`); `precision` is fp32 (autocast off) or bf16.
    """
    _check(x, y, eps, alpha, steps, restarts)
    loss_fn = _per_example_loss(loss)
    x = x.detach()
    y = y.detach()
    lo, hi = _box(x, eps)
    n = x.shape[0]
    x_best = x.clone()
    best_loss = torch.full((n,), float("-inf"), device=x.device)
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    forward_images = 0

    with eval_mode(model), torch.enable_grad(), attack_precision(x.device, precision):
        f = attack_view(model) if fold_bn else model
        for _ in range(restarts):
            idx = (~fooled).nonzero().squeeze(1)    # positions in the full batch still to break
            if idx.numel() == 0:
                break
            x_a, y_a, lo_a, hi_a = x[idx].clone(), y[idx], lo[idx], hi[idx]
            if random_start:
                x_a.add_(_uniform(x_a.shape, eps, x_a, generator)).clamp_(lo_a, hi_a)
            done = torch.zeros(idx.numel(), dtype=torch.bool, device=x.device)  # fooled in this restart

            for t in range(steps + 1):
                last = t == steps
                x_a.requires_grad_(True)
                with torch.set_grad_enabled(not last):   # the final iterate is only classified
                    logits = f(x_a).float()
                    per_example = loss_fn(logits, y_a)
                forward_images += x_a.shape[0]

                with torch.no_grad():
                    wrong = logits.argmax(dim=1) != y_a
                    newly = wrong & ~done
                    better = ~wrong & ~done & (per_example > best_loss[idx])
                    keep = newly | better
                    x_best[idx[keep]] = x_a[keep].detach()
                    best_loss[idx[better]] = per_example[better].detach()
                    fooled[idx[newly]] = True
                    done |= newly
                if last:
                    break

                (grad,) = torch.autograd.grad(per_example.sum(), x_a)  # input only: params untouched

                with torch.no_grad():
                    if early_exit and newly.any():
                        # Freeze the newly fooled examples (answer already stored) and shrink the
                        # batch, so later steps cost only what is still correctly classified.
                        rest = ~done
                        x_a, grad, y_a, lo_a, hi_a, idx = (v[rest] for v in (x_a, grad, y_a, lo_a, hi_a, idx))
                        done = done[rest]
                        if idx.numel() == 0:
                            break
                    # x ← Π_{B∞(x0,ε) ∩ [0,1]}(x + α·sign(∇ₓ L)), in place
                    x_a.add_(grad.sign(), alpha=alpha).clamp_(lo_a, hi_a)
                x_a = x_a.detach()

    return AttackOutput(x_adv=x_best, fooled=fooled, forward_images=forward_images)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
        loss: str = "ce", random_start: bool = True, restarts: int = 1, early_exit: bool = False,
        generator: torch.Generator | None = None, fold_bn: bool = True) -> torch.Tensor:
    """PGD-`steps` adversarial examples (same shape as x) in B∞(x, eps) ∩ [0,1]; see `pgd_attack`."""
    return pgd_attack(model, x, y, eps=eps, alpha=alpha, steps=steps, loss=loss, random_start=random_start,
                      restarts=restarts, early_exit=early_exit, generator=generator, fold_bn=fold_bn).x_adv


def input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∂ CE(model(x), y) / ∂x per example, in eval mode (the paper's Fig. 5 gradient images).

    The loss is summed, not averaged, so each example's gradient is its own CE gradient whatever
    the batch size (in eval mode examples do not interact).
    """
    if x.dim() < 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise ConfigError(f"input_gradients needs x [n, ...] and y [n]; got x {tuple(x.shape)} and y {tuple(y.shape)}")
    with eval_mode(model), torch.enable_grad(), attack_precision(x.device):
        x = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(attack_view(model)(x).float(), y, reduction="sum"), x)
    return grad


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
