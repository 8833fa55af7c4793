"""Strong ℓ∞ attacks: our PGD/CW/FGSM plus the field's attacks through ART (APGD, Square, DeepFool).

The attacks themselves, one batch at a time (`attack_batch`); names and specs are attacks/specs.py,
the engine that runs a suite over batches (cascade, store, progress) is attacks/engine.py.

Every ART attack gets the TRUE labels (`generate(x, y=y)`): without them ART attacks the model's own
predictions. An example counts as correct under an attack only if it is correctly classified clean
and the attack's output (projected onto B∞(x, ε) ∩ [0,1] as a guard) is still classified correctly;
so every attack is evaluated on the same examples and the worst case per example is meaningful.

Randomness is seeded per (seed, attack, batch): our attacks draw each example's random start from
its position in the batch (so it does not depend on which other examples are attacked with it),
ART's draw from NumPy's global generator, which is seeded for the call and restored afterwards.
"""
from __future__ import annotations

import hashlib
import random
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..errors import ConfigError
from .pgd import fgsm, pgd_attack
from .resume import AttackState, EvalStore  # noqa: F401  (AttackState: re-exported for callers)
from .specs import (ART_KINDS, ATTACK_FORMS, MAX_RESTARTS, MAX_STEPS, AttackSpec, package_version,  # noqa: F401
                    parse_attack_spec, parse_attacks)
from .threat import ThreatModel

ATTACK_VERSION = 2          # bump when an attack's semantics change: stored results are then not reused
# (2: our PGD/CW draw each example's random start from its position in the batch, not from the live subset)

# One grammar for attack names (attacks/specs.py); the old names stay importable.
parse_strong_attack = parse_attack_spec
parse_attack_list = parse_attacks


def art_version() -> str:
    return package_version("adversarial-robustness-toolbox")


def _whole(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name}={value!r} is out of range; allowed: whole numbers in [{low}, {high}]")
    return value


@dataclass(frozen=True)
class Budget:
    """Compute knobs of the ART attacks (AutoAttack's own values are the defaults)."""

    apgd_iters: int = 100        # iterations per APGD run
    apgd_restarts: int = 1       # random restarts of APGD-CE / untargeted APGD-DLR
    apgd_targets: int = 9        # target classes of targeted APGD-DLR (0: untargeted only)
    square_queries: int = 5000   # Square Attack iterations (each queries the model on every live example)
    square_restarts: int = 1
    deepfool_iters: int = 50

    def __post_init__(self):
        _whole("apgd_iters", self.apgd_iters, 1, MAX_STEPS)
        _whole("apgd_restarts", self.apgd_restarts, 1, MAX_RESTARTS)
        _whole("apgd_targets", self.apgd_targets, 0, 10_000)
        _whole("square_queries", self.square_queries, 1, 1_000_000)
        _whole("square_restarts", self.square_restarts, 1, MAX_RESTARTS)
        _whole("deepfool_iters", self.deepfool_iters, 1, MAX_STEPS)

    def with_overrides(self, **overrides) -> "Budget":
        """A copy with the non-None overrides applied (validated)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def for_kind(self, kind: str) -> dict:
        """The knobs that change the results of an attack of this kind (part of its stored key)."""
        keys = {"apgd-ce": ("apgd_iters", "apgd_restarts"),
                "apgd-dlr": ("apgd_iters", "apgd_restarts", "apgd_targets"),
                "square": ("square_queries", "square_restarts"),
                "deepfool": ("deepfool_iters",)}.get(kind, ())
        return {k: getattr(self, k) for k in keys}

    def to_dict(self) -> dict:
        return asdict(self)


def seed_for(seed: int, *parts) -> int:
    """A 63-bit seed derived from (seed, parts...): independent streams per attack and batch."""
    digest = hashlib.sha256(":".join(map(str, (int(seed), *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@contextmanager
def numpy_seeded(seed: int):
    """Seed NumPy's and Python's global generators (ART draws from them); restore them afterwards."""
    np_state, py_state = np.random.get_state(), random.getstate()
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _to_pixels(batch: torch.Tensor) -> torch.Tensor:
    return batch.float().div_(255) if batch.dtype == torch.uint8 else batch.float()


# ---------------------------------------------------------------------------------------- one batch
class LogOf(nn.Module):
    """log of a model that outputs probabilities: logits for ART (softmax(log p) = p, same argmax).

    ART's APGD refuses a model whose outputs look like probabilities (a softmax output layer)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).clamp(min=1e-30).log()


