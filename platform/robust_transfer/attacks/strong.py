"""Strong ℓ∞ evaluation: our PGD/CW/FGSM plus the field's attacks through ART, resumable, per example.

Attack names (metric: the name with '-' → '_' and `_acc` appended):

    clean                    no attack
    fgsm                     one signed-gradient step (ours)
    pgd<k>[r<m>]             k-step PGD on cross-entropy, m random restarts (ours; pgd100r5 → pgd100r5_acc)
    cw<k>[r<m>]              k-step PGD on the CW margin (ours)
    apgd-ce                  APGD on cross-entropy (Croce & Hein 2020), ART's AutoProjectedGradientDescent
    apgd-dlr                 APGD on the DLR loss, untargeted; then, "targeted where it helps", targeted
                             APGD-DLR towards the `apgd_targets` classes the model ranks highest, on the
                             examples the untargeted run left standing (AutoAttack's APGD-T)
    square                   Square Attack (Andriushchenko et al. 2020): score-based black box, ART's SquareAttack
    deepfool                 ART's DeepFool, projected onto the ε-ball: the minimum-norm attack ART's own
                             AutoAttack runs where AutoAttack has FAB (ART 1.20 has no FAB)

Every ART attack gets the TRUE labels (`generate(x, y=y)`): without them ART attacks the model's own
predictions. An example counts as correct under an attack only if it is correctly classified clean
and the attack's output (projected onto B∞(x, ε) ∩ [0,1] as a guard) is still classified correctly;
so every attack is evaluated on the same examples and the worst case per example is meaningful.

Randomness is seeded per (seed, attack, batch): our attacks draw from a torch generator, ART's from
NumPy's global generator, which is seeded for the call and restored afterwards. With a store
(`resume.EvalStore`) each finished batch is written to disk, so a rerun skips finished attacks and
batches and gives the same numbers as an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import random
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..errors import ConfigError, DataError
from .pgd import eval_mode, fgsm, pgd_attack
from .resume import AttackState, EvalStore
from .threat import ThreatModel

ATTACK_VERSION = 1          # bump when an attack's semantics change: stored results are then not reused
ART_KINDS = ("apgd-ce", "apgd-dlr", "square", "deepfool")
MAX_STEPS, MAX_RESTARTS = 10_000, 100
_STEPPED = re.compile(r"^(pgd|cw)(\d+)(?:r(\d+))?$")
ATTACK_FORMS = ("clean, fgsm, pgd<steps>[r<restarts>], cw<steps>[r<restarts>], apgd-ce, apgd-dlr, square, deepfool "
                "(e.g. pgd20, cw20, pgd100r5)")


@dataclass(frozen=True)
class AttackSpec:
    name: str            # canonical spelling, e.g. 'pgd100r5', 'apgd-ce'
    kind: str            # clean | fgsm | pgd | cw | apgd-ce | apgd-dlr | square | deepfool
    steps: int = 0
    restarts: int = 1

    @property
    def metric(self) -> str:
        return self.name.replace("-", "_") + "_acc"

    @property
    def whitebox(self) -> bool:
        """Uses gradients (Square only queries scores; clean is no attack)."""
        return self.kind not in ("clean", "square")


def parse_strong_attack(name) -> AttackSpec:
    """'pgd20' → AttackSpec('pgd20', 'pgd', 20); 'apgd_ce' → AttackSpec('apgd-ce', 'apgd-ce'); ..."""
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else ""
    if key in ("clean", "fgsm", *ART_KINDS):
        return AttackSpec(key, key, steps=1 if key == "fgsm" else 0)
    m = _STEPPED.match(key)
    if m:
        steps, restarts = int(m.group(2)), int(m.group(3) or 1)
        if 1 <= steps <= MAX_STEPS and 1 <= restarts <= MAX_RESTARTS:
            canon = f"{m.group(1)}{steps}" + (f"r{restarts}" if m.group(3) else "")
            return AttackSpec(canon, m.group(1), steps, restarts)
    if key in ("fab", "fab-t", "apgd-t", "autoattack", "aa"):
        hint = {"fab": "ART 1.20 has no FAB; its AutoAttack runs DeepFool in that slot: use deepfool",
                "apgd-t": "targeted APGD-DLR is part of apgd-dlr (apgd_targets sets how many target classes)"}
        hint["fab-t"] = hint["fab"]
        raise ConfigError(f"attack={name!r} is not allowed; "
                          + hint.get(key, "use suite=standard or suite=full for AutoAttack-style evaluation"))
    raise ConfigError(f"attack={name!r} is not allowed; use {ATTACK_FORMS}, with 1 <= steps <= {MAX_STEPS} "
                      f"and 1 <= restarts <= {MAX_RESTARTS}")


def parse_attack_list(attacks) -> list[AttackSpec]:
    """A comma string or a sequence of names → specs, canonical, de-duplicated, in order; clean first."""
    if isinstance(attacks, str):
        attacks = [a for a in attacks.split(",") if a.strip()]
    specs = list(dict.fromkeys(parse_strong_attack(a) for a in attacks))
    if not specs:
        raise ConfigError(f"attacks is empty; give at least one of {ATTACK_FORMS}")
    clean = [s for s in specs if s.kind == "clean"] or [AttackSpec("clean", "clean")]
    return clean + [s for s in specs if s.kind != "clean"]


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


def attack_batch(model: nn.Module, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor, *, threat: ThreatModel,
                 budget: Budget, seed: int, art: _Art | None = None) -> torch.Tensor:
    """bool [len(x)]: which examples of (x, y) — all correctly classified clean — survive the attack."""
    eps = threat.eps
    if spec.kind == "fgsm":
        return _still_correct(model, x, fgsm(model, x, y, eps=eps), y, eps)
    if spec.kind in ("pgd", "cw"):
        out = pgd_attack(model, x, y, eps=eps, alpha=threat.alpha, steps=spec.steps, loss="ce" if spec.kind == "pgd"
                         else "cw", random_start=True, restarts=spec.restarts, early_exit=True,
                         generator=torch.Generator().manual_seed(seed))
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


# ---------------------------------------------------------------------------------------- a whole run
@dataclass
class AttackRun:
    """Per-example correctness of every attack run so far, over the evaluated examples (index order)."""

    correct: dict[str, torch.Tensor] = field(default_factory=dict)   # attack name → bool [n]
    seconds: dict[str, float] = field(default_factory=dict)          # attack name → compute time this call
    resumed: dict[str, int] = field(default_factory=dict)            # attack name → batches loaded from the store
    skipped: dict[str, str] = field(default_factory=dict)            # attack name → why it did not run


class AttackRunner:
    """Runs attacks over a seeded subset of (images, labels), batch by batch, resumably.

    `images` are uint8 [N,3,H,W] (scaled to [0,1] per batch) or float pixels in [0,1].
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, *,
                 batch_size: int, seed: int, device: torch.device, budget: Budget, progress: bool = True,
                 store: EvalStore | None = None):
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise DataError(f"images must be a tensor [N, C, H, W]; got {getattr(images, 'shape', type(images))}")
        if not (images.dtype == torch.uint8 or images.is_floating_point()):
            raise DataError(f"images must be uint8 (0-255) or float pixels in [0,1]; got dtype {images.dtype}")
        if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
            raise DataError(f"labels must be a tensor [{images.shape[0]}] matching images; "
                            f"got {getattr(labels, 'shape', type(labels))}")
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

    def pixels(self, i: int) -> torch.Tensor:
        return _to_pixels(self.images[self.batches[i]]).to(self.device)

    def targets(self, i: int) -> torch.Tensor:
        return self.labels[self.batches[i]].to(self.device, torch.int64)

    @property
    def clean(self) -> torch.Tensor:
        if self._clean is None:
            self._clean = self.attack(AttackSpec("clean", "clean"), ThreatModel())
        return self._clean

    def params(self, spec: AttackSpec, threat: ThreatModel) -> dict:
        p = {"attack": spec.name, "version": ATTACK_VERSION, "seed": self.seed, **self.budget.for_kind(spec.kind)}
        if spec.kind != "clean":
            p["threat"] = threat.to_dict()
        return p

    def attack(self, spec: AttackSpec, threat: ThreatModel, label: str | None = None) -> torch.Tensor:
        """bool [n]: correct under `spec` at `threat`; loads finished batches from the store, runs the rest."""
        label = label or spec.name
        params = self.params(spec, threat)
        state = self.store.load(label, params, self.n, len(self.batches)) if self.store else None
        if state is None:
            state = AttackState(correct=torch.zeros(self.n, dtype=torch.bool),
                                done=torch.zeros(len(self.batches), dtype=torch.bool))
        self.run.resumed[label] = int(state.done.sum())
        clean = None if spec.kind == "clean" else self.clean
        art = (_Art(self.model, self.input_shape, self.num_classes, self.device, self.batch_size, self.probabilities,
                    verbose=self.progress) if spec.kind in ART_KINDS else None)
        seconds = 0.0
        with eval_mode(self.model), tqdm(total=len(self.batches), initial=int(state.done.sum()), desc=label,
                                         unit="batch", file=sys.stderr, disable=not self.progress,
                                         leave=False) as bar:
            for i in range(len(self.batches)):
                if state.done[i]:
                    continue
                start = time.perf_counter()
                lo, hi = self.offsets[i], self.offsets[i + 1]
                x, y = self.pixels(i), self.targets(i)
                if clean is None:
                    with torch.no_grad():
                        ok = self.model(x).argmax(dim=1) == y
                else:
                    ok = clean[lo:hi].to(self.device).clone()
                    live = ok.nonzero().squeeze(1)
                    if live.numel():
                        ok[live] = attack_batch(self.model, spec, x[live], y[live], threat=threat,
                                                budget=self.budget, seed=seed_for(self.seed, label, i), art=art)
                state.correct[lo:hi] = ok.cpu()
                state.done[i] = True
                seconds += time.perf_counter() - start
                if self.store:
                    self.store.save(label, params, state)
                bar.update(1)
        self.run.seconds[label] = seconds
        return state.correct.clone()
