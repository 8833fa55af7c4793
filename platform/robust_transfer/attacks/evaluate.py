"""Robustness evaluation: accuracy under each attack and under the worst case over all of them.

Attack names: `clean`, `fgsm`, `pgd<k>` (k-step PGD on cross-entropy), `cw<k>` (k-step PGD on the
CW margin). `<attack>_acc` counts an example only if it is correct on the clean image AND not fooled
by the attack (PGD's iterate 0 is the random start, not the clean image). Metric names follow
docs/architecture.md: `clean_acc`, `pgd20_acc`, `cw20_acc`, ..., plus
`worst_acc` — an example counts there only if it survives every attack requested (clean included).

Comparability: the evaluated examples are a seeded subset of the split (`select_examples`, hashed
in `indices_sha256`), and every attack draws its random starts from its own generator seeded by
(`seed`, attack name); with the same data, seed, batch size and restarts the numbers repeat
exactly, and adding or removing one attack does not change the others.
"""
from __future__ import annotations

import hashlib
import re
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from ..device import resolve_device
from ..errors import ConfigError, DataError, check_range
from .pgd import eval_mode, fgsm, pgd_attack
from .threat import ThreatModel

ATTACKS = ("clean", "pgd", "cw", "fgsm")
MAX_STEPS = 10_000
_STEPPED = re.compile(r"^(pgd|cw)(\d+)$")
_FORMS = "clean, fgsm, pgd<steps> or cw<steps> (e.g. pgd20, cw20)"


def parse_attack(name: str) -> tuple[str, int]:
    """'clean'→('clean', 0), 'fgsm'→('fgsm', 1), 'pgd20'→('pgd', 20), 'cw20'→('cw', 20)."""
    key = name.strip().lower() if isinstance(name, str) else ""
    if key == "clean":
        return "clean", 0
    if key == "fgsm":
        return "fgsm", 1
    m = _STEPPED.match(key)
    if m and 1 <= int(m.group(2)) <= MAX_STEPS:
        return m.group(1), int(m.group(2))
    raise ConfigError(f"attack={name!r} is not allowed; use {_FORMS}, with 1 <= steps <= {MAX_STEPS}")


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


def _attack_generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{int(seed)}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _to_pixels(batch: torch.Tensor) -> torch.Tensor:
    if batch.dtype == torch.uint8:
        return batch.float().div_(255)
    return batch.float()


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
    batches = list(torch.split(idx, batch_size))
    correct: dict[str, list[torch.Tensor]] = {name: [] for name in names}

    model.to(dev)
    start = time.perf_counter()
    clean_ok: list[torch.Tensor] = []   # per batch: correct on the clean image (every <attack>_acc requires it)
    with eval_mode(model), torch.no_grad():
        for b in batches:
            clean_ok.append(model(_to_pixels(images[b]).to(dev)).argmax(dim=1) == labels[b].to(dev, torch.int64))
    with eval_mode(model), tqdm(total=len(specs) * len(batches), desc="evaluate", unit="batch",
                                file=sys.stderr, disable=not progress, leave=False) as bar:
        for (kind, steps), name in zip(specs, names):
            bar.set_postfix_str(name)
            generator = _attack_generator(seed, name)
            for b, clean in zip(batches, clean_ok):
                x = _to_pixels(images[b]).to(dev)
                y = labels[b].to(dev, torch.int64)
                if kind == "clean":
                    ok = clean
                elif kind == "fgsm":
                    x_adv = fgsm(model, x, y, eps=threat.eps)
                    with torch.no_grad():
                        ok = clean & (model(x_adv).argmax(dim=1) == y)
                else:   # pgd / cw: correct on the clean image and no PGD iterate fooled the model
                    out = pgd_attack(model, x, y, eps=threat.eps, alpha=threat.alpha, steps=steps,
                                     loss="ce" if kind == "pgd" else "cw", random_start=True,
                                     restarts=restarts, early_exit=early_exit, generator=generator)
                    ok = clean & ~out.fooled
                correct[name].append(ok.cpu())
                bar.update(1)
    seconds = time.perf_counter() - start

    per_attack = {name: torch.cat(parts) for name, parts in correct.items()}
    worst = torch.stack(list(per_attack.values())).all(dim=0)
    metrics = {f"{name}_acc": ok.float().mean().item() for name, ok in per_attack.items()}
    metrics["worst_acc"] = worst.float().mean().item()
    n = idx.numel()
    params = {"attacks": names, **threat.to_dict(), "n_examples": n, "seed": seed, "batch_size": batch_size,
              "restarts": restarts, "early_exit": early_exit}
    return EvalResult(metrics=metrics, correct=per_attack, n_examples=n, indices_sha256=indices_sha256(idx),
                      seconds=seconds, images_per_s=n / seconds if seconds > 0 else float("inf"), params=params)
