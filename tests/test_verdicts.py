"""Verdicts you can defend (issue 24): the margin rule applied by the engine, paired where the examples are shared,
`uninformative` for a claim that cannot fail or a sample too small for its effect, and `registered` before/after
from the suite runs' records. Stores are real sqlite MLflow stores; the last test runs a real (tiny) suite."""
from __future__ import annotations

import csv
import math
import os
import shutil
import time
from math import comb
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from robust_transfer.analysis import claim_stats as st
from robust_transfer.cli import main
from support.transfer import all_runs

REPO = Path(__file__).resolve().parents[1]


def _ac(p: float, n: int) -> float:
    """Agresti–Coull by hand: q = (pn + 2)/(n + 4), sqrt(q(1 - q)/(n + 4))."""
    q = (p * n + 2) / (n + 4)
    return math.sqrt(q * (1 - q) / (n + 4))


def _binomial_quantile(n: int, p: float, level: float) -> int:
    """The smallest k with P(Binomial(n, p) <= k) >= level, summed by hand."""
    total = 0.0
    for k in range(n + 1):
        total += comb(n, k) * p ** k * (1 - p) ** (n - k)
        if total >= level:
            return k
    return n


# --- the margin rule, by hand ------------------------------------------------------------------------------------
def test_binomial_standard_error_never_claims_certainty():
    assert st.binomial_se(0.5, 96) == pytest.approx(0.05)                   # q = 50/100: sqrt(0.25/100)
    assert st.binomial_se(0.0, 96) == pytest.approx(math.sqrt(0.02 * 0.98 / 100))   # 0 of 96 is not an SE of 0
    assert st.binomial_se(1.0, 96) == pytest.approx(st.binomial_se(0.0, 96))


def test_unpaired_margin_adds_runs_in_quadrature_and_one_runs_numbers_linearly():
    two_runs = st.unpaired_interval(0.10, [[(1.0, 0.03)], [(-1.0, 0.04)]], "u")
    assert (two_runs.low, two_runs.high, two_runs.detectable) == pytest.approx((0.0, 0.2, 0.1))   # 2·sqrt(.03²+.04²)
    one_run = st.unpaired_interval(0.10, [[(1.0, 0.03), (-1.0, 0.04)]], "u")
    assert one_run.detectable == pytest.approx(0.14)                        # 2·(0.03 + 0.04): correlation unknown
    half = st.unpaired_interval(0.0, [[(0.5, 0.04)]], "u")
    assert half.detectable == pytest.approx(0.04)                           # 0.5 × a number: half its SE


def test_paired_bootstrap_gives_the_exact_binomial_quantiles_of_a_one_way_table():
    """40 examples, a right on 6 that b gets wrong and never the reverse: a resample's difference is k/40 with
    k ~ Binomial(40, 0.15), so the interval is that binomial's 2.275% and 97.725% quantiles over 40."""
    a = np.array([[1.0] * 16 + [0.0] * 24])
    b = np.array([[1.0] * 10 + [0.0] * 30])
    iv = st.paired_bootstrap([(1.0, a, "a"), (-1.0, b, "b")], 0.0, "paired")
    lo, hi = _binomial_quantile(40, 0.15, st.TAIL), _binomial_quantile(40, 0.15, 1 - st.TAIL)
    assert (lo, hi) == (2, 11)
    assert iv.diff == pytest.approx(0.15) and (iv.low, iv.high) == pytest.approx((lo / 40, hi / 40))


def test_paired_bootstrap_on_a_two_way_table_is_near_the_paired_standard_error_and_narrower_than_unpaired():
    """A hand-made 2×2 table of 40 examples: both right 10, only a 8, only b 2, neither 20. Paired difference
    d ∈ {+1: 8, -1: 2, 0: 30}: mean 0.15, plug-in variance 10/40 - 0.15² = 0.2275, 2 SE = 2·sqrt(0.2275/40) = 0.151;
    unpaired (a 18/40, b 12/40 as independent binomials) it would be 0.206."""
    a = np.array([[1.0] * 10 + [1.0] * 8 + [0.0] * 2 + [0.0] * 20])
    b = np.array([[1.0] * 10 + [0.0] * 8 + [1.0] * 2 + [0.0] * 20])
    iv = st.paired_bootstrap([(1.0, a, "a"), (-1.0, b, "b")], 0.0, "paired")
    paired = 2 * math.sqrt(0.2275 / 40)
    assert paired == pytest.approx(0.1508, abs=1e-4)
    assert iv.diff == pytest.approx(0.15) and iv.detectable == pytest.approx(paired, rel=0.1)
    unpaired = st.unpaired_interval(0.15, [[(1.0, _ac(0.45, 40))], [(-1.0, _ac(0.30, 40))]], "u")
    assert unpaired.detectable == pytest.approx(0.2063, abs=1e-3) and iv.detectable < unpaired.detectable


