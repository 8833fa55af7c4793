"""Suites (projects/*.yaml): planning, validation, step reuse, models passed by alias, kill and resume."""
import csv
import math
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from robust_transfer.cli import main
from robust_transfer.suites import load_suite
from support.net import free_port
from support.transfer import all_runs

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROJECTS = sorted((REPO / "projects").glob("*.yaml"))

SHARED = """\
name: sources
scales:
  tiny: {{data: "imagefolder:{folder}", epochs: 1}}
steps:
  - name: src
    entry: train
    params: {{dataset: "{{data}}", epochs: "{{epochs}}", batch_size: 8, n_examples: 6, mode: natural, eval_steps: 2,
              device: cpu}}
"""
SUITE = """\
name: mini
title: "a two-step chain"
scales:
  tiny: {{description: "tiny imagefolder", head_epochs: 2}}
steps:
  - use: src
  - name: head
    entry: transfer
    params: {{source_model: "{{model:src}}", epochs: "{{head_epochs}}", batch_size: 8, n_examples: 6, eval_steps: 2,
              device: cpu}}
  - name: check
    entry: evaluate
    params: {{model: "{{model:head}}", attacks: "clean,pgd2", n_examples: 6, device: cpu}}
""".format()


@pytest.fixture
def project(workdir, tiny_folder):
    """A project directory like the repository's: MLproject at the root, suites under projects/."""
    shutil.copy(REPO / "MLproject", workdir / "MLproject")
    shutil.copy(REPO / "conda.yaml", workdir / "conda.yaml")
    shutil.copytree(REPO / "bin", workdir / "bin")  # bin/mlflow-entry: what every entry point runs
    (workdir / "projects").mkdir()
    (workdir / "projects" / "sources.yaml").write_text(SHARED.format(folder=tiny_folder))
    (workdir / "projects" / "mini.yaml").write_text(SUITE)
    return workdir


@pytest.mark.parametrize("path", PROJECTS, ids=[p.stem for p in PROJECTS])
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_every_shipped_suite_plans_at_both_scales(path, scale):
    # the ImageNet ResNet-50 sources of the paper scale are imported, then given with --set (tests/test_paper_scale.py)
    imagenet = {"imagenet_robust": "models:/imagenet-robust-r50/1", "imagenet_natural": "models:/imagenet-natural-r50/1"}
    if path.stem == "table2_l2":       # its ℓ2 ImageNet source is imported too (issue 25)
        imagenet["imagenet_robust_l2"] = "models:/imagenet-robust-l2-r50/1"
    suite = load_suite(path, scale, overrides=imagenet if scale == "paper" else None)
    assert suite.steps and suite.description, f"{path.name} has no steps or no description at {scale}"
    for step in suite.steps:
        assert "{" not in "".join(step.params.values()), f"{step.name}: unsubstituted variable in {step.params}"


def test_shared_steps_have_one_key_in_every_suite():
    """A source used by several suites must plan identically, or each suite would train its own."""
    keys: dict[tuple, set] = {}
    for path in PROJECTS:
        for step in load_suite(path, "cpu", version="v").steps:
            keys.setdefault((step.name, step.seed), set()).add(step.key)   # a seeded step: one key per seed
    assert {k for k, v in keys.items() if len(v) > 1} == set()
    assert len(keys[("src-large-robust", None)]) == 1
    assert {seed for name, seed in keys if name == "tr-large-robust-c10"} == {0, 1, 2}


def test_every_paper_table_and_figure_has_a_suite():
    names = {p.stem for p in PROJECTS}
    assert {"table1", "table2", "table3", "table4", "table5", "table6", "table7", "fig1", "fig3", "fig4", "fig5",
            "fig7"} <= names


def test_model_references_become_registry_aliases_that_follow_upstream_keys(project):
    a = load_suite(project / "projects" / "mini.yaml", "tiny", version="v1")
    src, head, check = a.steps
    assert head.params["source_model"] == f"models:/tiny-src@s-{src.key[:16]}"
    assert check.params["model"] == f"models:/tiny-head@s-{head.key[:16]}"
    assert src.params["register_as"] == "tiny-src" and "register_as" not in check.params
    b = load_suite(project / "projects" / "mini.yaml", "tiny", version="v2")
    assert [s.key for s in a.steps] != [s.key for s in b.steps]  # a code change re-runs every step
    # ... unless reuse=params: then the chain matches by parameters, upstream models included
    assert [s.params_key for s in a.steps] == [s.params_key for s in b.steps]
    assert len({s.params_key for s in a.steps}) == 3


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_table4_searches_a_front_with_the_grids_compute(scale):
    """Issue 18: the searched front gets what the λ_d grid gets: as many trials as the grid has λ_d points at this
    scale (one seed each: the cpu grid's extra seeds measure noise, not the trade-off), each with the grid steps'
    iterations, source, target and data; its study resumes with the step."""
    suite = load_suite(REPO / "projects" / "table4.yaml", scale, version="v")
    steps = {s.name: s for s in suite.steps}
    grid = sorted({s.name for s in suite.steps if s.entry == "lwf" and s.name.startswith("table4-lwf-")})
    assert grid, "no table4-lwf-* step"
    front = steps["table4-front"]
    cfg = front.config
    assert front.entry == "search" and cfg.trials == len(grid) and cfg.trials_scope == "study"
    assert cfg.space == "search_spaces/lwf_front.yaml" and cfg.storage.startswith("tracking:")
    assert cfg.study_name == f"table4-front-{scale}-{front.key[:16]}"     # {step_key}: a changed step starts anew
    assert front.upstream == ["src-large-robust"]
    from robust_transfer.search.space import parse_set

    given = parse_set(cfg.set)
    for g in (s for s in suite.steps if s.name in grid):
        for k in ("source_model", "target", "per_class", "iterations", "lr", "n_examples"):
            assert given[k] == g.params[k], (g.name, k)
    other = load_suite(REPO / "projects" / "table4.yaml", scale, version="w")
    assert {s.name: s for s in other.steps}["table4-front"].config.study_name != cfg.study_name


