"""Seeds (issue 18): a suite step with `seeds:` runs once per seed; reports read the mean over the seeds
(tables mean ± std (n), figures), and claims judge a difference by 2 standard errors, a seeded step's from its seeds
(std/√n, floored by the binomial SE of all its examples pooled: analysis/claim_verdicts.standard_error)."""
from __future__ import annotations

import csv
import math
import os
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from robust_transfer.cli import main
from robust_transfer.suites import load_suite
from support.transfer import all_runs

REPO = Path(__file__).resolve().parents[1]

SUITE = """\
name: seeded
title: "a seeded chain"
scales:
  tiny: {{description: "tiny imagefolder", data: "imagefolder:{folder}"}}
  other: {{description: "the same at another scale", data: "imagefolder:{folder}"}}
steps:
  - name: src
    entry: train
    params: {{dataset: "{{data}}", epochs: 1, batch_size: 8, n_examples: 6, mode: natural, device: cpu}}
  - name: head
    entry: transfer
    seeds: SEEDS
    params: {{source_model: "{{model:src}}", epochs: 1, batch_size: 8, n_examples: 6, device: cpu}}
  - name: check
    entry: evaluate
    params: {{model: "{{model:head}}", attacks: "clean", n_examples: 6, device: cpu}}
  - name: blocks
    entry: retrain_blocks
    seeds: {{tiny: 2}}
    params: {{source_model: "{{model:src}}", k: "1-2", iterations: 1, n_examples: 6, device: cpu}}
"""


@pytest.fixture
def suite_file(workdir, tiny_folder):
    shutil.copy(REPO / "MLproject", workdir / "MLproject")   # what `rtl suite` looks for above the suite file

    def write(seeds: str = "[0, 1, 2]", extra: str = ""):
        path = workdir / "seeded.yaml"
        path.write_text(SUITE.format(folder=tiny_folder).replace("SEEDS", seeds) + extra)
        return path
    return write


def test_a_seeded_step_plans_one_run_per_seed_with_its_own_key(suite_file):
    from robust_transfer.suites.run import step_tags

    suite = load_suite(suite_file(), "tiny", version="v1")
    heads = [s for s in suite.steps if s.name == "head"]
    assert [s.seed for s in heads] == [0, 1, 2]
    assert [s.params["seed"] for s in heads] == ["0", "1", "2"]
    assert len({s.key for s in heads}) == 3 and len({s.params_key for s in heads}) == 3   # reuse is per seed
    assert len({s.seeds_key for s in heads}) == 1 and heads[0].seeds == (0, 1, 2)
    assert {s.params["register_as"] for s in heads} == {"tiny-head"}                   # one model, an alias per seed
    assert [s.label for s in heads] == ["head (seed 0)", "head (seed 1)", "head (seed 2)"]
    # every seed's params but the seed are the step's
    assert all({k: v for k, v in s.params.items() if k != "seed"} ==
               {k: v for k, v in heads[0].params.items() if k != "seed"} for s in heads)
    # {model:head} is the FIRST seed's model
    (check,) = [s for s in suite.steps if s.name == "check"]
    assert check.params["model"] == f"models:/tiny-head@s-{heads[0].key[:16]}" and check.seed is None
    tags = step_tags(suite, heads[1])
    assert (tags["rtl.step"], tags["rtl.seed"], tags["rtl.seeds"], tags["rtl.seeds_key"]) == (
        "head", "1", "0,1,2", heads[0].seeds_key)
    assert "rtl.seed" not in step_tags(suite, check)
    # k=1-2 (children per k inside each run) and seeds together: one retrain_blocks run per seed
    blocks = [s for s in suite.steps if s.name == "blocks"]
    assert [(s.seed, s.params["k"]) for s in blocks] == [(0, "1-2"), (1, "1-2")]
    # `seeds: 3` means seeds 0, 1, 2: the same plan
    assert [s.key for s in load_suite(suite_file("3"), "tiny", version="v1").steps] == [s.key for s in suite.steps]