def test_paired_bootstrap_resamples_the_seeds_of_a_run_too():
    """Two seeds of one run that disagree (0.5 and 0.7 on 4 examples each) against a constant: the seed draw alone
    moves the mean between 0.5, 0.6 and 0.7."""
    x = np.array([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    iv = st.paired_bootstrap([(1.0, x, "run")], 0.0, "paired")
    assert iv.diff == pytest.approx(0.625) and iv.low < 0.5 < 0.7 < iv.high


@pytest.mark.parametrize("iv,strict,size,outcome", [
    ((0.03, 0.01, 0.05), True, 0.0, st.SUPPORTED),            # beyond 2 SE and beyond the 2-point floor
    ((0.015, 0.005, 0.025), True, 0.0, st.NOT_SUPPORTED),     # beyond 2 SE but under the floor, which it can resolve
    ((0.021, -0.011, 0.053), True, 0.0, st.UNINFORMATIVE),    # Table 2's same-vs-other: 0.032 > 0.02 and 0.021 inside
    ((-0.10, -0.16, -0.04), True, 0.0, st.NOT_SUPPORTED),     # the opposite, beyond noise: refuted, not uninformative
    ((0.146, 0.124, 0.168), True, 0.05, st.SUPPORTED),        # by 5 points: low 0.124 > 0.05
    ((0.07, 0.045, 0.095), True, 0.05, st.NOT_SUPPORTED),     # by 5 points: low 0.045 < 0.05, and 0.025 resolves 0.05
    ((-0.01, -0.025, 0.0), False, 0.05, st.SUPPORTED),        # within 5 points: low -0.025 >= -0.05
    ((-0.01, -0.025, 0.0), False, 0.01, st.UNINFORMATIVE),    # within 1 point: detectable 0.0125 > 0.01
    ((-0.20, -0.25, -0.15), False, 0.05, st.NOT_SUPPORTED),   # 15 to 25 points below: outside the tolerance
], ids=["holds", "under-floor", "too-small-to-call", "refuted", "by", "by-edge", "within", "within-too-tight",
        "outside-tolerance"])
def test_judge_by_hand(iv, strict, size, outcome):
    got = st.judge(st.Interval(*iv, "u"), strict=strict, size=size, depth=1.0)
    assert got.outcome == outcome, got


@pytest.mark.parametrize("terms,const,strict,size,cannot_fail", [
    ([(1.0, "pgd20_acc")], 0.0, False, 0.0, True),             # a.pgd20_acc >= 0: every accuracy is
    ([], 0.01, True, 0.0, True),                               # x > x - 0.01: the numbers cancel
    ([(1.0, "clean_acc"), (-0.5, "pgd20_acc")], 0.0, False, 0.0, False),   # x >= 0.5·y can fail (x = 0, y = 1)
    ([(1.0, "feature_distance_mean")], -0.5, True, 0.0, False),            # unbounded metric
], ids=["a>=0", "itself-minus", "half", "unbounded"])
def test_a_comparison_that_holds_for_every_value_is_found_over_the_metrics_ranges(terms, const, strict, size,
                                                                                cannot_fail):
    depth = st.range_depth(terms, const, strict=strict, size=size)
    assert (depth <= 0) == cannot_fail
    if cannot_fail:
        j = st.judge(st.Interval(0.5, 0.4, 0.6, "u"), strict=strict, size=size, depth=depth)
        assert j.outcome == st.UNINFORMATIVE and j.why == "holds for every value its metrics could take"


def test_a_comparison_that_could_fail_only_within_its_noise_is_uninformative():
    """x >= 0.001: it fails only when x is below 0.001, less than any difference 500 images can call."""
    depth = st.range_depth([(1.0, "clean_acc")], -0.001, strict=False, size=0.0)
    assert depth == pytest.approx(0.001)
    j = st.judge(st.Interval(0.3, 0.26, 0.34, "u"), strict=False, size=0.0, depth=depth)
    assert j.outcome == st.UNINFORMATIVE and "could fail only by 0.001" in j.why


def test_and_or_combine_three_valued():
    S, N, U, R = st.SUPPORTED, st.NOT_SUPPORTED, st.UNINFORMATIVE, st.NOT_RUN
    assert st.combine([S, U], "all") == U and st.combine([S, N, U], "all") == N and st.combine([S, R], "all") == R
    assert st.combine([S, N], "any") == S and st.combine([N, U], "any") == U and st.combine([N, N], "any") == N
    assert st.combine([S, S], "any", cannot_fail=[False, True]) == U        # a part that cannot fail says nothing


# --- in a report, from a real store -------------------------------------------------------------------------------
T0 = 1_700_000_000_000


def _run(client, exp, step, metrics, *, params=None, tags=None, t=100):
    from mlflow.entities import Metric, Param

    rid = client.create_run(exp, start_time=T0 + t, tags={"rtl.step": step, "rtl.scale": "cpu", **(tags or {})}).info.run_id
    client.log_batch(rid, metrics=[Metric(k, v, T0, 0) for k, v in metrics.items()],
                     params=[Param(k, str(v)) for k, v in (params or {"n_examples": 500}).items()])
    client.set_terminated(rid, "FINISHED", end_time=T0 + t + 1)
    return rid


SMALL = """\
name: small
scales:
  cpu: {}
steps: []
report:
  - claim: cannot-fail
    text: "the model resists PGD-20 at least never"
    compare: {a: s-a.pgd20_acc, op: ">=", b: 0}
  - claim: itself-minus
    text: "a is more accurate than itself minus a point"
    compare: {a: s-a.clean_acc, op: ">", b: "s-a.clean_acc - 0.01"}
  - claim: small-effect
    text: "a is more accurate than b by a point"
    compare: {a: s-a.clean_acc, op: ">", b: s-b.clean_acc, by: 0.01}
  - claim: not-finite
    text: "a diverged run"
    compare: {a: s-nan.clean_acc, op: ">", b: s-b.clean_acc}
  - claim: infinite
    text: "a run that logged an infinity"
    compare: {a: s-inf.clean_acc, op: ">", b: s-b.clean_acc}
"""


def _claims(path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {r["claim"]: r for r in csv.DictReader(f)}


def test_tautologies_small_samples_and_non_finite_numbers_in_a_report(wd, capsys):
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.create_experiment("suites")
    _run(client, exp, "s-a", {"clean_acc": 0.60, "pgd20_acc": 0.30})
    _run(client, exp, "s-b", {"clean_acc": 0.59})
    _run(client, exp, "s-nan", {"clean_acc": float("nan")})
    _run(client, exp, "s-inf", {"clean_acc": float("inf")})
    (wd / "small.yaml").write_text(SMALL)
    assert main(["report", "--project", "small.yaml", "--scale", "cpu", "--out", "out"]) == 0
    out = capsys.readouterr().out
    rows = _claims(wd / "out" / "cpu" / "small-claims.csv")
    assert {k: r["verdict"] for k, r in rows.items()} == {
        "cannot-fail": "uninformative", "itself-minus": "uninformative", "small-effect": "uninformative",
        "not-finite": "not run", "infinite": "not run"}
    assert rows["cannot-fail"]["values"] == "0.300 >= 0: holds for every value its metrics could take"
    assert rows["itself-minus"]["values"] == "0.600 > 0.600 - 0.01: holds for every value its metrics could take"
    # the smallest difference 500 + 500 images can call, printed, against the claim's own threshold (2-point floor)
    m = 2 * math.sqrt(_ac(0.60, 500) ** 2 + _ac(0.59, 500) ** 2)
    assert m == pytest.approx(0.0619, abs=1e-4)
    assert rows["small-effect"]["smallest_detectable"] == f"{m:.3f}" and rows["small-effect"]["threshold"] == "0.020"
    assert f"smallest detectable difference {m:.3f} > the claim's threshold 0.020" in rows["small-effect"]["values"]
    assert f"claim small-effect: uninformative, registered after; smallest detectable {m:.3f} (threshold 0.020)" in out
    # non-finite numbers: not run, one line saying which (a NaN reads as absent in a search: the run is asked)
    assert "s-nan.clean_acc = nan in run" in rows["not-finite"]["values"] and "(not finite)" in rows["not-finite"]["values"]
    # MLflow keeps an infinity as the largest float: an accuracy outside [0, 1] is not a number to judge either
    assert "s-inf.clean_acc = 1.79769e+308 is outside [0, 1]" in rows["infinite"]["values"]


def test_paired_only_on_the_same_examples_otherwise_unpaired_and_the_report_says_which(wd):
    """Both runs log per-example correctness: on equal indices_sha256 the claim is paired; on another subset of
    examples it falls back to the unpaired rule, and the verdict line says so."""
    from support.claims import per_example

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.create_experiment("suites")
    a = _run(client, exp, "s-a", {"clean_acc": 0.40}, params={"n_examples": 40})
    b = _run(client, exp, "s-b", {"clean_acc": 0.25}, params={"n_examples": 40})
    client.log_dict(a, per_example(40, clean=16), "evaluation/per_example.json")
    client.log_dict(b, per_example(40, clean=10), "evaluation/per_example.json")
    (wd / "p.yaml").write_text("name: p\nscales: {cpu: {}}\nsteps: []\nreport:\n  - claim: a-beats-b\n    text: t\n"
                               '    compare: {a: s-a.clean_acc, op: ">", b: s-b.clean_acc}\n')
    assert main(["report", "--project", "p.yaml", "--scale", "cpu", "--out", "out"]) == 0
    row = _claims(wd / "out" / "cpu" / "p-claims.csv")["a-beats-b"]
    # the one-way table above: interval [2/40, 11/40]
    assert row["values"] == ("0.400 > 0.250: diff +0.150 [+0.050, +0.275], detectable 0.113 (paired bootstrap over 40 "
                             "shared examples; same examples): holds")
    assert row["verdict"] == "supported" and row["rule"] == "paired" and row["same_examples"] == "same examples"

    client.log_dict(b, per_example(40, first=40, clean=10), "evaluation/per_example.json")   # other examples
    assert main(["report", "--project", "p.yaml", "--scale", "cpu", "--out", "out"]) == 0
    row = _claims(wd / "out" / "cpu" / "p-claims.csv")["a-beats-b"]
    m = 2 * math.sqrt(_ac(0.40, 40) ** 2 + _ac(0.25, 40) ** 2)
    assert row["rule"] == "unpaired" and row["same_examples"] == "different examples"
    assert f"detectable {m:.3f} (unpaired: binomial n=40; different examples)" in row["values"]


def test_equal_indices_into_two_datasets_are_not_paired(wd):
    """Table 2's same-classes and other-classes targets: one seeded prefix of 1,000 is the same index list on two
    50-class halves of equal size, but different images. The engine pairs on dataset + indices (the `rtl.data`
    tag), so these fall back to the unpaired rule; on one dataset they stay paired."""
    from support.claims import per_example

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.create_experiment("suites")
    a = _run(client, exp, "s-a", {"clean_acc": 0.40}, params={"n_examples": 40}, tags={"rtl.data": "half-a"})
    b = _run(client, exp, "s-b", {"clean_acc": 0.25}, params={"n_examples": 40}, tags={"rtl.data": "half-b"})
    for rid, k in ((a, 16), (b, 10)):
        client.log_dict(rid, per_example(40, clean=k), "evaluation/per_example.json")
    (wd / "p.yaml").write_text("name: p\nscales: {cpu: {}}\nsteps: []\nreport:\n  - claim: a-beats-b\n    text: t\n"
                               '    compare: {a: s-a.clean_acc, op: ">", b: s-b.clean_acc}\n')
    assert main(["report", "--project", "p.yaml", "--scale", "cpu", "--out", "out"]) == 0
    row = _claims(wd / "out" / "cpu" / "p-claims.csv")["a-beats-b"]
    m = 2 * math.sqrt(_ac(0.40, 40) ** 2 + _ac(0.25, 40) ** 2)
    assert row["rule"] == "unpaired" and row["same_examples"] == "different examples"
    assert f"detectable {m:.3f} (unpaired: binomial n=40; different examples)" in row["values"]

    client.set_tag(b, "rtl.data", "half-a")                # the same dataset: paired again
    assert main(["report", "--project", "p.yaml", "--scale", "cpu", "--out", "out"]) == 0
    row = _claims(wd / "out" / "cpu" / "p-claims.csv")["a-beats-b"]
    assert row["rule"] == "paired" and row["same_examples"] == "same examples"


def test_a_per_example_file_that_disagrees_with_the_run_is_not_used(wd, capsys):
    from support.claims import per_example

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.create_experiment("suites")
    a = _run(client, exp, "s-a", {"clean_acc": 0.50}, params={"n_examples": 40})
    _run(client, exp, "s-b", {"clean_acc": 0.25}, params={"n_examples": 40})
    client.log_dict(a, per_example(40, clean=16), "evaluation/per_example.json")     # 0.40, not the logged 0.50
    (wd / "p.yaml").write_text("name: p\nscales: {cpu: {}}\nsteps: []\nreport:\n  - claim: a-beats-b\n    text: t\n"
                               '    compare: {a: s-a.clean_acc, op: ">", b: s-b.clean_acc}\n')
    assert main(["report", "--project", "p.yaml", "--scale", "cpu", "--out", "out"]) == 0
    assert "mean of correct['clean'] = 0.4000 but the run logged clean_acc=0.5000" in capsys.readouterr().err
    assert _claims(wd / "out" / "cpu" / "p-claims.csv")["a-beats-b"]["rule"] == "unpaired"


ANALYSIS = """\
name: analysis
scales:
  cpu: {}
steps: []
report:
  - claim: gradients-follow-edges
    text: "robust input gradients follow the edges more than natural ones (Fig. 5)"
    compare: {a: s-grad.grad_edge_corr_robust, op: ">", b: s-grad.grad_edge_corr_natural}
  - claim: augmentation-moves-features
    text: "augmentation moves features more than a quarter of the way to another image (Fig. 7)"
    compare: {a: s-dist.feature_distance_mean, op: ">", b: "0.25 * s-dist.feature_distance_between_images_mean"}
"""


def test_analysis_runs_compare_paired_on_their_per_image_values(wd, tmp_path):
    """`analyze` logs one row per image (gradients.csv, feature_distance.csv): without those rows a correlation or
    a distance has no standard error (uninformative); with them the two numbers of one run are paired by image."""
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.create_experiment("suites")
    robust = [0.20, 0.15, 0.10, 0.12, 0.18, 0.09, 0.11, 0.14]
    natural = [0.02, 0.03, 0.01, 0.04, 0.02, 0.03, 0.00, 0.05]
    grad = _run(client, exp, "s-grad", {"grad_edge_corr_robust": sum(robust) / 8,
                                        "grad_edge_corr_natural": sum(natural) / 8}, params={"n_images": 8})
    moved, partner = [3.0, 2.5, 3.5, 2.0], [6.0, 6.5, 5.5, 6.0]
    dist = _run(client, exp, "s-dist", {"feature_distance_mean": 2.75, "feature_distance_between_images_mean": 6.0},
                params={"n_images": 4})
    (wd / "a.yaml").write_text(ANALYSIS)
    assert main(["report", "--project", "a.yaml", "--scale", "cpu", "--out", "out"]) == 0
    rows = _claims(wd / "out" / "cpu" / "analysis-claims.csv")
    assert {k: r["verdict"] for k, r in rows.items()} == {"gradients-follow-edges": "uninformative",
                                                         "augmentation-moves-features": "uninformative"}
    assert "no standard error for s-grad.grad_edge_corr_robust" in rows["gradients-follow-edges"]["values"]

    head = "model_label,metric_key,model,image_index,label,class,grad_l2,grad_linf,grad_edge_corr\n"
    lines = [f"{k},{k},m,{i},0,c,1,1,{v}" for k, vs in (("robust", robust), ("natural", natural))
             for i, v in enumerate(vs)]
    (tmp_path / "gradients.csv").write_text(head + "\n".join(lines) + "\n")
    client.log_artifact(grad, str(tmp_path / "gradients.csv"))
    rows_ = ["image_index,label,distance_to_augmented,feature_norm,partner_index,distance_to_partner"]
    rows_ += [f"{i},0,{m},5,{(i + 1) % 4},{q}" for i, (m, q) in enumerate(zip(moved, partner))]
    (tmp_path / "feature_distance.csv").write_text("\n".join(rows_) + "\n")
    client.log_artifact(dist, str(tmp_path / "feature_distance.csv"))
    assert main(["report", "--project", "a.yaml", "--scale", "cpu", "--out", "out"]) == 0
    rows = _claims(wd / "out" / "cpu" / "analysis-claims.csv")
    # every image's robust correlation is above its natural one (by 0.06 to 0.18): every resample's mean difference
    # is at least 0.06; every image moved more than a quarter of its partner distance (by 0.5 to 2.125)
    assert {k: r["verdict"] for k, r in rows.items()} == {"gradients-follow-edges": "supported",
                                                         "augmentation-moves-features": "supported"}
    g = rows["gradients-follow-edges"]
    assert g["rule"] == "paired" and "paired bootstrap over 8 shared examples" in g["values"]
    assert g["values"].startswith("0.136 > 0.025: diff +0.111 [+0.0") and float(g["smallest_detectable"]) < 0.04
    assert "paired bootstrap over 4 shared examples" in rows["augmentation-moves-features"]["values"]


# --- registered before / after, from the suite runs' records --------------------------------------------------------
REG = """\
name: reg
scales:
  tiny: {description: "fake runs", n: 500}
steps:
  - {name: s-a, entry: evaluate, params: {model: "models:/a/1", n_examples: "{n}"}}
  - {name: s-b, entry: evaluate, params: {model: "models:/b/1", n_examples: "{n}"}}
  - {name: s-c, entry: evaluate, params: {model: "models:/c/1", n_examples: "{n}"}}
report:
  - claim: a-beats-b
    text: "a is more accurate than b"
    compare: {a: s-a.clean_acc, op: ">", b: s-b.clean_acc}
"""
REASON = """\
  - claim: c-explains
    kind: reason
    explains: a-beats-b
    text: "written after a-beats-b was seen"
    compare: {a: s-c.clean_acc, op: ">", b: s-b.clean_acc}
"""


def _suite_run(client, exp, suite):
    """A suite run that records its registration as `rtl suite` does before its first step."""
    from robust_transfer.suites.registration import record

    rid = client.create_run(exp, tags={"rtl.strategy": "suite", "rtl.project": suite.name,
                                       "rtl.scale": suite.scale}).info.run_id
    record(client, rid, suite)
    client.set_terminated(rid, "FINISHED")
    time.sleep(0.01)   # the steps start after the record
    return rid


def _step_run(client, exp, suite, name, clean):
    from robust_transfer.suites.run import step_tags

    step = next(s for s in suite.steps if s.name == name)
    rid = client.create_run(exp, tags=step_tags(suite, step)).info.run_id
    client.log_param(rid, "n_examples", step.params["n_examples"])
    client.log_metric(rid, "clean_acc", clean)
    client.set_terminated(rid, "FINISHED")
    return rid


def test_registration_before_then_after_an_edit_a_budget_change_and_a_late_reason(wd, capsys):
    from robust_transfer.suites import load_suite

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.create_experiment("suites")
    (wd / "projects").mkdir()
    path = wd / "projects" / "reg.yaml"
    path.write_text(REG)
    suite = load_suite(path, "tiny")
    first = _suite_run(client, exp, suite)
    _step_run(client, exp, suite, "s-a", 0.70)
    _step_run(client, exp, suite, "s-b", 0.55)

    def report():
        assert main(["report", "--project", str(path), "--scale", "tiny", "--out", "out"]) == 0
        return _claims(wd / "out" / "tiny" / "reg-claims.csv")

    row = report()["a-beats-b"]
    assert (row["verdict"], row["registered"]) == ("supported", "before")
    assert row["registration_note"].startswith(f"recorded by suite run {first} (reg) at ")
    assert row["registered_at"] and row["registration_note"].endswith("before its runs started")

    # the threshold edited after the runs: reported with its verdict, registered after, counted apart
    path.write_text(REG.replace('b: s-b.clean_acc}', 'b: s-b.clean_acc, by: 0.05}'))
    row = report()["a-beats-b"]
    assert row["registered"] == "after" and row["verdict"] == "supported"
    assert f"changed since suite run {first} recorded it" in row["registration_note"]
    assert row["registration_note"].endswith(": compare")
    index = (wd / "out" / "tiny" / "index.md").read_text()
    assert "0 claims registered before their runs: none. 1 registered after their runs, reported and not counted: " \
           "1 supported." in index and f"- `a-beats-b`: changed since suite run {first}" in index

    # a later suite run records the edited claim, but after the runs it reads: still after
    _suite_run(client, exp, load_suite(path, "tiny"))
    row = report()["a-beats-b"]
    assert row["registered"] == "after" and "first recorded at" in row["registration_note"]

    # the claim as first registered, and a reason added later: recorded before its own run (s-c) but after the runs
    # of the claim it explains: it does not count
    path.write_text(REG + REASON)
    _suite_run(client, exp, load_suite(path, "tiny"))
    _step_run(client, exp, load_suite(path, "tiny"), "s-c", 0.65)
    rows = report()
    assert rows["a-beats-b"]["registered"] == "before"
    assert rows["c-explains"]["registered"] == "after"
    assert "after the claim it explains ran" in rows["c-explains"]["registration_note"]

    # the budget changed (n: 500 → 400) and the steps re-ran without a suite run recording it: after
    path.write_text(REG.replace("n: 500", "n: 400"))
    changed = load_suite(path, "tiny")
    _step_run(client, exp, changed, "s-a", 0.70)
    _step_run(client, exp, changed, "s-b", 0.55)
    row = report()["a-beats-b"]
    assert row["registered"] == "after"
    assert "with parameters other than those recorded (the record's budget is not what ran)" in row["registration_note"]
    # once a suite run records that budget before the steps run again, it is registered before
    _suite_run(client, exp, changed)
    _step_run(client, exp, changed, "s-a", 0.70)
    _step_run(client, exp, changed, "s-b", 0.55)
    assert report()["a-beats-b"]["registered"] == "before"


def test_a_claim_written_after_its_evidence_was_seen_is_after_whatever_the_records_say(wd):
    """A re-plan written after a miss was seen elsewhere (another store, an earlier run): a new store records it before
    its own re-run, so only `written_after:` keeps it counted apart. Claims without the key keep their hashes."""
    from robust_transfer.analysis.claims import claim_fingerprint
    from robust_transfer.analysis.report_spec import load_report_spec
    from robust_transfer.errors import SuiteError
    from robust_transfer.suites import load_suite

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.create_experiment("suites")
    (wd / "projects").mkdir()
    path = wd / "projects" / "reg.yaml"
    seen = "the run of 2026-12-07: a-beats-b uninformative on 8 images"
    path.write_text(REG + REASON.replace("    text:", f'    written_after: "{seen}"\n    text:'))
    suite = load_suite(path, "tiny")
    _suite_run(client, exp, suite)                       # recorded before every run it reads
    for name, clean in (("s-a", 0.70), ("s-b", 0.55), ("s-c", 0.65)):
        _step_run(client, exp, suite, name, clean)
    assert main(["report", "--project", str(path), "--scale", "tiny", "--out", "out"]) == 0
    rows = _claims(wd / "out" / "tiny" / "reg-claims.csv")
    assert (rows["a-beats-b"]["registered"], rows["c-explains"]["registered"]) == ("before", "after")
    assert rows["c-explains"]["registration_note"] == f"written after its evidence was seen: {seen}"
    raw = {"text": "t", "compare": {"a": "s-a.clean_acc", "op": ">", "b": 0.5}}
    assert claim_fingerprint(raw) != claim_fingerprint(raw | {"written_after": seen})
    assert set(claim_fingerprint(raw)[1]) == {"text", "kind", "explains", "compare", "choose", "hypervolume", "scales"}
    path.write_text(REG + REASON.replace("    text:", "    written_after: ''\n    text:"))
    with pytest.raises(SuiteError, match="written_after='' must say which evidence was seen"):
        load_report_spec(path)


def test_the_suite_run_records_every_suite_beside_it_before_its_first_step(wd):
    """The record covers every suite file in the folder (a shared step another suite ran first is registered by
    whichever suite run came first) and says which file it could not read."""
    from robust_transfer.suites import load_suite
    from robust_transfer.suites.registration import snapshot

    (wd / "projects").mkdir()
    (wd / "projects" / "reg.yaml").write_text(REG)
    (wd / "projects" / "other.yaml").write_text(REG.replace("name: reg", "name: other"))
    (wd / "projects" / "broken.yaml").write_text("name: broken\nscales: {tiny: {}}\nsteps: []\nreport:\n"
                                                 '  - {claim: x, text: t, check: "s-a.clean_acc > 0"}\n')
    snap = snapshot(load_suite(wd / "projects" / "reg.yaml", "tiny"))
    assert set(snap["claims"]) == {"reg/a-beats-b", "other/a-beats-b"}
    assert snap["claims"]["reg/a-beats-b"]["hash"] == snap["claims"]["other/a-beats-b"]["hash"]
    assert set(snap["steps"]) == {"s-a", "s-b", "s-c"} and all(len(v) == 1 for v in snap["steps"].values())
    assert "free-form `check:`" in snap["problems"]["broken.yaml"]
    assert snap["scale"] == "tiny" and snap["recorded_at_ms"] <= time.time() * 1000


# --- the issue's "Done when": a tiny suite written by someone else -------------------------------------------------
SOMEONE = """\
name: someone
title: "a tiny suite written by someone else"
scales:
  tiny: {{description: "tiny imagefolder", data: "imagefolder:{folder}"}}
steps:
  - name: model
    entry: train
    params: {{dataset: "{{data}}", epochs: 1, batch_size: 8, n_examples: 6, mode: natural, eval_steps: 2, device: cpu}}
report:
  - claim: cannot-fail
    text: "the model is at least as robust as a model that is never right"
    compare: {{a: model.pgd2_acc, op: ">=", b: 0}}
  - claim: itself-minus-a-point
    text: "the model is more accurate than itself minus a point"
    compare: {{a: model.clean_acc, op: ">", b: "model.clean_acc - 0.01"}}
  - claim: edited-later
    text: "the model beats chance"
    compare: {{a: model.clean_acc, op: ">", b: 0.34}}
"""


@pytest.mark.slow
def test_a_tiny_suite_written_by_someone_else_gets_nothing_counted_as_supported(workdir, tiny_folder, capsys):
    """Issue 24, done when: one claim that cannot fail, one comparison of a number with itself minus 0.01, one
    claim edited between the run and the report: uninformative, uninformative, after; none counted as supported."""
    for name in ("MLproject", "conda.yaml"):   # a project directory like the repository's (tests/test_suite.py)
        shutil.copy(REPO / name, workdir / name)
    shutil.copytree(REPO / "bin", workdir / "bin")
    (workdir / "projects").mkdir()
    path = workdir / "projects" / "someone.yaml"
    path.write_text(SOMEONE.format(folder=tiny_folder))
    assert main(["suite", "--project", str(path), "--scale", "tiny", "--report", "false"]) == 0
    assert "registered 3 claims and 1 steps" in capsys.readouterr().out
    path.write_text(SOMEONE.format(folder=tiny_folder).replace("b: 0.34}", "b: 0.2}"))   # the threshold, lowered
    assert main(["report", "--project", str(path), "--scale", "tiny", "--out", "out"]) == 0
    rows = _claims(workdir / "out" / "tiny" / "someone-claims.csv")
    got = {k: (r["verdict"], r["registered"]) for k, r in rows.items()}
    assert got["cannot-fail"] == ("uninformative", "before")
    assert got["itself-minus-a-point"] == ("uninformative", "before")
    assert got["edited-later"][1] == "after" and rows["edited-later"]["registration_note"].endswith(": compare")
    assert not [k for k, (v, reg) in got.items() if v == "supported" and reg == "before"]
    index = (workdir / "out" / "tiny" / "index.md").read_text()
    assert "2 claims registered before their runs: 2 uninformative. 1 registered after their runs" in index
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (report_run,) = all_runs(client, "tags.`rtl.strategy` = 'report'")
    assert "claims_supported" not in report_run.data.metrics and report_run.data.metrics["claims_uninformative"] == 2

    from robust_transfer.analysis.publish import compose

    results = compose(workdir / "out", "tiny", "# Results")
    assert "2 paper claims registered before their runs: 2 uninformative. 1 registered after" in results
    # the history row of the real suite run: its tags, its one step run as its child (issue 29)
    from robust_transfer.tracking.source import GIT_COMMIT_TAG

    (suite_run,) = all_runs(client, "tags.`rtl.strategy` = 'suite'")
    with open(workdir / "out" / "tiny" / "someone-history.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    tags = suite_run.data.tags
    assert {k: row[k] for k in ("run_id", "status", "commit", "code_version", "registration", "steps_run",
                                "steps_reused", "workers")} == {
        "run_id": suite_run.info.run_id, "status": "FINISHED", "commit": tags.get(GIT_COMMIT_TAG, "")[:10],
        "code_version": tags["rtl.code_version"][:10], "registration": tags["rtl.registration"][:10],
        "steps_run": "1", "steps_reused": "0", "workers": "1"}
    assert row["code_version"] and row["registration"] and float(row["minutes"]) > 0
    assert "1 suite run of 1 suite: from " in results and "Every attempt finished." in results
