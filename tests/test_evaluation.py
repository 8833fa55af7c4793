"""Strong evaluation (issue #5): suites, ART attacks, gradient-masking diagnostics, resumability, registry tags.

Models are tiny and trained here (tests/support/, the conftest's `data` and `natural`); the whole file stays well
under 3 minutes on two cores. Our PGD against ART's PGD is in test_attacks.py (not repeated).
"""
from __future__ import annotations

import json
import os
import warnings

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from robust_transfer.attacks import AttackBudget, AttackSpec, dispatch, parse_attack_spec, parse_attacks
from robust_transfer.cli import main
from robust_transfer.digests import weights_sha256
from robust_transfer.errors import ConfigError
from robust_transfer.evaluation import (FLAGS, MASKING_TAG, SUITES, MaskingWarning, evaluate_tensors, suite_attacks,
                                        suite_budget)
from robust_transfer.evaluation.store import AttackState, EvalStore
from support.models import NoisyOutput, SaturatedSoftmax, ScaledLogits
from support.synthetic import as_images
from support.transfer import all_runs

# Small budgets: enough to break a natural tiny model, cheap on CPU.
FAST = dict(apgd_iters=10, apgd_targets=2, square_queries=150, deepfool_iters=10)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- names, suites, budgets
@pytest.mark.parametrize("name, expected", [
    ("apgd-ce", AttackSpec("apgd-ce", "apgd-ce")), ("APGD_DLR", AttackSpec("apgd-dlr", "apgd-dlr")),
    ("apgd-t", AttackSpec("apgd-t", "apgd-t")),
    ("square", AttackSpec("square", "square")), ("deepfool", AttackSpec("deepfool", "deepfool")),
    ("pgd100r5", AttackSpec("pgd100r5", "pgd", 100, 5)), ("cw20", AttackSpec("cw20", "cw", 20, 1)),
    ("fgsm", AttackSpec("fgsm", "fgsm", 1)),
])
def test_attack_names(name, expected):
    spec = parse_attack_spec(name)
    assert spec == expected
    assert spec.metric == expected.name.replace("-", "_") + "_acc"


@pytest.mark.parametrize("name, needle", [("fab", "use deepfool"), ("pgd100r0", "restarts"), ("apgd", "apgd-ce"),
                                          ("pgd0", "steps"), ("", "")])
def test_bad_attack_names(name, needle):
    with pytest.raises(ConfigError) as e:
        parse_attack_spec(name)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_suites_contents_and_budgets():
    assert set(SUITES) == {"quick", "standard", "full", "autoattack"}
    assert suite_attacks("quick") == ("clean", "pgd20", "cw20")
    standard, full = suite_attacks("standard"), suite_attacks("full")
    assert set(suite_attacks("quick")) < set(standard)
    assert standard == ("clean", "pgd20", "cw20", "apgd-ce", "apgd-t", "square")   # cheapest-and-strongest first
    assert {"apgd-dlr", "deepfool", "pgd100r5"} <= set(full)
    assert suite_budget("standard").square_queries == 300 and suite_budget("standard").apgd_targets == 3
    assert suite_attacks("standard", "square, PGD7") == ("clean", "square", "pgd7")
    assert suite_budget("full").square_queries == 5000 and suite_budget("full").apgd_targets == 9
    assert suite_budget("standard", square_queries=10).square_queries == 10
    assert [s.name for s in parse_attacks("cw5,clean,cw5")] == ["clean", "cw5"]
    for bad in ({"apgd_iters": 0}, {"square_queries": 2.5}, {"apgd_targets": -1}, {"warp": 3}):
        with pytest.raises(ConfigError):
            suite_budget("standard", **bad)
    with pytest.raises(ConfigError, match="suite='ultra'"):
        suite_attacks("ultra")
    with pytest.raises(ConfigError):
        AttackBudget(apgd_restarts=0)


