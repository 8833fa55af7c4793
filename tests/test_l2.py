"""Issue 25: the ℓ2 threat model — PGD-ℓ2 against a hand-written loop, every perturbation inside the ℓ2 ball,
bad input in one line, ℓ2 numbers kept apart from ℓ∞ ones, and the reference AutoAttack under ℓ2.

Models are tiny and trained here (tests/test_attacks.py's helpers); the end-to-end CLI test and the
AutoAttack agreement test are marked slow.
"""
from __future__ import annotations

import os

import mlflow
import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient

from robust_transfer.attacks import ThreatModel, pgd_attack, pgd_train
from robust_transfer.attacks.common import per_example_noise, project_guard
from robust_transfer.attacks.fold import attack_view
from robust_transfer.attacks.pgd import l2_ball_noise
from robust_transfer.cli import main
from robust_transfer.config import EvaluateConfig, FinetuneAdvConfig, LwfConfig, TrainConfig, TransferConfig
from robust_transfer.errors import ConfigError
from robust_transfer.evaluation import evaluate_tensors
from support.models import TinyCNN, train_tiny
from support.synthetic import synthetic

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EPS, ALPHA, STEPS = 0.5, 0.125, 5


def _norms(v):
    return v.flatten(1).norm(dim=1)


def reference_madry_l2(f, x, y, eps, alpha, steps, generator):
    """Written from Madry et al. (2018) for ℓ2, independently of the library: a start uniform in the ℓ2 ball
    (Gaussian direction, radius ε·u^(1/d)), k steps x ← clip_[0,1](x0 + rescale_ε(x + α·∇/‖∇‖₂ − x0)),
    the last iterate."""
    n, d = x.shape[0], x[0].numel()
    shape = (n,) + (1,) * (x.dim() - 1)
    g = torch.randn(x.shape, generator=generator)
    u = torch.rand(n, generator=generator)
    start = (g / _norms(g).clamp(min=1e-12).view(shape)) * (u.pow(1.0 / d) * eps).view(shape)
    x_adv = torch.clamp(x + start, 0, 1)
    for _ in range(steps):
        x_adv = x_adv.clone().requires_grad_(True)
        loss = F.cross_entropy(f(x_adv), y, reduction="sum")
        grad, = torch.autograd.grad(loss, x_adv)
        x_adv = torch.add(x_adv.detach(), grad / _norms(grad).clamp(min=1e-12).view(shape), alpha=alpha)
        delta = x_adv - x
        delta = delta * torch.clamp(eps / _norms(delta).clamp(min=1e-12), max=1.0).view(shape)
        x_adv = torch.clamp(x + delta, 0, 1)
    return x_adv


def _data(n=32, seed=0):
    return synthetic(n, seed)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = TinyCNN()
    x, _ = _data(64, 5)
    with torch.no_grad():            # non-trivial BatchNorm statistics
        m.train()
        m(x * 0.7 + 0.1)
    return m.eval()


def test_pgd_l2_training_steps_are_bit_for_bit_the_reference_loop(model):
    x, y = _data()
    model.train()                    # as during training: the attack switches to eval mode and back
    ours = pgd_train(model, x, y, eps=EPS, alpha=ALPHA, steps=STEPS, generator=torch.Generator().manual_seed(3),
                     norm="l2")
    assert all(m.training for m in model.modules())
    model.eval()
    ref = reference_madry_l2(attack_view(model), x, y, EPS, ALPHA, STEPS, torch.Generator().manual_seed(3))
    assert torch.equal(ours, ref)
    assert (_norms(ours - x) <= EPS + 1e-6).all() and ours.min() >= 0 and ours.max() <= 1
    assert (_norms(ours - x) > 0.9 * EPS).float().mean() > 0.5        # the steps go out to the sphere