def test_seeds_per_scale(suite_file):
    path = suite_file("{tiny: [0, 1], other: [7]}")
    assert [s.seed for s in load_suite(path, "tiny", version="v").steps if s.name == "head"] == [0, 1]
    assert [s.seed for s in load_suite(path, "other", version="v").steps if s.name == "head"] == [7]
    # a scale the mapping does not name runs the step once, unseeded (blocks names only tiny)
    (blocks,) = [s for s in load_suite(path, "other", version="v").steps if s.name == "blocks"]
    assert blocks.seed is None and "seed" not in blocks.params


def test_dry_run_prints_every_seed(suite_file, capsys):
    assert main(["suite", "--project", str(suite_file()), "--scale", "tiny", "--dry-run", "true"]) == 0
    out = capsys.readouterr().out
    assert "head (seed 0)" in out and "head (seed 2)" in out and out.count("seed=1") == 2   # head and blocks


BAD_SEEDS = [
    ("empty list", "[]", "seeds=[]"),
    ("repeated seed", "[0, 0]", "seeds=[0, 0]"),
    ("negative seed", "[-1]", "seeds=[-1]"),
    ("not a number", "[a]", "seeds=['a']"),
    ("a string", '"0,1"', "seeds='0,1'"),
    ("zero count", "0", "seeds=0"),
    ("boolean", "true", "seeds=True"),
    ("bad value of a scale", "{tiny: [x]}", "seeds.tiny=['x']"),
    ("bad value of another scale", "{tiny: [0], paper: -2}", "seeds.paper=-2"),
    ("not a mapping of scales", "{tiny: {a: 1}}", "seeds={'tiny': {'a': 1}}"),
]


@pytest.mark.parametrize("what,seeds,fragment", BAD_SEEDS, ids=[b[0] for b in BAD_SEEDS])
def test_bad_seeds_are_one_line_naming_the_value_and_what_is_allowed(suite_file, capsys, what, seeds, fragment):
    assert main(["suite", "--project", str(suite_file(seeds)), "--scale", "tiny"]) == 7
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert fragment in err and "allowed: a list of distinct whole numbers" in err and "seeded.yaml:" in err, err
    assert "steps.1.seeds" in err
    assert not all_runs()


def test_seeds_need_an_entry_point_with_a_seed_and_leave_params_seed_alone(suite_file, capsys):
    path = suite_file(extra="  - {name: promo, entry: promote, seeds: [0, 1], params: {name: m}}\n")
    assert main(["suite", "--project", str(path), "--scale", "tiny"]) == 7
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "promote has no `seed` parameter" in err, err
    text = suite_file().read_text()
    seeded = text.replace("n_examples: 6, device: cpu}\n  - name: check", "n_examples: 6, device: cpu, seed: 4}\n  - name: check")
    assert seeded != text
    path.write_text(seeded)
    assert main(["suite", "--project", str(path), "--scale", "tiny"]) == 7
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "steps.1.params.seed: step 'head' has `seeds:`" in err and "drop params.seed" in err, err


# --- the report ---------------------------------------------------------------------------------------
T0 = 1_700_000_000_000
REPORT = """\
name: rep
title: "seeded report"
scales:
  cpu: {description: "fake runs"}
steps: []
report:
  - table: tab
    columns: {clean_acc: "val.", pgd20_acc: "PGD-20"}
    rows:
      - {label: robust, step: s-robust}
      - {label: natural, step: s-natural}
      - {label: source, step: s-src}
  - figure: fig
    kind: lines
    x: k
    y: [pgd20_acc]
    series:
      - {label: "re-trained", step: s-blocks, children: true}
  - claim: transfers
    text: "robust beats natural by the margin"
    compare: {a: s-robust.pgd20_acc, op: ">", b: s-natural.pgd20_acc}
  - claim: beats-source
    text: "robust clean beats the one-seed source by the margin (binomial SE)"
    compare: {a: s-robust.clean_acc, op: ">", b: s-src.clean_acc}
  - claim: blocks
    text: "k=1 keeps more than k=2"
    compare: {a: "s-blocks[k=1].pgd20_acc", op: ">", b: "s-blocks[k=2].pgd20_acc"}
"""


