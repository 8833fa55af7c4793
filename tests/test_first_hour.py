"""A user's first hour (issue 27): what a model registered by `train` carries (arch, classes, a model card with
each number's split), `load_model` in eval mode, evaluate runs named and linked to the LoggedModel they measured,
datasets as MLflow inputs with their digest, the git commit on every `rtl` run, LoggedModels named after the
strategy, and `promote --dry-run` creating no run."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from robust_transfer.cli import main
from support.net import free_port, wait_http
from support.transfer import REPO, SHARED_DATA

NAME = "first-hour"


@pytest.fixture(scope="module")
def registered(tmp_path_factory, tiny_folder):
    """One tiny model trained and registered by `rtl train` (3 updates), in its own MLflow store."""
    import mlflow
    import torch

    root = tmp_path_factory.mktemp("first-hour")
    before = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny models on 2 shared cores
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("RTL_CACHE_DIR", str(root / "cache"))
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        assert main(["train", "--dataset", f"imagefolder:{tiny_folder}", "--iterations", "3", "--batch-size", "16",
                     "--n-examples", "12", "--augment", "false", "--progress", "false", "--register-as", NAME]) == 0
        yield mlflow.MlflowClient(uri)
    torch.set_num_threads(before)


def _model_id(mv) -> str:
    """(MLflow 3.17's sqlite store leaves ModelVersion.model_id empty; the source is models:/<model_id>)"""
    assert mv.source.startswith("models:/m-")
    return mv.model_id or mv.source[len("models:/"):]


def _runs(client, strategy: str):
    exp = client.get_experiment_by_name("robust-transfer")
    return client.search_runs([exp.experiment_id], f"tags.`rtl.strategy` = '{strategy}'")


def test_load_model_returns_eval_mode_and_train_on_request(registered):
    from robust_transfer import load_model, load_model_with_meta

    model = load_model(f"models:/{NAME}@challenger")
    assert not model.training and not any(m.training for m in model.modules())
    assert load_model(f"models:/{NAME}@challenger", train=True).training
    assert not load_model_with_meta(f"models:/{NAME}/1")[0].training


def test_a_version_registered_by_train_carries_arch_classes_and_a_card(registered, tiny_folder):
    mv = registered.get_model_version(NAME, "1")
    classes = sorted(p.name for p in (tiny_folder / "train").iterdir())
    assert mv.tags["arch"] == "small-cnn"
    assert mv.tags["classes"] == ",".join(classes) and mv.tags["num_classes"] == str(len(classes))
    card = mv.description
    assert card.startswith(f"# {NAME} version 1") and "- **arch**: small-cnn" in card
    assert ", ".join(classes) in card.replace(",", ", ") and "- **threat model** (training):" in card
    assert "- **lineage**: " in card and "strategy=train" in card, card
    assert "| clean_acc | test |" in card and "| val_clean_acc | validation |" in card
    # the LoggedModel is named after the strategy, and the run read its training data as an MLflow input
    model = registered.get_logged_model(_model_id(mv))
    assert model.name == "train-natural"
    run = registered.get_run(mv.run_id)
    contexts = {t.value for d in run.inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context"}
    assert contexts == {"training"}


def test_evaluate_runs_are_named_linked_to_the_model_and_log_their_dataset(registered, capfd):
    assert main(["evaluate", "--model", f"models:/{NAME}@challenger", "--n-examples", "12", "--progress", "true",
                 "--attacks", "pgd2"]) == 0
    assert "\r" not in capfd.readouterr().err   # progress on, but stderr is no terminal: no `\r` redraws
    (found,) = _runs(registered, "evaluate")
    run = registered.get_run(found.info.run_id)   # (search_runs leaves model inputs out)
    assert run.info.run_name == f"evaluate-{NAME}@challenger-quick"
    model_id = _model_id(registered.get_model_version(NAME, "1"))
    assert run.data.tags["rtl.model_id"] == model_id
    assert [m.model_id for m in run.inputs.model_inputs] == [model_id]
    (ds,) = run.inputs.dataset_inputs
    assert ds.dataset.digest == run.data.tags["rtl.data_sha256"][:36]
    assert ds.dataset.name.endswith(":test")
    linked = {m.key for m in registered.get_logged_model(model_id).metrics if m.run_id == run.info.run_id}
    assert {"clean_acc", "pgd2_acc"} <= linked


def test_rtl_runs_record_the_git_commit(registered):
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    runs = _runs(registered, "train")
    assert runs
    for r in runs:   # this checkout's HEAD when the run started (HEAD or, if a commit came since, an ancestor)
        sha = r.data.tags.get("mlflow.source.git.commit", "")
        assert len(sha) == 40 and subprocess.run(["git", "-C", str(REPO), "merge-base", "--is-ancestor", sha,
                                                  "HEAD"]).returncode == 0, sha


def test_a_frozen_copy_without_git_records_the_commit_it_was_copied_from(monkeypatch):
    """bin/cpu-scale-run runs the suites from `git archive` of a commit (no .git): it sets RTL_GIT_COMMIT, which
    the runs record instead of nothing (the 2026-12-07 run's history said "commit not recorded")."""
    from robust_transfer.tracking import source

    sha = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setattr(source, "_checkout_commit", lambda: None)
    source.git_commit.cache_clear()
    try:
        monkeypatch.setenv("RTL_GIT_COMMIT", sha)
        assert source.git_commit() == sha and source.source_tags({}) == {source.GIT_COMMIT_TAG: sha}
        source.git_commit.cache_clear()
        monkeypatch.setenv("RTL_GIT_COMMIT", "not-a-commit")
        assert source.git_commit() is None and source.source_tags({}) == {}
    finally:
        source.git_commit.cache_clear()


def _post(url: str, body: dict) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.slow
def test_the_venvs_mlflow_serves_a_registered_model_without_path(registered, tmp_path):
    """`.venv/bin/mlflow models serve --env-manager local` with nothing activated (MLflow starts `uvicorn` by
    name: bin/venv-bin-on-path.pth, installed by `make venv`, puts the venv's bin/ on PATH) answers a JSON batch
    with logits, and refuses 0-255 pixels with a 400 that says so. ~30 s."""
    import os
    import signal
    import sys
    from pathlib import Path

    import numpy as np

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH="/usr/bin:/bin", MLFLOW_TRACKING_URI=os.environ["MLFLOW_TRACKING_URI"])
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
                             f"models:/{NAME}@challenger", "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/ping", proc, timeout=90, log=tmp_path / "serve.log")
        batch = np.random.default_rng(0).random((2, 3, 16, 16)).astype(np.float32)
        status, answer = _post(f"{url}/invocations", {"inputs": batch.tolist()})
        assert status == 200, answer
        assert np.asarray(answer["predictions"]).shape == (2, 3)
        status, answer = _post(f"{url}/invocations", {"inputs": (batch * 255).tolist()})
        assert status == 400 and "pixels must lie in [0, 1]" in answer["message"], answer
        assert "divide 0-255 images by 255" in answer["message"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_pixels_outside_0_1_are_refused_by_the_pyfunc():
    import torch
    from mlflow.exceptions import MlflowException

    from robust_transfer.tracking.pyfunc_loader import check_pixels

    check_pixels(torch.rand(2, 3, 4, 4))   # [0, 1]: fine
    refused = 0
    for bad, fragment in ((torch.rand(2, 3, 4, 4) * 255, "divide 0-255 images by 255"),
                          (torch.full((1, 3, 2, 2), -0.5), "got values in [-0.5, -0.5]"),
                          (torch.full((1, 3, 2, 2), float("nan")), "pixels must lie in [0, 1]")):
        with pytest.raises(MlflowException, match=fragment.replace("[", r"\[").replace("]", r"\]")):
            check_pixels(bad)
        refused += 1
    assert refused == 3


def test_printed_tool_commands_name_the_venvs_bin(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    from robust_transfer.venvtools import tool_command

    beside = Path(sys.executable).parent / "optuna-dashboard"
    assert beside.is_file()
    monkeypatch.chdir(tmp_path)
    assert tool_command("optuna-dashboard") == str(beside)
    monkeypatch.chdir(beside.parents[2])   # where the venv is (the checkout, for `.venv`): the relative spelling
    assert tool_command("optuna-dashboard") == f"{beside.parents[1].name}/bin/optuna-dashboard"
    assert tool_command("no-such-tool") == "no-such-tool"


def test_the_pareto_plot_shows_the_studys_own_front_on_its_val_objectives(tmp_path, tiny_folder):
    """Issue 27 §4: the axes are the objectives the study optimised (val_*), the front is the study's (Optuna's
    and `best_trials`'), and the test numbers of the front's trials are only written beside, marked `test:`.
    The trials are made so that the test numbers would give another front (trials 1 and 2)."""
    import optuna

    from robust_transfer.search.artifacts import pareto_plot, trials_frame
    from robust_transfer.search.space_yaml import load_space
    from robust_transfer.search.study import best_trials

    (tmp_path / "s.yaml").write_text("\n".join([
        "entry_point: train", "fixed:", f'  dataset: "imagefolder:{tiny_folder}"', "params:",
        "  lr: {type: float, low: 0.001, high: 0.2, log: true}", "objectives:",
        "  - {metric: val_clean_acc, direction: maximize}", "  - {metric: val_pgd10_acc, direction: maximize}", ""]))
    space = load_space(str(tmp_path / "s.yaml"))
    study = optuna.create_study(directions=space.directions)
    #            val clean, val pgd10     test clean, test pgd20
    for number, (val, test) in enumerate([((0.50, 0.20), (0.40, 0.10)), ((0.70, 0.30), (0.60, 0.35)),
                                          ((0.60, 0.25), (0.65, 0.30))]):
        t = optuna.trial.create_trial(params={"lr": 0.01}, distributions=space.distributions(), values=list(val),
                                      user_attrs={"metrics": {"clean_acc": test[0], "pgd20_acc": test[1]}})
        study.add_trial(t)
    front = [t.number for t in best_trials(study, space)]
    assert front == [t.number for t in study.best_trials] == [1]
    drawn = pareto_plot(trials_frame(study, space), tmp_path / "pareto_front.png", "s", space, front)
    assert (tmp_path / "pareto_front.png").stat().st_size > 0
    assert (drawn["x"], drawn["y"], drawn["front"]) == ("val_clean_acc", "val_pgd10_acc", [1])
    assert drawn["notes"] == ["#1  test: clean_acc 0.600, pgd20_acc 0.350"]


def test_promote_dry_run_decides_and_creates_no_run(registered, capsys):
    exp = registered.get_experiment_by_name("robust-transfer")
    before = {r.info.run_id for r in registered.search_runs([exp.experiment_id])}
    policy = "max val_pgd10_acc subject to val_clean_acc >= 0.0"   # docs/registry.md's shape: validation metrics
    assert main(["promote", "--name", NAME, "--policy", policy, "--dry-run", "true"]) == 0
    out = capsys.readouterr()
    assert "version 1 PROMOTED (dry run)" in out.out and "nothing was recorded" in out.out
    assert "warning" not in out.err   # chosen on validation: no "choosing on test" line
    assert {r.info.run_id for r in registered.search_runs([exp.experiment_id])} == before
    assert "champion" not in registered.get_registered_model(NAME).aliases
    assert "promotion.decision" not in registered.get_model_version(NAME, "1").tags


def test_the_docs_promotion_examples_choose_on_validation_metrics():
    import re
    import shlex

    from robust_transfer.expr import choosing_on_test_warning
    from robust_transfer.promotion import Policy

    text = (REPO / "docs" / "registry.md").read_text()
    policies = [shlex.split(line)[shlex.split(line).index("--policy") + 1]
                for line in text.splitlines() if re.match(r"^\.venv/bin/rtl promote .*--policy", line)]
    assert len(policies) >= 2
    for p in policies:
        names = Policy.parse(p).metric_names
        assert names and all(n.startswith("val_") for n in names), p
        assert choosing_on_test_warning(f"policy {p!r}", names) is None


def test_a_sqlite_studys_creation_lock_stays_out_of_the_working_directory(tmp_path, monkeypatch):
    import tempfile
    from pathlib import Path

    from robust_transfer.search.storage import creation_lock, creation_lock_path

    monkeypatch.chdir(tmp_path)
    with creation_lock("sqlite:///optuna.db"):
        lock = creation_lock_path("optuna.db")
        assert lock.parent == Path(tempfile.gettempdir()) and lock.exists()
    assert list(tmp_path.iterdir()) == []
    assert creation_lock_path("optuna.db") == creation_lock_path(str(tmp_path / "optuna.db"))   # one per file


def test_mlflow_entry_finds_the_launching_interpreter_with_ps_not_proc(tmp_path):
    """bin/mlflow-entry with no Python holding MLflow on PATH and no .venv beside it: the interpreter of the
    process that started it (MLflow's, under `.venv/bin/mlflow run`), read with POSIX `ps`, runs `rtl`."""
    import os
    import shutil
    import sys
    from pathlib import Path

    assert "/proc/" not in (REPO / "bin" / "mlflow-entry").read_text()
    (tmp_path / "bin").mkdir()
    shutil.copy(REPO / "bin" / "mlflow-entry", tmp_path / "bin" / "mlflow-entry")
    (tmp_path / "platform").symlink_to(REPO / "platform")
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    launcher = str(Path(sys.executable).absolute())   # (ps shows the path it was started with)
    code = f"import subprocess, sys; sys.exit(subprocess.call(['bash', {str(tmp_path / 'bin' / 'mlflow-entry')!r}, '--help']))"
    # -S: no site, so no venv-bin-on-path.pth either: the child's PATH keeps no Python with MLflow on it
    out = subprocess.run([launcher, "-S", "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage: rtl")


def _readme_first_result_commands() -> list[str]:
    """The shell commands of README.md's "A first result in five minutes" code block, continuation lines joined."""
    import re

    section = (REPO / "README.md").read_text().split("## A first result in five minutes", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]


_SMALL = {"--epochs": "1", "--per-class": "20", "--n-examples": "20"}   # the README's: 3, 300, 200 (72 s of CPU)


@pytest.mark.slow
def test_the_readmes_first_result_works_in_order_on_a_fresh_clone(tmp_path):
    """README's "A first result in five minutes", run as written, in order, on a fresh clone of this checkout's HEAD
    (beside `shared/`, as the README's data note assumes), in a shell with nothing activated. Two changes, both
    sizes: --epochs/--per-class/--n-examples become 1/20/20 (the README's take 72 s of CPU), and `mlflow ui` gets
    a free port and is stopped once it answers. `make venv` reuses the environment of this lock (building one
    takes minutes and a package index: skipped when it is not built). ~1-2 min."""
    import os
    import shlex
    import signal
    import sys


    commands = _readme_first_result_commands()
    assert commands[0].split("#")[0].strip() == "make venv", commands   # what creates .venv comes first
    assert any(".venv/bin/rtl train" in c for c in commands) and any(".venv/bin/rtl evaluate" in c for c in commands)
    if not SHARED_DATA.is_dir():
        pytest.skip("no offline data mirror (../shared/data) to train on")
    lock_hash = subprocess.run(["sha256sum", str(REPO / "requirements.lock")], capture_output=True,
                               text=True).stdout[:16]
    if not (Path.home() / ".cache" / "robust-transfer" / f"venv-{lock_hash}" / ".installed").exists():
        pytest.skip("the environment of this lock is not built (make venv would build it: minutes, network)")
    clone = tmp_path / "robust-transfer"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    (tmp_path / "shared").symlink_to(SHARED_DATA.parent)
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MLFLOW_TRACKING_URI", "RTL_DATA_DIR",
                                                            "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin and "/.venv/" not in p)
    # The environment is shared by every checkout with this lock and its editable install may point at another
    # one: the clone's own code first, as `make test`/`make demo` do (a fresh machine's venv points at the clone).
    env["PYTHONPATH"] = str(clone / "platform")
    ran = 0
    for command in commands:
        argv = shlex.split(command, comments=True)
        for i, a in enumerate(argv[:-1]):
            if a in _SMALL:
                argv[i + 1] = _SMALL[a]
        if argv[:2] == [".venv/bin/mlflow", "ui"]:
            port = free_port()
            proc = subprocess.Popen(argv + ["--port", str(port)], cwd=clone, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=90)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
        else:
            out = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=900)
            assert out.returncode == 0, f"{' '.join(argv)}: {out.stdout[-1500:]}{out.stderr[-1500:]}"
        ran += 1
    assert ran == len(commands) == 4
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{clone / 'mlflow.db'}")   # the README's store: mlflow.db where typed
    runs = client.search_runs([client.get_experiment_by_name("robust-transfer").experiment_id])
    assert sorted(r.data.tags["rtl.strategy"] for r in runs if r.info.status == "FINISHED") == ["evaluate", "train"]


def test_training_progress_draws_no_redraws_off_a_terminal(workdir, tiny_folder, capfd):
    """The engine's bar too (its torchrun rank check must not force it on): stderr is no terminal here."""
    assert main(["train", "--dataset", f"imagefolder:{tiny_folder}", "--iterations", "3", "--batch-size", "8",
                 "--n-examples", "4", "--progress", "true", "--device", "cpu"]) == 0
    err = capfd.readouterr().err
    assert "\r" not in err and "it/s" not in err
