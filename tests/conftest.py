"""Shared fixtures: tiny real-format datasets, tiny trained models, tiny sources, and an isolated MLflow/cache per
test. The helpers they are built from are in tests/support/ (one place for each; tests/test_layout.py holds it)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.net import free_port, wait_http
from support.synthetic import synthetic, write_imagefolder
from support.transfer import Sources, make_source



@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and busy-waiting ones cost CPU on 2 shared cores
    (CONTRIBUTING.md): a module opts in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return write_imagefolder(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """The test's own RTL_CACHE_DIR (decoded datasets, downloads): no test sees what another cached."""
    monkeypatch.setenv("RTL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A clean working directory with its own sqlite MLflow store, caches and checkpoints."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("RTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory) -> Path:
    """An MLflow sqlite store with its tables already created (creating them takes seconds per test)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def wd(workdir, mlflow_db_template) -> Path:
    """The `workdir`, its MLflow store pre-created from the template (still one store per test)."""
    import shutil

    shutil.copy(mlflow_db_template, workdir / "mlflow.db")
    return workdir


# ------------------------------------------------------------- tiny models on `synthetic` tensors (attacks, evaluation)
# Module-scoped: each test file trains its own copy, so no file sees what another file did to a model.
@pytest.fixture(scope="module")
def data():
    """(train, test): 2000 and 300 learnable 16×16 10-class tensors (support.synthetic)."""
    return synthetic(2000, seed=0), synthetic(300, seed=1)


@pytest.fixture(scope="module")
def natural(data):
    """A naturally trained TinyCNN: clean accuracy > 0.85, no robustness."""
    import torch

    from support.models import TinyCNN, train_tiny

    (x, y), _ = data
    torch.manual_seed(0)
    return train_tiny(TinyCNN(), x, y, epochs=6)


@pytest.fixture(scope="module")
def robust(data):
    """A TinyCNN warm-started for an epoch, then PGD-3 adversarially trained for two."""
    import torch

    from support.models import TinyCNN, train_tiny

    (x, y), _ = data
    torch.manual_seed(1)
    model = train_tiny(TinyCNN(), x, y, epochs=1)
    return train_tiny(model, x, y, epochs=2, adv_steps=3, seed=1)


# ------------------------------------------------------------- tiny source checkpoints (the transfer strategies)
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


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 (a free port), sqlite backend and artifact store in a temporary folder: a store
    that several processes may write at once (tests/test_registry.py, tests/test_suite_dag.py)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    exe = Path(sys.executable).with_name("mlflow")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                             "--artifacts-destination", str(root / "artifacts")],
                            cwd=root, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no job runner
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, log=root / "server.log")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
