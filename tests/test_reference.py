"""Issue 15: the reference AutoAttack (pyautoattack), the cascade, one attack grammar, registry aa_acc.

Models are tiny and trained here (tests/support/, the conftest's `data`, `natural` and `robust`). The agreement
test runs Croce & Hein's AutoAttack (5000 Square queries on every robust example) and is marked slow.
"""
from __future__ import annotations

import os
import warnings

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from robust_transfer.attacks import AttackSpec, parse_attack, parse_attack_spec, parse_attacks
from robust_transfer.cli import main
from robust_transfer.errors import ConfigError
from robust_transfer.evaluation import MASKING_TAG, MaskingWarning, evaluate_tensors, suite_attacks
from robust_transfer.evaluation.reference import LABEL
from support.models import SaturatedSoftmax, ScaledLogits
from support.synthetic import as_images

FAST = dict(apgd_iters=10, apgd_targets=2, square_queries=150, deepfool_iters=10)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- one grammar
def test_one_grammar_for_attack_names():
    assert parse_attack_spec("autoattack") == AttackSpec("autoattack", "autoattack")
    assert parse_attack_spec("autoattack").metric == "aa_acc"
    assert parse_attack_spec("pgd100r5").loss == "ce" and parse_attack_spec("cw20").loss == "cw-margin"
    assert parse_attack_spec("apgd-ce").implementation.startswith("pyautoattack ")
    assert parse_attack_spec("apgd-ce@pyautoattack") == parse_attack_spec("apgd-ce")
    art = parse_attack_spec("square@art")
    assert art.implementation.startswith("art ") and art.kind == "square" and art.metric == "square_art_acc"
    assert parse_attack_spec("deepfool").implementation.startswith("art ")
    with pytest.raises(ConfigError, match="apgd-ce@art"):
        parse_attack_spec("pgd20@art")
    assert parse_attack_spec("autoattack").implementation.startswith("pyautoattack ")
    assert parse_attack_spec("pgd20").implementation == "robust_transfer"
    assert [s.name for s in parse_attacks("square, pgd20,autoattack")] == ["clean", "square", "pgd20", "autoattack"]
    assert parse_attack("pgd20") == ("pgd", 20)             # the short form training runs use: the same parser
    with pytest.raises(ConfigError, match="spelled autoattack"):
        parse_attack_spec("aa")
    with pytest.raises(ConfigError, match="pgd<steps>"):
        parse_attack("apgd-ce")                             # training-time evaluation: our attacks only
    assert suite_attacks("autoattack") == ("clean", "autoattack")


# ---------------------------------------------------------------- the cascade
def test_cascade_keeps_the_worst_case_and_attacks_fewer_examples(robust, data, tmp_path):
    _, (x, y) = data
    kw = dict(suite="quick", attacks="pgd5,cw5,fgsm,pgd20r2", n_examples=200, batch_size=64, device="cpu",
              progress=False)
    alone = evaluate_tensors(robust, as_images(x), y, cascade=False, resume=False, **kw)
    cascade = evaluate_tensors(robust, as_images(x), y, cascade=True, store_root=tmp_path, **kw)
    a, c = alone.result.correct, cascade.result.correct
    print("\nalone:", alone.result.metrics, "\ncascade:", cascade.result.metrics, "\nattacked:", cascade.extra["attacked"])
    assert torch.equal(torch.stack(list(a.values())).all(0), torch.stack(list(c.values())).all(0))
    assert alone.result.metrics["worst_acc"] == cascade.result.metrics["worst_acc"]
    # Per example, our attacks give the same answer whichever examples share the batch: the cascade
    # number of each attack is exactly "correct under it and under every earlier one".
    prefix = torch.ones_like(a["clean"])
    for name in a:
        prefix &= a[name]
        assert torch.equal(c[name], prefix), name
    assert 0.1 < cascade.result.metrics["worst_acc"] < cascade.result.metrics["pgd5_acc"]   # non-trivial
    att = cascade.extra["attacked"]
    assert att["cw5"] < alone.extra["attacked"]["cw5"] and att["pgd20r2"] <= att["fgsm"] <= att["cw5"]
    assert cascade.result.params["cascade"] is True and alone.result.params["cascade"] is False
    # Resumed from the store (the cascade keys include which examples each attack saw): the same answers.
    again = evaluate_tensors(robust, as_images(x), y, cascade=True, store_root=tmp_path, **kw)
    assert all(n == 4 for k, n in again.extra["resumed_batches"].items()), again.extra["resumed_batches"]
    assert all(torch.equal(again.result.correct[k], c[k]) for k in c)