BAD = [
    ("unknown top-level key", "colour: red\n", "colour: unknown key"),
    ("unknown entry point", "steps:\n  - {name: x, entry: trian}\n", "entry point 'trian' is unknown"),
    ("unknown parameter", "steps:\n  - {name: x, entry: train, params: {epoch: 1}}\n", "train has no parameter 'epoch'"),
    ("unknown variable", "steps:\n  - {name: x, entry: train, params: {epochs: \"{nope}\"}}\n", "{nope} is not a variable"),
    ("model of a later step", "steps:\n  - {name: x, entry: evaluate, params: {model: \"{model:y}\"}}\n",
     "{model:y} names no earlier step"),
    ("unknown shared step", "steps:\n  - use: nothere\n", "'nothere' is not a step of sources.yaml"),
    ("suite names models itself", "steps:\n  - {name: x, entry: train, params: {register_as: m}}\n",
     "the suite names registered models itself"),
    ("malformed YAML", "steps: [\n", "YAML syntax error"),
    # a bad parameter VALUE fails when the suite is planned (its step's config is built), naming the step
    ("value out of range", "steps:\n  - {name: x, entry: train, params: {lr: 0}}\n", "step 'x': lr=0.0 is out of range"),
    ("value of the wrong type", "steps:\n  - {name: x, entry: train, params: {epochs: many}}\n",
     "step 'x': epochs='many' is not a whole number"),
    ("value not allowed", "steps:\n  - {name: x, entry: train, params: {mode: robust}}\n", "step 'x': mode='robust'"),
    ("value of another entry point", "steps:\n  - {name: y, entry: evaluate, params: {model: m, n_examples: -3}}\n",
     "step 'y': n_examples=-3"),
    ("required value missing", "steps:\n  - {name: z, entry: transfer, params: {epochs: 1}}\n",
     "step 'z': source_model is required"),
    # select steps: choose among earlier model-making steps, on validation metrics
    ("select of an unknown step", "steps:\n  - use: src\n  - {name: b, select: {among: [src, nope], by: val_clean_acc}}\n",
     "'nope' names no earlier step"),
    ("select by a bad expression", "steps:\n  - use: src\n  - {name: s2, entry: train, params: {dataset: cifar10}}\n"
     "  - {name: b, select: {among: [src, s2], by: \"val_clean_acc +\"}}\n", "is not an arithmetic expression"),
    ("select on test metrics", "steps:\n  - use: src\n  - {name: s2, entry: train, params: {dataset: cifar10}}\n"
     "  - {name: b, select: {among: [src, s2], by: \"clean_acc + val_pgd10_acc\"}}\n", "names clean_acc; select on validation"),
    ("select of a step without a model", "steps:\n  - use: src\n  - {name: e, entry: evaluate, params: {model: m}}\n"
     "  - {name: b, select: {among: [src, e], by: val_clean_acc}}\n", "step 'e' makes no model to select"),
    ("select without by", "steps:\n  - use: src\n  - {name: b, select: {among: [src]}}\n", "select is {among:"),
]


