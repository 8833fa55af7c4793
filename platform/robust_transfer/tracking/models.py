"""Model logging, registration and resolution of model URIs to local checkpoints."""
from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from ..checkpoints import META
from ..errors import ModelError
from .runs import mlflow_client, tracking_uri

URI_HELP = "a checkpoint directory, runs:/<run_id>/<path>, models:/<name>/<version> or models:/<name>@<alias>"


# What the pyfunc's own code (robust_transfer, shipped with the model as `code_paths`) imports when it
# loads a checkpoint; pinned at the versions installed here (the lock's).
MODEL_DISTRIBUTIONS = ("mlflow", "torch", "torchvision", "safetensors", "numpy", "pillow", "pyyaml")


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in MODEL_DISTRIBUTIONS:
        try:
            out.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            out.append(dist)
    return out


def model_signature(meta: dict):
    """float32 images [n, 3, H, W] in [0, 1] → float32 logits [n, classes] (H = W = the model's input size)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    size, classes = int(meta.get("input_size", 32)), int(meta["num_classes"])
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, size, size))]),
                          outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, classes))]))


def input_example(meta: dict):
    """One image of the model's input size: pixels in [0, 1] (rounded, to keep the stored JSON small)."""
    import numpy as np

    size = int(meta.get("input_size", 32))
    return np.round(np.random.default_rng(0).random((1, 3, size, size)), 2).astype(np.float32)


def _package_copy(dst: Path) -> Path:
    """A copy of the robust_transfer package (no caches) to ship with the model as `code_paths`."""
    import shutil

    src = Path(__file__).resolve().parents[1]
    out = dst / src.name
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "search_spaces", "projects"))
    return out


def logged_model_name(name: str) -> str:
    """A LoggedModel name MLflow accepts (letters, digits, `-_.`), from the strategy that made it."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:100] or "model"


def log_checkpoint_model(checkpoint_dir: str | Path, metrics: dict[str, float] | None = None,
                         name: str = "model") -> str:
    """Log the checkpoint to the active run as artifacts (`checkpoint/`) and as an MLflow pyfunc model.

    The pyfunc uses a `loader_module` (tracking/pyfunc_loader.py) over the safetensors checkpoint, so
    nothing is pickled; the robust_transfer package travels with it (`code_paths`), so
    `mlflow.pyfunc.load_model` and `mlflow models serve` work where robust-transfer is not installed.
    It carries a signature (images [n, 3, H, W] float32 in [0, 1] → logits) and an input example.
    `metrics` (the final evaluation) are logged again linked to the logged model (MLflow 3's model
    page shows them). `name` is the LoggedModel's name (the strategy: `train-fgsm-rs`, `transfer`, `import`):
    the UI's model list tells them apart by it. Returns the model URI.
    """
    import tempfile

    if mlflow.active_run() is None:
        raise RuntimeError("log_checkpoint_model needs an active MLflow run (use tracking.tracked_run)")
    mlflow.log_artifacts(str(checkpoint_dir), "checkpoint")
    meta = checkpoint_summary(Path(checkpoint_dir))
    with tempfile.TemporaryDirectory(prefix="rtl-code-") as tmp:
        info = mlflow.pyfunc.log_model(name=logged_model_name(name), loader_module="robust_transfer.tracking.pyfunc_loader",
                                       data_path=str(checkpoint_dir), code_paths=[str(_package_copy(Path(tmp)))],
                                       signature=model_signature(meta), input_example=input_example(meta),
                                       pip_requirements=_pip_requirements())
    if metrics:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, model_id=info.model_id)
    return info.model_uri


def register_checkpoint_model(model_uri: str, name: str, tags: dict[str, str], alias: str | None = "challenger"):
    """Register `model_uri` as a new version of `name`, tag it (metrics, threat model, lineage), alias it."""
    client = mlflow_client()
    mv = mlflow.register_model(model_uri, name, await_registration_for=60)
    for k, v in tags.items():
        client.set_model_version_tag(name, mv.version, k, str(v))
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    return mv


def _find_checkpoint(root: Path) -> Path | None:
    """The checkpoint inside a run's artifacts (`checkpoint/`) or a pyfunc model (`data/<name>/`)."""
    for cand in (root, root / "checkpoint", *sorted((root / "data").glob("*"))):
        if (cand / META).is_file():
            return cand
    return None


def resolve_checkpoint(uri_or_path: str, download_dir: str | Path) -> Path:
    """A local checkpoint directory for a path, or for an MLflow URI downloaded into `download_dir`."""
    s = str(uri_or_path)
    if not s.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        p = Path(s)
        if not p.exists():
            raise ModelError(f"model {s!r} does not exist; give {URI_HELP}")
        found = _find_checkpoint(p)
        if found is None:
            raise ModelError(f"model {s!r} is not a robust-transfer checkpoint (no {META}); give {URI_HELP}")
        return found
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(tracking_uri())
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=s, dst_path=str(download_dir)))
    except MlflowException as e:
        raise ModelError(f"model {s!r} could not be resolved: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise ModelError(f"model {s!r} could not be downloaded: {e}") from None
    found = _find_checkpoint(local)
    if found is None:
        raise ModelError(f"model {s!r} holds no robust-transfer checkpoint (no {META} under it)")
    return found


def checkpoint_summary(path: Path) -> dict:
    return json.loads((Path(path) / META).read_text())


def load_model_with_meta(uri_or_path: str):
    """(model, metadata) for `models:/name@alias`, `models:/name/version`, `runs:/...` or a checkpoint path."""
    import tempfile

    from ..checkpoints import load_checkpoint

    with tempfile.TemporaryDirectory(prefix="rtl-model-") as tmp:  # weights are read into memory
        return load_checkpoint(resolve_checkpoint(uri_or_path, tmp))