def _run(client, exp, step, *, t, metrics, params=None, seed=None, group="g", seeds="0,1,2", parent=None,
         status="FINISHED"):
    from mlflow.entities import Metric, Param

    tags = {"rtl.step": step, "rtl.scale": "cpu"} if step else {}
    if seed is not None:
        tags |= {"rtl.seed": str(seed), "rtl.seeds": seeds, "rtl.seeds_key": group}
    if parent:
        tags["mlflow.parentRunId"] = parent
    rid = client.create_run(exp, start_time=T0 + t, tags=tags).info.run_id
    params = dict(params or {}) | ({"seed": seed} if seed is not None else {})
    client.log_batch(rid, metrics=[Metric(k, v, T0, 0) for k, v in metrics.items()],
                     params=[Param(k, str(v)) for k, v in params.items()])
    client.set_terminated(rid, status, end_time=T0 + t + 500)
    return rid


def _sd(values):
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


@pytest.fixture
def seeded_store(workdir):
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.create_experiment("suites")
    robust = [(0.60, 0.20), (0.64, 0.23), (0.62, 0.26)]         # (clean, pgd) of seeds 0, 1, 2
    natural = [(0.70, 0.01), (0.71, 0.02), (0.72, 0.03)]
    # distractors: an older unseeded run, an older run of seed 1 (superseded), a FAILED newer seed run,
    # an older seed group (other parameters)
    _run(client, exp, "s-robust", t=0, metrics={"clean_acc": 0.99, "pgd20_acc": 0.99})
    _run(client, exp, "s-robust", t=10, seed=1, metrics={"clean_acc": 0.99, "pgd20_acc": 0.99})
    _run(client, exp, "s-robust", t=20, seed=3, group="old", seeds="3", metrics={"clean_acc": 0.99, "pgd20_acc": 0.99})
    ids = {}
    for seed, (clean, pgd) in enumerate(robust):
        ids[f"robust{seed}"] = _run(client, exp, "s-robust", t=100 + seed, seed=seed, params={"n_examples": 500},
                                    metrics={"clean_acc": clean, "pgd20_acc": pgd})
    _run(client, exp, "s-robust", t=200, seed=2, status="FAILED", metrics={"clean_acc": 0.0, "pgd20_acc": 0.0})
    for seed, (clean, pgd) in enumerate(natural):
        _run(client, exp, "s-natural", t=100 + seed, seed=seed, metrics={"clean_acc": clean, "pgd20_acc": pgd})
    ids["src"] = _run(client, exp, "s-src", t=100, params={"n_examples": 500}, metrics={"clean_acc": 0.5, "pgd20_acc": 0.1})
    # retrain_blocks with k=1,2 per seed (children), seeds 0 and 1
    blocks = {0: {1: 0.30, 2: 0.10}, 1: {1: 0.34, 2: 0.12}}
    for seed, by_k in blocks.items():
        parent = _run(client, exp, "s-blocks", t=300 + 10 * seed, seed=seed, seeds="0,1", params={"k": "1-2"},
                      metrics={})
        for i, (k, pgd) in enumerate(by_k.items()):
            _run(client, exp, None, t=301 + 10 * seed + i, parent=parent, params={"k": k, "seed": seed},
                 metrics={"pgd20_acc": pgd})
    return {"robust": robust, "natural": natural, "blocks": blocks, "ids": ids}