def test_cascade_changes_nothing_per_example_for_apgd_and_square_too(robust, data):
    """pyautoattack's APGD-CE, APGD-T and Square as the engine runs them draw each example's random start
    from its position in its batch, and Square's proposals per iteration whatever the batch: which other
    examples share a call (the cascade's survivors, or all) changes nothing per example."""
    _, (x, y) = data
    kw = dict(suite="standard", attacks="pgd3,apgd-ce,apgd-t,square", n_examples=160, batch_size=80, device="cpu",
              progress=False, resume=False, diagnostics=False, apgd_iters=8, apgd_targets=2, square_queries=60)
    alone = evaluate_tensors(robust, as_images(x), y, cascade=False, **kw)
    cascade = evaluate_tensors(robust, as_images(x), y, cascade=True, **kw)
    a, c = alone.result.correct, cascade.result.correct
    print("\nalone:", alone.result.metrics, "\ncascade:", cascade.result.metrics, "\nattacked:", cascade.extra["attacked"])
    prefix = torch.ones_like(a["clean"])
    for name in a:
        prefix &= a[name]
        assert torch.equal(c[name], prefix), name
    assert alone.result.metrics["standard_worst_acc"] == cascade.result.metrics["standard_worst_acc"]
    assert cascade.extra["attacked"]["square"] < alone.extra["attacked"]["square"]
    assert 0.1 < cascade.result.metrics["standard_worst_acc"] < cascade.result.metrics["pgd3_acc"]       # non-trivial
    assert all(s["implementation"].startswith("pyautoattack") for s in cascade.result.params["specs"][2:])


def test_art_implementations_stay_available_by_name(robust, data):
    _, (x, y) = data
    ev = evaluate_tensors(robust, as_images(x), y, suite="standard", attacks="pgd3,apgd-t@art,square@art", n_examples=32,
                          batch_size=32, device="cpu", progress=False, resume=False, diagnostics=False,
                          apgd_iters=4, apgd_targets=1, square_queries=20)
    m, specs = ev.result.metrics, ev.result.params["specs"]
    assert {"apgd_t_art_acc", "square_art_acc"} <= set(m)
    assert [s["implementation"].split()[0] for s in specs] == ["robust_transfer", "robust_transfer", "art", "art"]
    assert m["apgd_t_art_acc"] <= m["pgd3_acc"] and m["standard_worst_acc"] == m["square_art_acc"]   # a cascade: non-increasing


def test_cascade_diagnostics_still_see_a_masked_model(natural, data):
    _, (x, y) = data
    with pytest.warns(MaskingWarning):
        ev = evaluate_tensors(ScaledLogits(natural), as_images(x), y, suite="standard", n_examples=64, batch_size=64,
                              device="cpu", progress=False, resume=False, **FAST)
    flags = ev.diagnostics.flags
    print("\ncascade masked:", {k: round(v, 3) for k, v in ev.result.metrics.items()}, sorted(flags))
    assert {"zero_gradients", "cw_below_ce", "pgd_steps"} <= set(flags)
    assert ev.result.metrics["standard_worst_acc"] <= 0.05 and ev.result.params["cascade"] is True


