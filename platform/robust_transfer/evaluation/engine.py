"""The attack engine: one list of attack specs run over a seeded subset of examples, batch by batch,
resumably (one per-attack, per-batch store), with one progress bar for the whole suite.

The cascade (`cascade=True`, what AutoAttack itself does): each attack runs only on the examples
that every earlier attack left correctly classified. The worst case per example is the same as
running every attack on every example — an example broken by an earlier attack is wrong in the
worst case whatever later attacks do, and each example's attack does not depend on which other
examples share its batch (our PGD/CW draw random starts per position; see `attacks.common.per_example_noise`) —
but the cost falls to what the survivors need. Per-attack numbers then mean "correct after this
attack and every earlier one" (cascade numbers, non-increasing along the suite); with
`cascade=False` every attack runs on every clean-correct example and its number is its own.

`autoattack` (the reference, reference.py) is one entry of the list: it runs its own
cascade on the examples still standing, with its own state file (in the store) for resuming.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from ..attacks import dispatch
from ..attacks.budget import AttackBudget
from ..attacks.common import outputs_probabilities, seed_for
from ..attacks.specs import AttackSpec
from ..attacks.threat import ThreatModel, to_pixels
from ..digests import json_sha256, mask_sha256
from ..models.modes import eval_mode
from ..progress import bar_disabled
from .store import AttackState, EvalStore


@dataclass
class AttackRun:
    """Per-example correctness of every attack run so far, over the evaluated examples (index order)."""

    correct: dict[str, torch.Tensor] = field(default_factory=dict)   # attack name → bool [n]
    seconds: dict[str, float] = field(default_factory=dict)          # attack name → compute time this call (wall)
    cpu_seconds: dict[str, float] = field(default_factory=dict)      # attack name → CPU time of this process
    resumed: dict[str, int] = field(default_factory=dict)            # attack name → batches loaded from the store
    skipped: dict[str, str] = field(default_factory=dict)            # attack name → why it did not run
    attacked: dict[str, int] = field(default_factory=dict)           # attack name → examples it attacked
    extra_metrics: dict[str, float] = field(default_factory=dict)    # the reference's per-sub-attack numbers
    extra_correct: dict[str, torch.Tensor] = field(default_factory=dict)  # … and their flags (metric → bool [n])
    reference_flags: dict[str, str] = field(default_factory=dict)    # AutoAttack's own checks that fired
    reference_deviation: str = ""                                    # how the reference run differs from standard


class AttackRunner:
    """Runs attacks over a seeded subset of (images, labels), batch by batch, resumably.

    `images` are uint8 [N,3,H,W] (scaled to [0,1] per batch) or float pixels in [0,1], checked by the
    front door (inputs.checked_examples).
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, *,
                 batch_size: int, seed: int, device: torch.device, budget: AttackBudget, progress: bool = True,
                 store: EvalStore | None = None):
        self.model, self.images, self.labels, self.indices = model, images, labels, indices
        self.batch_size, self.seed, self.device, self.budget = batch_size, seed, device, budget
        self.progress, self.store = progress, store
        self.batches = list(torch.split(indices, batch_size))
        self.offsets = [0]
        for b in self.batches:
            self.offsets.append(self.offsets[-1] + b.numel())
        self.n = indices.numel()
        with torch.no_grad(), eval_mode(model):
            first = model(self.pixels(0)[:8])
        self.num_classes = int(first.shape[1])
        self.probabilities = outputs_probabilities(first)   # a softmax output layer: ART gets log p
        self.input_shape = tuple(images.shape[1:])
        self.run = AttackRun()
        self._clean: torch.Tensor | None = None
        self.bar = tqdm(total=0, desc="evaluate", unit="batch", file=sys.stderr, disable=bar_disabled(progress), leave=False)

    def close(self) -> None:
        self.bar.close()

    def pixels(self, i: int) -> torch.Tensor:
        return to_pixels(self.images[self.batches[i]]).to(self.device)

    def targets(self, i: int) -> torch.Tensor:
        return self.labels[self.batches[i]].to(self.device, torch.int64)

    @property
    def clean(self) -> torch.Tensor:
        if self._clean is None:
            self._clean = self.attack(AttackSpec("clean", "clean"), ThreatModel())
        return self._clean

    def params(self, spec: AttackSpec, threat: ThreatModel, alive: torch.Tensor | None = None) -> dict:
        p = {"attack": spec.name, "version": dispatch.ATTACK_VERSION, "seed": self.seed,
             **self.budget.for_kind(spec.kind)}
        if spec.kind != "clean":
            p["threat"] = threat.to_dict()
        if alive is not None:               # a cascade attack: which examples it attacks is part of its key
            p["alive"] = mask_sha256(alive)
        return p

    def _grow_bar(self, label: str, batches: int, done: int) -> None:
        self.bar.total += batches
        self.bar.set_postfix_str(label)
        if done:
            self.bar.update(done)
        self.bar.refresh()

    def attack(self, spec: AttackSpec, threat: ThreatModel, label: str | None = None,
               alive: torch.Tensor | None = None) -> torch.Tensor:
        """bool [n]: correct under `spec` at `threat`; loads finished batches from the store, runs the rest.

        With `alive` (bool [n], the cascade), only the clean-correct examples in `alive` are attacked;
        every other example counts as not correct."""
        if spec.kind == "autoattack":
            return self.reference(spec, threat, alive)
        label = label or spec.name
        params = self.params(spec, threat, alive)
        state = self.store.load(label, params, self.n, len(self.batches)) if self.store else None
        if state is None:
            state = AttackState(correct=torch.zeros(self.n, dtype=torch.bool),
                                done=torch.zeros(len(self.batches), dtype=torch.bool))
        self.run.resumed[label] = int(state.done.sum())
        clean = None if spec.kind == "clean" else self.clean
        if clean is not None and alive is not None:
            clean = clean & alive
        context = dispatch.context_for(spec, self.model, input_shape=self.input_shape, num_classes=self.num_classes,
                                       device=self.device, batch_size=self.batch_size,
                                       probabilities=self.probabilities)
        seconds, attacked, cpu0 = 0.0, 0, time.process_time()
        self._grow_bar(label, len(self.batches), int(state.done.sum()))
        with eval_mode(self.model):
            for i in range(len(self.batches)):
                if state.done[i]:
                    continue
                start = time.perf_counter()
                lo, hi = self.offsets[i], self.offsets[i + 1]
                if clean is None:
                    x, y = self.pixels(i), self.targets(i)
                    with torch.no_grad():
                        ok = self.model(x).argmax(dim=1) == y
                else:
                    ok = clean[lo:hi].clone()
                    live = ok.nonzero().squeeze(1)
                    if live.numel():
                        x, y = self.pixels(i), self.targets(i)
                        dev_live = live.to(self.device)
                        ok[live] = dispatch.attack_batch(
                            self.model, spec, x[dev_live], y[dev_live], threat=threat, budget=self.budget,
                            seed=seed_for(self.seed, label, i), context=context, positions=live,
                            batch_len=hi - lo, probabilities=self.probabilities).cpu()
                        attacked += live.numel()
                state.correct[lo:hi] = ok.cpu()
                state.done[i] = True
                seconds += time.perf_counter() - start
                if self.store:
                    self.store.save(label, params, state)
                self.bar.update(1)
        self.run.seconds[label] = seconds
        self.run.cpu_seconds[label] = time.process_time() - cpu0
        self.run.attacked[label] = attacked
        return state.correct.clone()

    def reference(self, spec: AttackSpec, threat: ThreatModel, alive: torch.Tensor | None = None) -> torch.Tensor:
        """The reference AutoAttack on the examples in `alive` (all when None); its state file lives in the store."""
        from .reference import SUBATTACKS, reference_version, run_autoattack

        label = spec.name
        subset = torch.arange(self.n) if alive is None else alive.nonzero().squeeze(1)
        params = {**self.params(spec, threat, alive), "implementation": f"pyautoattack {reference_version()}",
                  "batch_size": self.batch_size}
        correct = torch.zeros(self.n, dtype=torch.bool)
        self._grow_bar(label, len(SUBATTACKS), 0)
        self.run.attacked[label] = int(subset.numel())
        if subset.numel() == 0:
            self.run.seconds[label] = 0.0
            self.bar.update(len(SUBATTACKS))
            return correct
        pos = self.indices[subset]
        x = to_pixels(self.images[pos])
        y = self.labels[pos].to(torch.int64)
        state = self.store.dir / f"{label}-{json_sha256(params)[:16]}.state.json" if self.store else None
        start, cpu0 = time.perf_counter(), time.process_time()
        res = run_autoattack(self.model, x, y, eps=threat.eps, seed=seed_for(self.seed, label),
                             batch_size=self.batch_size, device=self.device, state_path=state, norm=threat.norm)
        self.run.seconds[label] = time.perf_counter() - start
        self.run.cpu_seconds[label] = time.process_time() - cpu0
        self.run.resumed[label] = len(res.resumed)
        correct[subset] = res.correct
        for sub in SUBATTACKS:
            key = f"{label}.{sub}"
            if sub in res.cascade:
                full = torch.zeros(self.n, dtype=torch.bool)
                full[subset] = res.cascade[sub]
                if self.store:           # AutoAttack's state keeps only the final flags: keep each sub-attack's
                    self.store.save(key, params, AttackState(correct=full, done=torch.ones(1, dtype=torch.bool)))
            else:                        # finished by an earlier call
                found = self.store.load(key, params, self.n, 1) if self.store else None
                if found is not None:
                    full = found.correct
                elif not res.correct.any():      # AutoAttack stops once nothing is left standing
                    full = correct.clone()
                else:
                    continue
            metric = f"aa_{sub.replace('-', '_')}_acc"
            self.run.extra_metrics[metric] = full.float().mean().item()
            self.run.extra_correct[metric] = full
        for sub, s in res.seconds.items():
            self.run.seconds[f"{label}/{sub}"] = s
        self.run.reference_flags.update(res.flags)
        self.run.reference_deviation = res.deviation
        self.bar.update(len(SUBATTACKS))
        return correct


def run_attacks(runner: AttackRunner, specs: list[AttackSpec], threat: ThreatModel, *,
                cascade: bool = True) -> dict[str, torch.Tensor]:
    """attack name → bool [n] for each spec, in order (clean first); see the module docstring."""
    correct: dict[str, torch.Tensor] = {}
    alive: torch.Tensor | None = None
    for spec in specs:
        if spec.kind == "clean":
            correct[spec.name] = runner.clean
            continue
        if spec.kind in ("apgd-dlr", "apgd-t") and runner.num_classes < 3:   # (apgd-t with 3: untargeted DLR)
            runner.run.skipped[spec.name] = "the DLR loss needs at least 3 classes"
            continue
        ok = runner.attack(spec, threat, alive=alive if cascade else None)
        correct[spec.name] = ok
        if cascade:
            alive = ok if alive is None else (alive & ok)
    return correct
