"""Issue 13 §1: adversarial training uses Madry's PGD — the LAST of k signed steps from a random start —
not the evaluation attack's "first iterate that fools, else the highest loss"."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robust_transfer.attacks import pgd, pgd_train
from robust_transfer.attacks.fold import attack_view
from robust_transfer.config import TrainConfig
from robust_transfer.models import create_model
from robust_transfer.strategies.engine import Batch
from robust_transfer.strategies.train import ModeObjective

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 7


class Tiny(nn.Module):
    """A fixed tiny conv net (BatchNorm included, eval mode during the attack)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4))

    def forward(self, x):
        return self.net(x)


def reference_madry(f, x, y, eps, alpha, steps, generator):
    """Written from Madry et al. (2018), independently of the library: uniform start in the ε-ball,
    k steps x ← clip_{[0,1]}(clip_{[x0−ε, x0+ε]}(x + α·sign ∇ₓ CE)), return the last iterate."""
    noise = torch.rand(x.shape, generator=generator) * (2 * eps) - eps
    x_adv = torch.clamp(torch.min(torch.max(x + noise, x - eps), x + eps), 0, 1)
    for _ in range(steps):
        x_adv = x_adv.clone().requires_grad_(True)
        loss = F.cross_entropy(f(x_adv), y, reduction="sum")
        grad, = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0, 1)
    return x_adv


def _data(n=32, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_training_attack_is_bit_for_bit_the_reference_loop():
    torch.manual_seed(0)
    model = Tiny()
    model.train()                       # as during training: the attack must switch to eval mode and back
    x, y = _data()
    with torch.no_grad():               # give BatchNorm non-trivial running statistics
        model(x * 0.7 + 0.1)
    ours = pgd_train(model, x, y, eps=EPS, alpha=ALPHA, steps=STEPS, generator=torch.Generator().manual_seed(3))
    assert all(m.training for m in model.modules())          # training flags restored
    model.eval()
    ref = reference_madry(model, x, y, EPS, ALPHA, STEPS, torch.Generator().manual_seed(3))
    assert torch.equal(ours, ref)
    assert (ours - x).abs().max() <= EPS + 1e-7 and ours.min() >= 0 and ours.max() <= 1


def test_training_attack_differs_from_the_evaluation_attack():
    """The evaluation attack keeps the first fooling iterate (often an early one); training takes the last."""
    torch.manual_seed(0)
    model = Tiny().eval()
    x, y = _data(64)
    train_x = pgd_train(model, x, y, eps=EPS, alpha=ALPHA, steps=STEPS, generator=torch.Generator().manual_seed(1))
    eval_x = pgd(model, x, y, eps=EPS, alpha=ALPHA, steps=STEPS, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(train_x, eval_x)


def test_train_mode_pgd_trains_on_the_madry_examples():
    """`train mode=pgd`'s update sees exactly the reference loop's output (on the function the attack
    sees: the model with its BatchNorms folded, `attack_view`)."""
    cfg = TrainConfig(dataset="cifar10", mode="pgd", steps=3, device="cpu", progress=False)
    torch.manual_seed(0)
    model = create_model("small-cnn", 4, input_size=16)
    x, y = _data(16, 16)
    ours = ModeObjective(cfg, model, _threat()).adversarial_examples(Batch.of(x, y, torch.Generator().manual_seed(5)))
    model.eval()
    ref = reference_madry(attack_view(model), x, y, EPS, ALPHA, 3, torch.Generator().manual_seed(5))
    assert torch.equal(ours, ref)


def _threat():
    from robust_transfer.attacks import ThreatModel

    return ThreatModel(8.0, 2.0)
