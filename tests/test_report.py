"""`rtl report`: tables and figures of a suite YAML, from real MLflow runs in a temporary sqlite store."""
from __future__ import annotations

import csv
import os
import shutil
import textwrap

import numpy as np
import pytest
from PIL import Image

from robust_transfer.cli import main

T0 = 1_700_000_000_000  # start times in ms: explicit, so "newest" never depends on the clock

SUITE = """\
name: t2
title: "Table 2: frozen features"
paper: "Table 2"
scales:
  cpu: {description: "Tiny-IN 32px to CIFAR-10, 500 per class", target: cifar10-jpeg}
  paper: {target: cifar10}
steps: []
report:
  - table: table2
    title: "Transfer by freezing the feature extractor"
    columns: {clean_acc: "val.", pgd20_acc: "PGD-20", cw20_acc: "CW-20"}
    rows:
      - label: "natural → {target}"
        step: s-natural
        paper_label: "CIFAR-100 → CIFAR-10, natural"
        paper: {clean_acc: 0.8305, pgd20_acc: 0.0}
      - label: robust
        step: s-robust
        metrics_from: {cw20_acc: s-eval}
        paper_label: "CIFAR-100 → CIFAR-10, robust"
        paper: {clean_acc: 0.6419, pgd20_acc: 0.1756}
      - label: missing
        step: s-missing
  - figure: fig1
    kind: lines
    title: "PGD-20 vs k"
    x: k
    y: [pgd20_acc, clean_acc]
    series:
      - {label: "robust source", step: s-retrain, children: true}
    hlines:
      - {label: "all frozen", step: s-robust, metric: pgd20_acc}
    paper_note: "Paper: robustness stays up to k=3."
  - figure: fig3
    kind: bars
    x: per_class
    y: [clean_acc, mean]
    series:
      - {label: "scratch", steps: [s-n10, s-n50]}
      - {label: "transfer", steps: [s-t10, s-t50]}
  - figure: fig5
    kind: artifact
    step: s-grad
    artifact: plots/grad.png
"""


