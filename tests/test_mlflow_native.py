"""MLflow as its users run it (issue 16): logged models load and serve without the checkout, `mlflow run`
leaves the checkout clean and runs through MLflow's own environment managers, readable run names."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from robust_transfer.cli import main

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _train_args(folder, *extra):
    return ["train", "--dataset", f"imagefolder:{folder}", "--iterations", "2", "--batch-size", "16",
            "--n-examples", "6", "--progress", "false", "--device", "cpu", *extra]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra) -> dict:
    """The environment of a process that must not see this checkout: no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_RUN_ID")}
    return {**env, **extra}


@pytest.fixture
def champion(wd, tiny_folder, capsys):
    """A tiny trained model registered as `tiny-served`, alias `champion`; returns (name, train run)."""
    assert main(_train_args(tiny_folder, "--register-as", "tiny-served", "--checkpoint-dir", "ck")) == 0
    capsys.readouterr()
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    version = client.get_registered_model("tiny-served").aliases["challenger"]
    client.set_registered_model_alias("tiny-served", "champion", version)
    mv = client.get_model_version("tiny-served", version)
    return "tiny-served", client.get_run(mv.run_id)


def test_logged_model_has_signature_example_code_linked_metrics_and_a_readable_run_name(champion):
    import mlflow

    name, run = champion
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    info = mlflow.models.get_model_info(f"models:/{name}@champion")
    sig = info.signature.to_dict()
    assert json.loads(sig["inputs"]) == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 3, 16, 16]}}]
    assert json.loads(sig["outputs"]) == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 3]}}]
    assert info.saved_input_example_info is not None
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion"))
    assert (local / "code" / "robust_transfer" / "checkpoints.py").is_file()
    assert not list((local / "code").rglob("__pycache__"))
    # MLflow 3: the final metrics are linked to the logged model (its page in the UI lists them)
    logged = client.get_logged_model(info.model_id)
    linked = {m.key: m.value for m in logged.metrics or []}
    assert linked["clean_acc"] == pytest.approx(run.data.metrics["clean_acc"])
    assert "pgd20_acc" in linked
    assert run.info.run_name == f"train-imagefolder:tiny-small-cnn-natural"


LOAD_SCRIPT = textwrap.dedent("""
    import importlib.util, json, sys
    from pathlib import Path
    # This venv may hold an editable install of some checkout (a .pth entry): drop every path that
    # holds the package, so only the model's own copy (code_paths) can provide it.
    sys.path[:] = [p for p in sys.path if not (Path(p or ".") / "robust_transfer").is_dir()]
    assert importlib.util.find_spec("robust_transfer") is None, "the checkout is still importable"
    import mlflow, numpy as np
    model = mlflow.pyfunc.load_model(sys.argv[1])
    x = np.random.default_rng(1).random((4, 3, 16, 16)).astype(np.float32)
    logits = model.predict(x)
    import robust_transfer
    print(json.dumps({"shape": list(logits.shape), "dtype": str(logits.dtype), "package": robust_transfer.__file__}))
""")


def test_a_fresh_process_without_the_checkout_loads_the_champion_and_predicts(champion, wd):
    name, _ = champion
    out = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, f"models:/{name}@champion"], cwd=wd, env=_clean_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shape"] == [4, 3] and result["dtype"] == "float32"
    assert str(REPO) not in result["package"] and "/code/robust_transfer/" in result["package"]


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_batch_with_logits(champion, wd):
    """`mlflow models serve -m models:/name@champion --env-manager local` on a free loopback port (~20 s)."""
    name, _ = champion
    port = _free_port()
    log = open(wd / "serve.log", "w")
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}@champion",
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                              cwd=wd, env=_clean_env(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"),
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (wd / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not answer /ping within 120 s"
            time.sleep(1)
        batch = np.random.default_rng(2).random((5, 3, 16, 16)).astype(np.float32)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                     data=json.dumps({"inputs": batch.tolist()}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read())
        logits = np.asarray(answer["predictions"], dtype=np.float32)
        assert logits.shape == (5, 3) and np.isfinite(logits).all()
        # the same logits as the model loaded in this process
        import mlflow

        local = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(batch)
        np.testing.assert_allclose(logits, local, rtol=1e-4, atol=1e-5)
    finally:
        import signal

        try:
            os.killpg(server.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()
