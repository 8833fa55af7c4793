"""Helpers for the transfer-strategy tests: tiny source checkpoints, MLflow run lookups, the CLI."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import write_imagefolder

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"


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


@pytest.fixture(scope="module")
def sources(tiny_folder, tmp_path_factory) -> Sources:
    root = tmp_path_factory.mktemp("sources")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RTL_CACHE_DIR", str(root / "cache"))
        src = make_source(root / "src", tiny_folder)
        src32 = make_source(root / "src32", tiny_folder, input_size=32, train=False)
    return Sources(tiny_folder, f"imagefolder:{tiny_folder}", str(src), str(src32))


@pytest.fixture(scope="module")
def other_folder(tmp_path_factory) -> Path:
    """A different 4-class target task (other colours), same 16×16 size."""
    return write_imagefolder(tmp_path_factory.mktemp("other") / "other", n_classes=4, n_train=16, n_test=8, seed=7)


FAST = ["--progress", "false", "--n-examples", "12", "--eval-steps", "3", "--batch-size", "16"]


def rtl(*argv: str) -> int:
    """`rtl ...` in-process; returns the exit code."""
    from robust_transfer.cli import main

    return main([str(a) for a in argv])


def all_runs():
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, max_results=1000) if exps else []


def state(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


def mlflow_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_RUN_ID", None)
    return env


def mlflow_run(workdir: Path, entry: str, **params) -> subprocess.CompletedProcess:
    """`mlflow run <repo> -e <entry> -P k=v ... --env-manager local`, as a user would type it."""
    cmd = [str(BIN / "mlflow"), "run", str(REPO), "-e", entry, "--env-manager", "local"]
    for k, v in params.items():
        cmd += ["-P", f"{k}={v}"]
    return subprocess.run(cmd, env=mlflow_env(workdir), capture_output=True, text=True, timeout=120)