@pytest.mark.parametrize("what,body,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_suite_files_fail_with_file_line_and_exit_7(project, capsys, what, body, fragment):
    path = project / "projects" / "bad.yaml"
    head = "name: bad\nscales:\n  tiny: {}\n"
    path.write_text(head + body if "steps" in body else head + body + "steps:\n  - use: src\n")
    assert main(["suite", "--project", str(path), "--scale", "tiny"]) == 7
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err and "bad.yaml:" in err, err
    assert not all_runs()  # nothing started


@pytest.mark.parametrize("claim,code,fragment", [
    ('compare: {a: head.pgd20_acc}', 7, "a comparison is {a: ..., op: '>', b: ..."),
    # issue 24: a free-form check of measured numbers (a hand-written margin) is refused: one line naming the claim
    ('check: "head.pgd20_acc > check.pgd2_acc + 0.02"', 7, "claim 'c': a free-form `check:` compares measured numbers"),
], ids=["malformed", "free-form"])
def test_a_malformed_report_fails_before_any_step_runs(project, capsys, claim, code, fragment):
    path = project / "projects" / "mini.yaml"
    path.write_text(SUITE + f"report:\n  - claim: c\n    text: t\n    {claim}\n")
    assert main(["suite", "--project", str(path), "--scale", "tiny"]) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert not all_runs()


def test_set_gives_a_required_variable_and_an_unknown_one_is_refused(project, capsys):
    path = project / "projects" / "mini.yaml"
    path.write_text(SUITE.replace('head_epochs: 2}', 'head_epochs: 2, requires: {src_uri: "train one: rtl train ..."}}')
                    .replace('"{model:src}"', '"{src_uri}"').replace("  - use: src\n", ""))
    assert main(["suite", "--project", str(path), "--scale", "tiny", "--dry-run", "true"]) == 7
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs {src_uri}" in err and "train one: rtl train" in err, err
    assert main(["suite", "--project", str(path), "--scale", "tiny", "--dry-run", "true", "--set", "src_uri=models:/m/1"]) == 0
    assert "source_model=models:/m/1" in capsys.readouterr().out
    assert main(["suite", "--project", str(path), "--scale", "tiny", "--dry-run", "true", "--set", "srcuri=x"]) == 2
    assert "'srcuri' is not a variable" in capsys.readouterr().err


def test_unknown_scale_and_missing_file_name_the_value(project, capsys):
    assert main(["suite", "--project", str(project / "projects" / "mini.yaml"), "--scale", "huge"]) == 2
    assert "scale='huge' is not defined" in capsys.readouterr().err
    assert main(["suite", "--project", "projects/none.yaml"]) == 7
    assert "'projects/none.yaml' cannot be read" in capsys.readouterr().err
    assert main(["suite", "--project", "x.yaml", "--reuse", "sometimes"]) == 2
    assert "reuse='sometimes'" in capsys.readouterr().err


@pytest.mark.slow
def test_suite_runs_steps_as_children_passes_models_by_alias_and_reuses_finished_steps(project, capsys):
    path = str(project / "projects" / "mini.yaml")
    assert main(["suite", "--project", path, "--scale", "tiny", "--report", "false"]) == 0
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    suite_run = all_runs(client, "tags.`rtl.strategy` = 'suite'")[0]
    steps = {r.data.tags["rtl.step"]: r for r in all_runs(client, "tags.`rtl.step` != ''")}
    assert set(steps) == {"src", "head", "check"}
    for r in steps.values():
        assert r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == suite_run.info.run_id
        assert r.data.tags["rtl.scale"] == "tiny" and r.data.tags["rtl.project"] == "mini"
    # the transfer started from the source by alias; evaluate read the transferred model by alias
    alias = steps["head"].data.params["source_model"]
    assert alias.startswith("models:/tiny-src@s-")
    assert client.get_model_version_by_alias("tiny-src", alias.split("@")[1]).run_id == steps["src"].info.run_id
    assert steps["check"].data.metrics["clean_acc"] == pytest.approx(steps["head"].data.metrics["clean_acc"])
    assert suite_run.data.metrics["steps_run"] == 3 and suite_run.data.metrics["steps_reused"] == 0

    capsys.readouterr()
    assert main(["suite", "--project", path, "--scale", "tiny", "--report", "false"]) == 0
    out = capsys.readouterr().out
    assert out.count("reused run") == 3
    assert len(all_runs(client, "tags.`rtl.step` != ''")) == 3  # nothing ran again
    second = all_runs(client, "tags.`rtl.strategy` = 'suite'")[0]
    assert second.data.metrics["steps_reused"] == 3


@pytest.mark.slow
def test_a_failing_step_fails_the_suite_with_one_line_and_keeps_finished_steps(project, capsys):
    path = project / "projects" / "mini.yaml"
    path.write_text(SUITE.replace('attacks: "clean,pgd2"', 'attacks: "clean,pgd2", dataset: "imagefolder:/nowhere"'))
    assert main(["suite", "--project", str(path), "--scale", "tiny", "--report", "false"]) == 7
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "step 'check' (evaluate) failed" in err
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    status = {r.data.tags.get("rtl.step", "suite"): r.info.status for r in all_runs(client)}
    assert status == {"src": "FINISHED", "head": "FINISHED", "check": "FAILED", "suite": "FAILED"}


@pytest.mark.slow
def test_killed_suite_resumes_from_its_finished_steps(project):
    """SIGKILL the suite (and its running step) mid-way; the rerun reuses what finished."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    args = [str(BIN / "rtl"), "suite", "--project", "projects/mini.yaml", "--scale", "tiny", "--report", "false"]
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    # Create the sqlite store (its schema migrations) before the suite starts: two processes migrating one fresh
    # sqlite file at once can fail (`no such column: spans.dimension_attributes`, MLflow 3.17).
    client.search_experiments(max_results=1)
    victim = subprocess.Popen(args, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and victim.poll() is None:
        try:
            running = all_runs(client, "tags.`rtl.step` = 'head' and attributes.status = 'RUNNING'")
        except Exception:  # the database may not exist yet
            running = []
        if running:
            break
        time.sleep(0.2)
    assert victim.poll() is None, victim.stdout.read()
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    first = {r.data.tags["rtl.step"]: (r.info.run_id, r.info.status) for r in all_runs(client, "tags.`rtl.step` != ''")}
    assert first["src"][1] == "FINISHED" and first["head"][1] == "RUNNING"

    rerun = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = {}
    for r in all_runs(client, "tags.`rtl.step` != ''"):
        after.setdefault(r.data.tags["rtl.step"], []).append((r.info.run_id, r.info.status))
    assert after["src"] == [first["src"]]                        # reused, not re-run
    assert sorted(s for _, s in after["head"]) == ["FINISHED", "KILLED"]  # the orphan is closed, then re-run
    assert [s for _, s in after["check"]] == ["FINISHED"]


@pytest.mark.slow
def test_suite_through_mlflow_run_reuses_steps_run_by_rtl_in_another_experiment(project, capsys):
    """`rtl suite` runs in experiment robust-transfer, `mlflow run` in Default: a step is found by its key."""
    assert main(["suite", "--project", "projects/mini.yaml", "--scale", "tiny", "--report", "false"]) == 0
    # a separate invocation: not the experiment that set_experiment exported in this process
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_EXPERIMENT_ID"}
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    res = subprocess.run([str(BIN / "mlflow"), "run", ".", "-e", "suite", "-P", "project=projects/mini.yaml",
                          "-P", "scale=tiny", "-P", "report=false", "--env-manager", "local"],
                         cwd=project, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("reused run") == 3, res.stdout
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    suites = all_runs(client, "tags.`rtl.strategy` = 'suite'")
    launcher = [r for r in suites if r.info.experiment_id == "0"]
    assert len(suites) == 2, [(r.info.experiment_id, r.info.status) for r in suites]
    assert len(launcher) == 1 and launcher[0].info.status == "FINISHED"
    assert launcher[0].data.metrics["steps_reused"] == 3
    assert len(all_runs(client, "tags.`rtl.step` != ''")) == 3  # nothing ran twice


FRONT_SPACE = """\
entry_point: lwf
fixed: {source_model: "models:/set-by-the-suite@champion", iterations: 4, batch_size: 8, n_examples: 6, eval_steps: 2,
        device: cpu}
params:
  lambda_d: {type: float, low: 1.0e-3, high: 1.0, log: true}
  teacher: {type: categorical, choices: [offline, online]}
fixed_when: {teacher: {online: {augment: true}}}
objectives: [{metric: val_clean_acc, direction: maximize}, {metric: val_pgd10_acc, direction: maximize}]
pruner: none
sampler: {type: tpe, seed: 0}
"""
FRONT_STEP = """\
  - name: front
    entry: search
    params: {space: search_spaces/front.yaml, storage: "tracking:optuna-suites.db", study_name: "front-{step_key}",
             trials: 2, trials_scope: study, set: "source_model={model:src} iterations={head_epochs}"}
report:
  - claim: found
    text: "the search step's trials are found through its study"
    hypervolume:
      axes: [clean_acc, pgd2_acc]
      sets: {front: {step: front, trials: true, pareto_on: [val_clean_acc, val_pgd10_acc]}}
    compare: {a: front.hypervolume, op: ">=", b: 0}
"""


@pytest.mark.slow
def test_a_search_step_runs_through_mlflow_run_with_its_study_beside_the_store(project, capsys):
    """Issue 18's step shape end to end: `search` under `mlflow run` as a suite step, `set` carrying an upstream
    model alias, the study in a sqlite file beside the MLflow store named by the step key, its trials read back
    by a report claim; a rerun reuses the step and adds no trial."""
    import optuna

    (project / "search_spaces").mkdir()
    (project / "search_spaces" / "front.yaml").write_text(FRONT_SPACE)
    path = project / "projects" / "mini.yaml"
    path.write_text(SUITE.split("  - name: head")[0] + FRONT_STEP)
    suite = load_suite(path, "tiny")
    front = {s.name: s for s in suite.steps}["front"]
    assert main(["suite", "--project", str(path), "--scale", "tiny", "--report", "false"]) == 0
    storage = f"sqlite:///{Path(os.environ['MLFLOW_TRACKING_URI'][len('sqlite:///'):]).parent / 'optuna-suites.db'}"
    study = optuna.load_study(study_name=f"front-{front.key[:16]}", storage=storage)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (step_run,) = all_runs(client, "tags.`rtl.step` = 'front'")
    for t in trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == step_run.info.run_id
        assert run.data.params["source_model"].startswith("models:/tiny-src@s-") and run.data.params["iterations"] == "2"
        assert run.data.params["augment"].lower() == ("true" if t.params["teacher"] == "online" else "false")
        assert {"clean_acc", "pgd2_acc", "val_clean_acc", "val_pgd10_acc"} <= set(run.data.metrics)   # eval_steps=2
    assert main(["report", "--project", str(path), "--scale", "tiny", "--out", "out"]) == 0
    index = (project / "out" / "tiny" / "index.md").read_text()
    # found through the study; `>= 0` holds for every hypervolume: the engine calls it uninformative
    assert "front: 2 run(s)" in index and "**uninformative**" in index and "holds for every value" in index
    capsys.readouterr()
    assert main(["suite", "--project", str(path), "--scale", "tiny", "--report", "false"]) == 0
    assert capsys.readouterr().out.count("reused run") == 2
    assert len(optuna.load_study(study_name=f"front-{front.key[:16]}", storage=storage).get_trials()) == 2

# --- select steps: the best of several candidates, chosen on validation, exposed as {model:<select step>} ----------
PICK = """\
name: pick
scales:
  tiny: {description: "fake candidates", aa_examples: 4}
steps:
  - use: src
  - {name: cand-a, entry: transfer, params: {source_model: "{model:src}", epochs: 1, device: cpu}}
  - {name: cand-b, entry: transfer, params: {source_model: "{model:src}", epochs: 2, device: cpu}}
  - {name: cand-c, entry: transfer, params: {source_model: "{model:src}", epochs: 3, device: cpu}}
  - name: best
    select: {among: [cand-a, cand-b, cand-c], by: "(val_clean_acc + val_pgd10_acc) / 2"}
  - name: best-aa
    entry: evaluate
    params: {model: "{model:best}", suite: autoattack, attacks: "clean,pgd20,autoattack", cascade: false,
             n_examples: "{aa_examples}", device: cpu}
"""
# Hand-checked: validation means a 0.45, b 0.50, c 0.45 -> b; on TEST metrics c would win (it must not matter).
FAKE = {"cand-a": {"val_clean_acc": 0.80, "val_pgd10_acc": 0.10, "clean_acc": 0.81, "pgd20_acc": 0.09},
        "cand-b": {"val_clean_acc": 0.60, "val_pgd10_acc": 0.40, "clean_acc": 0.58, "pgd20_acc": 0.37},
        "cand-c": {"val_clean_acc": 0.70, "val_pgd10_acc": 0.20, "clean_acc": 0.99, "pgd20_acc": 0.90}}


def _fake_step_run(client, suite, name, metrics):
    """A FINISHED run as the suite would have left it for step `name`, with a registered model version."""
    from robust_transfer.suites.run import step_tags

    step = next(s for s in suite.steps if s.name == name)
    exp = client.get_experiment_by_name("Default").experiment_id
    run = client.create_run(exp, tags=step_tags(suite, step), run_name=name)
    if "epochs" in step.params:   # not an evaluate step's
        client.log_param(run.info.run_id, "epochs", step.params["epochs"])
    for k, v in metrics.items():
        client.log_metric(run.info.run_id, k, v)
    model = f"{suite.scale}-{name}"
    try:
        client.create_registered_model(model)
    except Exception:  # already there (a second run of the same step)
        pass
    mv = client.create_model_version(model, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_tag(run.info.run_id, "rtl.registered_model", f"{model}/{mv.version}")
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def test_select_step_plans_with_its_candidates_upstream_and_feeds_model_to_later_steps(project):
    path = project / "projects" / "pick.yaml"
    path.write_text(PICK)
    suite = load_suite(path, "tiny", version="v1")
    steps = {s.name: s for s in suite.steps}
    best = steps["best"]
    assert best.entry == "select" and best.registers and best.upstream == ["cand-a", "cand-b", "cand-c"]
    assert steps["best-aa"].params["model"] == f"models:/tiny-best@s-{best.key[:16]}"
    assert steps["best-aa"].params["n_examples"] == "4" and steps["best-aa"].upstream == ["best"]
    # a changed candidate changes the choice's key, and so the AA step's
    other = PICK.replace("epochs: 3, device", "epochs: 4, device")
    path.write_text(other)
    changed = {s.name: s for s in load_suite(path, "tiny", version="v1").steps}
    assert changed["best"].key != best.key and changed["best-aa"].key != steps["best-aa"].key
    from robust_transfer.suites.plan import with_upstream

    assert [s.name for s in with_upstream(suite.steps, ["best-aa"])] == [s.name for s in suite.steps]


def _pick_suite(project):
    """PICK planned in `project`: (suite, its select step `best`, a client of the test's store)."""
    path = project / "projects" / "pick.yaml"
    path.write_text(PICK)
    suite = load_suite(path, "tiny", version="v1")
    return suite, next(s for s in suite.steps if s.name == "best"), MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


def test_select_step_chooses_on_validation_in_a_real_store_and_a_rerun_keeps_the_choice(project):
    from robust_transfer.errors import SuiteError
    from robust_transfer.suites.run import run_step

    suite, best, client = _pick_suite(project)
    exp = client.get_experiment_by_name("Default").experiment_id if client.get_experiment_by_name("Default") else "0"
    # no candidate has run: one line saying so
    with pytest.raises(SuiteError, match=r"select step 'best': nothing to choose: cand-a, cand-b, cand-c have no FINISHED run"):
        run_step(client, suite, best, exp, project, "exact")
    ids = {name: _fake_step_run(client, suite, name, m) for name, m in FAKE.items()}

    run, reused = run_step(client, suite, best, exp, project, "exact")
    assert not reused and run.info.status == "FINISHED"
    assert run.data.tags["rtl.selected_step"] == "cand-b" and run.data.tags["rtl.selected_run_id"] == ids["cand-b"]
    assert run.data.tags["rtl.step"] == "best" and run.data.tags["rtl.step_key"] == best.key
    assert run.data.metrics["select_score"] == pytest.approx(0.50)
    assert run.data.metrics["pgd20_acc"] == pytest.approx(0.37)        # the chosen run's test metrics, for reports
    assert run.data.params["epochs"] == "2"                            # ... and its params (e.g. lambda_d)
    assert run.data.params["chosen"] == "cand-b" and run.data.params["by"] == "(val_clean_acc + val_pgd10_acc) / 2"
    scores = json.loads(run.data.tags["rtl.select_scores"])
    assert scores == pytest.approx({"cand-a": 0.45, "cand-b": 0.50, "cand-c": 0.45})
    # {model:best} resolves to a copy of cand-b's version
    mv = client.get_model_version_by_alias("tiny-best", best.alias)
    assert mv.source == "models:/tiny-cand-b/1" and mv.tags["rtl.selected_from"] == "tiny-cand-b/1"
    assert run.data.tags["rtl.model_uri"] == f"models:/tiny-best@{best.alias}"

    # a newer run of a candidate with the same key (e.g. re-run by hand) does not change a recorded choice
    _fake_step_run(client, suite, "cand-c", {**FAKE["cand-c"], "val_pgd10_acc": 0.9})
    again, reused = run_step(client, suite, best, exp, project, "exact")
    assert reused and again.info.run_id == run.info.run_id
    assert client.get_model_version_by_alias("tiny-best", best.alias).version == mv.version
    # reuse=never chooses again, now cand-c
    fresh, reused = run_step(client, suite, best, exp, project, "never")
    assert not reused and fresh.data.tags["rtl.selected_step"] == "cand-c"
    # candidates given by the suite (the runs it used) win over the store's newest
    chosen, _ = run_step(client, suite, best, exp, project, "never",
                         finished={n: [client.get_run(i)] for n, i in ids.items()})
    assert chosen.data.tags["rtl.selected_step"] == "cand-b"


def test_select_step_with_candidates_missing_a_metric_fails_with_one_line(project):
    from robust_transfer.errors import SuiteError
    from robust_transfer.suites.run import run_step

    suite, best, client = _pick_suite(project)
    for name in FAKE:
        _fake_step_run(client, suite, name, {"val_clean_acc": 0.5, "clean_acc": 0.5})
    with pytest.raises(SuiteError) as e:
        run_step(client, suite, best, "0", project, "exact")
    assert "no candidate's run logged every metric of '(val_clean_acc + val_pgd10_acc) / 2'" in str(e.value)
    assert "\n" not in str(e.value)



def test_a_suite_run_and_its_steps_are_tagged_with_the_machine(project, capsys):
    """Every step already FINISHED (fake runs; the select step runs in-process): a real suite run, no training."""
    from robust_transfer.device import machine_description

    path = project / "projects" / "pick.yaml"
    path.write_text(PICK)
    suite = load_suite(path, "tiny")   # this code version: the suite below reuses these runs
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    for step in suite.steps:
        if step.select is None:
            _fake_step_run(client, suite, step.name, FAKE.get(step.name, {}))
    assert main(["suite", "--project", str(path), "--scale", "tiny", "--report", "false"]) == 0
    assert capsys.readouterr().out.count("reused run") == 5
    machine = machine_description()
    assert machine.endswith(" GiB") and f", {os.cpu_count()} cores, " in machine
    suite_run = all_runs(client, "tags.`rtl.strategy` = 'suite'")[0]
    assert suite_run.data.tags["rtl.machine"] == machine
    assert {r.data.tags["rtl.machine"] for r in all_runs(client, "tags.`rtl.step` != ''")} == {machine}


def test_a_suite_run_records_every_claim_and_step_budget_before_its_first_step(project, capsys):
    """Issue 24: the registration record (suites/registration.py) is the suite run's artifact and tag, written
    before any step is reused or run; the steps reused here are older than it, so their claim is registered after."""
    from mlflow.artifacts import load_dict

    path = project / "projects" / "pick.yaml"
    path.write_text(PICK + 'report:\n  - claim: b-beats-a\n    text: t\n'
                    '    compare: {a: cand-b.pgd20_acc, op: ">", b: cand-a.pgd20_acc}\n')
    suite = load_suite(path, "tiny")
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    for step in suite.steps:
        if step.select is None:
            _fake_step_run(client, suite, step.name, FAKE.get(step.name, {}))
    assert main(["suite", "--project", str(path), "--scale", "tiny", "--report", "false"]) == 0
    out = capsys.readouterr().out
    # every suite file beside it: sources.yaml, mini.yaml and pick.yaml plan 8 distinct steps
    assert "registered 1 claims and 8 steps" in out and out.index("registered") < out.index("[1/6]")
    suite_run = all_runs(client, "tags.`rtl.strategy` = 'suite'")[0]
    record = load_dict(f"runs:/{suite_run.info.run_id}/registration.json")
    assert suite_run.data.tags["rtl.registration"] and set(record["claims"]) == {"pick/b-beats-a"}
    assert record["steps"]["cand-b"] == [next(s for s in suite.steps if s.name == "cand-b").params_key]
    assert {s.name for s in suite.steps} | {"head", "check"} == set(record["steps"])
    first_step = min(r.info.start_time for r in all_runs(client, "tags.`rtl.step` = 'best'"))
    assert record["recorded_at_ms"] <= first_step     # the select step ran after the record
    assert main(["report", "--project", str(path), "--scale", "tiny", "--out", "out"]) == 0
    with open(project / "out" / "tiny" / "pick-claims.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["registered"] == "after" and "after its first run started" in row["registration_note"]

# --- the reference AutoAttack beside PGD-20 (issue 18) ----------------------------------------------------------
AA_HEADLINES = {  # suite → the models whose rows carry an AA column (cpu scale)
    "table1": {"src-c10-natural", "src-c10-robust", "src-large-natural", "src-large-robust"},
    "table2": {"tr-large-natural-c10", "tr-large-robust-c10", "t2-split-natural-other", "t2-split-robust-other",
               "t2-split-natural-same", "t2-split-robust-same"},
    "table3": {"tr-large-natural-c10", "tr-large-robust-c10", "src-large-robust", "src-c10-robust"},
    "table4": {"table4-best-lwf"}, "table5": {"table5-best-lwf"}, "table6": {"table6-best-lwf"},
    "table7": {"table7-best-lwf"},
    "fig3": {"fig3-scratch-n-small", "fig3-finetune-n-small", "fig3-transfer-n-small"},
}


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_aa_steps_evaluate_the_headline_models_on_a_prefix_of_their_pgd20_examples(scale):
    from robust_transfer.analysis.report_spec import load_report_spec

    imagenet = {"imagenet_robust": "models:/imagenet-robust-r50/1", "imagenet_natural": "models:/imagenet-natural-r50/1"}
    for name, headline in AA_HEADLINES.items():
        path = REPO / "projects" / f"{name}.yaml"
        planned = load_suite(path, scale, version="v", overrides=imagenet if scale == "paper" else None).steps
        steps = {s.name: s for s in reversed(planned)}   # a seeded step: its first seed, the one {model:} reads
        aa = {s.upstream[0]: s for s in steps.values() if s.params.get("suite") == "autoattack"}
        if scale == "cpu":
            assert headline <= set(aa), f"{name}: no AA step for {sorted(headline - set(aa))}"
        for model, step in aa.items():
            cfg = step.config
            # PGD-20 again in the same run, each attack on every clean-correct example: a paired comparison
            assert cfg.attacks.split(",") == ["clean", "pgd20", "autoattack"] and cfg.cascade is False, step.name
            # cpu: 100 images for a table column, 500 where a claim reads it (AA within 5 points of PGD-20, issue 29)
            claimed = {"aa-tr-large-robust-c10", "aa-t2-split-robust-other", "aa-t2-split-robust-same"}
            want = (500 if step.name in claimed else 100) if scale == "cpu" else 10000
            assert int(step.params["n_examples"]) == want, step.name
            # the evaluated examples are a prefix of the PGD-20 step's (the same seed, no more of them)
            trained = [steps[c] for c in (steps[model].upstream if steps[model].select else [model])]
            for t in trained:
                assert cfg.seed == t.config.seed and cfg.n_examples <= t.config.n_examples, (step.name, t.name)
                # the same threat: given, or (None) the model's own recorded evaluation threat
                assert cfg.epsilon in (None, getattr(t.config, "eval_epsilon", 8.0)), (step.name, t.name)
        # every row of a table that names an AA step reads aa_acc from it
        spec = load_report_spec(path)
        rows = [r for e in spec["report"] if e["type"] == "table" and "aa_acc" in e["columns"] for r in e["rows"]
                if r["scales"] is None or scale in r["scales"]]
        read = {r["step"]: r["metrics_from"].get("aa_acc") for r in rows}
        for model, step in aa.items():
            assert read.get(model) == step.name, f"{name}: row of {model} does not read aa_acc from {step.name}"


@pytest.mark.slow
def test_a_suite_selects_the_best_candidate_and_autoattack_evaluates_it_by_alias(project, capsys):
    """End to end: two real heads, the select step picks one on validation, `evaluate --suite autoattack`
    reads it through {model:best}; a rerun reuses every step, the choice included."""
    path = project / "projects" / "pick.yaml"
    path.write_text(PICK.replace("  - {name: cand-c, entry: transfer, params: {source_model: \"{model:src}\", epochs: 3, "
                                 "device: cpu}}\n", "").replace("[cand-a, cand-b, cand-c]", "[cand-a, cand-b]")
                    .replace("epochs: 1, device: cpu", "epochs: 1, batch_size: 8, n_examples: 6, eval_steps: 2, device: cpu")
                    .replace("epochs: 2, device: cpu", "epochs: 2, batch_size: 8, n_examples: 6, eval_steps: 2, device: cpu"))
    assert main(["suite", "--project", str(path), "--scale", "tiny", "--report", "false"]) == 0
    out = capsys.readouterr().out
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    steps = {r.data.tags["rtl.step"]: r for r in all_runs(client, "tags.`rtl.step` != ''")}
    assert set(steps) == {"src", "cand-a", "cand-b", "best", "best-aa"}
    best, aa = steps["best"], steps["best-aa"]
    chosen = best.data.tags["rtl.selected_step"]
    scores = json.loads(best.data.tags["rtl.select_scores"])
    assert scores[chosen] == max(scores.values()) and f"chose {chosen}" in out
    mean = lambda r: (r.data.metrics["val_clean_acc"] + r.data.metrics["val_pgd10_acc"]) / 2  # noqa: E731
    assert scores == pytest.approx({c: mean(steps[c]) for c in ("cand-a", "cand-b")})
    assert best.data.tags["mlflow.parentRunId"] == aa.data.tags["mlflow.parentRunId"]
    # the AA run evaluated the chosen model: its clean accuracy on the same seeded examples matches
    assert aa.info.status == "FINISHED" and "aa_acc" in aa.data.metrics and "pgd20_acc" in aa.data.metrics
    assert aa.data.tags["rtl.eval_indices_sha256"] and aa.data.params["n_examples"] == "4"
    assert client.get_model_version_by_alias("tiny-best", aa.data.params["model"].split("@")[1]).tags[
        "rtl.selected_from"] == steps[chosen].data.tags["rtl.registered_model"]
    assert main(["suite", "--project", str(path), "--scale", "tiny", "--report", "false"]) == 0
    assert capsys.readouterr().out.count("reused run") == 5


# --- issue 28: variables that refer to themselves, or explode -----------------------------------------------------
def _chain(n: int, *, fanout: int = 1, last: str | None = None) -> str:
    """Scale variables v0..v{n-1}, each naming the next `fanout` times; the last names v0 (a cycle) or is `last`."""
    lines = [f'    v{i}: "{"{v%d}" % (i + 1) * fanout}"' for i in range(n - 1)]
    lines.append(f'    v{n - 1}: "{last}"' if last is not None else f'    v{n - 1}: "{{v0}}"')
    return "\n".join(lines) + "\n"


VARIABLE_ABUSE = [
    ("self-reference", '    v0: "x{v0}"\n', "variable {v0} refers to itself: {v0} → {v0}"),
    ("cycle-of-2", _chain(2), "refers to itself: {v0} → {v1} → {v0}"),
    ("cycle-of-3", _chain(3), "{v0} → {v1} → {v2} → {v0}"),
    ("cycle-of-12", _chain(12), "{v10} → {v11} → {v0}"),
    ("bomb-9x10", _chain(10, fanout=10, last="abcdefghij"), "expands to more than 10000 characters"),
    ("bomb-12x2", _chain(12, fanout=2, last="0123456789" * 10), "expands to more than 10000 characters"),
    ("chain-of-40", _chain(40, last="cifar10"), "at most 16 deep"),
    ("set-makes-a-cycle", '    v0: "{v1}"\n    v1: "cifar10"\n', "refers to itself"),   # v1={v0} given by --set
]


@pytest.mark.parametrize("what,variables,fragment", VARIABLE_ABUSE, ids=[v[0] for v in VARIABLE_ABUSE])
def test_a_variable_cycle_or_bomb_is_one_line_exit_7(project, capsys, what, variables, fragment):
    path = project / "projects" / "vars.yaml"
    path.write_text(f"name: v\nscales:\n  tiny:\n{variables}steps:\n"
                    '  - {name: x, entry: train, params: {dataset: "{v0}", epochs: 1}}\n')
    extra = ["--set", "v1={v0}"] if what == "set-makes-a-cycle" else []
    assert main(["suite", "--project", str(path), "--scale", "tiny", "--dry-run", "true", *extra]) == 7
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err and "vars.yaml:" in err and "params.dataset" in err, err
    assert not all_runs()


def test_variables_that_expand_to_nothing_a_billion_times_are_expanded_once_each():
    """30 references per level, 12 levels, all empty: 30^12 expansions without memoising, 13 with it."""
    from robust_transfer.suites.variables import substitute

    variables = {f"e{i}": "{e%d}" % (i + 1) * 30 for i in range(12)} | {"e12": "", "d": "cifar10"}
    assert substitute("{d}{e0}", variables, {}, "tiny", [], ValueError) == "cifar10"
    assert substitute(True, {}, {}, "tiny", [], ValueError) == "true"
    used = []
    steps = {"src": type("S", (), {"registers": True, "alias": "s-1"})()}
    assert substitute("{a}{a}", {"a": "{model:src}"}, steps, "tiny", used, ValueError) == \
        "models:/tiny-src@s-1models:/tiny-src@s-1"
    assert used == ["src", "src"]   # a memoised variable still names its upstream step each time


SIZED = """\
name: sized
scales:
  tiny: {description: "planned only: sample sizes"}
steps:
  - use: src
  - {name: a500, entry: transfer, params: {source_model: "{model:src}", n_examples: 500, device: cpu}}
  - {name: b500, entry: transfer, seeds: 3, params: {source_model: "{model:src}", n_examples: 500, device: cpu}}
  - {name: a5k, entry: transfer, params: {source_model: "{model:src}", n_examples: 5000, device: cpu}}
  - {name: b5k, entry: transfer, params: {source_model: "{model:src}", n_examples: 5000, device: cpu}}
  - {name: e500, entry: evaluate, params: {model: "{model:a500}", n_examples: 500, device: cpu}}
  - {name: o500, entry: transfer, params: {source_model: "{model:src}", target: "cifar10-jpeg:half-b", n_examples: 500, device: cpu}}
report:
  - claim: small-sample
    text: t
    compare: {a: a500.pgd20_acc, op: ">", b: b500.pgd20_acc, by: 0.05}
  - claim: large-sample
    text: t
    compare: {a: a5k.clean_acc, op: ">", b: b5k.clean_acc, by: 0.05}
  - claim: one-run
    text: t
    compare: {a: e500.clean_acc, op: ">", b: e500.pgd20_acc}
  - claim: floor
    text: t
    compare: {a: a500.pgd20_acc, op: ">=", b: 0}
  - claim: other-data
    text: t
    compare: {a: a500.pgd20_acc, op: ">", b: o500.pgd20_acc}
  - claim: fronts
    text: t
    hypervolume: {axes: [clean_acc, pgd20_acc], sets: {small: {steps: [a500, b500]}, large: {steps: [a5k, b5k]}}}
    compare: {a: small.hypervolume, op: ">", b: large.hypervolume}
"""


def test_a_dry_run_prints_each_claims_smallest_detectable_difference_at_the_planned_sizes(project, capsys):
    path = project / "projects" / "sized.yaml"
    path.write_text(SIZED)
    assert main(["suite", "--project", str(path), "--scale", "tiny", "--dry-run", "true"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split(":")[0].strip().split(" [")[0]: ln for ln in out.splitlines()}
    # by hand, Agresti–Coull at p = 0.5: p̃ = (250 + 2)/504 = 0.5, se = sqrt(0.25/504); two runs in quadrature
    sdd_500 = 2 * math.sqrt(0.25 / 504 + 0.25 / 504)
    assert f"SDD {sdd_500:.3f}" in out and "0.063" in out
    assert lines["small-sample"].endswith("may be uninformative"), out
    assert f"decides only if the effect clears θ by SDD−θ = {sdd_500 - 0.05:.3f}" in out
    assert "b500: n=500, 3 seeds (no credit)" in out and "paired at run time (bound)" in out
    sdd_5k = 2 * math.sqrt(0.25 / 5004 + 0.25 / 5004)          # 0.020 ≤ θ = 0.05
    assert f"SDD {sdd_5k:.3f}" in out and lines["large-sample"].endswith("decides"), out
    # the unpaired bound adds one run's two numbers linearly (their correlation is unknown); an evaluate run logs
    # its per-example correctness, so the engine pairs them at run time
    one = next(ln for ln in out.splitlines() if ln.strip().startswith("e500.clean_acc > e500.pgd20_acc"))
    assert f"SDD {2 * 2 * math.sqrt(0.25 / 504):.3f}" in one and "paired at run time (bound)" in one, one
    assert lines["floor"].endswith("cannot fail") and "holds for every value its metrics could take" in out
    assert lines["fronts"].endswith("no standard error") and "a hypervolume: no standard error" in out
    # the same seeded 500 indices into another dataset are other images: not paired (claim_verdicts.example_id)
    other = next(ln for ln in out.splitlines() if ln.strip().startswith("a500.pgd20_acc > o500.pgd20_acc"))
    assert f"SDD {sdd_500:.3f}" in other and "paired at run time" not in other, other
    assert out.splitlines()[-1] == "claims: 1 decide, 3 may be uninformative, 1 cannot fail, 1 no standard error"


def test_claim_plan_records_take_priors_from_a_reports_csvs(project, tmp_path, capsys):
    from robust_transfer.analysis import claim_plan as cp
    from robust_transfer.analysis import claim_stats as st
    from robust_transfer.analysis.report_spec import load_report_spec

    path = project / "projects" / "sized.yaml"
    path.write_text(SIZED)
    results = tmp_path / "results"
    results.mkdir()
    (results / "sized.csv").write_text("label,metric,ours,paper,step,run_id\nx,pgd20_acc,0.1,,a500,r1\n"
                                       "y,pgd20_acc,0.02,,b500,r2\n")
    (results / "sized-claims.csv").write_text("claim,kind,values\nsmall-sample,paper,0.1 > 0.02\n")  # skipped
    priors = cp.load_priors(results)
    assert priors == {("a500", "pgd20_acc"): 0.1, ("b500", "pgd20_acc"): 0.02}
    suite = load_suite(path, "tiny")
    planned = cp.plan_claims(suite.steps, cp.claims_at(load_report_spec(path), "tiny"), priors)
    small = next(c for c in planned if c.name == "small-sample")
    want = 2 * math.sqrt(st.binomial_se(0.1, 500) ** 2 + st.binomial_se(0.02, 500) ** 2)
    assert small.comparisons[0].detectable == pytest.approx(want) and want < 0.05
    assert small.flag == cp.DECIDES and small.comparisons[0].paired
    assert main(["suite", "--project", str(path), "--scale", "tiny", "--priors", str(results)]) == 2
    assert "dry_run" in capsys.readouterr().err


def test_claim_plan_says_an_analysis_claim_gets_its_standard_error_from_per_image_values_at_run_time():
    """Fig. 5's claim reads `analyze` metrics: the plan has no SE for them, but the engine will (their per-image CSV,
    analysis/per_example.py), so the plan says so instead of implying the claim can never decide."""
    from robust_transfer.analysis import claim_plan as cp
    from robust_transfer.analysis.report_spec import load_report_spec

    path = REPO / "projects" / "fig5.yaml"
    planned = cp.plan_claims(load_suite(path, "cpu", version="v").steps, cp.claims_at(load_report_spec(path), "cpu"), {})
    lines = cp.render(planned, "cpu")
    assert planned and all(c.flag == cp.NO_SE for c in planned), lines
    assert "per-image SE at run time only (the analysis CSV)" in "\n".join(lines), lines


def _repo_with_cpu_scale_run(tmp_path: Path) -> Path:
    """A git repository holding only bin/cpu-scale-run, committed (the script refuses uncommitted suites)."""
    repo = tmp_path / "repo"
    (repo / "bin").mkdir(parents=True)
    shutil.copy(REPO / "bin" / "cpu-scale-run", repo / "bin" / "cpu-scale-run")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    return repo


def test_cpu_scale_run_refuses_an_unknown_part_and_uncommitted_suites(tmp_path):
    """bin/cpu-scale-run: the page must come from one commit, so uncommitted changes under projects/ (or platform/,
    search_spaces/) are refused before anything starts (exit 2), as is a PART that names no preset."""
    repo = _repo_with_cpu_scale_run(tmp_path)
    run = lambda **env: subprocess.run(["bash", str(repo / "bin" / "cpu-scale-run"), str(tmp_path / "out")],  # noqa: E731
                                       capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    bad = run(PART="c")
    assert bad.returncode == 2 and "PART=c: use a, b or all" in bad.stderr
    (repo / "projects").mkdir()
    (repo / "projects" / "table1.yaml").write_text("name: table1\n")      # a suite edited, not committed
    dirty = run(PART="a")
    assert dirty.returncode == 2 and "uncommitted changes" in dirty.stderr, dirty.stderr
    assert not (tmp_path / "out").exists()          # refused before it made anything


def test_cpu_scale_run_second_chain_runs_beside_the_first_niced_and_a_failure_exits_7(tmp_path):
    """bin/cpu-scale-run CHAIN2=...: those suites run beside SUITES (one step at a time, at the DAG steps' nice 15), the
    server outlives both chains, and a suite failing in either chain does not stop the others: exit 7 naming it.
    A real `mlflow server` (the script's own); `rtl` is a stand-in that records how each suite was started."""
    repo = _repo_with_cpu_scale_run(tmp_path)
    venv_bin = tmp_path / "bin"
    venv_bin.mkdir()
    (venv_bin / "mlflow").symlink_to(Path(sys.executable).parent / "mlflow")
    record = tmp_path / "suites.txt"
    # the stand-in: one line per suite (name, --workers, its niceness, whether the server answers), then it waits a
    # little so that the two chains overlap; a suite named in FAIL exits 1
    (venv_bin / "rtl").write_text(f"""#!/usr/bin/env bash
name=$(basename "$3" .yaml)
up=$(curl -sf "$MLFLOW_TRACKING_URI/health" > /dev/null && echo up || echo down)
echo "$name workers=$7 nice=$(nice) server=$up start=$(date +%s.%N)" >> {record}
sleep 2
[ "$name" != "$FAIL" ]
""")
    (venv_bin / "rtl").chmod(0o755)
    out = tmp_path / "out"
    env = {**os.environ, "VENV_BIN": str(venv_bin), "SUITES": "table1 table2", "CHAIN2": "table7 fig3",
           "PAGE": "0", "PORT": str(free_port()), "FAIL": "table7"}
    proc = subprocess.run(["bash", str(repo / "bin" / "cpu-scale-run"), str(out)], capture_output=True, text=True,
                          env=env, timeout=180)
    assert proc.returncode == 7, proc.stdout + proc.stderr
    lines = {ln.split()[0]: ln.split()[1:] for ln in record.read_text().splitlines()}
    assert sorted(lines) == ["fig3", "table1", "table2", "table7"]          # fig3 ran after table7 failed
    assert all(v[2] == "server=up" for v in lines.values())               # the server outlived both chains
    base = os.nice(0)                                                   # the tests' own niceness (CI may set one)
    first, second = [f"nice={base}"], [f"nice={min(base + 15, 19)}"]
    assert lines["table1"][:2] == ["workers=2", *first] and lines["table2"][:2] == ["workers=2", *first]
    assert lines["table7"][:2] == ["workers=1", *second] and lines["fig3"][:2] == ["workers=1", *second]
    start = {k: float(v[3].split("=")[1]) for k, v in lines.items()}
    assert abs(start["table7"] - start["table1"]) < 2                   # side by side, not after the first chain
    run_log = (out / "logs" / "run.log").read_text()
    assert "second chain: table7 fig3" in run_log and "suite table7: FAILED" in run_log
    assert run_log.rstrip().endswith("failed: table7")
