"""What a run came from, in MLflow's own fields (issue 27 §6): the code's git commit
(`mlflow.source.git.commit`), the datasets it read (`mlflow.log_input`, so the UI's Dataset column shows
them with their digest) and the LoggedModel an evaluation measured (metrics logged with its `model_id`)."""
from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

import mlflow

from .runs import mlflow_client

GIT_COMMIT_TAG = "mlflow.source.git.commit"
DIGEST_CHARS = 36   # MLflow stores a dataset digest in 36 characters: the SHA-256's first 36 hex digits
_LOGGED_MODEL_URI = re.compile(r"^models:/(m-[0-9a-f]+)/?$")


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the git checkout this package's code runs from; None outside one (an installed wheel,
    a model's `code_paths` copy) or without git."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", sha) else None


def source_tags(existing: dict[str, str]) -> dict[str, str]:
    """`mlflow.source.git.commit` for a run that has none yet (`mlflow run` sets its own)."""
    sha = git_commit()
    return {GIT_COMMIT_TAG: sha} if sha and GIT_COMMIT_TAG not in existing else {}


def dataset_input(spec: str, split: str, sha256: str, n: int | None = None):
    """An MLflow dataset that describes one split of our data by its spec and content hash (the images are
    not copied into MLflow: the spec reloads them, the digest says whether they are the same)."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    info = {"data_spec": spec, "split": split, "sha256": sha256, **({"n": str(n)} if n is not None else {})}
    return MetaDataset(CodeDatasetSource(info), name=f"{spec}:{split}"[:500], digest=sha256[:DIGEST_CHARS])


def log_dataset(spec: str, split: str, sha256: str, context: str, n: int | None = None):
    """Log one split as an input of the active run (`context`: training, evaluation, ...); returns the dataset."""
    ds = dataset_input(spec, split, sha256, n)
    mlflow.log_input(ds, context=context)
    return ds


def logged_model_id(model_uri: str) -> str | None:
    """The LoggedModel behind `model_uri`: a registered version's, `models:/m-<id>` itself, or the one model a
    run logged (`runs:/<id>/...`); None for a checkpoint path or when a run logged several."""
    from .registry import registered_version

    s = str(model_uri)
    m = _LOGGED_MODEL_URI.match(s)
    if m:
        return m.group(1)
    client = mlflow_client(fluent=True)
    if s.startswith("models:/"):
        found = registered_version(s)
        if found is None:
            return None
        mv = client.get_model_version(*found)
        # (MLflow 3.17's sqlite store returns model_id=None; the version's source is the model's URI)
        m = _LOGGED_MODEL_URI.match(str(mv.source or ""))
        return getattr(mv, "model_id", None) or (m.group(1) if m else None)
    m = re.match(r"^runs:/([0-9a-f]+)/", s)
    if m:
        run = client.get_run(m.group(1))
        models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list",
                                             filter_string=f"source_run_id = '{run.info.run_id}'")
        return models[0].model_id if len(models) == 1 else None
    return None


def link_evaluation(run_id: str, model_uri: str, metrics: dict[str, float], dataset) -> str | None:
    """Log `metrics` against the evaluated LoggedModel and the dataset (MLflow 3: the model's page lists them),
    and the model as an input of the run. Returns the model id, None when the model is not a logged one."""
    from mlflow.entities import LoggedModelInput

    model_id = logged_model_id(model_uri)
    if model_id is None:
        return None
    mlflow.log_input(model=LoggedModelInput(model_id))
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, run_id=run_id, model_id=model_id, dataset=dataset)
    return model_id
