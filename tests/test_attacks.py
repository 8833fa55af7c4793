"""attacks/: threat model, PGD/FGSM invariants, analytic optimum, early exit, per-example evaluation, ART oracle.

Everything runs on tiny synthetic tensors and tiny models (tests/support/; the `data`, `natural` and `robust`
fixtures are in tests/conftest.py; no dataset needed).
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_transfer.attacks import (AttackOutput, ThreatModel, cw_margin_loss, fgsm, input_gradients, parse_attack,
                                     pgd, pgd_attack)
from robust_transfer.errors import ConfigError, DataError
from robust_transfer.evaluation import EvalResult, evaluate_tensors, select_examples
from support.models import EPS, TinyCNN
from support.synthetic import NUM_CLASSES, SIZE

ALPHA = 2 / 255


# ---------------------------------------------------------------- models only these tests need
class Linear2(nn.Module):
    """logits = W x + b on flattened pixels: the optimal ℓ∞ attack is known in closed form."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)
        self.b = nn.Parameter(b)

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.b


class CountingWrapper(nn.Module):
    """Counts the images pushed through the wrapped model (the cost of an attack)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.images = 0

    def forward(self, x):
        self.images += x.shape[0]
        return self.model(x)


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def small_batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, SIZE, SIZE, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)


# ---------------------------------------------------------------- threat model
def test_threat_model_defaults_convert_once():
    t = ThreatModel()
    assert (t.epsilon, t.step_size, t.norm) == (8.0, 2.0, "linf")
    assert t.eps == 8 / 255 and t.alpha == 2 / 255
    assert ThreatModel(epsilon=5).eps == 5 / 255
    assert t.to_dict() == {"epsilon": 8.0, "step_size": 2.0, "norm": "linf"}


@pytest.mark.parametrize("kwargs, needle", [
    ({"epsilon": 0}, "epsilon=0"), ({"epsilon": -1}, "epsilon=-1"), ({"epsilon": 256}, "epsilon=256"),
    ({"step_size": 0}, "step_size=0"), ({"step_size": -2.0}, "step_size=-2.0"), ({"step_size": 300}, "step_size=300"),
    ({"epsilon": "8"}, "epsilon='8'"), ({"norm": "l3"}, "norm='l3'"),
])
def test_threat_model_rejects_bad_values(kwargs, needle):
    with pytest.raises(ConfigError) as e:
        ThreatModel(**kwargs)
    assert needle in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- invariants of pgd / fgsm
ATTACK_CASES = [
    # the case's values bound as defaults: a bare closure sees the comprehension's last values in every case
    pytest.param(lambda m, x, y, g, loss=loss, rs=rs, r=r, ee=ee: pgd(m, x, y, eps=EPS, alpha=ALPHA, steps=5, loss=loss,
                                                                        random_start=rs, restarts=r, early_exit=ee,
                                                                        generator=g),
                 id=f"pgd-{loss}-rs{int(rs)}-r{r}-ee{int(ee)}")
    for loss in ("ce", "cw") for rs in (True, False) for r in (1, 2) for ee in (False, True)
] + [
    pytest.param(lambda m, x, y, g: fgsm(m, x, y, eps=EPS, generator=g), id="fgsm"),
    pytest.param(lambda m, x, y, g: fgsm(m, x, y, eps=EPS, random_start_alpha=1.25 * EPS, generator=g), id="fgsm-rs"),
]


@pytest.mark.parametrize("attack", ATTACK_CASES)
def test_attack_stays_in_ball_and_box_and_leaves_model_alone(attack):
    torch.manual_seed(0)
    model = TinyCNN().train()                                 # train mode: BN would update if misused
    x, y = small_batch()
    x[:, 0, :4] = 0.0                                         # pixels on the box edges: clipping matters
    x[:, 1, :4] = 1.0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_adv = attack(model, x, y, torch.Generator().manual_seed(0))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():                  # BN running stats and counters unchanged
        assert torch.equal(v, before[k]), k


def test_attack_restores_mixed_train_eval_flags():
    # A frozen feature extractor in eval mode under a training head: the mix must survive an attack.
    model = TinyCNN().train()
    model.body.eval()
    x, y = small_batch(4)
    pgd(model, x, y, eps=EPS, alpha=ALPHA, steps=2)
    input_gradients(model, x, y)
    assert model.training and model.head.training
    assert not any(m.training for m in model.body.modules())


def test_input_gradients_match_autograd_per_example():
    torch.manual_seed(0)
    model = TinyCNN().train()
    x, y = small_batch(6)
    grad = input_gradients(model, x, y)
    assert model.training and all(p.grad is None for p in model.parameters())
    model.eval()
    x1 = x[2:3].clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.cross_entropy(model(x1), y[2:3]), x1)   # one example, eval mode
    torch.testing.assert_close(grad[2:3], expected, rtol=1e-4, atol=1e-8)


def test_bad_attack_arguments_raise_config_error():
    model, (x, y) = TinyCNN(), small_batch(2)
    with pytest.raises(ConfigError, match="loss='l2'"):
        pgd(model, x, y, eps=EPS, alpha=ALPHA, steps=1, loss="l2")
    with pytest.raises(ConfigError, match="eps=8"):
        pgd(model, x, y, eps=8, alpha=ALPHA, steps=1)           # 0–255 scale passed where [0,1] is due
    with pytest.raises(ConfigError, match="restarts=0"):
        pgd(model, x, y, eps=EPS, alpha=ALPHA, steps=1, restarts=0)


# ---------------------------------------------------------------- analytic optimum on a linear model
@pytest.mark.parametrize("loss", ["ce", "cw"])
@pytest.mark.parametrize("random_start", [True, False])
@pytest.mark.parametrize("early_exit", [False, True])
def test_pgd_finds_the_analytic_optimum_of_a_linear_model(loss, random_start, early_exit):
    """Two classes, logits = W x + b, x = 0.5 everywhere (mid-box, so the ball is not clipped).

    CE and the CW margin both grow with (w_other − w_y)·δ, so the optimal ℓ∞ perturbation is
    δ* = −ε·sign(w_y − w_other). The bias keeps the true class ahead by 3 logits even at δ*, so
    PGD returns its highest-loss iterate (not an earlier fooling one) and CE stays well-conditioned.
    """
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 48, generator=g)
    x = torch.full((4, 3, 4, 4), 0.5)
    for label in (0, 1):
        diff = w[label] - w[1 - label]
        gap = -0.5 * diff.sum() + EPS * diff.abs().sum() + 3.0    # b_y − b_other
        b = torch.zeros(2)
        b[label] = gap
        model = Linear2(w, b)
        y = torch.full((4,), label)
        delta_star = (-EPS * torch.sign(diff)).view(1, 3, 4, 4).expand_as(x)
        out = pgd_attack(model, x, y, eps=EPS, alpha=ALPHA, steps=20, loss=loss,
                         random_start=random_start, early_exit=early_exit, generator=g)
        assert not out.fooled.any()
        torch.testing.assert_close(out.x_adv - x, delta_star, rtol=0, atol=1e-6)
        # One FGSM step from x is already optimal for a linear model.
        torch.testing.assert_close(fgsm(model, x, y, eps=EPS) - x, delta_star, rtol=0, atol=1e-6)


def test_pgd_returns_the_fooling_iterate():
    # Small margin: the attack fools every example; x_adv must be an input that is misclassified.
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 48, generator=g)
    model = Linear2(w, torch.zeros(2))
    x = torch.rand(32, 3, 4, 4, generator=g) * 0.5 + 0.25
    y = model(x).argmax(1)                                    # clean accuracy 100% by construction
    for early_exit in (False, True):
        out = pgd_attack(model, x, y, eps=EPS, alpha=ALPHA, steps=20, early_exit=early_exit, generator=g)
        wrong = model(out.x_adv).argmax(1) != y
        assert torch.equal(wrong, out.fooled)


# ---------------------------------------------------------------- cw margin
def test_cw_margin_loss_hand_computed():
    logits = torch.tensor([[2.0, 1.0, 0.5], [0.0, 3.0, -1.0], [1.0, 1.0, 4.0], [-2.0, -5.0, -3.0]])
    y = torch.tensor([0, 0, 2, 1])
    # max_{j≠y} z_j − z_y:  1−2, 3−0, 1−4, −2−(−5)
    torch.testing.assert_close(cw_margin_loss(logits, y), torch.tensor([-1.0, 3.0, -3.0, 3.0]))
    assert torch.equal(cw_margin_loss(logits, y) > 0, logits.argmax(1) != y)


# ---------------------------------------------------------------- early exit
def test_early_exit_never_raises_accuracy_and_costs_less(natural, data):
    _, (x, y) = data
    x, y = x[:128], y[:128]
    results = {}
    for early_exit in (False, True):
        counted = CountingWrapper(natural)
        out = pgd_attack(counted, x, y, eps=EPS, alpha=ALPHA, steps=10, early_exit=early_exit,
                         generator=torch.Generator().manual_seed(3))
        assert isinstance(out, AttackOutput) and out.forward_images == counted.images
        results[early_exit] = (1 - out.fooled.float().mean().item(), counted.images, out.fooled)
    (acc_full, cost_full, fooled_full), (acc_ee, cost_ee, fooled_ee) = results[False], results[True]
    assert acc_ee <= acc_full
    assert acc_full < 0.2                                    # the model breaks: early exit has work to skip
    assert cost_full == 11 * 128                             # 10 forward+backward + 1 final forward, all examples
    assert cost_ee < 0.5 * cost_full
    assert (fooled_ee != fooled_full).sum() <= 1             # same randomness → (numerically) the same answer


# ---------------------------------------------------------------- attack names and subsets
@pytest.mark.parametrize("name, parsed", [
    ("clean", ("clean", 0)), ("pgd20", ("pgd", 20)), ("cw20", ("cw", 20)), ("fgsm", ("fgsm", 1)),
    ("pgd7", ("pgd", 7)), ("PGD100", ("pgd", 100)), (" cw5 ", ("cw", 5)),
])
def test_parse_attack_good(name, parsed):
    assert parse_attack(name) == parsed


@pytest.mark.parametrize("name", ["pgd", "pgd0", "cw", "pgd-20", "fgsm2", "aa", "", "pgd20x", 20, None])
def test_parse_attack_bad(name):
    with pytest.raises(ConfigError) as e:
        parse_attack(name)
    assert repr(name) in str(e.value) and "pgd<steps>" in str(e.value)


def test_select_examples_seeded_sorted_nested():
    a = select_examples(1000, 100, seed=0)
    assert torch.equal(a, select_examples(1000, 100, seed=0))
    assert not torch.equal(a, select_examples(1000, 100, seed=1))
    assert a.dtype == torch.int64 and len(a) == 100 and len(set(a.tolist())) == 100
    assert torch.equal(a, a.sort().values) and 0 <= a.min() and a.max() < 1000
    assert set(select_examples(1000, 50, seed=0).tolist()) <= set(select_examples(1000, 200, seed=0).tolist())
    assert torch.equal(select_examples(10, 10, seed=3), torch.arange(10))
    assert torch.equal(select_examples(10, None, seed=3), torch.arange(10))


@pytest.mark.parametrize("n_examples", [0, -1, 11, 2.5])
def test_select_examples_errors_name_the_split_size(n_examples):
    with pytest.raises(ConfigError) as e:
        select_examples(10, n_examples, seed=0)
    assert f"n_examples={n_examples!r}" in str(e.value) and "10 examples" in str(e.value)


# ---------------------------------------------------------------- every attack on every example (the tensor front door)
def independent(model, images, labels, **kw) -> EvalResult:
    """evaluate_tensors with every attack on every clean-correct example (no cascade) and no result store."""
    return evaluate_tensors(model, images, labels, cascade=False, resume=False, device="cpu", progress=False,
                            **kw).result


def test_per_example_metrics_worst_case_and_determinism(natural, data):
    _, (x, y) = data
    images = (x * 255).round().to(torch.uint8)                # the data module's format
    natural.train()
    kwargs = dict(attacks=("clean", "pgd5", "cw5", "fgsm"), n_examples=100, seed=7, batch_size=32)
    res = independent(natural, images, y, **kwargs)
    assert natural.training                             # flag restored
    assert isinstance(res, EvalResult)
    assert list(res.metrics) == ["clean_acc", "pgd5_acc", "cw5_acc", "fgsm_acc", "worst_acc"]
    assert list(res.correct) == ["clean", "pgd5", "cw5", "fgsm"]
    assert all(0 <= v <= 1 for v in res.metrics.values())
    assert all(res.metrics["worst_acc"] <= res.metrics[k] for k in res.metrics)
    assert res.n_examples == 100 and all(c.shape == (100,) and c.dtype == torch.bool for c in res.correct.values())
    idx = select_examples(len(y), 100, seed=7)
    assert res.indices_sha256 == hashlib.sha256(idx.numpy().astype("<i8").tobytes()).hexdigest()
    assert res.seconds > 0 and res.images_per_s > 0
    natural.eval()
    clean = natural(images[idx].float() / 255).argmax(1) == y[idx]
    assert torch.equal(res.correct["clean"], clean)
    assert res.metrics["clean_acc"] == pytest.approx(clean.float().mean().item(), abs=0)
    worst = torch.stack(list(res.correct.values())).all(0)
    assert res.metrics["worst_acc"] == pytest.approx(worst.float().mean().item(), abs=0)

    again = independent(natural, images, y, **kwargs)
    assert again.metrics == res.metrics
    assert all(torch.equal(again.correct[k], res.correct[k]) for k in res.correct)
    # Float pixels k/255 are the same images as uint8 k; one attack alone gives the same numbers.
    as_float = independent(natural, images.float() / 255, y, **{**kwargs, "attacks": ["pgd5"]})
    assert torch.equal(as_float.correct["pgd5"], res.correct["pgd5"])
    as_text = independent(natural, images, y, **{**kwargs, "attacks": "clean, PGD5,pgd5"})
    assert list(as_text.metrics) == ["clean_acc", "pgd5_acc", "worst_acc"]     # CLI-style list, deduplicated


def test_the_front_door_rejects_bad_requests(natural, data):
    _, (x, y) = data
    with pytest.raises(ConfigError, match="attack='pgdx'"):
        independent(natural, x, y, attacks=("clean", "pgdx"))
    with pytest.raises(ConfigError, match="n_examples=1000.*300 examples"):
        independent(natural, x, y)                                  # default 1000 > 300
    with pytest.raises(DataError, match=r"\[0,1\]"):
        independent(natural, x * 255, y, n_examples=10)
    with pytest.raises(DataError, match="labels"):
        independent(natural, x, y[:-1], n_examples=10)
    with pytest.raises(DataError, match="uint8"):
        independent(natural, x.to(torch.int32), y, n_examples=10)
    with pytest.raises(ConfigError, match="batch_size=0"):
        independent(natural, x, y, n_examples=10, batch_size=0)


# ---------------------------------------------------------------- the oracle: ART's PGD on the same model
def test_natural_model_is_not_robust(natural, data):
    _, (x, y) = data
    assert accuracy(natural, x, y) > 0.85
    out = pgd_attack(natural, x, y, eps=EPS, alpha=ALPHA, steps=20, early_exit=True,
                     generator=torch.Generator().manual_seed(0))
    assert 1 - out.fooled.float().mean().item() <= 0.05


def test_pgd20_agrees_with_art(robust, data):
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    _, (x, y) = data                                          # 300 held-out examples
    clean = accuracy(robust, x, y)
    ours = independent(robust, x, y, attacks=("clean", "pgd20"), n_examples=None, seed=0).metrics["pgd20_acc"]

    classifier = PyTorchClassifier(model=robust, loss=nn.CrossEntropyLoss(), input_shape=(3, SIZE, SIZE),
                                   nb_classes=NUM_CLASSES, clip_values=(0.0, 1.0))
    art_pgd = ProjectedGradientDescentPyTorch(classifier, norm=np.inf, eps=EPS, eps_step=ALPHA, max_iter=20,
                                              num_random_init=1, batch_size=300, verbose=False)
    # y must be the true labels: without it ART attacks the model's own predictions.
    x_art = art_pgd.generate(x.numpy(), y=y.numpy())
    assert np.abs(x_art - x.numpy()).max() <= EPS + 1e-6
    art = float((classifier.predict(x_art).argmax(1) == y.numpy()).mean())

    print(f"\nrobust tiny CNN: clean {clean:.3f}  PGD-20 ours {ours:.3f}  ART {art:.3f}")
    assert 0.10 < ours < 0.90 and ours < clean - 0.1          # non-trivial, so the comparison means something
    assert abs(ours - art) <= 0.02


# ---------------------------------------------------------------- speed: BatchNorm folding, fp32 attacks
def _small_cnn_with_bn_stats(seed=0):
    from robust_transfer.models import create_model

    torch.manual_seed(seed)
    model = create_model("small-cnn", 10).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model


def test_folded_view_follows_weight_changes_without_retracing():
    from robust_transfer.attacks import fold

    model = _small_cnn_with_bn_stats()
    x = torch.rand(4, 3, 32, 32)
    view = fold.attack_view(model)
    traces = fold.TRACES
    with torch.no_grad():
        model.body[0][1].running_var.mul_(2.0)      # in place (as an optimiser step or a BN update)
        model.body[0][0].weight.add_(0.1)
        assert fold.attack_view(model) is view and fold.TRACES == traces   # refreshed, not re-traced
        torch.testing.assert_close(view(x), model(x), rtol=1e-4, atol=1e-5)
        model.body[1][0] = nn.Conv2d(16, 32, 3, padding=1, bias=False)      # a replaced module: re-traced
        view2 = fold.attack_view(model)
        assert fold.TRACES == traces + 1
        torch.testing.assert_close(view2(x), model(x), rtol=1e-4, atol=1e-5)


def test_folding_leaves_the_model_alone_and_skips_hooked_models():
    from robust_transfer.attacks import fold

    model = _small_cnn_with_bn_stats()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(6, 3, 32, 32), torch.randint(0, 10, (6,))
    model.train()
    pgd_attack(model, x, y, eps=EPS, alpha=ALPHA, steps=2, generator=torch.Generator().manual_seed(0))
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    seen = []
    model.body[0].register_forward_hook(lambda m, i, o: seen.append(1))
    assert fold.attack_view(model) is model                 # hooks must fire: attacked unfolded
    pgd_attack(model, x, y, eps=EPS, alpha=ALPHA, steps=1)
    assert len(seen) == 2


def test_folded_and_unfolded_pgd_agree():
    model = _small_cnn_with_bn_stats()
    x, y = torch.rand(32, 3, 32, 32), torch.randint(0, 10, (32,))
    out = {fold: pgd_attack(model, x, y, eps=EPS, alpha=ALPHA, steps=5, fold_bn=fold,
                            generator=torch.Generator().manual_seed(1)) for fold in (True, False)}
    # the same function up to float rounding: a gradient component near 0 may flip its sign
    assert (out[True].fooled != out[False].fooled).sum() <= 1
    assert (out[True].x_adv - out[False].x_adv).abs().max() <= 2 * EPS + 1e-6


def test_attacks_run_in_fp32_inside_a_bf16_autocast_region():
    model = _small_cnn_with_bn_stats()
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    ref = pgd_attack(model, x, y, eps=EPS, alpha=ALPHA, steps=3, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):     # as a training step under precision=bf16
        out = pgd_attack(model, x, y, eps=EPS, alpha=ALPHA, steps=3, generator=torch.Generator().manual_seed(0))
        g = input_gradients(model, x, y)
    assert torch.equal(out.x_adv, ref.x_adv) and torch.equal(out.fooled, ref.fooled)
    assert g.dtype == torch.float32
    with pytest.raises(ConfigError, match="precision='fp16'"):
        pgd_attack(model, x, y, eps=EPS, alpha=ALPHA, steps=1, precision="fp16")