def test_report_shows_mean_std_and_n_of_a_seeded_step_and_claims_use_the_margin(seeded_store, workdir):
    (workdir / "rep.yaml").write_text(REPORT)
    assert main(["report", "--project", "rep.yaml", "--scale", "cpu", "--out", "out"]) == 0
    robust_pgd = [p for _, p in seeded_store["robust"]]
    # by hand: mean 0.23, std 0.03 (n-1), n 3
    assert sum(robust_pgd) / 3 == pytest.approx(0.23) and _sd(robust_pgd) == pytest.approx(0.03)
    md = (workdir / "out" / "cpu" / "tab.md").read_text()
    assert "| robust | 62.00 ± 2.00 (n=3) | 23.00 ± 3.00 (n=3) |" in md, md
    assert "| natural | 71.00 ± 1.00 (n=3) | 2.00 ± 1.00 (n=3) |" in md, md
    assert "| source | 50.00 | 10.00 |" in md, md                   # unseeded: as before
    with open(workdir / "out" / "cpu" / "tab.csv", newline="") as f:
        rows = {(r["label"], r["metric"]): r for r in csv.DictReader(f)}
    r = rows[("robust", "pgd20_acc")]
    assert float(r["ours"]) == pytest.approx(0.23) and float(r["std"]) == pytest.approx(0.03) and r["n"] == "3"
    ids = seeded_store["ids"]
    assert r["run_id"] == ",".join(ids[f"robust{s}"] for s in range(3))
    assert rows[("source", "clean_acc")]["n"] == "1" and rows[("source", "clean_acc")]["std"] == ""

    with open(workdir / "out" / "cpu" / "rep-claims.csv", newline="") as f:
        claims = {c["claim"]: c for c in csv.DictReader(f)}
    # by hand: se = std/sqrt(3) per side (s-natural has no n_examples: its seeds' spread alone); 2 SE of the difference
    se_a, se_b = 0.03 / math.sqrt(3), 0.01 / math.sqrt(3)
    assert se_a > _pooled(0.23, 1500)                                # the seeds' spread is above the pooled binomial
    m = 2 * math.sqrt(se_a ** 2 + se_b ** 2)
    assert m == pytest.approx(0.0365148, abs=1e-6)
    assert claims["transfers"]["verdict"] == "supported"           # 0.21 - 0.0365 > 0
    assert claims["transfers"]["values"] == (f"0.230 (n=3) > 0.020 (n=3): diff +0.210 [{0.21 - m:+.3f}, {0.21 + m:+.3f}], "
                                             f"detectable {m:.3f} (unpaired: seeds n=3; examples unknown): holds")
    # robust clean: std 0.02 over 3 seeds of 500 images: 0.0115 < the pooled binomial SE of 1,500 images (0.0125)
    se_clean = _pooled(0.62, 1500)
    assert _sd([c for c, _ in seeded_store["robust"]]) / math.sqrt(3) < se_clean
    m2 = 2 * math.sqrt(se_clean ** 2 + _pooled(0.5, 500) ** 2)   # one-seed source: binomial of its 500
    assert m2 == pytest.approx(0.05110, abs=1e-4)
    assert claims["beats-source"]["verdict"] == "supported"        # 0.12 - 0.0511 > 0
    assert claims["beats-source"]["smallest_detectable"] == f"{m2:.3f}"
    # children of a seeded retrain_blocks: k=1 mean 0.32 (sd 0.02828), k=2 mean 0.11 (sd 0.01414), n=2
    se1, se2 = _sd([0.30, 0.34]) / math.sqrt(2), _sd([0.10, 0.12]) / math.sqrt(2)
    m3 = 2 * math.sqrt(se1 ** 2 + se2 ** 2)
    assert claims["blocks"]["verdict"] == "supported"              # 0.21 - 0.0447 > 0
    assert claims["blocks"]["values"].startswith(f"0.320 (n=2) > 0.110 (n=2): diff +0.210 [{0.21 - m3:+.3f}, ")

    # the figure plots the means over seeds, with their std
    with open(workdir / "out" / "cpu" / "fig.csv", newline="") as f:
        points = {r["x"]: r for r in csv.DictReader(f) if r["kind"] == "point"}
    assert float(points["1"]["y"]) == pytest.approx(0.32) and float(points["2"]["y"]) == pytest.approx(0.11)
    assert float(points["1"]["std"]) == pytest.approx(_sd([0.30, 0.34])) and points["1"]["n"] in ("2", "2.0")
    assert (workdir / "out" / "cpu" / "fig.png").stat().st_size > 0


