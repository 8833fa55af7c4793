"""Tiny source checkpoints and strategies run as the command layer runs them; the CLI in-process, its `train`
argv, and through `mlflow run`; every run of an MLflow store. (The `sources` and `other_folder` fixtures built
from them are in tests/conftest.py.)"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]   # tests/support/transfer.py → the checkout
BIN = REPO / ".venv" / "bin"
SHARED_DATA = REPO.parent / "shared" / "data"   # ../shared/data beside the checkout (the real datasets)


def make_source(path: Path, folder: Path, *, epochs: int = 12, seed: int = 0, input_size: int | None = None,
                train: bool = True) -> Path:
    """A small-cnn source checkpoint, naturally trained on the imagefolder `folder` (or left random)."""
    from robust_transfer import create_model
    from robust_transfer.checkpoints import save_checkpoint
    from robust_transfer.data import BatchLoader, load_dataset

    data = load_dataset(f"imagefolder:{folder}", "train", progress=False)
    torch.manual_seed(seed)
    model = create_model("small-cnn", data.num_classes, input_size=input_size or data.image_size)
    if train:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        loader = BatchLoader(data, 24, shuffle=True, seed=seed)
        model.train()
        for _ in range(epochs):
            for x, y in loader:
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    if train:  # the fixtures' premise: a source that has learnt its task (chance is 1/3)
        with torch.no_grad():
            acc = (model(data.images.float() / 255).argmax(1) == data.labels).float().mean().item()
        assert acc >= 0.6, f"the tiny source did not learn its task (train accuracy {acc:.2f})"
    save_checkpoint(path, model, {"classes": list(data.classes), "data_spec": data.spec,
                                  "data_sha256": data.sha256(), "lineage": {"strategy": "test-fixture"}})
    return path


def load_source(uri: str):
    """The `Source` a strategy is handed: resolved as the command layer resolves `source_model`."""
    from robust_transfer.commands.common import resolve_source

    return resolve_source(str(uri))


def run_strategy(fn, cfg, logger=None, **kw):
    """`fn(cfg, logger, source=..., **kw)` with the source of `cfg.source_model` (a fresh copy each time)."""
    from robust_transfer.reporting import MemoryLogger

    return fn(cfg, logger if logger is not None else MemoryLogger(), source=load_source(cfg.source_model), **kw)


@dataclass
class Sources:
    folder: Path       # the 3-class 16×16 imagefolder the sources were trained on
    spec: str          # its dataset spec
    src: str           # trained small-cnn source (16×16 inputs, 3 classes)
    src32: str         # random small-cnn source with 32×32 inputs (for size mismatches)


FAST = ["--progress", "false", "--n-examples", "12", "--eval-steps", "3", "--batch-size", "16"]


def rtl(*argv: str) -> int:
    """`rtl ...` in-process; returns the exit code."""
    from robust_transfer.cli import main

    return main([str(a) for a in argv])


def all_runs(where=None, filter_string: str = "", max_results: int = 1000) -> list:
    """Every run of every experiment in an MLflow store: `where` is an `MlflowClient`, a working directory
    holding `mlflow.db`, or None (the store MLFLOW_TRACKING_URI names)."""
    from mlflow.tracking import MlflowClient

    if where is None:
        client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    elif isinstance(where, MlflowClient):
        client = where
    else:
        client = MlflowClient(f"sqlite:///{Path(where) / 'mlflow.db'}")
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, filter_string, max_results=max_results) if exps else []


def state(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


def mlflow_env(workdir: Path) -> dict[str, str]:
    """This environment with the venv's executables first on PATH and no MLflow run to attach to."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_RUN_ID", None)
    return env


def mlflow_run(workdir: Path, entry: str, **params) -> subprocess.CompletedProcess:
    """`mlflow run <repo> -e <entry> -P k=v ... --env-manager local` in `workdir`, as a user would type it."""
    cmd = [str(BIN / "mlflow"), "run", str(REPO), "-e", entry, "--env-manager", "local"]
    for k, v in params.items():
        cmd += ["-P", f"{k}={v}"]
    return subprocess.run(cmd, cwd=workdir, env=mlflow_env(workdir), capture_output=True, text=True, timeout=300)


def train_args(folder, *extra: str) -> list[str]:
    """`rtl train` argv for two iterations on the imagefolder `folder`: a run in seconds."""
    return ["train", "--dataset", f"imagefolder:{folder}", "--iterations", "2", "--batch-size", "16",
            "--n-examples", "6", "--progress", "false", "--device", "cpu", *extra]