def _run(client, exp, step, *, t, metrics=None, params=None, status="FINISHED", scale="cpu", parent=None,
         artifact=None):
    from mlflow.entities import Metric, Param

    tags = {"rtl.step": step, "rtl.scale": scale, "rtl.suite": "t2"} if step else {}
    if parent:
        tags["mlflow.parentRunId"] = parent
    rid = client.create_run(exp, start_time=T0 + t, tags=tags).info.run_id
    client.log_batch(rid, metrics=[Metric(k, v, T0, 0) for k, v in (metrics or {}).items()],
                     params=[Param(k, str(v)) for k, v in (params or {}).items()])
    if artifact:
        client.log_artifact(rid, str(artifact), "plots")
    client.set_terminated(rid, status, end_time=T0 + t + 500)
    return rid


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """Step runs of suite t2 (and distractors: older, FAILED, other scale, another experiment), created
    once: creating an MLflow sqlite store takes seconds. Tests copy the database (artifact URIs are absolute)."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("report-store")
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the default artifact root ./mlruns resolves here
        exp = client.create_experiment("suites")
        other = client.create_experiment("elsewhere")
    ids = {}
    ids["natural-old"] = _run(client, exp, "s-natural", t=0, metrics={"clean_acc": 0.40, "pgd20_acc": 0.0})
    # n_examples: what a claim's binomial standard error needs (analysis/claim_verdicts.py)
    ids["natural"] = _run(client, exp, "s-natural", t=1000, metrics={"clean_acc": 0.5234, "pgd20_acc": 0.0012},
                          params={"n_examples": 500})
    ids["natural-failed"] = _run(client, exp, "s-natural", t=2000, status="FAILED", metrics={"clean_acc": 0.99})
    ids["natural-paper"] = _run(client, exp, "s-natural", t=3000, scale="paper", metrics={"clean_acc": 0.77})
    ids["robust"] = _run(client, exp, "s-robust", t=100, metrics={"clean_acc": 0.61, "pgd20_acc": 0.2345},
                         params={"n_examples": 500})
    ids["eval"] = _run(client, other, "s-eval", t=100, metrics={"cw20_acc": 0.1999})
    ids["retrain"] = parent = _run(client, exp, "s-retrain", t=100, params={"k": "1,2,10"})
    for i, (k, pgd, clean) in enumerate([(10, 0.05, 0.70), (2, 0.30, 0.60), (1, 0.40, 0.55)]):
        ids[f"k{k}"] = _run(client, exp, None, t=200 + i, parent=parent, params={"k": k, "n_examples": 500},
                            metrics={"pgd20_acc": pgd, "clean_acc": clean})
    _run(client, exp, None, t=300, parent=parent, status="FAILED", params={"k": 4}, metrics={"pgd20_acc": 0.9})
    for step, n, clean, pgd in [("s-n10", 10, 0.30, 0.10), ("s-n50", 50, 0.50, 0.20), ("s-t10", 10, 0.40, 0.20),
                                ("s-t50", 50, 0.60, 0.30)]:
        ids[step] = _run(client, exp, step, t=100, params={"per_class": n, "n_examples": 500},
                         metrics={"clean_acc": clean, "pgd20_acc": pgd})
    ids["dist"] = _run(client, exp, "s-dist", t=100, metrics={"feature_distance_mean": 1.234567})
    ids["png"] = png = root / "grad.png"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(png)
    ids["grad"] = _run(client, exp, "s-grad", t=100, artifact=png)
    return root, ids


@pytest.fixture
def store(workdir, populated):
    root, ids = populated
    shutil.copy(root / "mlflow.db", workdir / "mlflow.db")
    (workdir / "t2.yaml").write_text(SUITE)
    return ids


def _csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_writes_exact_tables_from_newest_finished_runs(store, workdir, capsys):
    assert main(["report", "--project", "t2.yaml", "--scale", "cpu", "--out", "results"]) == 0
    out, err = capsys.readouterr()
    md = (workdir / "results/cpu/table2.md").read_text()
    lines = md.splitlines()
    assert lines[0] == "### Transfer by freezing the feature extractor"
    assert "Suite **Table 2: frozen features** (paper: Table 2) at scale `cpu`: Tiny-IN 32px to CIFAR-10, 500 per class." in md
    assert f"`s-natural` {store['natural']}" in md and f"`s-eval` {store['eval']}" in md
    assert store["natural-old"] not in md and store["natural-failed"] not in md and store["natural-paper"] not in md
    assert "Not run: `s-missing`." in md
    table = lines[lines.index(next(ln for ln in lines if ln.startswith("| setting"))):]
    assert table == [
        # headers from the metrics; the suite's "val." is the paper's header, beside the paper's numbers
        "| setting | test clean (ours) | val. (paper) | PGD-20 (ours) | PGD-20 (paper) | CW-20 (ours) | CW-20 (paper) | paper row |",
        "|:---|---:|---:|---:|---:|---:|---:|:---|",
        "| natural → cifar10-jpeg | 52.34 | 83.05 | 0.12 | 0.00 | n/a |  | CIFAR-100 → CIFAR-10, natural |",
        "| robust | 61.00 | 64.19 | 23.45 | 17.56 | 19.99 |  | CIFAR-100 → CIFAR-10, robust |",
        "| missing | not run |  | not run |  | not run |  |  |",
    ]
    assert "| natural → cifar10-jpeg | 52.34 | 83.05 |" in out          # tables are printed too
    assert "warning: table2: step 's-missing' has no FINISHED run at scale 'cpu'" in err

    rows = _csv(workdir / "results/cpu/table2.csv")
    assert list(rows[0]) == ["label", "metric", "ours", "paper", "step", "run_id"]
    by = {(r["label"], r["metric"]): r for r in rows}
    assert by[("natural → cifar10-jpeg", "clean_acc")] == {
        "label": "natural → cifar10-jpeg", "metric": "clean_acc", "ours": "0.5234", "paper": "0.8305",
        "step": "s-natural", "run_id": store["natural"]}
    assert by[("robust", "cw20_acc")]["ours"] == "0.1999" and by[("robust", "cw20_acc")]["step"] == "s-eval"
    assert by[("missing", "pgd20_acc")] == {"label": "missing", "metric": "pgd20_acc", "ours": "", "paper": "",
                                            "step": "s-missing", "run_id": ""}

    # figures: PNGs and the plotted values
    for name in ("fig1", "fig3", "fig5"):
        assert (workdir / f"results/cpu/{name}.png").stat().st_size > 0
    fig1 = _csv(workdir / "results/cpu/fig1.csv")
    pgd = [(r["x"], r["y"]) for r in fig1 if r["kind"] == "point" and r["metric"] == "pgd20_acc"]
    assert sorted(pgd) == [("1", "0.4"), ("10", "0.05"), ("2", "0.3")]          # the FAILED k=4 child is left out
    assert [(r["series"], r["y"], r["run_id"]) for r in fig1 if r["kind"] == "hline"] == [
        ("all frozen", "0.2345", store["robust"])]
    fig3 = {(r["series"], r["metric"], r["x"]): float(r["y"]) for r in _csv(workdir / "results/cpu/fig3.csv")}
    assert fig3[("transfer", "mean", "50")] == pytest.approx(0.45) and len(fig3) == 8
    assert (workdir / "results/cpu/fig5.png").read_bytes() == store["png"].read_bytes()

    index = (workdir / "results/cpu/index.md").read_text()
    assert "| robust | 61.00 | 64.19 |" in index and "![PGD-20 vs k](fig1.png)" in index
    assert "![fig5](fig5.png)" in index and "*Paper: robustness stays up to k=3.*" in index

    # the report is a run of its own, with its files as artifacts
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`rtl.strategy` = 'report'")
    assert len(runs) == 1 and runs["status"][0] == "FINISHED"
    arts = {a.path for a in mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).list_artifacts(runs["run_id"][0], "report/cpu")}
    assert {"report/cpu/table2.md", "report/cpu/fig1.png", "report/cpu/index.md"} <= arts


def test_figures_plot_one_line_per_series_and_metric_and_grouped_bars(store, workdir):
    from robust_transfer.commands import run_report
    from robust_transfer.config import ReportConfig

    result = run_report(ReportConfig(project="t2.yaml", scale="cpu", out="results", experiment="suites"))
    ax = result["figures"]["fig1"].axes[0]
    lines = ax.get_lines()
    assert len(lines) == 3                                                   # 1 series × 2 metrics + 1 hline
    assert [list(ln.get_xdata()) for ln in lines[:2]] == [[1.0, 2.0, 10.0]] * 2   # numeric order of k
    assert list(lines[0].get_ydata()) == pytest.approx([40.0, 30.0, 5.0])
    assert lines[2].get_linestyle() == "--" and list(lines[2].get_ydata()) == pytest.approx([23.45, 23.45])
    bars = result["figures"]["fig3"].axes[0]
    assert len(bars.containers) == 4 and len(bars.patches) == 8              # 2 series × 2 metrics, 2 groups each
    assert [t.get_text() for t in bars.get_xticklabels()] == ["10", "50"]
    from robust_transfer.analysis.report import select_runs

    runs = select_runs(["s-natural", "s-missing"], "cpu")
    assert runs.loc["s-natural", "run_id"] == store["natural"] and runs.loc["s-missing", "run_id"] is None
    assert runs.loc["s-natural", "metrics.clean_acc"] == 0.5234
    # --experiment restricts the search: s-eval lives in another experiment
    cw20 = result["tables"]["table2"].set_index(["label", "metric"]).loc[("robust", "cw20_acc")]
    assert cw20["run_id"] is None and cw20["ours"] != cw20["ours"]          # not run: NaN


def test_index_keeps_other_suites_and_files(store, workdir):
    other = textwrap.dedent("""\
        name: t3
        title: "Table 3"
        scales: {cpu: {}}
        report:
          - table: table3
            columns: [clean_acc, feature_distance_mean]
            rows: [{label: natural, step: s-natural}, {label: distance, step: s-dist}]
          - figure: lines3
            kind: lines
            x: per_class
            y: clean_acc
            series: [{label: scratch, steps: [{step: s-n10, x: 0}, s-n50]}]
        """)
    (workdir / "t3.yaml").write_text(other)
    (workdir / "results/cpu").mkdir(parents=True)
    (workdir / "results/cpu/keep.txt").write_text("not ours")
    for project in ("t2.yaml", "t3.yaml", "t2.yaml"):
        assert main(["report", "--project", project, "--scale", "cpu", "--out", "results"]) == 0
    index = (workdir / "results/cpu/index.md").read_text()
    assert index.count("<!-- rtl-report:t2 begin -->") == 1 and index.count("<!-- rtl-report:t3 begin -->") == 1
    table3 = (workdir / "results/cpu/table3.md").read_text()
    assert "| natural | 52.34 | n/a |" in table3 and "| distance | n/a | 1.235 |" in table3  # not a percentage
    assert [(r["x"], r["y"]) for r in _csv(workdir / "results/cpu/lines3.csv")] == [("0", "0.3"), ("50", "0.5")]
    assert "| natural | 52.34 |" in index
    assert (workdir / "results/cpu/keep.txt").read_text() == "not ours"


@pytest.mark.parametrize("argv, yaml_text, fragment", [
    (["--project", "nope.yaml"], None, "project='nope.yaml' does not exist"),
    (["--project", "t2.txt"], "x: 1", "project='t2.txt' is not a suite YAML; give a .yaml or .yml file"),
    (["--project", "t2.yaml", "--scale", "gpu"], None, "scale='gpu' is not a scale of t2.yaml; choose one of: cpu, paper"),
    (["--project", "bad.yaml"], "name: x\nscales: {cpu: {}\nreport: []\n", "project='bad.yaml':3: YAML syntax error"),
    (["--project", "bad.yaml"], "name: x\nscales: {cpu: {}}\nreport:\n  - {figure: f, kind: pie}\n",
     "kind='pie' is not allowed; choose one of: lines, bars, artifact"),
    (["--project", "t2.yaml", "--experiment", "nosuch"], None, "experiment='nosuch' does not exist"),
], ids=["missing-project", "not-yaml", "unknown-scale", "malformed-yaml", "unknown-kind", "unknown-experiment"])
def test_bad_inputs_exit_2_with_one_line(store, workdir, capsys, argv, yaml_text, fragment):
    if yaml_text is not None:
        (workdir / argv[1]).write_text(yaml_text)
    assert main(["report", *argv, "--out", "results"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and len(err.splitlines()) == 1, err
    assert not (workdir / "results").exists()


CLAIMS = """\
name: claims
scales:
  cpu: {}