# ---------------------------------------------------------------- the reference AutoAttack
@pytest.mark.slow
def test_reference_autoattack_agrees_with_standard_and_neither_is_above_pgd20(robust, data):
    _, (x, y) = data
    kw = dict(n_examples=80, batch_size=80, device="cpu", progress=False, resume=False, seed=3)
    ours = evaluate_tensors(robust, as_images(x), y, suite="standard", **kw)
    ref = evaluate_tensors(robust, as_images(x), y, suite="autoattack", **kw)
    m, r = ours.result.metrics, ref.result.metrics
    print(f"\nrobust tiny CNN, n=80: clean {m['clean_acc']:.3f} pgd20 {m['pgd20_acc']:.3f} standard worst {m['standard_worst_acc']:.3f} "
          f"reference aa {r['aa_acc']:.3f} ({ref.result.params['aa_impl']}); sub-attacks "
          f"{ {k: v for k, v in r.items() if k.startswith('aa_')} }; seconds {ref.extra['attack_seconds']}")
    assert ours.result.indices_sha256 == ref.result.indices_sha256
    assert r["clean_acc"] == m["clean_acc"] and 0.15 < r["aa_acc"] < r["clean_acc"] - 0.1     # non-trivial
    assert abs(m["standard_worst_acc"] - r["aa_acc"]) <= 0.02 and "aa_acc" not in m
    assert m["standard_worst_acc"] <= m["pgd20_acc"] and r["aa_acc"] <= m["pgd20_acc"]
    # The sub-attacks' cascade numbers fall along the cascade and end at aa_acc.
    subs = [r[k] for k in ("aa_apgd_ce_acc", "aa_apgd_t_acc", "aa_fab_t_acc", "aa_square_acc")]
    assert subs == sorted(subs, reverse=True) and subs[-1] == r["aa_acc"]
    assert ref.result.params["aa_impl"].startswith(LABEL) and ref.masking_flags == []


@pytest.mark.slow
def test_autoattack_checks_become_flags_and_its_state_file_resumes(natural, data, tmp_path):
    _, (x, y) = data
    kw = dict(suite="autoattack", n_examples=8, batch_size=8, device="cpu", progress=False, store_root=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskingWarning)
        first = evaluate_tensors(SaturatedSoftmax(natural), as_images(x), y, **kw)
        again = evaluate_tensors(SaturatedSoftmax(natural), as_images(x), y, **kw)
    flags = first.diagnostics.flags
    print("\nsaturated softmax, reference:", first.result.metrics, sorted(flags))
    assert "output_probabilities" in flags and flags["output_probabilities"].startswith("AutoAttack check: ")
    assert list(tmp_path.rglob("autoattack-*.state.json"))
    # Every sub-attack that ran finished before (AutoAttack stops early once nothing is left standing).
    assert again.extra["resumed_batches"]["autoattack"] >= 1
    assert torch.equal(again.result.correct["autoattack"], first.result.correct["autoattack"])
    assert again.extra["attack_seconds"]["autoattack"] < first.extra["attack_seconds"]["autoattack"]


# ---------------------------------------------------------------- registry
@pytest.mark.slow
def test_autoattack_on_a_registered_model_tags_aa_acc_and_its_implementation(workdir, tiny_folder, capsys):
    assert main(["train", "--dataset", f"imagefolder:{tiny_folder}", "--iterations", "30", "--batch-size", "24",
                 "--lr", "0.05", "--n-examples", "6", "--progress", "false", "--device", "cpu",
                 "--checkpoint-dir", "src", "--register-as", "tiny"]) == 0
    assert main(["evaluate", "--model", "models:/tiny/1", "--suite", "autoattack", "--n-examples", "6",
                 "--progress", "false", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert "aa_acc" in out.out
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    tags = client.get_model_version("tiny", "1").tags
    run = client.get_run(tags["eval.run_id"])
    assert float(tags["metric.aa_acc"]) == pytest.approx(run.data.metrics["aa_acc"], abs=1e-4)
    assert tags["eval.suite"] == "autoattack" and tags["eval.split"] == "test" and tags["eval.per_attack"] == "cascade"
    # 3 classes: AutoAttack standard is not possible as published; the tags say what ran instead.
    assert "pyautoattack" in tags["eval.aa_impl"] and "adapted" in tags["eval.aa_impl"]
    assert run.data.tags["rtl.aa_impl"] == tags["eval.aa_impl"]
    assert "n_classes" in tags[MASKING_TAG].split(",")
