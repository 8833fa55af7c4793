"""One batch of one attack of a suite, by implementation: ours (impl_ours.py: FGSM, PGD, CW), Croce &
Hein's (impl_pyautoattack.py: APGD, Square) or ART's (impl_art.py: DeepFool, `<name>@art`). Which code
runs an attack is its spec's `impl` (specs.py: `apgd-ce` is pyautoattack's, `apgd-ce@art` ART's).

An example counts as correct under an attack only if it is correctly classified clean (the engine
attacks only those) and the attack's output, projected onto B(x, ε) ∩ [0,1] (the threat's norm) as a guard, is still
classified correctly; so every attack is evaluated on the same examples and the worst case per example
is meaningful. Randomness is seeded per (seed, attack, batch) by the caller (`common.seed_for`).
"""
from __future__ import annotations

import torch
from torch import nn

from . import impl_art, impl_ours, impl_pyautoattack
from .budget import AttackBudget
from .specs import AttackSpec, check_attack_norm
from .threat import ThreatModel

ATTACK_VERSION = 3          # bump when an attack's semantics change: stored results are then not reused
# (2: our PGD/CW draw each example's random start from its position in the batch, not from the live subset;
#  3: APGD and Square run pyautoattack's code by default, with per-example random starts)


def context_for(spec: AttackSpec, model: nn.Module, *, input_shape, num_classes: int, device: torch.device,
                batch_size: int, probabilities: bool):
    """What an implementation keeps across the batches of one attack (ART's estimator and attack objects),
    or None."""
    if spec.impl == "art":
        return impl_art.ArtModel(model, input_shape, num_classes, device, batch_size, probabilities, verbose=False)
    return None


def attack_batch(model: nn.Module, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel,
                 budget: AttackBudget, seed: int, context=None, positions: torch.Tensor | None = None,
                 batch_len: int | None = None, probabilities: bool | None = None) -> torch.Tensor:
    """bool [len(x)]: which examples of (x, y) — all correctly classified clean — survive the attack.

    `positions` (int [len(x)]): where each example sits in its batch of `batch_len` examples (default: the
    whole batch, in order); our PGD/CW and pyautoattack's APGD/Square then draw each example's random
    start from that position (`common.per_example_noise`). `context`: `context_for`'s object for this
    attack. `probabilities`: whether the model outputs probabilities (None: look)."""
    if positions is None:
        positions, batch_len = torch.arange(len(x)), len(x)
    if spec.impl == "ours":
        return impl_ours.attack(model, spec, x, y, threat=threat, seed=seed, positions=positions,
                                batch_len=int(batch_len))
    if spec.impl == "pyautoattack" and spec.kind != "autoattack":
        return impl_pyautoattack.attack(model, spec, x, y, eps=threat.eps, budget=budget, seed=seed,
                                        positions=positions.cpu(), batch_len=int(batch_len),
                                        probabilities=probabilities, norm=threat.norm)
    if spec.impl == "art" and context is not None:
        check_attack_norm(spec, threat.norm)
        return impl_art.attack(model, spec, x, y, eps=threat.eps, budget=budget, seed=seed, art=context)
    raise ValueError(f"attack_batch: no batch implementation of {spec!r}")