def outputs_probabilities(logits: torch.Tensor) -> bool:
    return bool(((logits >= 0) & (logits <= 1)).all() and torch.allclose(logits.sum(1), torch.ones(len(logits),
                                                                                                       device=logits.device), atol=1e-4))


class _Art:
    """ART estimator and attack objects for one model, built on first use and reused across batches."""

    def __init__(self, model: nn.Module, input_shape, num_classes: int, device: torch.device, batch_size: int,
                 probabilities: bool = False, verbose: bool = False):
        model = LogOf(model) if probabilities else model
        self.model, self.input_shape, self.num_classes = model, tuple(input_shape), num_classes
        self.device, self.batch_size = device, batch_size
        self.verbose = verbose      # ART's own progress bars (iterations within a batch)
        self._objects: dict = {}

    def classifier(self):
        if "clf" not in self._objects:
            from art.estimators.classification import PyTorchClassifier

            self._objects["clf"] = PyTorchClassifier(
                model=self.model, loss=nn.CrossEntropyLoss(), input_shape=self.input_shape,
                nb_classes=self.num_classes, clip_values=(0.0, 1.0),
                device_type="gpu" if self.device.type == "cuda" else "cpu")
        return self._objects["clf"]

    def attack(self, key: tuple, make):
        if key not in self._objects:
            self._objects[key] = make(self.classifier())
        return self._objects[key]


