"""Issue 13 §2: one meaning per metric. `<attack>_acc` = correct on the clean image AND not fooled, at the
evaluation threat; a strategy's end-of-run numbers are `rtl evaluate`'s on the same model, examples and seed."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robust_transfer.attacks import ThreatModel
from robust_transfer.config import FinetuneAdvConfig, TrainConfig, TransferConfig
from robust_transfer.data import ImageData
from robust_transfer.evaluation import evaluate, evaluate_tensors
from robust_transfer.reporting import MemoryLogger
from robust_transfer.strategies.train import train
from robust_transfer.strategies.validate import reported_metrics


class FlatMean(nn.Module):
    """Class 1 iff the mean pixel > 0.5, with a zero input gradient (PGD cannot move): an image of all 0.5
    is wrong clean (class 0, label 1) but its random start is right about half the time."""

    def forward(self, x):
        m = x.flatten(1).mean(1)
        logits = torch.stack([0.5 - m, m - 0.5], dim=1).detach()
        return logits + 0 * x.sum()


def _flat_data(n=64):
    images = torch.full((n, 3, 8, 8), 128, dtype=torch.uint8)     # 128/255 > 0.5: correct clean for label 1 ...
    images[: n // 2] = 127                                         # ... 127/255 < 0.5: wrong clean for label 1
    return images, torch.ones(n, dtype=torch.int64)


@pytest.mark.parametrize("attack", ["pgd5", "cw5"])
def test_attack_accuracy_requires_the_clean_image_to_be_right(attack):
    images, labels = _flat_data()
    model = FlatMean()
    pixels = images.float() / 255
    pixels[: len(pixels) // 2] = 0.5            # a tie: class 0 (wrong) clean, right after half the random starts
    res = evaluate_tensors(model, pixels, labels, attacks=f"clean,{attack}", n_examples=None, seed=0, epsilon=8.0,
                           step_size=2.0, cascade=False, resume=False, device="cpu", progress=False).result
    assert res.metrics["clean_acc"] == 0.5
    # before the fix, ~half of the wrong-clean examples counted as robust (their random start was right)
    assert bool((res.correct[attack] <= res.correct["clean"]).all())
    assert res.metrics[f"{attack}_acc"] <= res.metrics["clean_acc"]
    data = ImageData(images, labels, ("zero", "one"), "flat", "test")
    end = reported_metrics(model, data, ThreatModel(8.0, 2.0), eval_steps=5, n_examples=64, seed=0, device="cpu",
                           progress=False).metrics
    assert end["pgd5_acc"] <= end["clean_acc"] == 0.5


def test_train_end_numbers_equal_rtl_evaluate(workdir, tiny_folder):
    cfg = TrainConfig(dataset=f"imagefolder:{tiny_folder}", arch="small-cnn", batch_size=16, lr=0.05, epochs=2,
                      n_examples=30, progress=False, device="cpu", checkpoint_dir="ck", mode="natural",
                      eval_epsilon=1.0, eval_step_size=0.25)     # a small threat: PGD-20 leaves some standing
    res = train(cfg, MemoryLogger())
    assert 0 < res.metrics["pgd20_acc"] <= res.metrics["clean_acc"]
    ev = evaluate("ck", attacks="clean,pgd20", epsilon=1.0, step_size=0.25, n_examples=30, seed=0, device="cpu",
                  progress=False)
    assert {k: ev.result.metrics[k] for k in ("clean_acc", "pgd20_acc")} == \
        {k: res.metrics[k] for k in ("clean_acc", "pgd20_acc")}
    assert res.meta["evaluation"]["indices_sha256"] == ev.result.indices_sha256


def test_finetune_adv_reports_at_the_evaluation_threat(workdir, sources, other_folder):
    """Trained at ε=5/step 3 (its training threat, kept as its own params), reported at ε=8 like every other row."""
    from robust_transfer.strategies.finetune_adv import finetune_adv

    cfg = FinetuneAdvConfig(source_model=sources.src, target=f"imagefolder:{other_folder}", iterations=2, steps=1,
                            batch_size=16, n_examples=8, eval_steps=2, progress=False, checkpoint_dir="ck")
    assert (cfg.epsilon, cfg.step_size, cfg.eval_epsilon, cfg.eval_step_size) == (5.0, 3.0, 8.0, 2.0)
    assert {"epsilon", "step_size", "eval_epsilon", "eval_step_size"} <= set(cfg.to_params())
    res = run_strategy(finetune_adv, cfg)
    assert res.meta["threat_model"]["epsilon"] == 5.0 and res.meta["eval_threat"]["epsilon"] == 8.0
    at8 = evaluate("ck", attacks="clean,pgd2", n_examples=8, seed=0, device="cpu", progress=False)
    assert at8.result.metrics["pgd2_acc"] == res.metrics["pgd2_acc"]
    assert at8.result.metrics["clean_acc"] == res.metrics["clean_acc"]


def test_evaluation_threat_is_separate_and_defaults_to_8_and_2():
    for cls, kw in ((TrainConfig, {}), (TransferConfig, {"source_model": "x"}), (FinetuneAdvConfig, {"source_model": "x"})):
        c = cls(**kw)
        if c.eval_norm is None:        # a source-based strategy: the source's recorded norm (none recorded: ℓ∞)
            c.resolve_source_eval_threat(None)
        assert (c.eval_norm, c.eval_epsilon, c.eval_step_size) == ("linf", 8.0, 2.0)
    assert not hasattr(TransferConfig(source_model="x"), "epsilon")   # transfer trains on natural examples only


from support.transfer import run_strategy  # noqa: E402
