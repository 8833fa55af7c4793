"""Strong ℓ∞ attacks: our PGD/CW/FGSM, Croce & Hein's APGD and Square (pyautoattack), ART's DeepFool
(and ART's APGD and Square, spelled `<name>@art`).

The attacks themselves, one batch at a time (`attack_batch`); names and specs are attacks/specs.py,
the engine that runs a suite over batches (cascade, store, progress) is attacks/engine.py.

Every ART attack gets the TRUE labels (`generate(x, y=y)`): without them ART attacks the model's own
predictions. An example counts as correct under an attack only if it is correctly classified clean
and the attack's output (projected onto B∞(x, ε) ∩ [0,1] as a guard) is still classified correctly;
so every attack is evaluated on the same examples and the worst case per example is meaningful.

Randomness is seeded per (seed, attack, batch): our attacks draw each example's random start from
its position in the batch (so it does not depend on which other examples are attacked with it), and
so do APGD and Square as run here (`_aa_attack`): their random starts come from the example's
position, and Square's proposals (one window and one sign per channel per iteration, shared by every
example of a call in Croce & Hein's Linf Square) from a generator seeded per (seed, attack, batch,
restart) AFTER the starts are drawn, so they do not depend on how many examples share the call
either. The cascade therefore changes nothing per example for them (up to float rounding of batched
convolutions). ART's attacks draw from NumPy's global generator, seeded for the call and restored
afterwards (per call, not per example).

Cost: we call pyautoattack's `attack_single_run` directly on the examples still standing, on the
BatchNorm-folded view of the model (fold.attack_view; the same function), instead of its `perturb`,
which re-runs clean forward passes (once per call and, in APGD-T, once per target class) that the
engine has already done.
"""
from __future__ import annotations

import hashlib
import logging
import random
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..errors import ConfigError
from .fold import attack_view
from .pgd import fgsm, pgd_attack
from .resume import AttackState, EvalStore  # noqa: F401  (AttackState: re-exported for callers)
from .specs import (ART_KINDS, ATTACK_FORMS, MAX_RESTARTS, MAX_STEPS, AttackSpec, package_version,  # noqa: F401
                    parse_attack_spec, parse_attacks)
from .threat import ThreatModel

ATTACK_VERSION = 3          # bump when an attack's semantics change: stored results are then not reused
# (2: our PGD/CW draw each example's random start from its position in the batch, not from the live subset;
#  3: APGD and Square run pyautoattack's code by default, with per-example random starts)

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
                "apgd-t": ("apgd_iters", "apgd_targets"),
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
                 batch_len: int | None = None, probabilities: bool | None = None) -> torch.Tensor:
    """bool [len(x)]: which examples of (x, y) — all correctly classified clean — survive the attack.

    `positions` (int [len(x)]): where each example sits in its batch of `batch_len` examples; our
    PGD/CW and pyautoattack's APGD/Square then draw each example's random start from that position
    (see `per_example_noise`). `probabilities`: whether the model outputs probabilities (None: look)."""
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
    if spec.kind in ("apgd-ce", "apgd-dlr", "apgd-t", "square") and spec.impl == "pyautoattack":
        if positions is None:
            positions, batch_len = torch.arange(len(x)), len(x)
        return _aa_attack(model, spec, x, y, eps=eps, budget=budget, seed=seed, positions=positions.cpu(),
                          batch_len=batch_len, probabilities=probabilities)
    if spec.kind not in ART_KINDS or art is None:
        raise ValueError(f"attack_batch: unknown attack {spec!r}")
    return _art_attack(model, spec, x, y, eps=eps, budget=budget, seed=seed, art=art)


# ------------------------------------------------------------- Croce & Hein's APGD and Square (pyautoattack)
_AA_LOG = logging.getLogger("robust_transfer.attacks.pyautoattack")   # its zero-gradient warnings: our
_AA_LOG.addHandler(logging.NullHandler())                            # diagnostics measure those
_AA_LOG.propagate = False


def _positional(seed: int, what: str, restart: int, batch_len: int, positions: torch.Tensor, shape,
                draw) -> torch.Tensor:
    """`draw(shape, generator)` for the whole batch of `batch_len`, indexed by each example's position."""
    g = torch.Generator().manual_seed(seed_for(seed, what, restart))
    return draw((batch_len, *shape), g)[positions]


class _Forward(nn.Module):
    """What pyautoattack attacks: the folded view of the model (log-probabilities for a softmax output)."""

    def __init__(self, model: nn.Module, probabilities: bool):
        super().__init__()
        self.f = attack_view(model)
        self.probabilities = probabilities

    def forward(self, x):
        out = self.f(x)
        return out.clamp(min=1e-30).log() if self.probabilities else out