@pytest.mark.parametrize("loss, restarts, early_exit", [("ce", 1, False), ("ce", 2, True), ("cw", 1, True)])
def test_every_l2_perturbation_is_inside_the_ball(model, loss, restarts, early_exit):
    x, y = _data(48, 2)
    for eps in (0.05, 0.5, 3.0):
        out = pgd_attack(model, x, y, eps=eps, alpha=eps / 4, steps=6, loss=loss, restarts=restarts,
                         early_exit=early_exit, generator=torch.Generator().manual_seed(1), norm="l2")
        norms = _norms(out.x_adv - x)
        assert (norms <= eps + 1e-6).all(), (eps, norms.max().item())
        assert out.x_adv.min() >= 0 and out.x_adv.max() <= 1
        # the engine's per-example starts and the guard every attack's output goes through
        start = per_example_noise(7, len(x), torch.arange(len(x)), eps, x.shape[1:], "l2")(0, torch.arange(len(x)))
        assert (_norms(start) <= eps + 1e-6).all() and not torch.equal(start, start.roll(1, 0))
        far = x + torch.randn(x.shape)
        assert (_norms(project_guard(x, far, eps, "l2") - x) <= eps + 1e-6).all()
    ball = l2_ball_noise((4000, 2), 1.0, torch.Generator().manual_seed(0))
    assert _norms(ball).max() <= 1 + 1e-6 and 0.4 < (_norms(ball) < 0.5 ** 0.5).float().mean() < 0.6   # uniform


def test_threat_scales_convert_in_one_place():
    l2 = ThreatModel(0.5, norm="l2")
    assert (l2.eps, l2.alpha, l2.suffix) == (0.5, 0.125, "_l2")
    assert ThreatModel(norm="l2").epsilon == 0.5 and ThreatModel(3.0, 0.5, "l2").eps == 3.0
    linf = ThreatModel(8.0)
    assert (linf.eps, linf.alpha, linf.suffix) == (8 / 255, 2 / 255, "")
    assert ThreatModel.from_dict({"norm": "l2", "epsilon": 3, "as_given": True}) == ThreatModel(3.0, 0.75, "l2")
    cfg = TrainConfig(norm="l2", mode="pgd")
    assert (cfg.epsilon, cfg.step_size, cfg.eval_norm, cfg.eval_epsilon, cfg.eval_step_size) == (0.5, 0.125, "l2",
                                                                                                 0.5, 0.125)
    assert (TrainConfig().epsilon, TrainConfig().step_size, TrainConfig().eval_norm) == (8.0, 2.0, "linf")
    assert (FinetuneAdvConfig(source_model="x").epsilon, FinetuneAdvConfig(source_model="x").step_size) == (5.0, 3.0)
    t = TransferConfig(source_model="x")        # the source's recorded norm, known once it is loaded
    assert t.eval_norm is None
    t.resolve_source_eval_threat("l2")
    assert (t.eval_norm, t.eval_epsilon, t.eval_step_size) == ("l2", 0.5, 0.125)


BAD = [
    (lambda: TrainConfig(norm="l3"), "norm='l3'"),
    (lambda: TrainConfig(norm="l2", epsilon=0.0), "epsilon=0.0"),
    (lambda: TrainConfig(norm="l2", epsilon=-0.5), "epsilon=-0.5"),
    (lambda: TrainConfig(norm="l2", mode="free"), "mode=free"),
    (lambda: TrainConfig(norm="l2", mode="fgsm-rs"), "mode=fgsm-rs"),
    (lambda: TrainConfig(eval_norm="l3"), "norm='l3'"),
    (lambda: FinetuneAdvConfig(source_model="x", norm="l2", epsilon=0.0), "epsilon=0.0"),
    (lambda: LwfConfig(source_model="x", eval_norm="l2", eval_epsilon=-1.0), "eval_epsilon=-1.0"),
    (lambda: EvaluateConfig(model="x", norm="l3"), "norm='l3'"),
    (lambda: EvaluateConfig(model="x", norm="l2", epsilon=0.0), "epsilon=0.0"),
    (lambda: EvaluateConfig(model="x", norm="l2", attacks="fgsm"), "attack fgsm"),
    (lambda: EvaluateConfig(model="x", norm="l2", suite="full"), "attack deepfool"),
    (lambda: ThreatModel(0.5, norm="l3"), "norm='l3'"),
]


