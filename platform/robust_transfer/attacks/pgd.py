"""PGD on pixels in [0,1] (Madry et al. 2018), in its two uses: TRAINING (`pgd_train`, Madry's last
iterate) and EVALUATION (`pgd_attack`, per example the first iterate that fools, with early exit).

PGD solves the paper's Eq. 1, max_δ l(x+δ, y) s.t. ‖δ‖ ≤ ε, under either norm (`norm`):

    ℓ∞:  x ← Π_{B∞(x0,ε) ∩ [0,1]} ( x + α · sign(∇ₓ l(x, y)) )          from x0 + U(−ε, ε)
    ℓ2:  x ← Π_{B2(x0,ε) ∩ [0,1]} ( x + α · ∇ₓ l / ‖∇ₓ l‖₂ )             from x0 + ε·u^(1/d)·g/‖g‖₂

(ℓ2: Madry et al.'s normalised-gradient step; the start is uniform in the ℓ2 ball, g ~ N(0, I), u ~ U(0,1),
d the input dimension.) Under ℓ∞ the ball and the box are intersected once up front, lo = max(x0 − ε, 0) and
hi = min(x0 + ε, 1), so Π is a single clamp. Under ℓ2, Π rescales δ = x − x0 onto the ball (δ·min(1, ε/‖δ‖₂))
and then clamps x0 + δ to [0,1]: the clamp only moves coordinates towards x0, so the result stays in the ball
(as the robustness library and Croce & Hein's APGD do; not the exact Euclidean projection onto the intersection).

Training and evaluation need different answers from the same iteration. `pgd_train` returns x_k, the
LAST iterate, for every example: Madry et al. and the paper's PGD-7 sources train on x_k. `pgd_attack`
is an evaluation device: per example it returns the first iterate that fools the model (possibly the
random start), else the highest-loss one, so "fooled" means fooled at any iterate and a fooled example
can leave the batch (early exit). Training on that would train on easier, earlier points for the
examples broken early.

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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, check_range, one_of
from ..models.modes import eval_mode
from .fold import attack_view
from .threat import NORMS

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


def _uniform(shape, eps: float, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """U(−ε, ε) noise; drawn on the generator's device, so a CPU generator repeats on any device."""
    device = generator.device if generator is not None else like.device
    u = torch.rand(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)
    return u.mul_(2 * eps).sub_(eps)


def l2_ball_noise(shape, eps: float, generator: torch.Generator | None = None, device=None,
                  dtype=torch.float32) -> torch.Tensor:
    """[n, ...] points uniform in the ℓ2 ball of radius ε: ε·u^(1/d)·g/‖g‖₂, g ~ N(0, I), u ~ U(0,1) (both drawn
    from `generator`, g first; on its device, so a CPU generator repeats on any device)."""
    device = generator.device if generator is not None else device
    g = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    u = torch.rand(shape[0], generator=generator, device=device, dtype=dtype)
    d = g[0].numel()
    radius = u.pow(1.0 / d).mul_(eps).view(-1, *[1] * (len(shape) - 1))
    return g.div_(_norms(g).clamp(min=1e-12)).mul_(radius)


def _norms(v: torch.Tensor) -> torch.Tensor:
    """Per-example ℓ2 norms, shaped to broadcast over v [n, ...]."""
    return v.flatten(1).norm(dim=1).view(-1, *[1] * (v.dim() - 1))


def _start(shape, eps: float, like: torch.Tensor, generator, norm: str) -> torch.Tensor:
    if norm == "l2":
        return l2_ball_noise(shape, eps, generator, like.device, like.dtype).to(like.device)
    return _uniform(shape, eps, like, generator)


