"""Tiny models for attack and evaluation tests, the classic gradient-masking wrappers, and their training."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from support.synthetic import NUM_CLASSES, SIZE

EPS = 8 / 255   # the ℓ∞ budget `train_tiny` trains robust models for (CIFAR's ε = 8)


class TinyCNN(nn.Module):
    """Pixels in [0,1] → normalise inside → conv-BN-ReLU ×2 → linear (like ImageClassifier, 100× cheaper)."""

    def __init__(self, num_classes=NUM_CLASSES, size=SIZE):
        super().__init__()
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, 3, 1, 1), 0.25))
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.head = nn.Linear(32 * (size // 4) ** 2, num_classes)

    def forward(self, x):
        return self.head(self.body((x - self.mean) / self.std))


class ScaledLogits(nn.Module):
    """Gradient masking by construction: logits ×1e4 saturate the softmax, ∇ₓ CE underflows to exactly 0."""

    def __init__(self, model: nn.Module, scale: float = 1e4):
        super().__init__()
        self.model = model
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x):
        return self.model(x) * self.scale


class NoisyOutput(nn.Module):
    """A randomised model: Gaussian noise on the logits even in eval mode."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out + torch.randn_like(out)


class SaturatedSoftmax(nn.Module):
    """The other classic: a softmax output layer at low temperature outputs saturated probabilities."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.softmax(self.model(x) * 1e3, dim=1)


def train_tiny(model, x, y, *, epochs, adv_steps=0, seed=0, lr=0.05, attack=None):
    """SGD; with adv_steps > 0, Madry-style PGD adversarial training using our own `pgd` (ℓ∞, EPS); or with
    `attack(model, xb, yb, generator)`, training on what it returns (e.g. PGD-ℓ2)."""
    from robust_transfer.attacks import pgd

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 128):
            xb, yb = x[perm[i:i + 128]], y[perm[i:i + 128]]
            if attack is not None:
                xb = attack(model, xb, yb, g)
            elif adv_steps:
                xb = pgd(model, xb, yb, eps=EPS, alpha=2.5 * EPS / adv_steps, steps=adv_steps, generator=g)
            model.train()
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert torch.isfinite(loss), f"training diverged (loss {loss.item()}): every check on this model would be moot"
    return model.eval()
