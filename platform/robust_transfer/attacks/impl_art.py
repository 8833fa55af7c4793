"""ART 1.20's attacks, one batch of a suite at a time: DeepFool (ART's only; it stands where AutoAttack has
FAB, as in ART's own AutoAttack) and ART's APGD and Square (`apgd-ce@art`, `apgd-dlr@art`, `apgd-t@art`,
`square@art`: slower than pyautoattack's, kept for comparisons), as `dispatch.attack_batch` runs them.

Every ART attack gets the TRUE labels (`generate(x, y=y)`): without them ART attacks the model's own
predictions. Its output goes through the ε-ball guard (`common.still_correct`). ART draws from NumPy's
and Python's global generators: they are seeded per (seed, attack, batch) for the call and restored
afterwards (per call, not per example: ART's results may depend on which examples share a call).
"""
from __future__ import annotations

import random
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from .budget import AttackBudget
from .common import still_correct
from .specs import AttackSpec


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


class LogOf(nn.Module):
    """log of a model that outputs probabilities: logits for ART (softmax(log p) = p, same argmax).

    ART's APGD refuses a model whose outputs look like probabilities (a softmax output layer)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).clamp(min=1e-30).log()


class ArtModel:
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


def attack(model: nn.Module, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor, *, eps: float,
           budget: AttackBudget, seed: int, art: ArtModel) -> torch.Tensor:
    """bool [len(x)]: which examples of (x, y) — all correctly classified clean — survive ART's attack."""
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
            ok = still_correct(model, x, apgd.generate(xn, y=yn), y, eps)   # y: the TRUE labels
            if spec.kind == "apgd-dlr" and budget.apgd_targets > 0 and art.num_classes > 2:
                ok = _targeted_dlr(model, x, y, ok, xn, eps=eps, budget=budget, art=art)
            return ok
        if spec.kind == "square":
            square = art.attack(("square",), lambda clf: SquareAttack(
                clf, norm=np.inf, eps=eps, max_iter=budget.square_queries, p_init=0.8,
                nb_restarts=budget.square_restarts, batch_size=bs, verbose=art.verbose))
            return still_correct(model, x, square.generate(xn, y=yn), y, eps)
        if spec.kind == "deepfool":
            deepfool = art.attack(("deepfool",), lambda clf: DeepFool(
                clf, max_iter=budget.deepfool_iters, epsilon=1e-3, nb_grads=min(10, art.num_classes),
                batch_size=bs, verbose=art.verbose))
            # DeepFool attacks the predicted class, which is the true one here (only correct examples come in).
            return still_correct(model, x, deepfool.generate(xn, y=yn), y, eps)
    raise ValueError(f"unknown ART attack {spec.kind!r}")


def _targeted_dlr(model, x, y, ok, xn, *, eps, budget: AttackBudget, art: ArtModel) -> torch.Tensor:
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
        ok[live] = still_correct(model, x[live], x_adv, y[live], eps)
    return ok
