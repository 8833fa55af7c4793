"""`lwf` (section 6): the Eq. 3 loss by hand, warm start, frozen BatchNorm, z0 computed once."""
import math

import pytest
import torch
import torch.nn.functional as F

from robust_transfer.config import LwfConfig
from robust_transfer.errors import ConfigError
from robust_transfer.reporting import MemoryLogger
from robust_transfer.strategies import features
from robust_transfer.strategies.lwf import feature_distance, lwf, lwf_loss
from robust_transfer.strategies.common import batchnorm_modules
from support.transfer import all_runs, mlflow_run, run_strategy, state


def cfg(src, **kw) -> LwfConfig:
    base = dict(source_model=src, iterations=6, batch_size=16, n_examples=12, eval_steps=3, progress=False,
                checkpoint_dir="ck", lr=0.05)
    return LwfConfig(**(base | kw))


Z = [[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]
Z0 = [[0.0, 0.0, 0.5], [1.0, 1.0, 1.0]]
# per example: differences (1, -2, 0) and (-1, 2, -2)
HAND = {"l2": (math.sqrt(5) + math.sqrt(9)) / 2, "l1": (3 + 5) / 2, "l2sq": (5 + 9) / 2}


@pytest.mark.parametrize("distance", sorted(HAND))
def test_lwf_loss_equals_a_hand_computation(distance):
    z, z0 = torch.tensor(Z), torch.tensor(Z0)
    logits, y = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    ce = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(1 / (1 + math.e))) / 2
    assert feature_distance(z, z0, distance).item() == pytest.approx(HAND[distance], rel=1e-6)
    loss, d = lwf_loss(logits, y, z, z0, 0.25, distance)
    assert d.item() == pytest.approx(HAND[distance], rel=1e-6)
    assert loss.item() == pytest.approx(ce + 0.25 * HAND[distance], rel=1e-6)
    assert F.cross_entropy(logits, y).item() == pytest.approx(ce, rel=1e-6)


def test_distance_has_a_finite_gradient_where_z_equals_z0():
    z = torch.tensor(Z, requires_grad=True)
    feature_distance(z, z.detach(), "l2").backward()
    assert torch.isfinite(z.grad).all()


def test_warm_start_phase_changes_only_the_head(workdir, sources, other_folder):
    from robust_transfer import load_model

    before = state(load_model(sources.src))
    res = run_strategy(lwf, cfg(sources.src, target=f"imagefolder:{other_folder}", warm_start=1.0), MemoryLogger())
    after = state(res.model)
    assert res.meta["training"]["warm_updates"] == 6 and res.meta["training"]["head"] == "new"
    body = [k for k in before if not k.startswith("head.")]
    assert body
    for k in body:
        assert torch.equal(before[k], after[k]), f"{k} changed during warm start"
    assert after["head.weight"].shape == (4, res.model.feature_dim)


def test_after_warm_start_everything_but_batchnorm_trains(workdir, sources):
    from robust_transfer import load_model

    source = load_model(sources.src)
    before = state(source)
    res = run_strategy(lwf, cfg(sources.src, warm_start=0.0, lambda_d=0.001), MemoryLogger())
    after = state(res.model)
    bn_names = {name for name, m in res.model.named_modules() if m in batchnorm_modules(res.model)}
    bn_keys = [k for k in before if k.rsplit(".", 1)[0] in bn_names]
    assert any(k.endswith("running_var") for k in bn_keys) and any(k.endswith(".weight") for k in bn_keys)
    for k in bn_keys:
        assert torch.equal(before[k], after[k]), f"BatchNorm tensor {k} changed"
    convs = [k for k in before if k.endswith(".weight") and before[k].dim() == 4]
    assert convs and all(not torch.equal(before[k], after[k]) for k in convs)
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert all(not m.training for m in batchnorm_modules(res.model))  # BN modules stayed in eval mode


def test_without_freeze_bn_the_statistics_adapt(workdir, sources):
    from robust_transfer import load_model

    before = state(load_model(sources.src))
    res = run_strategy(lwf, cfg(sources.src, warm_start=0.0, freeze_bn=False), MemoryLogger())
    after = state(res.model)
    assert not torch.equal(before["body.0.1.running_mean"], after["body.0.1.running_mean"])


def test_z0_is_computed_once_and_shared_with_transfer(workdir, sources):
    from robust_transfer.config import TransferConfig
    from robust_transfer.strategies.transfer import transfer

    n0 = features.FEATURE_COMPUTATIONS
    log = MemoryLogger()
    run_strategy(lwf, cfg(sources.src, iterations=20), log)   # 5 epochs of 4 batches
    assert features.FEATURE_COMPUTATIONS == n0 + 1
    assert len(log.history("train_loss")) == 5
    run_strategy(lwf, cfg(sources.src, lambda_d=0.1, distance="l1"), MemoryLogger())
    run_strategy(transfer, TransferConfig(source_model=sources.src, epochs=1, n_examples=6, eval_steps=1, progress=False,
                            checkpoint_dir="ck-t"), MemoryLogger())
    assert features.FEATURE_COMPUTATIONS == n0 + 1


def test_online_teacher_with_augmentation(workdir, sources):
    n0 = features.FEATURE_COMPUTATIONS
    log = MemoryLogger()
    res = run_strategy(lwf, cfg(sources.src, teacher="online", augment=True, warm_start=0.5, iterations=8), log)
    assert features.FEATURE_COMPUTATIONS == n0  # nothing stored: z0 is computed per augmented batch
    dist = log.history("train_feature_distance")
    assert dist[0] == 0.0 and dist[-1] > 0.0   # zero while only the head trains, then θ moves away
    assert res.meta["training"]["teacher"] == "online"
    with pytest.raises(ConfigError, match="teacher=online"):
        cfg(sources.src, augment=True)


def test_same_dataset_mode_keeps_the_source_head(workdir, sources):
    from robust_transfer import load_model

    res = run_strategy(lwf, cfg(sources.src, warm_start=0.0, lr=1e-9, momentum=0.0, weight_decay=0.0), MemoryLogger())
    assert res.meta["training"]["head"] == "source"
    assert torch.allclose(res.model.head.weight, load_model(sources.src).head.weight, atol=1e-6)
    assert res.meta["lineage"]["source_model"] == sources.src


@pytest.mark.slow
def test_mlflow_run_lwf_entry_point(workdir, sources):
    out = mlflow_run(workdir, "lwf", source_model=sources.src, iterations=4, n_examples=6, eval_steps=2,
                     lambda_d=0.1, distance="l1", checkpoint_dir=workdir / "ck")
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = all_runs()
    assert run.info.status == "FINISHED" and run.data.tags["rtl.strategy"] == "lwf"
    assert run.data.params["lambda_d"] == "0.1" and "train_feature_distance" in run.data.metrics
