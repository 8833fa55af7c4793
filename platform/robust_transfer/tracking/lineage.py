"""The datasets a run read, as MLflow inputs (issue 27 §6): `mlflow.log_input`, so the UI's Dataset column
shows them with their digest. (The code's commit is `source.py`; the model an evaluation measured,
`registry.link_evaluation`.)"""
from __future__ import annotations

import mlflow

DIGEST_CHARS = 36   # MLflow stores a dataset digest in 36 characters: the SHA-256's first 36 hex digits


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
    mlflow.log_input(ds, context=context)
    return ds
