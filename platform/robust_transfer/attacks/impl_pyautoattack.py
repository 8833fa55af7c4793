"""Croce & Hein's APGD (CE, DLR, targeted DLR) and Square, from their own code (PyPI `pyautoattack`),
one batch of a suite at a time, as `dispatch.attack_batch` runs them for the evaluation engine.

We call pyautoattack's `init_hyperparam(x)` then `attack_single_run(x, y, x_init=...)` on the examples
still standing, restart by restart and target by target (AutoAttack's order), on the BatchNorm-folded
view of the model (fold.attack_view; the same function), instead of `perturb`, which re-runs clean
forward passes (once per call and, in APGD-T, once per target class) that the engine has already done,
and seeds torch's global generator for the call.

Randomness: the random starts come from each example's position in its batch (`common.positional`), and
Square's proposals (one window and one sign per channel per iteration, shared by every example of a call
in Croce & Hein's Linf Square) from a generator seeded per (seed, attack, batch, restart) AFTER the starts
are drawn, so neither depends on how many examples share the call: the cascade changes nothing per
example (up to float rounding of batched convolutions). Under ℓ2 (norm 'L2') the same holds for APGD;
Square's ℓ2 proposals draw one sign per live example, so they depend on the examples in the call.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from .budget import AttackBudget
from .common import outputs_probabilities, positional, seed_for, still_correct
from .fold import attack_view
from .specs import AttackSpec

_AA_LOG = logging.getLogger("robust_transfer.attacks.pyautoattack")   # its zero-gradient warnings: our
_AA_LOG.addHandler(logging.NullHandler())                            # diagnostics measure those
_AA_LOG.propagate = False


class _Forward(nn.Module):
    """What pyautoattack attacks: the folded view of the model (log-probabilities for a softmax output)."""

    def __init__(self, model: nn.Module, probabilities: bool):
        super().__init__()
        self.f = attack_view(model)
        self.probabilities = probabilities

    def forward(self, x):
        out = self.f(x)
        return out.clamp(min=1e-30).log() if self.probabilities else out


def attack(model, spec: AttackSpec, x, y, *, eps, budget: AttackBudget, seed: int, positions: torch.Tensor,
           batch_len: int, probabilities: bool | None = None, norm: str = "linf") -> torch.Tensor:
    """APGD-CE, APGD-DLR (+ APGD-T on the top `apgd_targets` classes) or Square through pyautoattack's
    own attack loops (`attack_single_run`), on the examples still standing, restart by restart and
    target by target (AutoAttack's order), under `norm` (linf → 'Linf', l2 → 'L2'). bool [len(x)]: still
    correct."""
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
    from pyautoattack.square import SquareAttack

    logits = None
    if spec.kind in ("apgd-dlr", "apgd-t") or probabilities is None:
        with torch.no_grad():           # APGD-T's targets (the clean ranking of the live examples)
            logits = model(x)
        probabilities = outputs_probabilities(logits) if probabilities is None else probabilities
    f = _Forward(model, probabilities)
    aa_norm = {"linf": "Linf", "l2": "L2"}[norm]
    ok = torch.ones(len(x), dtype=torch.bool, device=x.device)
    shape = tuple(x.shape[1:])

    def run(attack, restarts: int, what: str, start, **extra) -> None:
        """Restart by restart on what is still standing; `extra`: per-example attributes (APGD-T's targets)."""
        attack.init_hyperparam(x)
        for r in range(restarts):
            live = ok.nonzero().squeeze(1)
            if live.numel() == 0:
                return
            for k, v in extra.items():
                setattr(attack, k, v[live])
            xl, yl = x[live], y[live]
            x_init = start(r, live)
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                torch.manual_seed(seed_for(seed, what, r))       # after the starts: Square's proposals
                out = attack.attack_single_run(xl, yl, x_init=x_init)
            if isinstance(attack, _SquareFrom):                  # (queries, best points): classify them
                still = still_correct(model, xl, out[1], yl, eps, norm)
            else:                                                # (best, still correct, loss, adversarial)
                still, x_adv = out[1].bool(), out[3]
                broke = (~still).nonzero().squeeze(1)
                if broke.numel():        # the guard: projected, classified by the model as given
                    still[broke] = still_correct(model, xl[broke], x_adv[broke], yl[broke], eps, norm)
            ok[live] = still

    def apgd_start(r, live):
        ones = [1] * len(shape)
        if norm == "l2":        # pyautoattack's L2 start: a Gaussian direction, normalised, times ε
            t = positional(seed, "apgd-start-l2", r, batch_len, positions[live.cpu()], shape,
                           lambda s, g: torch.randn(s, generator=g)).to(x.device)
            return x[live] + eps * t / (t.flatten(1).norm(dim=1).view(-1, *ones) + 1e-12)
        t = positional(seed, "apgd-start", r, batch_len, positions[live.cpu()], shape,
                        lambda s, g: torch.rand(s, generator=g).mul_(2).sub_(1)).to(x.device)
        t = t / (t.abs().flatten(1).amax(1).view(-1, *ones) + 1e-12)    # pyautoattack's normalise
        return x[live] + eps * t

    with torch.enable_grad():
        if spec.kind in ("apgd-ce", "apgd-dlr", "apgd-t"):
            # The targeted DLR loss needs 4 classes: with 3, APGD-T runs as the untargeted APGD-DLR.
            if spec.kind != "apgd-t" or logits.shape[1] < 4:
                apgd = APGDAttack(f, n_iter=budget.apgd_iters, norm=aa_norm, n_restarts=1, eps=eps,
                                  loss="ce" if spec.kind == "apgd-ce" else "dlr", device=x.device, logger=_AA_LOG)
                run(apgd, budget.apgd_restarts if spec.kind != "apgd-t" else 1, spec.kind, apgd_start)
            k = min(budget.apgd_targets, logits.shape[1] - 1) if logits is not None else 0
            if spec.kind != "apgd-ce" and k > 0 and logits.shape[1] >= 4:   # the targeted DLR needs 4 classes
                ranked = logits.sort(dim=1)[1]
                apgd_t = APGDAttack_targeted(f, n_iter=budget.apgd_iters, norm=aa_norm, n_restarts=1, eps=eps,
                                             n_target_classes=k, device=x.device, logger=_AA_LOG)
                for j in range(2, k + 2):        # AutoAttack's targets: the j-th highest clean logit
                    run(apgd_t, 1, f"apgd-t{j}", apgd_start, y_target=ranked[:, -j])
            return ok
    if spec.kind == "square":
        square = SquareAttack(f, norm=aa_norm, n_queries=budget.square_queries, eps=eps, p_init=0.8, n_restarts=1,
                              loss="margin", device=x.device)
        c, h, w = shape

        def square_start(r, live):
            if norm == "l2":    # L2 Square's start: one sign per example and channel for each of its 5×5 squares
                blocks = (h // max(h // 5, 1)) * (w // max(h // 5, 1))
                signs = positional(seed, "square-start-l2", r, batch_len, positions[live.cpu()], (blocks, c, 1, 1),
                                   lambda s, g: torch.randint(0, 2, s, generator=g).mul_(2).sub_(1).float())
                return list(signs.to(x.device).unbind(1))[::-1]      # popped from the end: first square first
            # the random vertical stripes Linf Square starts from, per example
            signs = positional(seed, "square-start", r, batch_len, positions[live.cpu()], (c, 1, w),
                                lambda s, g: torch.randint(0, 2, s, generator=g).mul_(2).sub_(1).float())
            return [signs.to(x.device)]
        run(_SquareFrom(square), budget.square_restarts, "square", square_start)
        return ok
    raise ValueError(f"unknown pyautoattack attack {spec.kind!r}")


class _SquareFrom:
    """pyautoattack's SquareAttack with the random signs it starts from given (Linf: one sign per example,
    channel and column; L2: one per example and channel for each initial square): its `attack_single_run`
    draws them as its first random numbers, so they would depend on how many examples share the call. Under
    Linf every later draw (window, signs) is one per iteration whatever the batch; under L2 its later
    proposals draw one sign per live example, so they (not the start) depend on the examples in the call."""

    def __init__(self, square):
        self.square = square

    def init_hyperparam(self, x):
        self.square.init_hyperparam(x)

    def attack_single_run(self, x, y, x_init):
        sq = self.square
        first = list(x_init)        # the start's draws, in the order they are taken (popped from the end)
        draw = sq.random_choice

        def random_choice(shape):
            if first:
                return first.pop()
            return draw(shape)
        sq.random_choice = random_choice
        try:
            return sq.attack_single_run(x, y)
        finally:
            del sq.random_choice