steps: []
report:
  - claim: transfers
    text: "robustness transfers"
    paper: "17.70% vs 0.00%"
    compare: {a: s-robust.pgd20_acc, op: ">", b: s-natural.pgd20_acc, by: 0.05}
  - claim: tradeoff
    text: "clean drops"
    compare: {a: s-robust.clean_acc, op: ">", b: s-natural.clean_acc}
  - claim: premise
    kind: premise
    text: "the robust source is robust"
    compare: {a: s-robust.pgd20_acc, op: ">=", b: 0.2}
  - claim: blocks
    text: "robustness falls with k"
    compare:
      any:
        - all:
            - {a: "s-retrain[k=10].pgd20_acc", op: "<", b: "s-retrain[k=1].pgd20_acc", by: 0.1}
            - {a: s-t50.mean, op: ">", b: 0.35}
        - {a: s-t10.mean, op: ">", b: 1}
  - claim: missing
    text: "needs a run that does not exist"
    compare: {a: s-missing.pgd20_acc, op: ">", b: 0}
"""


def _se(p: float, n: int = 500) -> float:
    """The binomial standard error by hand, Agresti–Coull: q = (pn + 2)/(n + 4), sqrt(q(1 - q)/(n + 4))."""
    q = (p * n + 2) / (n + 4)
    return (q * (1 - q) / (n + 4)) ** 0.5


def test_claims_get_verdicts_computed_from_runs(store, workdir, capsys):
    (workdir / "claims.yaml").write_text(CLAIMS)
    assert main(["report", "--project", str(workdir / "claims.yaml"), "--scale", "cpu", "--out", "out"]) == 0
    out, err = capsys.readouterr()
    rows = {r["claim"]: r for r in csv.DictReader(open(workdir / "out" / "cpu" / "claims-claims.csv"))}
    assert {k: r["verdict"] for k, r in rows.items()} == {
        "transfers": "supported",        # 0.2333 - 2 SE = 0.195 > 0.05
        "tradeoff": "supported",         # 0.0866 - 2 SE = 0.024 > 0, and 0.0866 > the 2-point floor
        "premise": "uninformative",      # 0.0345 - 0.038 < 0 <= 0.0345 + 0.038: 500 images cannot show ">= 0.2"
        "blocks": "supported",           # k=1 - k=10 = 0.35 - 2 SE > 0.1, and mean 0.45 > 0.35 beyond 2 SE
        "missing": "not run"}
    # by hand: two independent runs of 500 images each
    m = 2 * (_se(0.2345) ** 2 + _se(0.0012) ** 2) ** 0.5
    assert m == pytest.approx(0.0384, abs=5e-5)
    assert rows["transfers"]["values"] == (
        f"0.234 > 0.001 by 0.05: diff +0.233 [{0.2333 - m:+.3f}, {0.2333 + m:+.3f}], detectable {m:.3f} "
        "(unpaired: binomial n=500; examples unknown): holds")
    assert rows["transfers"]["smallest_detectable"] == f"{m:.3f}" and rows["transfers"]["threshold"] == "0.050"
    assert rows["transfers"]["compare"] == "s-robust.pgd20_acc > s-natural.pgd20_acc by 0.05"
    m_premise = 2 * _se(0.2345)
    assert rows["premise"]["smallest_detectable"] == f"{m_premise:.3f}" and rows["premise"]["threshold"] == "0.000"
    assert "the claim's threshold 0.000" in rows["premise"]["values"]
    assert rows["blocks"]["values"].startswith("(0.050 < 0.400 by 0.1: diff +0.350 [") and " or 0.300 > 1: " in rows["blocks"]["values"]
    assert "not run (step 's-missing' has no FINISHED run)" in rows["missing"]["values"]
    # nothing here was registered by a suite run: every claim is reported, and counted apart
    assert {r["registered"] for r in rows.values()} == {"after"}
    assert "no suite run at this scale recorded its claims" in rows["transfers"]["registration_note"]
    index = (workdir / "out" / "cpu" / "index.md").read_text()
    assert "| robustness transfers | 17.70% vs 0.00% | `s-robust.pgd20_acc > s-natural.pgd20_acc by 0.05` → `0.234" in index
    assert "**not run**" in index and "0 claims registered before their runs: none. 5 registered after" in index
    assert "claim 'missing': not run (s-missing.pgd20_acc)" in err
    assert "claim transfers: supported, registered after; smallest detectable 0.038 (threshold 0.050)" in out

    from robust_transfer.analysis.publish import compose

    results = compose(workdir / "out", "cpu", "# Results")
    assert ("| [claims](#claims) | robustness transfers | 17.70% vs 0.00% | `0.234 > 0.001 by 0.05: diff +0.233"
            in results)
    # claims registered after their runs are never counted among the supported
    assert ("0 paper claims registered before their runs: none. 4 registered after their runs (reported, not "
            "counted): 3 supported, 1 not run.") in results
    assert "0 of 5 claims were registered before their runs" in results
    assert "| [claims](#claims) | transfers | paper | supported | no suite run at this scale recorded" in results
    assert results.index("### The premise") < results.index("### The paper's claims")
    assert rows["premise"]["kind"] == "premise" and rows["transfers"]["kind"] == "paper"
    assert "*(premise)* the robust source is robust" in index
    assert '<a id="claims"></a>' in results


@pytest.mark.parametrize("compare,fragment", [
    ('"s-robust.pgd20_acc"', "compare is {a, op, b, by}"),
    ('{a: s-robust.pgd20_acc, op: "!=", b: 0}', "op='!=' is not allowed; use one of >, <, >=, <="),
    ('{a: "__import__(1)", op: ">", b: 0}', "may use only <step>.<metric>, numbers"),
    ('{a: "s-robust.pgd20_acc * s-natural.pgd20_acc", op: ">", b: 0}', "multiplies two measured numbers"),
    ('{a: "s-robust.pgd20_acc / s-natural.pgd20_acc", op: ">", b: 0}', "divides by a measured number"),
    ('{a: "s-robust.pgd20_acc / (1 - 1)", op: ">", b: 0}', "divides by zero"),
    ('{a: s-robust.pgd20_acc, op: ">", b: nothing}', "'nothing' is not a `<step>.<metric>` reference"),
    ('{a: s-robust.pgd20_acc, op: ">=", b: 0, by: 0.1}', "by goes with op > or <"),
    ('{a: s-robust.pgd20_acc, op: ">", b: 0, by: -0.1}', "by=-0.1 must be a number >= 0"),
    ('{a: 0.5, op: ">", b: 0.2}', "reads no measured number"),
], ids=["not-a-comparison", "bad-op", "a-call", "not-linear", "ratio", "zero", "not-a-reference", "by-with-tolerance",
        "negative-by", "constants"])
def test_bad_comparisons_are_one_line_suite_errors(workdir, capsys, compare, fragment):
    (workdir / "c.yaml").write_text(CLAIMS.replace('{a: s-missing.pgd20_acc, op: ">", b: 0}', compare))
    assert main(["report", "--project", str(workdir / "c.yaml"), "--scale", "cpu"]) == 7
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err and "claim 'missing'" in err, err


def test_a_free_form_check_is_refused_naming_the_claim(workdir, capsys):
    """Issue 24: a comparison of measured numbers with a hand-written margin is not the engine's: refused on load."""
    (workdir / "c.yaml").write_text(CLAIMS.replace('compare: {a: s-missing.pgd20_acc, op: ">", b: 0}',
                                                   'check: "s-missing.pgd20_acc > s-robust.pgd20_acc + 0.02"'))
    assert main(["report", "--project", str(workdir / "c.yaml"), "--scale", "cpu"]) == 7
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "claim 'missing': a free-form `check:`" in err and "compare: {a:" in err, err
    assert not (workdir / "results").exists()


