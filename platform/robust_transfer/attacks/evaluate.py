"""Robustness evaluation: accuracy under each attack and under the worst case over all of them.

Attack names: `clean`, `fgsm`, `pgd<k>` (k-step PGD on cross-entropy), `cw<k>` (k-step PGD on the
CW margin). `<attack>_acc` counts an example only if it is correct on the clean image AND not fooled
by the attack (PGD's iterate 0 is the random start, not the clean image). Metric names follow
docs/architecture.md: `clean_acc`, `pgd20_acc`, `cw20_acc`, ..., plus
`worst_acc` — an example counts there only if it survives every attack requested (clean included).

Comparability: the evaluated examples are a seeded subset of the split (`select_examples`, hashed
in `indices_sha256`), and every attack draws each example's random start from a generator seeded by
(`seed`, attack name, batch) at the example's position in its batch; with the same data, seed, batch
size and restarts the numbers repeat exactly, and adding or removing one attack does not change the
others. The attacks run on the one engine (engine.py), as `robust_transfer.evaluation` does.
"""
from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..device import resolve_device
from ..errors import ConfigError, DataError, check_range
from .engine import AttackRunner, run_attacks
from .specs import OURS_KINDS, AttackSpec, parse_attack_spec
from .strong import Budget
from .threat import ThreatModel

ATTACKS = ("clean", "pgd", "cw", "fgsm")
MAX_STEPS = 10_000
_STEPPED = re.compile(r"^(pgd|cw)(\d+)$")
_FORMS = "clean, fgsm, pgd<steps> or cw<steps> (e.g. pgd20, cw20)"


def parse_attack(name: str) -> tuple[str, int]:
    """'clean'→('clean', 0), 'fgsm'→('fgsm', 1), 'pgd20'→('pgd', 20), 'cw20'→('cw', 20).

    The short form of the one grammar (specs.parse_attack_spec) for our own attacks, as training and
    transfer runs use them; suites and ART attacks go through `robust_transfer.evaluation`."""
    key = name.strip().lower() if isinstance(name, str) else ""
    try:
        spec = parse_attack_spec(key) if _STEPPED.match(key) or key in ("clean", "fgsm") else None
    except ConfigError:
        spec = None
    if spec is None or spec.restarts != 1 or spec.kind not in OURS_KINDS:
        raise ConfigError(f"attack={name!r} is not allowed; use {_FORMS}, with 1 <= steps <= {MAX_STEPS}")
    return spec.kind, spec.steps


def attack_name(kind: str, steps: int) -> str:
    """The canonical spelling: ('pgd', 20) → 'pgd20'; metric name is f'{attack_name}_acc'."""
    return f"{kind}{steps}" if kind in ("pgd", "cw") else kind


def select_examples(n_total: int, n_examples: int | None, seed: int) -> torch.Tensor:
    """A seeded random subset of range(n_total), sorted; None means all examples.

    The subset for n is a prefix of one seeded permutation, so with the same seed a smaller
    evaluation uses a subset of a larger one's examples.
    """
    if n_examples is None:
        return torch.arange(n_total)
    if isinstance(n_examples, bool) or not isinstance(n_examples, int) or not 1 <= n_examples <= n_total:
        raise ConfigError(f"n_examples={n_examples!r} is out of range; the split has {n_total} examples "
                          f"(allowed: 1..{n_total}, or None for all)")
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n_total, generator=g)[:n_examples].sort().values


def indices_sha256(indices: torch.Tensor) -> str:
    """SHA-256 of the indices as little-endian int64: equal hashes ⇔ the same examples."""
    return hashlib.sha256(indices.to(torch.int64).cpu().numpy().astype("<i8").tobytes()).hexdigest()


@dataclass
class EvalResult:
    metrics: dict[str, float]            # f"{attack}_acc" and "worst_acc", fractions in [0,1]
    correct: dict[str, torch.Tensor]     # per attack name: bool [n_examples], in index order
    n_examples: int
    indices_sha256: str
    seconds: float
    images_per_s: float                  # examples fully evaluated (every attack) per second
    params: dict = field(default_factory=dict)   # what was run: attacks, threat model, seed, ...