def _still_correct(model: nn.Module, x: torch.Tensor, x_adv, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Classify x_adv after projecting it onto B∞(x, ε) ∩ [0,1] (a guard: attacks already stay inside)."""
    x_adv = torch.as_tensor(x_adv, dtype=x.dtype).to(x.device)
    x_adv = torch.where(torch.isfinite(x_adv), x_adv, x)     # a NaN "adversarial example" is no success
    x_adv = torch.min(torch.max(x_adv, (x - eps).clamp(min=0)), (x + eps).clamp(max=1))
    with torch.no_grad():
        return model(x_adv).argmax(dim=1) == y


def per_example_noise(seed: int, batch_len: int, positions: torch.Tensor, eps: float, shape):
    """`pgd_attack`'s start_noise: U(−ε, ε) drawn for the whole batch (restart r: seed (seed, r)) and
    indexed by each attacked example's position in it, so an example gets the same random start
    whichever other examples of its batch are attacked with it (the cascade's guarantee)."""
    def start_noise(restart: int, idx: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed_for(seed, "start", restart))
        full = torch.rand((batch_len, *shape), generator=g)
        return full[positions[idx.cpu()]].mul_(2 * eps).sub_(eps)
    return start_noise


def attack_batch(model: nn.Module, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel,
                 budget: Budget, seed: int, art: _Art | None = None, positions: torch.Tensor | None = None,
                 batch_len: int | None = None) -> torch.Tensor:
    """bool [len(x)]: which examples of (x, y) — all correctly classified clean — survive the attack.

    `positions` (int [len(x)]): where each example sits in its batch of `batch_len` examples; our
    PGD/CW then draw each example's random start from that position (see `per_example_noise`)."""
    eps = threat.eps
    if spec.kind == "fgsm":
        return _still_correct(model, x, fgsm(model, x, y, eps=eps), y, eps)
    if spec.kind in ("pgd", "cw"):
        if positions is None:
            positions, batch_len = torch.arange(len(x)), len(x)
        out = pgd_attack(model, x, y, eps=eps, alpha=threat.alpha, steps=spec.steps, loss="ce" if spec.kind == "pgd"
                         else "cw", random_start=True, restarts=spec.restarts, early_exit=True,
                         start_noise=per_example_noise(seed, batch_len, positions.cpu(), eps, x.shape[1:]))
        return ~out.fooled
    if spec.kind not in ART_KINDS or art is None:
        raise ValueError(f"attack_batch: unknown attack {spec!r}")
    return _art_attack(model, spec, x, y, eps=eps, budget=budget, seed=seed, art=art)


def _art_attack(model, spec, x, y, *, eps, budget, seed, art: _Art) -> torch.Tensor:
    from art.attacks.evasion import AutoProjectedGradientDescent, DeepFool, SquareAttack

    xn = x.detach().cpu().numpy().astype(np.float32)
    yn = y.detach().cpu().numpy().astype(np.int64)
    bs = art.batch_size
    with numpy_seeded(seed):
        if spec.kind in ("apgd-ce", "apgd-dlr"):
            loss = "cross_entropy" if spec.kind == "apgd-ce" else "difference_logits_ratio"
            apgd = art.attack(("apgd", loss, False), lambda clf: AutoProjectedGradientDescent(
                clf, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=budget.apgd_iters, targeted=False,
                nb_random_init=budget.apgd_restarts, batch_size=bs, loss_type=loss, verbose=art.verbose))
            ok = _still_correct(model, x, apgd.generate(xn, y=yn), y, eps)   # y: the TRUE labels
            if spec.kind == "apgd-dlr" and budget.apgd_targets > 0 and art.num_classes > 2:
                ok = _targeted_dlr(model, x, y, ok, xn, eps=eps, budget=budget, art=art)
            return ok
        if spec.kind == "square":
            square = art.attack(("square",), lambda clf: SquareAttack(
                clf, norm=np.inf, eps=eps, max_iter=budget.square_queries, p_init=0.8,
                nb_restarts=budget.square_restarts, batch_size=bs, verbose=art.verbose))
            return _still_correct(model, x, square.generate(xn, y=yn), y, eps)
        if spec.kind == "deepfool":
            deepfool = art.attack(("deepfool",), lambda clf: DeepFool(
                clf, max_iter=budget.deepfool_iters, epsilon=1e-3, nb_grads=min(10, art.num_classes),
                batch_size=bs, verbose=art.verbose))
            # DeepFool attacks the predicted class, which is the true one here (only correct examples come in).
            return _still_correct(model, x, deepfool.generate(xn, y=yn), y, eps)
    raise ValueError(f"unknown ART attack {spec.kind!r}")


def _targeted_dlr(model, x, y, ok, xn, *, eps, budget: Budget, art: _Art) -> torch.Tensor:
    """AutoAttack's APGD-T: targeted APGD-DLR towards each of the top-k other classes, on survivors only."""
    from art.attacks.evasion import AutoProjectedGradientDescent

    with torch.no_grad():
        logits = model(x)
    k = min(budget.apgd_targets, art.num_classes - 1)
    ranked = logits.masked_fill(torch.nn.functional.one_hot(y, art.num_classes).bool(), float("-inf"))
    targets = ranked.topk(k, dim=1).indices.cpu()       # [n, k], most likely wrong class first
    apgd_t = art.attack(("apgd", "difference_logits_ratio", True), lambda clf: AutoProjectedGradientDescent(
        clf, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=budget.apgd_iters, targeted=True, nb_random_init=1,
        batch_size=art.batch_size, loss_type="difference_logits_ratio", verbose=art.verbose))
    ok = ok.clone()
    for j in range(k):
        live = ok.nonzero().squeeze(1)
        if live.numel() == 0:
            break
        live_cpu = live.cpu()
        onehot = np.eye(art.num_classes, dtype=np.float32)[targets[live_cpu, j].numpy()]
        x_adv = apgd_t.generate(xn[live_cpu.numpy()], y=onehot)       # y: the TARGET classes (targeted)
        ok[live] = _still_correct(model, x[live], x_adv, y[live], eps)
    return ok