def _aa_attack(model, spec: AttackSpec, x, y, *, eps, budget: Budget, seed: int, positions: torch.Tensor,
               batch_len: int, probabilities: bool | None = None) -> torch.Tensor:
    """APGD-CE, APGD-DLR (+ APGD-T on the top `apgd_targets` classes) or Square through pyautoattack's
    own attack loops (`attack_single_run`), on the examples still standing, restart by restart and
    target by target (AutoAttack's order). bool [len(x)]: still correct."""
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
    from pyautoattack.square import SquareAttack

    logits = None
    if spec.kind in ("apgd-dlr", "apgd-t") or probabilities is None:
        with torch.no_grad():           # APGD-T's targets (the clean ranking of the live examples)
            logits = model(x)
        probabilities = outputs_probabilities(logits) if probabilities is None else probabilities
    f = _Forward(model, probabilities)
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
                still = _still_correct(model, xl, out[1], yl, eps)
            else:                                                # (best, still correct, loss, adversarial)
                still, x_adv = out[1].bool(), out[3]
                broke = (~still).nonzero().squeeze(1)
                if broke.numel():        # the guard: projected, classified by the model as given
                    still[broke] = _still_correct(model, xl[broke], x_adv[broke], yl[broke], eps)
            ok[live] = still

    def apgd_start(r, live):
        t = _positional(seed, "apgd-start", r, batch_len, positions[live.cpu()], shape,
                        lambda s, g: torch.rand(s, generator=g).mul_(2).sub_(1)).to(x.device)
        t = t / (t.abs().flatten(1).amax(1).view(-1, *[1] * len(shape)) + 1e-12)    # pyautoattack's normalise
        return x[live] + eps * t

    with torch.enable_grad():
        if spec.kind in ("apgd-ce", "apgd-dlr", "apgd-t"):
            # The targeted DLR loss needs 4 classes: with 3, APGD-T runs as the untargeted APGD-DLR.
            if spec.kind != "apgd-t" or logits.shape[1] < 4:
                apgd = APGDAttack(f, n_iter=budget.apgd_iters, norm="Linf", n_restarts=1, eps=eps,
                                  loss="ce" if spec.kind == "apgd-ce" else "dlr", device=x.device, logger=_AA_LOG)
                run(apgd, budget.apgd_restarts if spec.kind != "apgd-t" else 1, spec.kind, apgd_start)
            k = min(budget.apgd_targets, logits.shape[1] - 1) if logits is not None else 0
            if spec.kind != "apgd-ce" and k > 0 and logits.shape[1] >= 4:   # the targeted DLR needs 4 classes
                ranked = logits.sort(dim=1)[1]
                apgd_t = APGDAttack_targeted(f, n_iter=budget.apgd_iters, norm="Linf", n_restarts=1, eps=eps,
                                             n_target_classes=k, device=x.device, logger=_AA_LOG)
                for j in range(2, k + 2):        # AutoAttack's targets: the j-th highest clean logit
                    run(apgd_t, 1, f"apgd-t{j}", apgd_start, y_target=ranked[:, -j])
            return ok
    if spec.kind == "square":
        square = SquareAttack(f, norm="Linf", n_queries=budget.square_queries, eps=eps, p_init=0.8, n_restarts=1,
                              loss="margin", device=x.device)
        c, w = shape[0], shape[2]

        def square_start(r, live):      # the random vertical stripes Linf Square starts from, per example
            signs = _positional(seed, "square-start", r, batch_len, positions[live.cpu()], (c, 1, w),
                                lambda s, g: torch.randint(0, 2, s, generator=g).mul_(2).sub_(1).float())
            return signs.to(x.device)
        run(_SquareFrom(square), budget.square_restarts, "square", square_start)
        return ok
    raise ValueError(f"unknown pyautoattack attack {spec.kind!r}")


class _SquareFrom:
    """pyautoattack's Linf SquareAttack with the stripes it starts from given (one sign per example,
    channel and column): its `attack_single_run` draws them as its first random numbers, so they
    would depend on how many examples share the call; every later draw (window, signs) is one per
    iteration whatever the batch."""

    def __init__(self, square):
        self.square = square

    def init_hyperparam(self, x):
        self.square.init_hyperparam(x)

    def attack_single_run(self, x, y, x_init):
        sq = self.square
        first = [x_init]
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


def _art_attack(model, spec, x, y, *, eps, budget, seed, art: _Art) -> torch.Tensor:
    from art.attacks.evasion import AutoProjectedGradientDescent, DeepFool, SquareAttack

    xn = x.detach().cpu().numpy().astype(np.float32)
    yn = y.detach().cpu().numpy().astype(np.int64)
    bs = art.batch_size
    with numpy_seeded(seed):
        if spec.kind == "apgd-t":
            ok = torch.ones(len(x), dtype=torch.bool, device=x.device)
            return _targeted_dlr(model, x, y, ok, xn, eps=eps, budget=budget, art=art) \
                if budget.apgd_targets > 0 and art.num_classes > 2 else ok
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