def _check_inputs(images, labels, attacks, batch_size, restarts) -> list[tuple[str, int]]:
    if isinstance(attacks, str):
        attacks = [a for a in attacks.split(",") if a.strip()]
    specs = list(dict.fromkeys(parse_attack(a) for a in attacks))   # canonical, de-duplicated, ordered
    if not specs:
        raise ConfigError(f"attacks is empty; give at least one of {_FORMS}")
    check_range("batch_size", batch_size, 1, None)
    check_range("restarts", restarts, 1, None)
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise DataError(f"images must be a tensor [N, C, H, W]; got {getattr(images, 'shape', type(images))}")
    if not (images.dtype == torch.uint8 or images.is_floating_point()):
        raise DataError(f"images must be uint8 (0-255) or float pixels in [0,1]; got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise DataError("images is empty; there is nothing to evaluate")
    if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
        raise DataError(f"labels must be a tensor [{images.shape[0]}] matching images; "
                        f"got {getattr(labels, 'shape', type(labels))}")
    return specs


def evaluate_robustness(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                        attacks=("clean", "pgd20", "cw20"), threat: ThreatModel = ThreatModel(),
                        n_examples: int | None = 1000, seed: int = 0, batch_size: int = 256, device="cpu",
                        progress: bool = True, early_exit: bool = True, restarts: int = 1) -> EvalResult:
    """Accuracy of `model` on a seeded subset of (images, labels) under each attack and the worst case.

    Runs on the one attack engine (engine.py) with every attack on every clean-correct example (no
    cascade, no store): an example counts as correct under an attack only if it is correct clean
    too. `early_exit` is kept for callers; the engine's PGD always exits early, which gives the
    same answers (pgd.pgd_attack).

    `images` are uint8 [N,3,H,W] (scaled to [0,1] per batch) or float pixels in [0,1]. The model is
    moved to `device` (nn.Module.to is in place), evaluated in eval mode, and its per-module
    training flags are restored afterwards.
    """
    specs = _check_inputs(images, labels, attacks, batch_size, restarts)
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    idx = select_examples(images.shape[0], n_examples, seed)
    if images.is_floating_point():
        chosen = images[idx]
        if chosen.numel() and (chosen.min() < 0 or chosen.max() > 1):
            raise DataError(f"float images must be pixels in [0,1]; got values in "
                            f"[{chosen.min().item():.3g}, {chosen.max().item():.3g}] (pass uint8 0-255 instead?)")
    names = [attack_name(kind, steps) for kind, steps in specs]
    run_specs = [AttackSpec(name, kind, steps, restarts if kind in ("pgd", "cw") else 1)
                 for (kind, steps), name in zip(specs, names)]
    if run_specs[0].kind != "clean":
        run_specs.insert(0, AttackSpec("clean", "clean"))

    model.to(dev)
    start = time.perf_counter()
    runner = AttackRunner(model, images, labels, idx, batch_size=batch_size, seed=seed, device=dev, budget=Budget(),
                          progress=progress)
    try:
        correct = run_attacks(runner, run_specs, threat, cascade=False)
    finally:
        runner.close()
    seconds = time.perf_counter() - start

    per_attack = {name: correct[name] for name in names}
    worst = torch.stack(list(per_attack.values())).all(dim=0)
    metrics = {f"{name}_acc": ok.float().mean().item() for name, ok in per_attack.items()}
    metrics["worst_acc"] = worst.float().mean().item()
    n = idx.numel()
    params = {"attacks": names, **threat.to_dict(), "n_examples": n, "seed": seed, "batch_size": batch_size,
              "restarts": restarts, "early_exit": early_exit}
    return EvalResult(metrics=metrics, correct=per_attack, n_examples=n, indices_sha256=indices_sha256(idx),
                      seconds=seconds, images_per_s=n / seconds if seconds > 0 else float("inf"), params=params)
