"""What the three implementations behind `dispatch.attack_batch` share (ours, pyautoattack's, ART's):
seeds derived per (seed, attack, batch, ...), random draws indexed by an example's position in its
batch, the ε-ball guard every attack's output goes through, and the test for a softmax output layer.

Position-indexed draws are what make an example's attack independent of which other examples share
its call: the random start of the example at position p of a batch is row p of one draw for the whole
batch, whether the call attacks all of the batch or only the survivors of a cascade.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import torch
from torch import nn


def seed_for(seed: int, *parts) -> int:
    """A 63-bit seed derived from (seed, parts...): independent streams per attack and batch."""
    digest = hashlib.sha256(":".join(map(str, (int(seed), *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def positional(seed: int, what: str, restart: int, batch_len: int, positions: torch.Tensor, shape,
               draw: Callable[[tuple, torch.Generator], torch.Tensor]) -> torch.Tensor:
    """`draw(shape, generator)` for the whole batch of `batch_len` (seeded per (seed, what, restart)) on the
    CPU, indexed by each attacked example's position in the batch."""
    g = torch.Generator().manual_seed(seed_for(seed, what, restart))
    return draw((batch_len, *shape), g)[positions]


def per_example_noise(seed: int, batch_len: int, positions: torch.Tensor, eps: float, shape, norm: str = "linf"):
    """`pgd_attack`'s start_noise: U(−ε, ε) (ℓ2: uniform in the ℓ2 ball) drawn for the whole batch (restart r:
    seed (seed, 'start', r)) and indexed by each attacked example's position in it, so an example gets the same
    random start whichever other examples of its batch are attacked with it (the cascade's guarantee)."""
    from .pgd import l2_ball_noise

    def start_noise(restart: int, idx: torch.Tensor) -> torch.Tensor:
        if norm == "l2":
            return positional(seed, "start-l2", restart, batch_len, positions[idx.cpu()], shape,
                              lambda s, g: l2_ball_noise(s, eps, g))
        return positional(seed, "start", restart, batch_len, positions[idx.cpu()], shape,
                          lambda s, g: torch.rand(s, generator=g)).mul_(2 * eps).sub_(eps)
    return start_noise


def project_guard(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """x_adv projected onto B(x, ε) ∩ [0,1] under `norm` (ℓ2: δ rescaled onto the ball, then the box)."""
    if norm == "l2":
        delta = x_adv - x
        norms = delta.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
        return (x + delta * (eps / norms.clamp(min=1e-12)).clamp(max=1.0)).clamp(0, 1)
    return torch.min(torch.max(x_adv, (x - eps).clamp(min=0)), (x + eps).clamp(max=1))


def still_correct(model: nn.Module, x: torch.Tensor, x_adv, y: torch.Tensor, eps: float,
                  norm: str = "linf") -> torch.Tensor:
    """Classify x_adv after projecting it onto B(x, ε) ∩ [0,1] (a guard: attacks already stay inside)."""
    x_adv = torch.as_tensor(x_adv, dtype=x.dtype).to(x.device)
    x_adv = torch.where(torch.isfinite(x_adv), x_adv, x)     # a NaN "adversarial example" is no success
    x_adv = project_guard(x, x_adv, eps, norm)
    with torch.no_grad():
        return model(x_adv).argmax(dim=1) == y


def outputs_probabilities(logits: torch.Tensor) -> bool:
    """Whether these outputs look like a softmax output layer's (each row in [0,1], summing to 1)."""
    return bool(((logits >= 0) & (logits <= 1)).all() and torch.allclose(logits.sum(1), torch.ones(len(logits),
                                                                                                       device=logits.device), atol=1e-4))
