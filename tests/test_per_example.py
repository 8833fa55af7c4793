"""Per-example correctness of an `evaluate` run (`evaluation/per_example.json`, evaluation/result.py): one 0/1 vector
per logged accuracy (the reference AutoAttack's too), on the same examples as a training run's final evaluation for
the same seed and n, so the claim engine (analysis/claim_verdicts.py) pairs an AA claim of one evaluate run.

One tiny model, trained once for the module (a training step with its own per-example file) and evaluated once by
`rtl evaluate` with the reference AutoAttack: ε = 48/255 so that AutoAttack's APGD-CE breaks every example and it
stops before Square's 5000 queries (seconds, not minutes), while PGD-20 at step 3/255 reaches fewer.
"""
from __future__ import annotations

import csv
import json
import re
import shutil

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from robust_transfer.analysis.claim_stats import binomial_se
from robust_transfer.analysis.per_example import ARTIFACT, parse
from robust_transfer.cli import main
from robust_transfer.expr import per_example_key, per_example_metric

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 12          # examples of both evaluations (the tiny folder's test split has 36)
ATTACKS = "clean,pgd20,cw20,autoattack"


@pytest.fixture(scope="module")
def runs(tiny_folder, tmp_path_factory, mlflow_db_template):
    """{"root", "uri", "train", "evaluate"}: a training run (final evaluation on N test examples, eval_seed 0) and an
    evaluate run of its checkpoint on N examples, seed 0, tagged as suite step `aa-step` (as `rtl suite` tags it)."""
    root = tmp_path_factory.mktemp("per-example")
    shutil.copy(mlflow_db_template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("RTL_CACHE_DIR", str(root / "cache"))
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        common = ["--progress", "false", "--device", "cpu", "--n-examples", str(N)]
        assert main(["train", "--dataset", f"imagefolder:{tiny_folder}", "--iterations", "30", "--batch-size", "24",
                     "--lr", "0.05", "--checkpoint-dir", "src", *common]) == 0
        assert main(["evaluate", "--model", "src", "--suite", "autoattack", "--attacks", ATTACKS, "--cascade", "false",
                     "--epsilon", "48", "--step-size", "3", "--seed", "0", *common]) == 0
    client = MlflowClient(uri)
    found = {"evaluate" if "rtl.eval_attacks" in r.data.tags else "train": r.info.run_id
             for r in client.search_runs([e.experiment_id for e in client.search_experiments()])}
    assert set(found) == {"train", "evaluate"}, found
    client.set_tag(found["evaluate"], "rtl.step", "aa-step")
    client.set_tag(found["evaluate"], "rtl.scale", "cpu")
    return {"root": root, "uri": uri, "train": found["train"], "evaluate": found["evaluate"]}


def _artifact(uri: str, run_id: str) -> dict:
    mlflow.set_tracking_uri(uri)
    return json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/{ARTIFACT}"))


def test_evaluate_logs_every_accuracy_per_example_on_a_training_runs_examples(runs):
    client = MlflowClient(runs["uri"])
    run = client.get_run(runs["evaluate"])
    metrics = run.data.metrics
    rec = _artifact(runs["uri"], runs["evaluate"])
    assert rec["split"] == "test" and rec["n_examples"] == N and rec["cascade"] is False
    # one vector per logged accuracy (the reference's sub-attacks too), each exactly the logged number's examples
    accuracies = {per_example_key(m) for m in metrics if per_example_key(m) and not m.startswith("diag_")}
    assert set(rec["correct"]) == accuracies
    assert {"clean", "pgd20", "cw20", "aa", "worst", "aa_apgd_ce"} <= set(rec["correct"])
    for key, flags in rec["correct"].items():
        assert len(flags) == N and set(flags) <= {0, 1}
        assert sum(flags) / N == pytest.approx(metrics[per_example_metric(key)], abs=1e-6), key
    c = {k: torch.tensor(v) for k, v in rec["correct"].items()}
    # worst: correct under every attack run; an attack's 1 needs the clean image right
    assert torch.equal(c["worst"], c["clean"] & c["pgd20"] & c["cw20"] & c["aa"])
    assert all(bool((c[k] <= c["clean"]).all()) for k in ("pgd20", "cw20", "aa"))
    assert metrics["pgd20_acc"] > metrics["aa_acc"]       # the two differ: what the claim below is about
    # the examples: a training run's final evaluation with the same n and seed chose the same ones
    trained = _artifact(runs["uri"], runs["train"])
    assert rec["indices"] == trained["indices"] and len(rec["indices"]) == N
    assert rec["indices_sha256"] == trained["indices_sha256"] == run.data.tags["rtl.eval_indices_sha256"]
    assert run.data.tags["rtl.eval_examples"] == str(N)
    parsed, why = parse(rec, metrics)                      # what the claim engine reads: usable as is
    assert why is None and set(parsed["correct"]) == set(rec["correct"])


def test_an_aa_claim_of_one_evaluate_run_is_judged_paired_and_narrower(runs, tmp_path, monkeypatch):
    """`aa-step.aa_acc >= aa-step.pgd20_acc - 0.05` (projects/table2.yaml's form): both numbers of one evaluate run,
    so the paired bootstrap over its examples, not the unpaired rule that adds the two binomial SEs linearly."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", runs["uri"])
    (tmp_path / "aa.yaml").write_text(
        "name: aa\nscales: {cpu: {}}\nsteps: []\nreport:\n  - claim: aa-holds\n    text: t\n"
        '    compare: {a: aa-step.aa_acc, op: ">=", b: aa-step.pgd20_acc, within: 0.05}\n')
    assert main(["report", "--project", "aa.yaml", "--scale", "cpu", "--out", "out"]) == 0
    with open(tmp_path / "out" / "cpu" / "aa-claims.csv", newline="") as f:
        row = {r["claim"]: r for r in csv.DictReader(f)}["aa-holds"]
    assert row["rule"] == "paired" and row["same_examples"] == "same examples"
    assert f"(paired bootstrap over {N} shared examples; same examples)" in row["values"]
    metrics = MlflowClient(runs["uri"]).get_run(runs["evaluate"]).data.metrics
    aa, pgd = metrics["aa_acc"], metrics["pgd20_acc"]
    low, high = map(float, re.search(r"diff [+-][0-9.]+ \[([+-][0-9.]+), ([+-][0-9.]+)\]", row["values"]).groups())
    assert low <= aa - pgd <= high
    # the unpaired rule's half-width: two numbers of one run add their standard errors (2 SE)
    unpaired = 2 * (binomial_se(aa, N) + binomial_se(pgd, N))
    assert float(row["smallest_detectable"]) == pytest.approx((high - low) / 2, abs=1.5e-3)
    assert (high - low) / 2 < unpaired


def test_cascade_vectors_are_the_cascades_numbers_and_l2_keys_keep_their_suffix(runs, tiny_folder):
    """Under the cascade an attack's vector is 'correct after it and every earlier attack' (what its † number
    counts), the first attack's is its own and `worst` is the same in both modes; an ℓ2 evaluation's keys end in
    `_l2`, and the claim engine's reader checks them against the `_acc_l2` metrics."""
    from robust_transfer.evaluation import evaluate

    kw = dict(attacks="pgd20,cw20", n_examples=N, epsilon=48, step_size=3, device="cpu", progress=False,
              resume=False)
    model, data = str(runs["root"] / "src"), f"imagefolder:{tiny_folder}"
    own = evaluate(model, data, cascade=False, **kw).result
    cascade = evaluate(model, data, cascade=True, **kw).result
    ind, cas = own.per_example_record()["correct"], cascade.per_example_record()["correct"]
    assert set(ind) == set(cas) == {"clean", "pgd20", "cw20", "worst"}
    assert cas["pgd20"] == ind["pgd20"] and cas["worst"] == ind["worst"] and cas["clean"] == ind["clean"]
    assert cas["cw20"] == [p & c for p, c in zip(ind["pgd20"], ind["cw20"])]
    assert sum(cas["cw20"]) / N == pytest.approx(cascade.metrics["cw20_acc"])
    assert cascade.per_example_record()["cascade"] is True
    l2 = evaluate(model, data, attacks="pgd20", n_examples=N, norm="l2", device="cpu", progress=False,
                  resume=False).result
    rec = l2.per_example_record()
    assert set(rec["correct"]) == {"clean", "pgd20_l2", "worst_l2"} and "pgd20_acc_l2" in l2.metrics
    parsed, why = parse(rec, l2.metrics)
    assert why is None and set(parsed["correct"]) == {"clean", "pgd20_l2", "worst_l2"}
    wrong = [0] * N if l2.metrics["pgd20_acc_l2"] > 0 else [1] * N      # a vector whose mean is not the logged one
    bad = {**rec, "correct": {**rec["correct"], "pgd20_l2": wrong}}
    assert parse(bad, l2.metrics)[1].endswith(f"the run logged pgd20_acc_l2={l2.metrics['pgd20_acc_l2']:.4f}")