# ---------------------------------------------------------------- the front doors and the boundary
def test_the_keyword_api_and_the_config_run_the_same_evaluation(workdir, tiny_folder):
    """`evaluate(model, dataset, **options)` is `evaluate_config(EvaluateConfig(...))`, which ends in
    `evaluate_tensors` on the model's data: the same numbers, example by example, all three ways."""
    from robust_transfer.config import EvaluateConfig
    from robust_transfer.data import load_dataset
    from robust_transfer.evaluation import evaluate, evaluate_config
    from robust_transfer.models import create_model

    torch.manual_seed(0)
    model = create_model("small-cnn", 3, input_size=16)
    spec = f"imagefolder:{tiny_folder}"
    kw = dict(attacks="pgd3,cw3", n_examples=20, batch_size=8, seed=1, device="cpu", progress=False, resume=False)
    by_keywords = evaluate(model, spec, **kw)
    by_config = evaluate_config(EvaluateConfig(model="in memory", dataset=spec, **kw), model=model)
    test = load_dataset(spec, "test", progress=False)
    by_tensors = evaluate_tensors(model, test.images, test.labels, **kw)
    for ev in (by_config, by_tensors):
        assert ev.result.metrics == by_keywords.result.metrics
        assert ev.result.indices_sha256 == by_keywords.result.indices_sha256
        assert all(torch.equal(ev.result.correct[k], c) for k, c in by_keywords.result.correct.items())
    assert by_keywords.data.spec == spec and by_keywords.result.params["split"] == "test"
    with pytest.raises(ConfigError, match=r"unknown option\(s\) apgd_iter of evaluate; allowed: .*apgd_iters"):
        evaluate(model, spec, apgd_iter=3)
    with pytest.raises(ConfigError, match="n_examples=1000 is larger than the test split"):
        evaluate(model, spec, device="cpu", progress=False)


