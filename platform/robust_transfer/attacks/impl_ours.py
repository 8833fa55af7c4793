"""Our own attacks, one batch of a suite at a time: FGSM, PGD-k on cross-entropy and PGD-k on the CW
margin (fgsm.py, pgd.py), as `dispatch.attack_batch` runs them for the evaluation engine.

PGD and CW run with early exit (the same answers: `pgd_attack` keeps each example's first fooling
iterate) and draw each example's random start from its position in its batch (`common.per_example_noise`),
so an example's result does not depend on which other examples are attacked with it.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .common import per_example_noise, still_correct
from .fgsm import fgsm
from .pgd import pgd_attack
from .specs import AttackSpec
from .threat import ThreatModel

def attack(model: nn.Module, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel, seed: int,
           positions: torch.Tensor, batch_len: int) -> torch.Tensor:
    """bool [len(x)]: which examples of (x, y) — all correctly classified clean — survive the attack."""
    eps, norm = threat.eps, threat.norm
    if spec.kind == "fgsm":
        if norm != "linf":
            raise ConfigError(f"attack {spec.name} is an l-inf attack (the gradient's sign); with norm={norm} use "
                              "pgd<k>, cw<k>, apgd-ce, apgd-t or square")
        return still_correct(model, x, fgsm(model, x, y, eps=eps), y, eps)
    if spec.kind in ("pgd", "cw"):
        out = pgd_attack(model, x, y, eps=eps, alpha=threat.alpha, steps=spec.steps, loss="ce" if spec.kind == "pgd"
                         else "cw", random_start=True, restarts=spec.restarts, early_exit=True, norm=norm,
                         start_noise=per_example_noise(seed, batch_len, positions.cpu(), eps, x.shape[1:], norm))
        return ~out.fooled
    raise ValueError(f"not one of our attacks: {spec!r}")
