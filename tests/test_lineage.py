"""tracking/lineage.py: a dataset logged by two runs at once. MLflow's SQL store inserts a missing dataset without a
lock, so the second of two simultaneous inserts fails on the unique constraint (seen in CI on 2026-12-08: a search
trial FAILed with `(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name,
datasets.digest`). The race is injected at the one call that loses it; the store is real."""
import mlflow
import pytest
import sqlalchemy.exc

from robust_transfer.tracking import lineage

RACE = sqlalchemy.exc.IntegrityError(
    "INSERT INTO datasets", {}, Exception("UNIQUE constraint failed: datasets.experiment_id, datasets.name, "
                                          "datasets.digest"))


def _losing_once(error):
    real, calls = mlflow.log_input, []

    def log_input(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise error          # the other run's insert won: this transaction was rolled back
        return real(*args, **kwargs)
    return log_input, calls


def test_the_run_that_loses_the_dataset_insert_race_logs_it_again_and_links_it(wd, monkeypatch):
    log_input, calls = _losing_once(RACE)
    monkeypatch.setattr(mlflow, "log_input", log_input)
    with mlflow.start_run() as run:
        lineage.log_dataset("cifar10-jpeg", "train", "ab" * 32, context="training", n=45000)
    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert len(calls) == 2
    assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("cifar10-jpeg:train", ("ab" * 32)[:36])]
    assert [t.value for t in inputs[0].tags if t.key == "mlflow.data.context"] == ["training"]


def test_any_other_error_of_log_input_is_raised_at_once(wd, monkeypatch):
    log_input, calls = _losing_once(sqlalchemy.exc.OperationalError("INSERT", {}, Exception("disk I/O error")))
    monkeypatch.setattr(mlflow, "log_input", log_input)
    with mlflow.start_run(), pytest.raises(sqlalchemy.exc.OperationalError, match="disk I/O error"):
        lineage.log_dataset("cifar10-jpeg", "train", "ab" * 32, context="training")
    assert len(calls) == 1