def test_a_claim_of_an_unknown_kind_is_one_line(workdir, capsys):
    (workdir / "c.yaml").write_text(CLAIMS.replace("kind: premise", "kind: guess"))
    assert main(["report", "--project", str(workdir / "c.yaml"), "--scale", "cpu"]) == 7
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "kind='guess' is not allowed; use one of premise, paper, reason, added" in err, err


REASONS = """\
name: reasons
scales:
  cpu: {}
  paper: {}
steps: []
report:
  - claim: natural-more-robust
    text: "the natural source transfers more robustness"
    compare: {a: s-natural.pgd20_acc, op: ">", b: s-robust.pgd20_acc}
  - claim: robust-source-is-robust
    kind: reason
    explains: natural-more-robust
    text: "the robust source is the robust one: its PGD-20 accuracy is far above the natural one's"
    compare: {a: s-robust.pgd20_acc, op: ">", b: s-natural.pgd20_acc, by: 0.1}
  - claim: paper-only
    scales: [paper]
    text: "a claim checked at the paper's scale only"
    compare: {a: s-robust.clean_acc, op: ">", b: 0.9}
"""


def test_a_reason_claim_names_the_miss_it_explains_in_csv_index_and_results(store, workdir):
    (workdir / "r.yaml").write_text(REASONS)
    assert main(["report", "--project", "r.yaml", "--scale", "cpu", "--out", "out"]) == 0
    rows = {r["claim"]: r for r in _csv(workdir / "out" / "cpu" / "reasons-claims.csv")}
    assert {k: (r["kind"], r["explains"], r["verdict"]) for k, r in rows.items()} == {
        "natural-more-robust": ("paper", "", "not supported"),                          # 0.0012 > 0.2345
        "robust-source-is-robust": ("reason", "natural-more-robust", "supported")}      # 0.2345 > 0.0012 + 0.1
    index = (workdir / "out" / "cpu" / "index.md").read_text()
    assert "*(reason for natural-more-robust)* the robust source is the robust one" in index

    from robust_transfer.analysis.publish import compose

    results = compose(workdir / "out", "cpu", "# Results")
    assert ("| [reasons](#reasons) | the natural source transfers more robustness |  | `0.001 > 0.234: diff -0.233 ["
            in results)
    # no suite run recorded these claims: the reason is listed beside the miss but has tested nothing
    assert ("| after | [robust-source-is-robust](#reasons): **supported** (registered after: not counted) |"
            in results)
    assert ("0 paper claims registered before their runs: none. 1 registered after their runs (reported, not counted): "
            "1 not supported.") in results
    assert ("| [reasons](#reasons) | natural-more-robust | the robust source is the robust one: its PGD-20 accuracy "
            "is far above the natural one's | `0.234 > 0.001 by 0.1: diff +0.233 [") in results
    assert results.index("### The paper's claims") < results.index("### Why the misses: the reasons, tested")


@pytest.mark.parametrize("changes,fragment", [
    ([("    explains: natural-more-robust\n", "")],
     "claim 'robust-source-is-robust': kind reason needs `explains: <claim name>`"),
    ([("    text: \"the natural source", "    explains: paper-only\n    text: \"the natural source")],
     "claim 'natural-more-robust': explains='paper-only' is allowed only with kind: reason (kind is 'paper')"),
    ([("explains: natural-more-robust", "explains: nosuch")],
     "claim 'robust-source-is-robust': explains='nosuch' is not a claim of this suite at its scales; "
     "use one of: natural-more-robust, paper-only"),
    ([("explains: natural-more-robust", "explains: paper-only\n    scales: [cpu]")],   # paper-only: paper scale only
     "explains='paper-only' is not a claim of this suite at its scales; use one of: natural-more-robust"),
    ([("explains: natural-more-robust", "explains: robust-source-is-robust")],   # issue 28: was exit 2, docs say 7
     "explains='robust-source-is-robust' names the reason itself"),
], ids=["explains-missing", "explains-on-a-paper-claim", "explains-unknown", "explains-at-no-shared-scale", "itself"])
def test_bad_reason_claims_are_one_line_suite_errors(workdir, capsys, changes, fragment):
    text = REASONS
    for old, new in changes:
        assert old in text
        text = text.replace(old, new, 1)
    (workdir / "r.yaml").write_text(text)
    assert main(["report", "--project", "r.yaml", "--scale", "cpu"]) == 7
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err