def _pooled(p: float, n: int) -> float:
    """Agresti–Coull binomial SE by hand: q = (pn + 2)/(n + 4), sqrt(q(1 - q)/(n + 4))."""
    q = (p * n + 2) / (n + 4)
    return math.sqrt(q * (1 - q) / (n + 4))


def test_metric_stats_and_standard_errors_by_hand():
    from robust_transfer.analysis.claim_verdicts import standard_error
    from robust_transfer.analysis.report_runs import combine_seeds, metric_stats

    runs = [{"run_id": str(s), "start_time": s, "params": {"seed": str(s), "n_examples": "100"},
             "tags": {"rtl.seed": str(s)}, "metrics": {"clean_acc": v}} for s, v in enumerate([0.5, 0.6, 0.7])]
    seeded = combine_seeds(runs)
    assert metric_stats(seeded, "clean_acc") == pytest.approx({"mean": 0.6, "std": 0.1, "n": 3})
    assert metric_stats(runs[0], "clean_acc") == pytest.approx({"mean": 0.5, "std": None, "n": 1})
    # each seed on its own 100 images: std/sqrt(3) = 0.0577, above the pooled binomial of 300 images
    assert standard_error(seeded, "clean_acc") == (pytest.approx(0.1 / math.sqrt(3)), "seeds n=3")
    # the seeds share one test subset: the subset's own binomial SE is added to the seeds' spread
    shared = combine_seeds([r | {"tags": r["tags"] | {"rtl.eval_indices_sha256": "abc"}} for r in runs])
    se, rule = standard_error(shared, "clean_acc")
    assert se == pytest.approx(math.sqrt(0.01 / 3 + _pooled(0.6, 100) ** 2)) and rule == "seeds n=3 + subset binomial n=100"
    assert standard_error(runs[0], "clean_acc") == (pytest.approx(_pooled(0.5, 100)), "binomial n=100")
    assert standard_error({**runs[0], "params": {}}, "clean_acc") == (None, "no standard error")   # n unknown
    # an ℓ2 evaluation's accuracies (`<attack>_acc_l2`) are accuracies too: a binomial SE, values in [0, 1]
    from robust_transfer.analysis.claim_stats import metric_range

    l2 = {**runs[0], "metrics": {"pgd20_acc_l2": 0.3, "aa_acc_l2": 0.2}}
    assert standard_error(l2, "pgd20_acc_l2") == (pytest.approx(_pooled(0.3, 100)), "binomial n=100")
    assert metric_range("aa_acc_l2") == (0.0, 1.0) and metric_range("val_pgd10_acc_l2") == (0.0, 1.0)


def test_a_split_smaller_than_asked_for_divides_by_what_was_measured():
    """A source evaluated on its whole split asks for 10,000 examples; a 100-class half holds 5,000. The binomial SE
    divides by the count measured: the run's `rtl.eval_examples` tag, else its per-example file's length, and the
    asked-for `n_examples` only when neither is there."""
    from robust_transfer.analysis.claim_verdicts import standard_error

    run = {"run_id": "src", "params": {"n_examples": "10000"}, "tags": {}, "metrics": {"pgd20_acc": 0.09}}
    assert standard_error(run, "pgd20_acc") == (pytest.approx(_pooled(0.09, 10000)), "binomial n=10000")
    tagged = run | {"tags": {"rtl.eval_examples": "5000"}}
    assert standard_error(tagged, "pgd20_acc") == (pytest.approx(_pooled(0.09, 5000)), "binomial n=5000")
    # a run from before the tag: the length of its evaluation/per_example.json (analysis/per_example.PerExample.of)

    class Files:
        def of(self, r):
            return {"n": 2500} if r["run_id"] == "src" else None

    assert standard_error(run, "pgd20_acc", Files()) == (pytest.approx(_pooled(0.09, 2500)), "binomial n=2500")
    assert standard_error(tagged, "pgd20_acc", Files())[1] == "binomial n=5000"     # the tag is what was measured


