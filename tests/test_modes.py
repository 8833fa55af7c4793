"""models/modes.py: ONE eval-mode context manager, and every place that puts a model in eval mode for a while
gives it back exactly as it was — every module's flag, not only the top one's (issue 23).

The model is in train mode with ONE BatchNorm left in eval mode by the caller (a frozen layer): a call site
that restored only the top-level flag (`model.train(was_training)`) would switch that BatchNorm back to
train mode, and its statistics would move on the next training batch.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from robust_transfer.analysis import input_gradients as analysis_input_gradients
from robust_transfer.analysis.feature_distance import extract_features
from robust_transfer.attacks import fgsm, input_gradients, pgd_attack, pgd_train
from robust_transfer.evaluation import Evaluation, MaskingWarning, evaluate_tensors
from robust_transfer.models import create_model
from robust_transfer.models.modes import eval_mode

EPS, ALPHA = 8 / 255, 2 / 255


def _mixed_model() -> tuple[nn.Module, nn.Module]:
    """small-cnn (conv-BN blocks: the BatchNorm-folded attack view is used) in train mode, one BN in eval mode."""
    torch.manual_seed(0)
    model = create_model("small-cnn", 4, input_size=16).train()
    frozen = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    frozen.eval()
    return model, frozen


def _flags(model: nn.Module) -> list[tuple[str, bool]]:
    return [(name, m.training) for name, m in model.named_modules()]


def _data(model, n=6):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 16, 16, generator=g)
    with torch.no_grad(), eval_mode(model):
        y = model(x).argmax(1)        # the model's own predictions: every example is attacked
    return x, y


def _evaluate(model, x, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskingWarning)      # an untrained model: the checks may fire
        return evaluate_tensors(model, (x * 255).round().to(torch.uint8), y, n_examples=None, batch_size=4,
                                device="cpu", progress=False, resume=False, **kw)


CALL_SITES = {
    "pgd_attack": lambda m, x, y: pgd_attack(m, x, y, eps=EPS, alpha=ALPHA, steps=2),
    "pgd_train": lambda m, x, y: pgd_train(m, x, y, eps=EPS, alpha=ALPHA, steps=2),
    "fgsm-rs": lambda m, x, y: fgsm(m, x, y, eps=EPS, random_start_alpha=ALPHA),
    "input_gradients": lambda m, x, y: input_gradients(m, x, y),
    "analysis.input_gradients": lambda m, x, y: analysis_input_gradients(m, x, y, batch_size=4, fold_bn=False),
    "extract_features": lambda m, x, y: extract_features(m, x, batch_size=4),
    # the engine, our attacks, pyautoattack's APGD, ART's DeepFool and the diagnostics (all of standard's checks)
    "evaluate_tensors": lambda m, x, y: _evaluate(m, x, y, suite="standard", attacks="pgd2,cw2,fgsm,apgd-ce,deepfool",
                                                  apgd_iters=2, deepfool_iters=2),
    # every label wrong, every example given to AutoAttack (no cascade): it runs its clean pass and checks, and
    # stops there instead of spending its 5000 Square queries on what a random model's ε-ball cannot flip
    "reference AutoAttack": lambda m, x, y: _evaluate(m, x, (y + 1) % 4, suite="autoattack", cascade=False),
}


def test_eval_mode_restores_every_flag_even_after_an_error():
    model, frozen = _mixed_model()
    before = _flags(model)
    with pytest.raises(RuntimeError, match="inside"):
        with eval_mode(model) as m:
            assert m is model and not any(mod.training for mod in model.modules())
            raise RuntimeError("inside")
    assert _flags(model) == before and not frozen.training and model.training


@pytest.mark.parametrize("site", list(CALL_SITES))
def test_every_call_site_gives_the_model_back_as_it_was(site):
    model, frozen = _mixed_model()
    before = _flags(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _data(model)
    out = CALL_SITES[site](model, x, y)
    if isinstance(out, Evaluation):                   # the evaluation did attack something
        assert sum(n for k, n in out.extra["attacked"].items() if k != "clean") > 0, out.extra["attacked"]
    assert _flags(model) == before, site
    assert not frozen.training and model.training and sum(m.training for m in model.modules()) == len(before) - 1
    for k, v in model.state_dict().items():            # eval mode throughout: no BatchNorm statistic moved
        assert torch.equal(v, state[k]), (site, k)