def _write_claims_csv(path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows({k: r.get(k, "") for k in columns} for r in rows)


def test_publish_counts_claims_registered_after_apart_and_reads_old_csvs(tmp_path):
    """publish reads only the claims CSVs: one without `explains`, `kind` or `registered` (as reports wrote them
    before registration: every claim `after`), and new ones; a claim registered after its runs is listed and counted
    apart, and a reason counts as tested only when registered before and its verdict informative."""
    from robust_transfer.analysis.publish import claims_summary

    old = ["claim", "text", "paper", "check", "values", "verdict"]
    _write_claims_csv(tmp_path / "table1-claims.csv", [
        {"claim": "t1-old-miss", "text": "an old miss", "values": "1 > 2", "verdict": "not supported"}], old)
    claim = lambda name, verdict, kind="paper", explains="", registered="before": {  # noqa: E731
        "claim": name, "kind": kind, "explains": explains, "text": f"text of {name}", "values": "v", "verdict": verdict,
        "registered": registered, "registration_note": f"note of {name}", "smallest_detectable": "0.031",
        "threshold": "0.020"}
    _write_claims_csv(tmp_path / "table2-claims.csv", [
        claim("t2-miss", "not supported"), claim("t2-hit", "supported"), claim("t2-unrun", "not run"),
        claim("t2-miss-untested", "not supported"), claim("t2-edited", "supported", registered="after"),
        claim("t2-capped", "supported", "reason", "t2-miss"), claim("t2-longer", "not supported", "reason", "t2-miss"),
        claim("t2-late", "supported", "reason", "t2-miss-untested", registered="after"),
        claim("t2-vague", "uninformative", "reason", "t2-miss-untested"),
        claim("t2-unrun-reason", "not run", "reason", "t2-miss-untested"),
        claim("t2-aa", "supported", "added")],
        ["claim", "kind", "explains", *old[1:], "smallest_detectable", "threshold", "registered", "registration_note"])
    out = "\n".join(claims_summary(tmp_path))
    assert "| [table1](#table1) | an old miss |  | `1 > 2` | **not supported** |  | after | none |" in out
    assert ("| [table2](#table2) | text of t2-miss |  | `v` | **not supported** | 0.031 (0.020) | before | "
            "[t2-capped](#table2): **supported**; [t2-longer](#table2): **not supported** |") in out
    assert "| [table2](#table2) | text of t2-hit |  | `v` | **supported** | 0.031 (0.020) | before |  |" in out
    assert ("[t2-late](#table2): **supported** (registered after: not counted); [t2-vague](#table2): **uninformative**; "
            "[t2-unrun-reason](#table2): **not run** |") in out   # listed, none of them a tested reason
    # only t2-miss has a reason tested before its runs; the edited claim and the old CSV's are counted apart
    assert ("4 paper claims registered before their runs: 1 supported, 2 not supported (1 with a tested reason), "
            "1 not run. 2 registered after their runs (reported, not counted): 1 supported, 1 not supported.") in out
    assert "| [table2](#table2) | t2-miss | text of t2-longer | `v` | **not supported** | 0.031 (0.020) | before |" in out
    assert ("4 reason claims registered before their runs: 1 supported, 1 not supported, 1 uninformative, 1 not run. "
            "1 registered after their runs (reported, not counted): 1 supported.") in out
    assert "1 added claims registered before their runs: 1 supported." in out
    assert "9 of 12 claims were registered before their runs" in out
    assert "| [table2](#table2) | t2-edited | paper | supported | note of t2-edited |" in out
    assert ("| [table1](#table1) | t1-old-miss | paper | not supported | written before claims were registered "
            "(no record) |") in out
    headings = [line for line in out.splitlines() if line.startswith("### ")]
    assert headings == ["### When each claim was registered", "### The paper's claims",
                        "### Why the misses: the reasons, tested", "### Claims we add (beyond the paper)"]


CHOSEN = """\
name: chosen
scales:
  cpu: {}
steps: []
report:
  - claim: best-lambda
    text: "for the best λ_d (chosen on validation), clean accuracy beats the source"
    choose: {as: best, among: [s-lam-small, s-lam-large], by: "(val_clean_acc + val_pgd10_acc) / 2"}
    compare: {a: best.clean_acc, op: ">", b: s-natural.clean_acc}
"""


def test_the_best_lambda_is_chosen_on_validation_and_reported_on_test(store, workdir, capsys):
    """Issue 13: s-lam-large has the better TEST clean accuracy, s-lam-small the better validation score; the claim
    is judged on the test numbers of the validation choice (an `or` over every λ_d would pick on test)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = mlflow.get_experiment_by_name("suites").experiment_id
    n = {"n_examples": 500}
    _run(client, exp, "s-lam-small", t=100, params=n, metrics={"clean_acc": 0.30, "val_clean_acc": 0.70, "val_pgd10_acc": 0.30})
    _run(client, exp, "s-lam-large", t=100, params=n, metrics={"clean_acc": 0.90, "val_clean_acc": 0.60, "val_pgd10_acc": 0.20})
    (workdir / "chosen.yaml").write_text(CHOSEN)
    assert main(["report", "--project", str(workdir / "chosen.yaml"), "--scale", "cpu", "--out", "out"]) == 0
    (row,) = _csv(workdir / "out" / "cpu" / "chosen-claims.csv")
    assert row["verdict"] == "not supported"          # 0.30 (s-lam-small's test clean) > 0.5234: far below
    assert row["values"].startswith("best = s-lam-small (chosen on validation") and "0.300 > 0.523" in row["values"]
    # choosing by a test metric is refused, one line
    (workdir / "bad.yaml").write_text(CHOSEN.replace('by: "(val_clean_acc + val_pgd10_acc) / 2"', 'by: "clean_acc"'))
    assert main(["report", "--project", str(workdir / "bad.yaml"), "--scale", "cpu"]) == 7
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "choose on validation metrics" in err[-1]


# --- issue 18: a searched front against a grid (analysis/front.py) ------------------------------------------
def test_hypervolume_and_pareto_front_by_hand():
    from robust_transfer.analysis.front import hypervolume, pareto_indices, staircase

    pts = [(0.8, 0.1), (0.6, 0.3), (0.4, 0.2)]
    # [0, 0.8] x [0, 0.1] ∪ [0, 0.6] x [0, 0.3] = 0.08 + 0.18 - 0.06; (0.4, 0.2) lies inside
    assert hypervolume(pts) == pytest.approx(0.20, abs=1e-12)
    assert hypervolume(pts, (0.5, 0.0)) == pytest.approx(0.3 * 0.1 + 0.1 * 0.2, abs=1e-12)  # x <= 0.5 adds nothing
    assert hypervolume([]) == 0.0 and hypervolume([(0.5, 0.0)]) == 0.0
    assert hypervolume(pts + [(0.8, 0.1)]) == hypervolume(pts)        # a repeated point adds nothing
    assert pareto_indices(pts) == [0, 1]
    assert staircase(pts) == ([0.6, 0.6, 0.8], [0.3, 0.1, 0.1])


FRONT = """\
name: front
scales:
  cpu: {description: "tiny", grid_points: 2}
steps: []
report:
  - figure: t4-front
    kind: front
    title: "grid vs searched front"
    x: clean_acc
    y: pgd20_acc
    series:
      - {label: "grid", steps: [g-a, g-b]}
      - {label: "searched", step: s-front, trials: true, pareto_on: [val_clean_acc, val_pgd10_acc]}
    paper_note: "{grid_points} trials"
  - claim: dominates
    text: "the searched front dominates the grid"
    hypervolume:
      axes: [clean_acc, pgd20_acc]
      reference: [0, 0]
      sets:
        front: {step: s-front, trials: true, pareto_on: [val_clean_acc, val_pgd10_acc]}
        grid: {steps: [g-a, g-b]}
        both: {union: [front, grid]}
    compare:
      - {a: front.hypervolume, op: ">", b: grid.hypervolume}
      - {a: front.hypervolume, op: ">=", b: both.hypervolume}
"""


def test_front_figure_and_hypervolume_claim_from_search_trials(store, workdir, capsys):
    """The front is the trials Pareto-optimal on VALIDATION, from every invocation of the search step's study
    (an earlier, killed one included), placed at their TEST numbers; failed trials and other studies are not in it."""
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = mlflow.get_experiment_by_name("suites").experiment_id
    _run(client, exp, "g-a", t=100, metrics={"clean_acc": 0.80, "pgd20_acc": 0.10})
    _run(client, exp, "g-b", t=100, metrics={"clean_acc": 0.60, "pgd20_acc": 0.25})
    killed = _run(client, exp, "s-front", t=100, status="KILLED")
    search = _run(client, exp, "s-front", t=200)
    for rid in (killed, search):
        client.set_tag(rid, "rtl.study", "front-abc")

    def trial(parent, val, test, *, state="COMPLETE", status="FINISHED", study="front-abc"):
        rid = _run(client, exp, None, t=300, parent=parent, status=status,
                   metrics={"val_clean_acc": val[0], "val_pgd10_acc": val[1], "clean_acc": test[0], "pgd20_acc": test[1]})
        client.set_tag(rid, "rtl.study", study)
        client.set_tag(rid, "rtl.trial_state", state)
        return rid

    t0 = trial(search, (0.82, 0.12), (0.81, 0.12))
    t1 = trial(killed, (0.65, 0.30), (0.62, 0.28))       # from the invocation that was killed: still the study's
    t2 = trial(search, (0.60, 0.10), (0.95, 0.40))       # dominated on validation (by t0): not chosen, whatever its test
    trial(search, (0.99, 0.99), (0.99, 0.99), state="FAIL", status="FAILED")
    trial(search, (0.99, 0.99), (0.99, 0.99), study="another-study")
    (workdir / "front.yaml").write_text(FRONT)
    assert main(["report", "--project", str(workdir / "front.yaml"), "--scale", "cpu", "--out", "out"]) == 0
    (row,) = _csv(workdir / "out" / "cpu" / "front-claims.csv")
    # front (0.81, 0.12), (0.62, 0.28): 0.81*0.12 + 0.62*0.16 = 0.1964; grid: 0.8*0.1 + 0.6*0.15 = 0.17;
    # both grid points lie under the front, so the union adds nothing. A hypervolume has no standard error: the
    # engine cannot tell its difference from noise, so the verdict is uninformative, with the numbers shown
    assert row["verdict"] == "uninformative"
    assert ("0.1964 > 0.1700: no standard error for front.hypervolume, grid.hypervolume and 0.1964 >= 0.1964: "
            "no standard error") in row["values"], row["values"]
    assert "front: 2 run(s); grid: 2 run(s); both: 4 run(s)" in row["values"]
    points = _csv(workdir / "out" / "cpu" / "t4-front.csv")
    got = {(p["series"], p["role"], p["run_id"]) for p in points}
    assert {(s, r) for s, r, _ in got} == {("grid", "front"), ("searched", "front"), ("searched", "dominated")}
    assert {rid for s, r, rid in got if s == "searched"} == {t0, t1, t2}
    assert {rid for s, r, rid in got if r == "dominated"} == {t2}
    hv = {p["series"]: float(p["hypervolume"]) for p in points}
    assert hv == pytest.approx({"grid": 0.17, "searched": 0.1964}, abs=1e-12)
    with Image.open(workdir / "out" / "cpu" / "t4-front.png") as im:
        assert round(im.info["dpi"][0]) >= 150
    index = (workdir / "out" / "cpu" / "index.md").read_text()
    assert "t4-front.png" in index and "*2 trials*" in index
    # with the grid's better point the grid dominates: 0.8*0.1 + 0.7*0.25 = 0.255
    _run(client, exp, "g-b", t=400, metrics={"clean_acc": 0.70, "pgd20_acc": 0.35})
    assert main(["report", "--project", str(workdir / "front.yaml"), "--scale", "cpu", "--out", "out"]) == 0
    (row,) = _csv(workdir / "out" / "cpu" / "front-claims.csv")
    assert "0.1964 > 0.2550" in row["values"], row["values"]


@pytest.mark.parametrize("change,fragment", [
    ("pareto_on: [val_clean_acc, val_pgd10_acc]}\n        grid", "pareto_on: [clean_acc, pgd20_acc]}\n        grid"),
    ("{a: front.hypervolume, op: \">\", b: grid.hypervolume}", "{a: front.clean_acc, op: \">\", b: grid.hypervolume}"),
    ("both: {union: [front, grid]}", "both: {union: [front, nothing]}"),
])
def test_bad_front_claims_are_one_line_config_errors(workdir, capsys, change, fragment):
    assert change in FRONT
    (workdir / "f.yaml").write_text(FRONT.replace(change, fragment))
    assert main(["report", "--project", str(workdir / "f.yaml"), "--scale", "cpu"]) == 7
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert any(w in err for w in ("choose the front on validation", "has only `.hypervolume`", "'nothing'")), err

AA_SUITE = """\
name: aa
title: "AA beside PGD-20"
scales:
  cpu: {description: "tiny", aa_examples: 200}
steps: []
report:
  - table: aa-table
    columns: {clean_acc: "val.", pgd20_acc: "PGD-20", aa_acc: "AA"}
    rows:
      - {label: robust, step: s-robust, metrics_from: {aa_acc: s-aa}}
      - {label: natural, step: s-natural}
  - claim: aa-holds
    text: "robust transfer keeps its robustness under AutoAttack within 5 points of its PGD-20"
    compare: {a: s-aa.aa_acc, op: ">=", b: s-aa.pgd20_acc, within: 0.05}
  - claim: aa-fails
    text: "the same within 1 point"
    compare: {a: s-aa.aa_acc, op: ">=", b: s-aa.pgd20_acc, within: 0.01}
"""


def test_an_aa_column_comes_from_another_steps_run_and_the_claim_is_paired_on_it(store, workdir, capsys):
    """The AA column of a row reads the AA step's run (metrics_from); a row without one shows n/a; the claim
    compares aa_acc with the PGD-20 of the SAME run, unpaired until the run logs its per-example correctness, then
    paired: 2 of 200 examples that PGD-20 left and AutoAttack broke are enough to show "within 5 points"."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("suites").experiment_id
    aa = _run(client, exp, "s-aa", t=100, params={"n_examples": 200},
              metrics={"clean_acc": 0.60, "pgd20_acc": 0.25, "aa_acc": 0.24, "worst_acc": 0.24})
    (workdir / "aa.yaml").write_text(AA_SUITE)
    assert main(["report", "--project", str(workdir / "aa.yaml"), "--scale", "cpu", "--out", "out"]) == 0
    lines = (workdir / "out" / "cpu" / "aa-table.md").read_text().splitlines()
    table = lines[lines.index(next(ln for ln in lines if ln.startswith("| setting"))):]
    assert table == ["| setting | test clean (paper: val.) | PGD-20 | AA |", "|:---|---:|---:|---:|",
                     "| robust | 61.00 | 23.45 | 24.00 |",      # clean/PGD-20 from s-robust, AA from s-aa
                     "| natural | 52.34 | 0.12 | n/a |"]
    rows = {(r["label"], r["metric"]): r for r in csv.DictReader(open(workdir / "out" / "cpu" / "aa-table.csv"))}
    assert rows[("robust", "aa_acc")]["run_id"] == aa and rows[("robust", "pgd20_acc")]["run_id"] == store["robust"]
    claims = {r["claim"]: r for r in csv.DictReader(open(workdir / "out" / "cpu" / "aa-claims.csv"))}
    # unpaired: two numbers of one run add their standard errors (unknown correlation): 2 SE = 0.121 on 200 images
    m = 2 * (_se(0.24, 200) + _se(0.25, 200))
    assert {k: r["verdict"] for k, r in claims.items()} == {"aa-holds": "uninformative", "aa-fails": "uninformative"}
    assert claims["aa-holds"]["smallest_detectable"] == f"{m:.3f}" and claims["aa-holds"]["rule"] == "unpaired"
    assert "(unpaired: binomial n=200; examples unknown)" in claims["aa-holds"]["values"]

    from support.claims import per_example

    client.log_dict(aa, per_example(200, clean=120, pgd20=50, aa=48, worst=48), "evaluation/per_example.json")
    assert main(["report", "--project", str(workdir / "aa.yaml"), "--scale", "cpu", "--out", "out"]) == 0
    claims = {r["claim"]: r for r in csv.DictReader(open(workdir / "out" / "cpu" / "aa-claims.csv"))}
    # paired: D = -2/200; a resample's D is -k/200, k ~ Binomial(200, 0.01), whose 2.275% and 97.725% quantiles
    # are 0 and 5: the interval [-0.025, 0], detectable 0.0125
    assert {k: r["verdict"] for k, r in claims.items()} == {"aa-holds": "supported",       # -0.025 >= -0.05
                                                           "aa-fails": "uninformative"}   # 0.0125 > 0.01
    assert claims["aa-holds"]["values"] == ("0.240 >= 0.250 within 0.05: diff -0.010 [-0.025, +0.000], detectable "
                                            "0.013 (paired bootstrap over 200 shared examples; same examples): holds")
    assert claims["aa-holds"]["rule"] == "paired" and claims["aa-holds"]["same_examples"] == "same examples"


def test_a_cascades_per_attack_numbers_carry_a_mark(store, workdir):
    """A run tagged rtl.eval_per_attack=cascade: its PGD-20 is a cascade's per-attack number (marked †, with a
    note, and the CSV's `cascade` column); its clean accuracy and another run's numbers are not marked."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("suites").experiment_id
    rid = _run(client, exp, "s-casc", t=100, metrics={"clean_acc": 0.60, "pgd20_acc": 0.25})
    client.set_tag(rid, "rtl.eval_per_attack", "cascade")
    (workdir / "c.yaml").write_text("name: casc\nscales: {cpu: {}}\nsteps: []\nreport:\n  - table: casc\n"
                                    "    columns: [clean_acc, pgd20_acc]\n    rows:\n"
                                    "      - {label: cascade, step: s-casc}\n      - {label: robust, step: s-robust}\n")
    assert main(["report", "--project", "c.yaml", "--scale", "cpu", "--out", "out"]) == 0
    md = (workdir / "out" / "cpu" / "casc.md").read_text()
    assert "| setting | test clean | PGD-20 |" in md
    assert "| cascade | 60.00 | 25.00† |" in md and "| robust | 61.00 | 23.45 |" in md
    assert "† a per-attack number of a cascade evaluation (`rtl.eval_per_attack=cascade`)" in md
    rows = {(r["label"], r["metric"]): r["cascade"] for r in _csv(workdir / "out" / "cpu" / "casc.csv")}
    assert rows == {("cascade", "clean_acc"): "False", ("cascade", "pgd20_acc"): "True",
                    ("robust", "clean_acc"): "False", ("robust", "pgd20_acc"): "False"}


# --- timing: what each suite cost, from the runs' start/end times (docs/results.md) -------------------------------
TIMED = """\
name: {name}
title: "{name}"
scales:
  cpu: {{description: "timed"}}
steps: []
report:
  - table: {name}
    title: "{name}"
    columns: {{clean_acc: "val."}}
    rows:
{rows}
"""
MACHINE = "Some CPU, 2 cores, 24 GiB"


def _timed_run(client, exp, tags, start_s, seconds):
    """A FINISHED run that started T0 + start_s and took `seconds` (MLflow times are in ms)."""
    rid = client.create_run(exp, start_time=T0 + start_s * 1000, tags=tags).info.run_id
    client.log_metric(rid, "clean_acc", 0.5)
    client.set_terminated(rid, "FINISHED", end_time=T0 + (start_s + seconds) * 1000)
    return rid


def test_timing_csv_publish_counts_a_shared_step_run_once(wd, capsys):
    from mlflow.tracking import MlflowClient

    from robust_transfer.analysis.publish import compose

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.create_experiment("timed")
    step = lambda name, **more: {"rtl.step": name, "rtl.scale": "cpu", **more}  # noqa: E731
    ids = {"a": _timed_run(client, exp, step("s-a"), 0, 60),
           "shared": _timed_run(client, exp, step("s-shared", **{"rtl.machine": MACHINE}), 0, 600),
           "c": _timed_run(client, exp, step("s-c"), 0, 30)}
    seeded = {"rtl.seeds": "0,1", "rtl.seeds_key": "k"}
    ids["b0"] = _timed_run(client, exp, step("s-b", **seeded, **{"rtl.seed": "0"}), 100, 120)
    ids["b1"] = _timed_run(client, exp, step("s-b", **seeded, **{"rtl.seed": "1"}), 200, 180)
    suite = lambda name, **more: {"rtl.strategy": "suite", "rtl.project": name, "rtl.scale": "cpu", **more}  # noqa: E731
    _timed_run(client, exp, suite("ta", **{"rtl.machine": "an older machine"}), -9000, 60)     # older: not read
    ids["ta"] = _timed_run(client, exp, suite("ta", **{"rtl.machine": MACHINE}), 0, 3600)
    ids["tb"] = _timed_run(client, exp, suite("tb"), 3600, 5400)                  # an old run: no rtl.machine tag
    for name, steps in (("ta", ["s-a", "s-b", "s-shared"]), ("tb", ["s-shared", "s-c"])):
        rows = "\n".join(f"      - {{label: {s}, step: {s}}}" for s in steps)
        (wd / f"{name}.yaml").write_text(TIMED.format(name=name, rows=rows))
        assert main(["report", "--project", f"{name}.yaml", "--scale", "cpu", "--out", "out"]) == 0

    rows = _csv(wd / "out/cpu/ta-timing.csv")
    assert list(rows[0]) == ["kind", "step", "run_id", "start", "end", "seconds", "machine"]
    got = {(r["kind"], r["step"], r["run_id"]): (float(r["seconds"]), r["machine"]) for r in rows}
    assert got == {("step", "s-a", ids["a"]): (60.0, ""), ("step", "s-b", ids["b0"]): (120.0, ""),
                   ("step", "s-b", ids["b1"]): (180.0, ""), ("step", "s-shared", ids["shared"]): (600.0, MACHINE),
                   ("suite", "", ids["ta"]): (3600.0, MACHINE)}
    suite_row = next(r for r in rows if r["kind"] == "suite")
    assert (suite_row["start"], suite_row["end"]) == ("2023-11-14T22:13:20Z", "2023-11-14T23:13:20Z")  # T0 in UTC
    index = (wd / "out/cpu/index.md").read_text()
    assert ("Compute: 4 step runs, 16.0 min of step time; suite run started 2023-11-14 22:13:20 UTC, ended "
            f"2023-11-14 23:13:20 UTC (machine: {MACHINE}).") in index
    assert "suite run started 2023-11-14 23:13:20 UTC, ended 2023-11-15 00:43:20 UTC (machine: not recorded)" in index

    results = compose(wd / "out", "cpu", "# Results")
    section = results[results.index("## Where and how long"):results.index("## Claims")]
    assert f"Machine: {MACHINE}." in section
    assert "Suite runs: from 2023-11-14 22:13 to 2023-11-15 00:43 UTC (2 h 30 min)." in section
    # s-shared (600 s) is read by both suites: 60 + 120 + 180 + 600 + 30 s, not 1590 s
    assert "Step time: 16.5 min over 5 distinct step runs" in section
    assert "| [ta](#ta) | 4 | 16.0 | 2023-11-14 22:13 – 2023-11-14 23:13 |" in section
    assert "| [tb](#tb) | 2 | 10.5 | 2023-11-14 23:13 – 2023-11-15 00:43 |" in section
    assert "No timing recorded yet" in compose(wd / "nothing", "cpu", "# Results")


# --- history: every suite run behind a page, from the store (docs/results.md "History") ----------------------------
def test_history_csv_lists_every_suite_attempt_and_publish_names_the_failed_one_and_two_commits(wd):
    import types

    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from robust_transfer.analysis.publish import compose
    from robust_transfer.suites.registration import TAG as REGISTRATION_TAG
    from robust_transfer.suites.run import suite_tags
    from robust_transfer.tracking.source import GIT_COMMIT_TAG

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.create_experiment("history")
    version = "c" * 64

    def suite_run(start_min, minutes, status, commit, registration, *, scale="cpu", project="ha", params=None,
                  metrics=None, steps=()):
        """A suite run with the tags `rtl suite` gives it (suites/run.suite_tags, tracked_run's rtl.strategy, the
        git commit, the registration hash) and its child step runs (plus the report step, which is no step)."""
        tags = {"rtl.strategy": "suite", GIT_COMMIT_TAG: commit, REGISTRATION_TAG: registration,
                **suite_tags(types.SimpleNamespace(name=project, scale=scale, code_version=version))}
        start = T0 + start_min * 60_000
        rid = client.create_run(exp, start_time=start, tags=tags).info.run_id
        client.log_batch(rid, params=[Param(k, str(v)) for k, v in
                                      {"project": f"{project}.yaml", "scale": scale, "reuse": "exact",
                                       **(params or {})}.items()],
                         metrics=[Metric(k, v, start, 0) for k, v in (metrics or {}).items()])
        for i, step_status in enumerate(steps):
            child = client.create_run(exp, start_time=start + i, tags={"mlflow.parentRunId": rid, "rtl.step": f"s{i}",
                                                                       "rtl.scale": scale, "rtl.project": project})
            client.set_terminated(child.info.run_id, step_status, end_time=start + i + 1)
        report = client.create_run(exp, start_time=start, tags={"mlflow.parentRunId": rid, "rtl.project": project,
                                                                "rtl.strategy": "report"})
        client.set_terminated(report.info.run_id, "FINISHED", end_time=start + 1)
        client.set_terminated(rid, status, end_time=start + minutes * 60_000)
        return rid

    a, b = "a" * 40, "b" * 40
    ids = {"failed": suite_run(0, 10, "FAILED", a, "1" * 16, steps=["FINISHED", "FAILED"]),
           "killed": suite_run(12, 2, "KILLED", b, "2" * 16),
           "finished": suite_run(15, 45, "FINISHED", b, "3" * 16, params={"workers": 2, "ray_address": ""},
                                 metrics={"steps_run": 1, "steps_reused": 2}, steps=["FINISHED"])}
    suite_run(100, 5, "FAILED", a, "4" * 16, scale="paper")      # another scale: not this page's
    suite_run(100, 5, "FAILED", a, "5" * 16, project="other")    # another suite
    (wd / "ha.yaml").write_text(TIMED.format(name="ha", rows="      - {label: s0, step: s0}"))
    assert main(["report", "--project", "ha.yaml", "--scale", "cpu", "--out", "out"]) == 0

    rows = _csv(wd / "out/cpu/ha-history.csv")
    assert list(rows[0]) == ["run_id", "status", "start", "end", "minutes", "commit", "code_version", "registration",
                             "steps_run", "steps_reused", "workers"]
    got = [(r["run_id"], r["status"], r["start"], r["end"], float(r["minutes"]), r["commit"], r["code_version"],
            r["registration"], r["steps_run"], r["steps_reused"], r["workers"]) for r in rows]
    assert got == [   # oldest first; 1 worker when the suite logged no `workers` param (it does only for > 1)
        (ids["failed"], "FAILED", "2023-11-14T22:13:20Z", "2023-11-14T22:23:20Z", 10.0, "a" * 10, "c" * 10,
         "1" * 10, "2", "", "1"),
        (ids["killed"], "KILLED", "2023-11-14T22:25:20Z", "2023-11-14T22:27:20Z", 2.0, "b" * 10, "c" * 10,
         "2" * 10, "0", "", "1"),
        (ids["finished"], "FINISHED", "2023-11-14T22:28:20Z", "2023-11-14T23:13:20Z", 45.0, "b" * 10, "c" * 10,
         "3" * 10, "1", "2", "2")]
    assert "every suite run: [ha-history.csv](ha-history.csv)" in (wd / "out/cpu/index.md").read_text()

    page = compose(wd / "out", "cpu", "# Results\n\nintro")
    assert page.startswith("# Results\n\nintro\n\n## History: the suite runs behind this page\n")
    section = page[page.index("## History"):page.index("## Where and how long")]
    lines = section.splitlines()
    assert ("3 suite runs of 1 suite: from 2023-11-14 22:13 to 2023-11-14 23:13 UTC (1 h 0 min wall time); commit "
            f"`{'a' * 10}`, `{'b' * 10}`, code version `{'c' * 10}`.") in lines
    assert ("**Warning: the suite runs behind this page ran 2 commits**: its numbers may come from different code "
            "(the table says which suite ran which).") in lines
    assert (f"| [ha](#ha) | 3 (1/1/1) | 2023-11-14 22:13 | 2023-11-14 23:13 | `{'a' * 10}`, `{'b' * 10}` | "
            f"`{'1' * 10}`, `{'2' * 10}`, `{'3' * 10}` |") in lines
    assert ("Attempts that did not finish: ha FAILED (started 2023-11-14 22:13, ended 2023-11-14 22:23 UTC, after 2 "
            "step runs); ha KILLED (started 2023-11-14 22:25, ended 2023-11-14 22:27 UTC, after 0 step runs).") in lines

    # the finished attempt alone: one commit, no warning, nothing unfinished
    with open(wd / "out/cpu/ha-history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerow(rows[2])
    section = compose(wd / "out", "cpu", "# Results")
    section = section[section.index("## History"):section.index("## Where and how long")]
    assert "1 h 0 min" not in section and "0 h 45 min wall time" in section
    assert "Warning" not in section and "Every attempt finished." in section
    assert "No suite history yet" in compose(wd / "nothing", "cpu", "# Results")


def test_l2_accuracies_are_shown_as_percentages_like_every_accuracy():
    """The ℓ2 table printed `PGD-20 (ℓ2)` as 0.334 beside a clean 68.90: one `is_accuracy` (report_runs) for the
    tables and the claim engine, which already read `_acc_l2` as an accuracy."""
    from robust_transfer.analysis import claim_verdicts, report_tables

    assert report_tables.format_value(0.334, "pgd20_acc_l2") == "33.40"
    assert report_tables.format_value(0.5, "mean") == "50.00" and report_tables.format_value(0.6, "clean_acc") == "60.00"
    assert report_tables.format_value(1.5, "feature_distance_mean") == "1.5"
    assert report_tables.metric_header("pgd20_acc_l2") == "PGD-20 (ℓ2)"
    assert claim_verdicts.is_accuracy is report_tables.is_accuracy