@pytest.mark.parametrize("make, needle", BAD)
def test_bad_threat_input_is_one_line(make, needle):
    with pytest.raises(ConfigError) as e:
        make()
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_bad_norm_on_the_command_line_exits_2(workdir, tiny_folder, capsys):
    assert main(["train", "--dataset", f"imagefolder:{tiny_folder}", "--norm", "l2", "--mode", "free"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any("mode=free" in line and "l-inf" in line for line in err)


def test_l2_evaluation_names_its_numbers_and_keeps_clean_acc(model):
    x, y = _data(40, 3)
    kw = dict(suite="quick", attacks="pgd3,cw3", n_examples=40, batch_size=20, device="cpu", progress=False,
              resume=False)
    l2 = evaluate_tensors(model, x, y, norm="l2", epsilon=0.5, **kw).result
    linf = evaluate_tensors(model, x, y, **kw).result
    assert set(l2.metrics) == {"clean_acc", "pgd3_acc_l2", "cw3_acc_l2", "worst_acc_l2"}
    assert set(linf.metrics) == {"clean_acc", "pgd3_acc", "cw3_acc", "worst_acc"}
    assert l2.metrics["clean_acc"] == linf.metrics["clean_acc"]
    assert l2.params["norm"] == "l2" and l2.params["epsilon"] == 0.5 and linf.params["norm"] == "linf"


# ---------------------------------------------------------------- end to end, and the reference under ℓ2
@pytest.mark.slow
def test_train_and_evaluate_under_l2_keep_both_norms_on_one_version(workdir, tiny_folder, capsys):
    assert main(["train", "--dataset", f"imagefolder:{tiny_folder}", "--norm", "l2", "--epsilon", "0.5",
                 "--mode", "pgd", "--steps", "2", "--iterations", "6", "--batch-size", "24", "--lr", "0.05",
                 "--n-examples", "9", "--eval-steps", "3", "--progress", "false", "--device", "cpu",
                 "--checkpoint-dir", "src", "--register-as", "tiny-l2"]) == 0
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    tags = client.get_model_version("tiny-l2", "1").tags
    assert tags["threat.norm"] == "l2" and tags["eval_threat.norm"] == "l2" and "metric.pgd3_acc_l2" in tags
    assert "metric.pgd3_acc" not in tags
    # the model's own threat by default (ℓ2 0.5), then ℓ∞ 8/255 on the same version: both kept
    assert main(["evaluate", "--model", "models:/tiny-l2/1", "--suite", "autoattack", "--n-examples", "9",
                 "--progress", "false", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "aa_acc_l2" in out and "ℓ2 ε=0.5" in out
    assert main(["evaluate", "--model", "models:/tiny-l2/1", "--norm", "linf", "--epsilon", "8", "--n-examples", "9",
                 "--suite", "standard", "--apgd-iters", "5", "--square-queries", "20", "--progress", "false",
                 "--device", "cpu"]) == 0                   # (quick leaves a version's tags alone)
    tags = client.get_model_version("tiny-l2", "1").tags
    assert {"metric.aa_acc_l2", "metric.pgd20_acc", "metric.pgd3_acc_l2"} <= set(tags)
    assert tags["eval_l2.norm"] == "l2" and tags["eval_l2.suite"] == "autoattack" and tags["eval.norm"] == "linf"
    assert tags["eval_l2.run_id"] != tags["eval.run_id"]
    run = client.get_run(tags["eval_l2.run_id"])
    assert run.data.params["norm"] == "l2" and float(run.data.params["epsilon"]) == 0.5
    assert float(tags["metric.aa_acc_l2"]) == pytest.approx(run.data.metrics["aa_acc_l2"], abs=1e-4)
    # transfer from the ℓ2 source: its evaluation defaults to the source's norm; finetune_adv trains under ℓ2
    common = ["--source-model", "models:/tiny-l2/1", "--iterations", "2", "--batch-size", "16", "--n-examples", "6",
              "--eval-steps", "2", "--progress", "false", "--device", "cpu"]
    for argv in (["transfer", *common], ["finetune-adv", *common, "--norm", "l2", "--epsilon", "0.5", "--steps", "1"]):
        assert main(argv) == 0, argv
        run = client.search_runs([run.info.experiment_id], f"tags.rtl.strategy = '{argv[0].replace('-', '_')}'")[0]
        assert {"clean_acc", "pgd2_acc_l2", "val_pgd10_acc_l2"} <= set(run.data.metrics), run.data.metrics
        assert "pgd2_acc" not in run.data.metrics and run.data.params["eval_norm"] == "l2"


@pytest.fixture(scope="module")
def l2_robust():
    """A tiny CNN trained with PGD-ℓ2 (Madry, ε = 0.5, 3 steps) on the synthetic 10-class data."""
    x, y = synthetic(2000, seed=0)
    torch.manual_seed(1)

    def l2_pgd(m, xb, yb, g):
        return pgd_train(m, xb, yb, eps=0.5, alpha=0.25, steps=3, generator=g, norm="l2")

    return train_tiny(TinyCNN(), x, y, epochs=3, seed=1, attack=l2_pgd)


@pytest.mark.slow
def test_suite_autoattack_under_l2_equals_croce_and_heins_autoattack_run_directly(l2_robust):
    """`suite=autoattack` with norm=l2 against pyautoattack's AutoAttack(norm='L2', version='standard') called
    directly on the same examples (all of them: AutoAttack drops the misclassified ones itself)."""
    from pyautoattack import AutoAttack

    from robust_transfer.attacks.common import seed_for
    from robust_transfer.evaluation import select_examples

    x, y = synthetic(300, seed=1)
    n, seed = 60, 3
    ours = evaluate_tensors(l2_robust, x, y, suite="autoattack", norm="l2", epsilon=0.5, n_examples=n, batch_size=n,
                            seed=seed, device="cpu", progress=False, resume=False).result
    std = evaluate_tensors(l2_robust, x, y, suite="standard", norm="l2", epsilon=0.5, n_examples=n, batch_size=n,
                           seed=seed, device="cpu", progress=False, resume=False).result
    idx = select_examples(len(x), n, seed)
    xs, ys = x[idx], y[idx]
    adversary = AutoAttack(l2_robust, norm="L2", eps=0.5, version="standard", seed=seed_for(seed, "autoattack"),
                           device="cpu")
    x_adv, _ = adversary.run_standard_evaluation(xs, ys, batch_size=n)
    with torch.no_grad():
        direct = (l2_robust(x_adv).argmax(1) == ys).float().mean().item()
    assert (_norms(x_adv - xs) <= 0.5 + 1e-5).all()
    m = ours.metrics
    print(f"\nℓ2-robust tiny CNN, n={n}, ε=0.5: clean {m['clean_acc']:.3f}  suite=autoattack aa_acc_l2 "
          f"{m['aa_acc_l2']:.3f}  AutoAttack direct {direct:.3f}  standard worst {std.metrics['worst_acc_l2']:.3f}  "
          f"pgd20 {std.metrics['pgd20_acc_l2']:.3f}")
    assert 0.1 < m["aa_acc_l2"] < m["clean_acc"]                                     # non-trivial
    assert abs(m["aa_acc_l2"] - direct) * n <= 2                                     # within 2 examples
    assert abs(std.metrics["worst_acc_l2"] - m["aa_acc_l2"]) * n <= 3                 # the substitute set agrees


def test_registry_names_and_promotion_read_the_norm_their_metrics_name():
    from robust_transfer.evaluation.diagnostics import FLAG_TAG_PREFIX, MASKING_TAG
    from robust_transfer.promotion import Policy, policy_norms
    from robust_transfer.tracking.registry import eval_tag_prefix, masking_tag

    assert (eval_tag_prefix("linf"), eval_tag_prefix("l2")) == ("eval.", "eval_l2.")
    assert masking_tag(MASKING_TAG, "linf") == MASKING_TAG == "rtl.masking_flags"
    assert masking_tag(MASKING_TAG, "l2") == "rtl.masking_flags_l2"
    assert masking_tag(FLAG_TAG_PREFIX + "pgd_steps", "l2") == "rtl.masking_l2.pgd_steps"
    assert policy_norms(Policy.parse("max pgd20_acc_l2 subject to clean_acc >= 0.5").metric_names) == ["l2"]
    assert policy_norms(Policy.parse("max (pgd20_acc + pgd20_acc_l2) / 2").metric_names) == ["l2", "linf"]
    assert policy_norms(Policy.parse("max val_clean_acc").metric_names) == ["linf"]
