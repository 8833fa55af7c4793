"""A user's first hour (issue 27): what a model registered by `train` carries (arch, classes, a model card with
each number's split), `load_model` in eval mode, evaluate runs named and linked to the LoggedModel they measured,
datasets as MLflow inputs with their digest, the git commit on every `rtl` run, LoggedModels named after the
strategy, and `promote --dry-run` creating no run."""
from __future__ import annotations

import subprocess

import pytest

from conftest import REPO
from robust_transfer.cli import main

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


def test_evaluate_runs_are_named_linked_to_the_model_and_log_their_dataset(registered):
    assert main(["evaluate", "--model", f"models:/{NAME}@challenger", "--n-examples", "12", "--progress", "false",
                 "--attacks", "pgd2"]) == 0
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
    assert runs and all(r.data.tags.get("mlflow.source.git.commit") == head.stdout.strip() for r in runs)