def test_a_seeded_claim_without_standard_errors_is_uninformative(seeded_store, workdir):
    """A metric with no standard error (not an accuracy, one run, none logged) cannot be told from noise."""
    bad = REPORT.replace('compare: {a: s-robust.pgd20_acc, op: ">", b: s-natural.pgd20_acc}',
                         'compare: {a: s-src.feature_distance_mean, op: ">", b: 1.0}')
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("suites").experiment_id
    _run(client, exp, "s-src", t=500, metrics={"feature_distance_mean": 3.0})
    (workdir / "bad.yaml").write_text(bad)
    assert main(["report", "--project", "bad.yaml", "--scale", "cpu", "--out", "out"]) == 0
    with open(workdir / "out" / "cpu" / "rep-claims.csv", newline="") as f:
        claims = {c["claim"]: c for c in csv.DictReader(f)}
    assert claims["transfers"]["verdict"] == "uninformative"
    assert "no standard error for s-src.feature_distance_mean" in claims["transfers"]["values"]


@pytest.mark.slow
def test_a_seeded_suite_runs_each_seed_once_reuses_them_and_reports_their_mean(workdir, tiny_folder, capsys):
    """End to end: two seeds of a transfer run as child runs tagged rtl.seed, each registered under its own alias;
    the rerun reuses both; the report averages them."""
    shutil.copy(REPO / "MLproject", workdir / "MLproject")
    shutil.copy(REPO / "conda.yaml", workdir / "conda.yaml")
    shutil.copytree(REPO / "bin", workdir / "bin")
    (workdir / "projects").mkdir()
    path = workdir / "projects" / "e2e.yaml"
    path.write_text(f"""\
name: e2e
scales:
  tiny: {{description: "tiny imagefolder"}}
steps:
  - name: src
    entry: train
    params: {{dataset: "imagefolder:{tiny_folder}", epochs: 1, batch_size: 8, n_examples: 6, mode: natural,
              eval_steps: 2, device: cpu}}
  - name: head
    entry: transfer
    seeds: [0, 1]
    params: {{source_model: "{{model:src}}", epochs: 1, batch_size: 8, n_examples: 6, eval_steps: 2, device: cpu}}
report:
  - table: t
    columns: [clean_acc]
    rows:
      - {{label: head, step: head}}
""")
    assert main(["suite", "--project", str(path), "--scale", "tiny", "--report", "false"]) == 0
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    heads = all_runs(client, "tags.`rtl.step` = 'head'")
    assert sorted((r.data.tags["rtl.seed"], r.data.params["seed"], r.info.status) for r in heads) == [
        ("0", "0", "FINISHED"), ("1", "1", "FINISHED")]
    assert len({r.data.tags["rtl.seeds_key"] for r in heads}) == 1 and heads[0].data.tags["rtl.seeds"] == "0,1"
    uris = {r.data.tags["rtl.model_uri"] for r in heads}
    assert len(uris) == 2 and all(u.startswith("models:/tiny-head@s-") for u in uris)
    for r in heads:   # each seed's alias points at its own version
        assert client.get_model_version_by_alias("tiny-head", r.data.tags["rtl.model_uri"].split("@")[1]).run_id == \
            r.info.run_id
    capsys.readouterr()
    assert main(["suite", "--project", str(path), "--scale", "tiny", "--report", "false"]) == 0
    out = capsys.readouterr().out
    assert out.count("reused run") == 3 and "head (seed 1): reused run" in out
    assert main(["report", "--project", str(path), "--scale", "tiny", "--out", "out"]) == 0
    accs = [r.data.metrics["clean_acc"] for r in heads]
    mean, sd = sum(accs) / 2, _sd(accs)
    md = (workdir / "out" / "tiny" / "t.md").read_text()
    assert f"| head | {100 * mean:.2f} ± {100 * sd:.2f} (n=2) |" in md, md