def test_config_checks_suites_attacks_and_budgets_without_the_evaluation_library():
    """Bad values fail when the EvaluateConfig is made (before any data or model loads), from the attacks'
    grammar and budget: the evaluation library is never imported for it."""
    import subprocess
    import sys

    code = """if True:
        import sys
        from robust_transfer.config import EvaluateConfig
        from robust_transfer.errors import ConfigError
        for bad in ({"suite": "ultra"}, {"attacks": "clean,pgdx"}, {"square_queries": 0}, {"cascade": "yes"}):
            try:
                EvaluateConfig(model="m", **bad)
            except ConfigError as e:
                print(e)
        print("loaded:", "robust_transfer.evaluation" in sys.modules)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == 5 and out[-1] == "loaded: False", out
    for line, needle in zip(out, ("suite='ultra'", "attack='pgdx'", "square_queries=0", "cascade='yes'")):
        assert needle in line, (needle, line)
    assert all(name in out[0] for name in SUITES)                 # the line names what is allowed


# ---------------------------------------------------------------- the evidence: natural and masked models
def test_natural_model_is_broken_by_every_attack_and_not_flagged(natural, data):
    _, (x, y) = data
    ev = evaluate_tensors(natural, as_images(x), y, suite="standard", n_examples=64, batch_size=64, device="cpu",
                          progress=False, resume=False, **{**FAST, "square_queries": 500})
    m = ev.result.metrics
    print("\nnatural:", {k: round(v, 3) for k, v in m.items()})
    assert m["clean_acc"] > 0.85
    attacks = [k for k in m if k.endswith("_acc") and k not in ("clean_acc", "worst_acc", "standard_worst_acc")
               and not k.startswith("diag_")]
    assert {"pgd20_acc", "cw20_acc", "apgd_ce_acc", "apgd_t_acc", "square_acc", "standard_worst_acc"} <= set(m)
    assert "aa_acc" not in m                                       # only the reference AutoAttack reports aa_acc
    for k in attacks:
        assert m[k] <= (0.06 if k == "square_acc" else 0.02), k     # ~0 (Square, a random search: nearly)
    assert m["standard_worst_acc"] == m["worst_acc"] <= min(m[k] for k in attacks)
    assert ev.diagnostics is not None and ev.diagnostics.flags == {}, ev.diagnostics.flags
    assert ev.diagnostics.tags() == {MASKING_TAG: ""}
    assert m["diag_zero_grad_frac"] == 0 and m["diag_pgd20_eps64_acc"] <= 0.05


def test_masked_model_is_flagged_and_pgd_overstates_it(natural, data):
    _, (x, y) = data
    masked = ScaledLogits(natural)
    with pytest.warns(MaskingWarning, match="gradient masking"):
        ev = evaluate_tensors(masked, as_images(x), y, suite="standard", n_examples=64, batch_size=64, device="cpu",
                              progress=False, resume=False, **FAST)
    m, flags = ev.result.metrics, ev.diagnostics.flags
    print("\nmasked:", {k: round(v, 3) for k, v in m.items()}, "\nflags:", flags)
    assert m["clean_acc"] > 0.85
    assert m["pgd20_acc"] > 0.7 and m["pgd20_acc"] - m["standard_worst_acc"] > 0.5        # PGD alone: a robust-looking model
    assert m["standard_worst_acc"] <= 0.05 and m["apgd_t_acc"] <= 0.05                      # the scale-invariant DLR sees through
    assert {"zero_gradients", "cw_below_ce", "pgd_steps"} <= set(flags)
    tags = ev.diagnostics.tags()
    assert tags[MASKING_TAG] == ",".join(f for f in FLAGS if f in flags)
    assert all(tags[f"rtl.masking.{f}"] and "\n" not in tags[f"rtl.masking.{f}"] for f in flags)
    assert "\n" not in ev.diagnostics.warning() and ev.diagnostics.warning().startswith("warning: ")


def test_randomised_model_is_flagged(natural, data):
    _, (x, y) = data
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskingWarning)
        ev = evaluate_tensors(NoisyOutput(natural), as_images(x), y, suite="standard", attacks="pgd5", n_examples=32,
                              batch_size=32, device="cpu", progress=False, resume=False)
    assert "randomised_output" in ev.diagnostics.flags
    assert "cw_below_ce" in ev.diagnostics.skipped and "pgd_steps" in ev.diagnostics.skipped
    assert list(ev.result.metrics)[:2] == ["clean_acc", "pgd5_acc"]


def test_quick_suite_runs_no_diagnostics_and_reports_no_aa(natural, data):
    _, (x, y) = data
    ev = evaluate_tensors(natural, as_images(x), y, suite="quick", n_examples=16, batch_size=16, device="cpu",
                          progress=False, resume=False)
    assert list(ev.result.metrics) == ["clean_acc", "pgd20_acc", "cw20_acc", "worst_acc"]
    assert ev.diagnostics is None and ev.masking_flags == []


# ---------------------------------------------------------------- resumable
def test_full_evaluation_resumes_after_an_interruption(natural, data, tmp_path, monkeypatch):
    _, (x, y) = data
    images = as_images(x)
    # Every attack on every example (cascade=False): the per-attack, per-batch store is what is tested here;
    # test_reference.py resumes a cascade.
    kwargs = dict(suite="full", n_examples=48, batch_size=16, device="cpu", progress=False, diagnostics=False,
                  store_root=tmp_path / "eval", apgd_iters=5, apgd_targets=1, square_queries=20, deepfool_iters=5,
                  cascade=False)
    reference = evaluate_tensors(natural, images, y, **{**kwargs, "store_root": tmp_path / "ref"})

    real = dispatch.attack_batch
    calls: list[tuple[str, int]] = []

    def interrupt_after_first_attack(model, spec, *args, **kw):
        if spec.name != "pgd20":                    # suite full: clean, pgd20, cw20, ...
            raise KeyboardInterrupt
        calls.append((spec.name, len(args[0])))
        return real(model, spec, *args, **kw)

    monkeypatch.setattr(dispatch, "attack_batch", interrupt_after_first_attack)
    with pytest.raises(KeyboardInterrupt):
        evaluate_tensors(natural, images, y, **kwargs)
    assert [c[0] for c in calls] == ["pgd20"] * 3                                # 3 batches of the first attack
    stored = sorted(p.name for p in (tmp_path / "eval").rglob("*") if p.is_file())
    assert any(n.startswith("pgd20-") and n.endswith(".safetensors") for n in stored)
    assert any(n.startswith("pgd20-") and n.endswith(".json") for n in stored)
    assert not any(n.startswith("cw20-") for n in stored)
    record = json.loads(next((tmp_path / "eval").rglob("pgd20-*.json")).read_text())
    assert record["batches_done"] == record["batches"] == 3 and record["params"]["threat"]["epsilon"] == 8.0

    # Interrupt the next attack in the middle: its first batch is kept.
    seen: list[str] = []

    def interrupt_mid_cw(model, spec, *args, **kw):
        seen.append(spec.name)
        if spec.name == "cw20" and seen.count("cw20") == 2:
            raise KeyboardInterrupt
        return real(model, spec, *args, **kw)

    monkeypatch.setattr(dispatch, "attack_batch", interrupt_mid_cw)
    with pytest.raises(KeyboardInterrupt):
        evaluate_tensors(natural, images, y, **kwargs)
    assert seen == ["cw20", "cw20"]                                             # pgd20 came from the store

    seen.clear()
    monkeypatch.setattr(dispatch, "attack_batch", lambda model, spec, *a, **kw: (seen.append(spec.name),
                                                                               real(model, spec, *a, **kw))[1])
    resumed = evaluate_tensors(natural, images, y, **kwargs)
    assert "pgd20" not in seen and seen.count("cw20") == 2                      # only the unfinished batches
    assert resumed.extra["resumed_batches"]["pgd20"] == 3 and resumed.extra["resumed_batches"]["cw20"] == 1
    assert resumed.result.metrics == reference.result.metrics
    assert all(torch.equal(resumed.result.correct[k], reference.result.correct[k]) for k in reference.result.correct)

    seen.clear()
    again = evaluate_tensors(natural, images, y, **kwargs)                       # everything stored: no attack runs
    assert seen == [] and again.result.metrics == reference.result.metrics
    evaluate_tensors(natural, images, y, **{**kwargs, "square_queries": 21, "attacks": "square"})
    assert seen and set(seen) == {"square"}                                     # a new budget is a new key


def test_store_keys_weights_and_survives_a_torn_file(natural, tmp_path):
    a, b = weights_sha256(natural), weights_sha256(ScaledLogits(natural))
    assert a != b and a == weights_sha256(natural)
    store = EvalStore(tmp_path, {"model": a})
    state = AttackState(correct=torch.tensor([True, False]), done=torch.tensor([True]))
    store.save("pgd20", {"x": 1}, state)
    loaded = store.load("pgd20", {"x": 1}, 2, 1)
    assert torch.equal(loaded.correct, state.correct) and loaded.finished
    assert store.load("pgd20", {"x": 2}, 2, 1) is None and store.load("pgd20", {"x": 1}, 3, 1) is None
    next(tmp_path.rglob("*.safetensors")).write_bytes(b"torn")
    assert store.load("pgd20", {"x": 1}, 2, 1) is None


# ---------------------------------------------------------------- the command, on registered models
def _mlflow(workdir):
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return MlflowClient()


def _register_masked(workdir, tiny_folder, name):
    """Train a tiny source, then register a copy whose logits are scaled ×1e5 (a masked model)."""
    from robust_transfer.checkpoints import load_checkpoint, save_checkpoint
    from robust_transfer.tracking import log_checkpoint_model, register_checkpoint_model, tracked_run

    assert main(["train", "--dataset", f"imagefolder:{tiny_folder}", "--iterations", "40", "--batch-size", "24",
                 "--lr", "0.05", "--n-examples", "6", "--progress", "false", "--device", "cpu",
                 "--checkpoint-dir", "src", "--register-as", name]) == 0
    model, meta = load_checkpoint(workdir / "src")
    last = [m for m in model.head.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(1e5)
        last.bias.mul_(1e5)
    save_checkpoint(workdir / "masked", model, {k: v for k, v in meta.items() if k in ("data_spec", "threat_model")})
    with tracked_run("train", {}, {}):
        uri = log_checkpoint_model(workdir / "masked")
        register_checkpoint_model(uri, f"{name}-masked", {"metric.clean_acc": "0.9", "metric.pgd20_acc": "0.9"})


EVAL = ["evaluate", "--progress", "false", "--device", "cpu", "--suite", "standard", "--n-examples", "12",
        "--apgd-iters", "5", "--apgd-targets", "1", "--square-queries", "20"]


def test_standard_on_registered_models_tags_the_version_and_promote_refuses_flags(workdir, tiny_folder, capsys):
    _register_masked(workdir, tiny_folder, "tiny")
    client = _mlflow(workdir)
    client.set_model_version_tag("tiny", "1", "rtl.masking.stale_flag", "left by an older evaluation")

    assert main([*EVAL, "--model", "models:/tiny/1"]) == 0
    assert main([*EVAL, "--model", "models:/tiny-masked@challenger"]) == 0
    out = capsys.readouterr()
    assert "apgd_ce_acc" in out.out and "square_acc" in out.out and "standard_worst_acc" in out.out
    assert " aa_acc" not in out.out
    # cascade numbers carry the mark in the CLI (and a note), the worst case does not
    assert "apgd_ce_acc †" in out.out and "standard_worst_acc †" not in out.out and "† a per-attack number" in out.out
    warning_lines = [line for line in out.err.splitlines() if line.startswith("warning: possible gradient masking")]
    assert len(warning_lines) == 1                                              # the masked model only

    runs = {r.data.tags["rtl.model"]: r for r in all_runs(
        client, "tags.`rtl.strategy` = 'evaluate'")}
    for uri, name in (("models:/tiny/1", "tiny"), ("models:/tiny-masked@challenger", "tiny-masked")):
        run = runs[uri]
        assert run.info.status == "FINISHED" and run.data.tags["rtl.suite"] == "standard"
        assert {"clean_acc", "pgd20_acc", "cw20_acc", "apgd_ce_acc", "apgd_t_acc", "square_acc",
                "worst_acc", "standard_worst_acc"} <= set(run.data.metrics)
        assert "aa_acc" not in run.data.metrics
        marked = set(run.data.tags["rtl.cascade_metrics"].split(","))      # the run's mark
        assert {"pgd20_acc", "apgd_ce_acc", "square_acc"} <= marked and not marked & {"clean_acc", "worst_acc",
                                                                                      "standard_worst_acc"}
        version = client.get_model_version(name, "1")
        assert run.data.tags["rtl.model_version"] == f"{name}/1"
        assert version.tags[MASKING_TAG] == run.data.tags[MASKING_TAG]
        assert float(version.tags["metric.apgd_ce_acc"]) == pytest.approx(run.data.metrics["apgd_ce_acc"], abs=1e-4)
        assert version.tags["eval.run_id"] == run.info.run_id and version.tags["eval.suite"] == "standard"
        assert int(version.tags["eval.timestamp"]) > 0 and version.tags["eval.n_examples"] == "12"
        flags = [f for f in version.tags[MASKING_TAG].split(",") if f]
        assert {k for k in version.tags if k.startswith("rtl.masking.")} == {f"rtl.masking.{f}" for f in flags}
    masked = client.get_model_version("tiny-masked", "1").tags
    assert "zero_gradients" in masked[MASKING_TAG].split(",")
    print("\n", {u: (r.data.tags[MASKING_TAG], {k: round(v, 3) for k, v in r.data.metrics.items()})
                 for u, r in runs.items()})

    # promote (promotion.py) refuses the flagged version unless told otherwise explicitly.
    assert main(["promote", "--name", "tiny-masked", "--policy", "max pgd20_acc"]) == 6
    assert "gradient-masking" in capsys.readouterr().err


@pytest.mark.parametrize("extra, code, needle", [
    (["--suite", "ultra"], 2, "suite='ultra'"),
    (["--suite", "standard", "--attacks", "clean,fab"], 2, "use deepfool"),
    (["--suite", "full", "--attacks", "apgd-ce,pgdx"], 2, "attack='pgdx'"),
    (["--suite", "standard", "--epsilon", "0"], 2, "epsilon=0.0"),
    (["--suite", "full", "--epsilon", "256"], 2, "epsilon=256.0"),
    (["--suite", "standard", "--square-queries", "0"], 2, "square_queries=0"),
    (["--suite", "full", "--apgd-iters", "many"], 2, "apgd_iters='many'"),
    (["--suite", "standard", "--n-examples", "1000"], 2, "n_examples=1000 is larger than the test split"),
    (["--suite", "full", "--n-examples", "1000"], 2, "n_examples=1000 is larger than the test split"),
])
def test_bad_input_is_one_clear_line(workdir, tiny_folder, capsys, extra, code, needle):
    from robust_transfer.checkpoints import save_checkpoint
    from robust_transfer.models import create_model

    save_checkpoint(workdir / "m3", create_model("small-cnn", 3), {"data_spec": f"imagefolder:{tiny_folder}"})
    assert main(["evaluate", "--model", str(workdir / "m3"), "--progress", "false", "--device", "cpu", *extra]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_saturated_softmax_model_is_flagged(natural, data):
    _, (x, y) = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskingWarning)
        ev = evaluate_tensors(SaturatedSoftmax(natural), as_images(x), y, suite="standard",
                              attacks="pgd20,cw20,pgd100,apgd-dlr,square", n_examples=32, batch_size=32,
                              device="cpu", progress=False, resume=False, **{**FAST, "square_queries": 300})
    m, flags = ev.result.metrics, ev.diagnostics.flags
    print("\nsaturated softmax:", {k: round(v, 3) for k, v in m.items()}, "\nflags:", sorted(flags))
    assert m["clean_acc"] > 0.85 and m["pgd20_acc"] > 0.7            # every gradient attack is stuck ...
    assert {"zero_gradients", "pgd_epsilon"} <= set(flags)            # ... and the diagnostics say so
    # Square's margin loss is flat on saturated probabilities too, so no attack here gives the true
    # number: the flags are what keep this model out of promotion.


def test_which_metrics_are_per_attack_numbers_that_a_cascade_marks():
    from robust_transfer.expr import is_per_attack_metric

    per_attack = ["pgd20_acc", "val_apgd_t_acc", "aa_acc", "aa_square_acc", "cw20_acc"]
    not_per_attack = ["clean_acc", "val_clean_acc", "worst_acc", "standard_worst_acc", "val_full_worst_acc",
                      "train_clean_acc", "diag_pgd20_eps64_acc", "train_loss"]
    assert [m for m in per_attack if not is_per_attack_metric(m)] == []
    assert [m for m in not_per_attack if is_per_attack_metric(m)] == []
