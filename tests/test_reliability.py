"""Crashes and access: SIGKILL mid-training then --resume gives the uninterrupted result; a tracking
server with authentication refuses anonymous requests."""
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

BIN = Path(sys.executable).parent


def _rtl(workdir, *args, **kw):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.Popen([str(BIN / "rtl"), *args], cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _train_args(folder, ckpt, *extra):
    return ["train", "--dataset", f"imagefolder:{folder}", "--epochs", "6", "--batch-size", "8", "--mode", "free",
            "--replay", "2", "--n-examples", "12", "--checkpoint-dir", ckpt, "--progress", "false",
            "--device", "cpu", *extra]


def _epochs_done(ckpt: Path) -> int:
    try:
        return json.loads((ckpt / "train_state.json").read_text())["epochs_done"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_equals_an_uninterrupted_run(workdir, tiny_folder):
    straight = _rtl(workdir, *_train_args(tiny_folder, "straight"))
    assert straight.wait(timeout=600) == 0, straight.stderr.read()

    victim = _rtl(workdir, *_train_args(tiny_folder, "victim"))
    deadline = time.time() + 300
    while _epochs_done(workdir / "victim") < 2 and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
    assert victim.poll() is None, "training finished before it could be killed"
    victim.send_signal(signal.SIGKILL)  # mid-epoch 3: no chance to clean up
    victim.wait()
    killed_at = _epochs_done(workdir / "victim")
    assert 2 <= killed_at < 6

    resumed = _rtl(workdir, *_train_args(tiny_folder, "victim", "--resume"))
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    by_ckpt = {r.data.params["checkpoint_dir"]: r for r in runs}
    assert len(runs) == 2  # the resumed run continued the killed one instead of starting a third
    a, b = by_ckpt["straight"], by_ckpt["victim"]
    assert b.info.status == "FINISHED" and b.data.tags["rtl.resumed_from_epoch"] == str(killed_at)
    assert a.data.metrics["clean_acc"] == b.data.metrics["clean_acc"]
    assert a.data.metrics["pgd20_acc"] == b.data.metrics["pgd20_acc"]
    assert (workdir / "straight" / "model.safetensors").read_bytes() == (workdir / "victim" / "model.safetensors").read_bytes()
    # Per-epoch history is whole: one train_loss per epoch, none lost or doubled by the kill.
    steps = sorted(m.step for m in client.get_metric_history(b.info.run_id, "train_loss"))
    assert steps[-1] == 5 and set(steps) == set(range(6))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, auth=None):
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except urllib.error.URLError:  # not listening yet
        return None


@pytest.mark.slow
def test_tracking_server_with_basic_auth_refuses_anonymous_requests(tmp_path):
    port = _free_port()
    env = {**os.environ, "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret",
           "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini")}
    (tmp_path / "auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///" + str(tmp_path / "auth.db") +
        "\nadmin_username = admin\nadmin_password = s3cret-Passw0rd!\nauthorization_function = "
        "mlflow.server.auth:authenticate_request_basic_auth\n")
    server = subprocess.Popen([str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
                               "--port", str(port), "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                               "--workers", "1"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"
        deadline = time.time() + 120
        while time.time() < deadline and _get(url, ("admin", "s3cret-Passw0rd!")) != 200:
            assert server.poll() is None, "mlflow server exited"
            time.sleep(1)
        assert _get(url, ("admin", "s3cret-Passw0rd!")) == 200
        assert _get(url) == 401
        assert _get(url, ("admin", "wrong")) == 401
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("exc,status", [(SystemExit(0), "KILLED"), (SystemExit(None), "KILLED"),
                                        (SystemExit(3), "FAILED"), (ValueError("boom"), "FAILED"),
                                        (KeyboardInterrupt(), "KILLED")])
def test_a_run_ends_killed_when_told_to_stop_and_failed_on_errors(workdir, exc, status):
    """Ray Tune stops a trial (ASHA) by `sys.exit(0)` inside `report`: that is a stop, not a failure."""
    from robust_transfer.tracking import tracked_run

    with pytest.raises(type(exc)):
        with tracked_run("probe", {}, {}, experiment="stops") as log:
            raise exc
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    assert client.get_run(log.run_id).info.status == status
