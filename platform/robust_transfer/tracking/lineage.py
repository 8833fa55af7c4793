"""The datasets a run read, as MLflow inputs (issue 27 §6): `mlflow.log_input`, so the UI's Dataset column
shows them with their digest. (The code's commit is `source.py`; the model an evaluation measured,
`registry.link_evaluation`.)"""
from __future__ import annotations

import time

import mlflow

DIGEST_CHARS = 36   # MLflow stores a dataset digest in 36 characters: the SHA-256's first 36 hex digits
# MLflow's SQL store looks a dataset up by (experiment, name, digest) and inserts it when missing, without a lock:
# two runs logging the same split at once (search trials in threads or worker processes) can both miss it, and the
# second insert fails on the unique constraint. Its transaction is rolled back, so logging again finds the row.
# sqlite and PostgreSQL say it so (raw, or inside an MlflowException from a tracking server).
_DATASET_INSERT_RACE = ("UNIQUE constraint failed: datasets", "duplicate key value violates unique constraint")
_ATTEMPTS = 3


def dataset_input(spec: str, split: str, sha256: str, n: int | None = None):
    """An MLflow dataset that describes one split of our data by its spec and content hash (the images are
    not copied into MLflow: the spec reloads them, the digest says whether they are the same)."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    info = {"data_spec": spec, "split": split, "sha256": sha256, **({"n": str(n)} if n is not None else {})}
    # MLflow 3.17 declares `profile` abstract on Dataset but MetaDataset (the documented class) instantiates.
    return MetaDataset(CodeDatasetSource(info), name=f"{spec}:{split}"[:500],  # type: ignore[abstract]
                       digest=sha256[:DIGEST_CHARS])


def log_dataset(spec: str, split: str, sha256: str, context: str, n: int | None = None):
    """Log one split as an input of the active run (`context`: training, evaluation, ...); returns the dataset."""
    ds = dataset_input(spec, split, sha256, n)
    for attempt in range(1, _ATTEMPTS):
        try:
            mlflow.log_input(ds, context=context)
            return ds
        except Exception as e:      # noqa: BLE001 — only the insert race is retried, anything else is re-raised
            if not any(m in str(e) for m in _DATASET_INSERT_RACE):
                raise
            time.sleep(0.05 * attempt)
    mlflow.log_input(ds, context=context)     # the last attempt: whatever it raises goes to the caller
    return ds