def _box(x: torch.Tensor, eps: float, norm: str = "linf") -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of B∞(x, ε) ∩ [0,1], elementwise (ℓ2: the box [0,1] only; the ball is `_project`'s)."""
    if norm == "l2":
        return torch.zeros_like(x), torch.ones_like(x)
    return (x - eps).clamp(min=0), (x + eps).clamp(max=1)


def _project(x_a: torch.Tensor, x0: torch.Tensor, lo, hi, eps: float, norm: str) -> torch.Tensor:
    """Π onto the ball ∩ [0,1], in place (ℓ∞: one clamp; ℓ2: rescale δ onto the ball, then clamp to [0,1])."""
    if norm == "l2":
        delta = x_a - x0
        delta.mul_((eps / _norms(delta).clamp(min=1e-12)).clamp(max=1.0))
        return x_a.copy_(x0 + delta).clamp_(0, 1)
    return x_a.clamp_(lo, hi)


def _ascend(x_a: torch.Tensor, grad: torch.Tensor, alpha: float, norm: str) -> torch.Tensor:
    """x + α·sign(∇) (ℓ∞) or x + α·∇/‖∇‖₂ (ℓ2; a zero gradient: no step), in place."""
    if norm == "l2":
        return x_a.add_(grad / _norms(grad).clamp(min=1e-12), alpha=alpha)
    return x_a.add_(grad.sign(), alpha=alpha)


def _check(x, y, eps, alpha=None, steps=None, restarts=None, norm="linf"):
    if x.dim() < 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise ConfigError(f"attack inputs must be x [n, ...] and y [n]; got x {tuple(x.shape)} and y {tuple(y.shape)}")
    if norm not in NORMS:
        raise one_of("norm", norm, NORMS)
    top = 1 if norm == "linf" else None      # an ℓ2 radius in [0,1] pixels can exceed 1 (ImageNet: 3)
    check_range("eps", eps, 0, top)
    if alpha is not None:
        check_range("alpha", alpha, 0, top, low_inclusive=False)
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
               precision: str = "fp32", start_noise=None, norm: str = "linf") -> AttackOutput:
    """PGD with per-example best tracking; `pgd` returns just `.x_adv`.

    Every iterate x_0 … x_steps is classified (x_steps by one extra forward without backward).
    Per example we keep the first iterate that fools the model; for the others, the iterate with
    the highest loss over all steps and restarts. So "fooled" means fooled at *any* step, which is
    what makes `early_exit` free: with early_exit a fooled example is dropped from the batch
    (compute only on the rest), without it the example keeps being attacked but its answer stays
    that first fooling iterate — the same answer, with the same randomness.

    A restart only attacks the examples that no earlier restart fooled.

    `norm`: linf or l2 (eps, alpha on [0,1] pixels; see the module's docstring).

    `start_noise(restart, idx)`, when given, returns the random start (U(−ε, ε), or uniform in the ℓ2 ball) of the examples at
    positions `idx` of x for that restart (instead of drawing from `generator`): the evaluation
    engine draws it per example, so an example's attack does not depend on the rest of its batch.

    `fold_bn` attacks the model with its eval-mode BatchNorms folded into the convolutions before
    them (the same function; see `fold.attack_view`); `precision` is fp32 (autocast off) or bf16.
    """
    _check(x, y, eps, alpha, steps, restarts, norm)
    loss_fn = _per_example_loss(loss)
    x = x.detach()
    y = y.detach()
    lo, hi = _box(x, eps, norm)
    n = x.shape[0]
    x_best = x.clone()
    best_loss = torch.full((n,), float("-inf"), device=x.device)
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    forward_images = 0

    with eval_mode(model), torch.enable_grad(), attack_precision(x.device, precision):
        f = attack_view(model) if fold_bn else model
        for restart in range(restarts):
            idx = (~fooled).nonzero().squeeze(1)    # positions in the full batch still to break
            if idx.numel() == 0:
                break
            x_a, y_a, lo_a, hi_a, x0_a = x[idx].clone(), y[idx], lo[idx], hi[idx], x[idx]
            if random_start:
                noise = (start_noise(restart, idx).to(x_a.device, x_a.dtype) if start_noise is not None
                         else _start(x_a.shape, eps, x_a, generator, norm))
                x_a.add_(noise).clamp_(lo_a, hi_a)     # the start is in the ball: only the box to apply
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
                        x_a, grad, y_a, lo_a, hi_a, x0_a, idx = (v[rest] for v in (x_a, grad, y_a, lo_a, hi_a,
                                                                                    x0_a, idx))
                        done = done[rest]
                        if idx.numel() == 0:
                            break
                    # x ← Π_{B(x0,ε) ∩ [0,1]}(x + α·sign(∇ₓ L)) (ℓ2: α·∇ₓ L/‖∇ₓ L‖₂), in place
                    _project(_ascend(x_a, grad, alpha, norm), x0_a, lo_a, hi_a, eps, norm)
                x_a = x_a.detach()

    return AttackOutput(x_adv=x_best, fooled=fooled, forward_images=forward_images)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
        loss: str = "ce", random_start: bool = True, restarts: int = 1, early_exit: bool = False,
        generator: torch.Generator | None = None, fold_bn: bool = True, norm: str = "linf") -> torch.Tensor:
    """PGD-`steps` adversarial examples (same shape as x) in B(x, eps) ∩ [0,1] (`norm`); see `pgd_attack`."""
    return pgd_attack(model, x, y, eps=eps, alpha=alpha, steps=steps, loss=loss, random_start=random_start,
                      restarts=restarts, early_exit=early_exit, generator=generator, fold_bn=fold_bn,
                      norm=norm).x_adv


def pgd_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
              generator: torch.Generator | None = None, fold_bn: bool = True, norm: str = "linf") -> torch.Tensor:
    """Madry's PGD-`steps` training examples: the LAST iterate from a uniform random start.

        x_0     = Π( x + U(−ε, ε) )                                   (random start; ℓ2: uniform in the ball)
        x_{t+1} = Π( x_t + α · sign(∇ₓ CE(f(x_t), y)) ),  t = 0 … k−1  (ℓ2: α · ∇/‖∇‖₂)
        return x_k                                                      (for every example)

    Same conventions as `pgd_attack`: eval mode (per-module training flags restored), gradients
    w.r.t. the input only, fp32 even inside an autocast region, BatchNorm folded into the convolutions.
    """
    _check(x, y, eps, alpha, steps, norm=norm)
    x = x.detach()
    lo, hi = _box(x, eps, norm)
    x_adv = (x + _start(x.shape, eps, x, generator, norm)).clamp_(lo, hi)
    with eval_mode(model), torch.enable_grad(), attack_precision(x.device):
        f = attack_view(model) if fold_bn else model
        for _ in range(steps):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(f(x_adv).float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)        # input only: parameter gradients untouched
            with torch.no_grad():
                x_adv = _project(_ascend(x_adv.detach(), grad, alpha, norm), x, lo, hi, eps, norm)
    return x_adv.detach()
