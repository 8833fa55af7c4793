"""Crashes and access: SIGKILL mid-training then --resume gives the uninterrupted result; a tracking
server with authentication refuses anonymous requests."""
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from support.net import free_port, wait_http
from support.transfer import all_runs

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
    runs = all_runs(client)
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


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _get(url, auth=None):
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", _basic(*auth))
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except urllib.error.URLError:  # not listening yet
        return None


@pytest.mark.slow
def test_tracking_server_with_basic_auth_refuses_anonymous_requests(tmp_path):
    port = free_port()
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
        wait_http(url, server, headers={"Authorization": _basic("admin", "s3cret-Passw0rd!")})
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


# ------------------------------------------------------------------------------------------------------------
# Issue 17: nothing a user owns is ever lost; no small input costs gigabytes; every refusal has its code.
# (The table of refused inputs is tests/test_bad_input.py HOSTILE; here what needs runs, stores or processes.)
import shutil  # noqa: E402

from robust_transfer.cli import main  # noqa: E402


def _tiny_train(folder, ckpt, *extra):
    return ["train", "--dataset", f"imagefolder:{folder}", "--iterations", "1", "--batch-size", "16", "--n-examples",
            "6", "--eval-steps", "1", "--progress", "false", "--device", "cpu", "--checkpoint-dir", str(ckpt), *extra]


def _one_line(capfd, code, rc, needle):
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == code and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (rc, err)


def _tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_checkpoint_dir_replaces_only_nothing_an_empty_dir_or_a_checkpoint_of_ours(workdir, tiny_folder, capfd):
    (workdir / "empty").mkdir()
    assert main(_tiny_train(tiny_folder, workdir / "empty")) == 0           # an empty directory: used
    first = (workdir / "empty" / "model.safetensors").read_bytes()
    assert main(_tiny_train(tiny_folder, workdir / "empty", "--seed", "1")) == 0   # our checkpoint: replaced
    assert sorted(p.name for p in (workdir / "empty").iterdir()) == ["meta.json", "model.safetensors",
                                                                       "train_state.json", "train_state.safetensors"]
    assert (workdir / "empty" / "model.safetensors").read_bytes() != first
    assert not [p for p in workdir.iterdir() if p.name.startswith(".empty.")]  # no temp or old copies left
    capfd.readouterr()
    # a user's directory (the thesis.txt), a hidden file, a file where a directory is expected: refused
    for setup, needle in ((lambda d: (d.mkdir(), (d / "thesis.txt").write_text("years\n")), "thesis.txt"),
                          (lambda d: (d.mkdir(), (d / ".hidden").write_text("x")), ".hidden"),
                          (lambda d: shutil.copytree(workdir / "empty", d) and (d / "README").write_text("x"), "README"),
                          (lambda d: d.write_text("a file\n"), "existing file")):
        target = workdir / f"user-{needle.replace(' ', '_')}"
        setup(target)
        before = _tree(target) if target.is_dir() else target.read_bytes()
        rc = main(_tiny_train(tiny_folder, target))
        _one_line(capfd, 2, rc, needle)
        assert (_tree(target) if target.is_dir() else target.read_bytes()) == before
        assert not [p for p in workdir.iterdir() if p.name.startswith(f".{target.name}.")]


def test_resume_continues_only_the_run_that_wrote_the_state_and_never_a_finished_one(workdir, tiny_folder, capfd):
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    assert main(_tiny_train(tiny_folder, workdir / "a")) == 0
    assert main(_tiny_train(tiny_folder, workdir / "b")) == 0
    run_a = json.loads((workdir / "a" / "train_state.json").read_text())["run_id"]
    run_b = json.loads((workdir / "b" / "train_state.json").read_text())["run_id"]
    capfd.readouterr()

    def history(run_id):
        return [m.value for m in client.get_metric_history(run_id, "clean_acc")]

    before = {r: (history(r), client.get_run(r).info.status) for r in (run_a, run_b)}
    ckpt_a = _tree(workdir / "a")
    # 1. a FINISHED run is never reopened
    _one_line(capfd, 4, main(_tiny_train(tiny_folder, workdir / "a", "--resume")), "FINISHED")
    # 2. b's state (its fingerprint matches b's configuration) edited to name run a: not the run that wrote it
    state = json.loads((workdir / "b" / "train_state.json").read_text())
    ckpt_b = _tree(workdir / "b")
    (workdir / "b" / "train_state.json").write_text(json.dumps({**state, "run_id": run_a}))
    _one_line(capfd, 4, main(_tiny_train(tiny_folder, workdir / "b", "--resume")), "did not write it")
    # 3. ... even when that run is not finished
    client.set_terminated(run_a, "KILLED")
    _one_line(capfd, 4, main(_tiny_train(tiny_folder, workdir / "b", "--resume")), "did not write it")
    # 4. a run id that does not exist, or none: exit 4, not an internal error
    for rid, needle in (("0" * 32, "does not exist"), (None, "names no run"), (12, "names no run")):
        (workdir / "b" / "train_state.json").write_text(json.dumps({**state, "run_id": rid}))
        _one_line(capfd, 4, main(_tiny_train(tiny_folder, workdir / "b", "--resume")), needle)
    (workdir / "b" / "train_state.json").write_text(json.dumps(state))
    assert _tree(workdir / "a") == ckpt_a
    assert {k: v for k, v in _tree(workdir / "b").items() if k != "train_state.json"} == \
        {k: v for k, v in ckpt_b.items() if k != "train_state.json"}
    assert history(run_a) == before[run_a][0] and history(run_b) == before[run_b][0]
    assert client.get_run(run_b).info.status == "FINISHED"
    assert len(all_runs(client)) == 2   # no run was created or reopened by a refusal
    # 5. the run that wrote it, interrupted (KILLED): resumed, into that same run
    client.set_terminated(run_a, "KILLED")
    assert main(_tiny_train(tiny_folder, workdir / "a", "--resume")) == 0
    assert client.get_run(run_a).info.status == "FINISHED" and len(all_runs(client)) == 2


def _tables(db: Path) -> set:
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()


def test_a_failed_storage_command_creates_and_changes_nothing(workdir, tiny_folder, capfd):
    mlflow_db = workdir / "mlflow.db"
    MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).search_experiments()   # an MLflow store with its tables
    capfd.readouterr()   # (MLflow's own INFO lines about creating those tables)
    space = workdir / "space.yaml"
    space.write_text("entry_point: train\nfixed:\n"
                     f'  dataset: "imagefolder:{tiny_folder}"\n  epochs: 1\n  batch_size: 16\n  n_examples: 6\n'
                     "params:\n  lr: {type: float, low: 0.001, high: 0.1, log: true}\n"
                     "objective: {metric: val_clean_acc, direction: maximize}\n")
    other = workdir / "other.sqlite"
    import sqlite3

    con = sqlite3.connect(other)
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.commit()
    con.close()
    for db in (mlflow_db, other):
        tables, data = _tables(db), db.read_bytes()
        rc = main(["search", "--space", str(space), "--storage", f"sqlite:///{db}", "--trials", "1"])
        _one_line(capfd, 5, rc, "another application's database")
        assert _tables(db) == tables and db.read_bytes() == data
    # promote reads a study: a missing file (or directory) is not created
    for url, path in ((f"sqlite:///{workdir / 'missing' / 'dir' / 'x.db'}", workdir / "missing"),
                      (f"sqlite:///{workdir / 'y.db'}", workdir / "y.db"),
                      (f"journal:{workdir / 'gone' / 'j.log'}", workdir / "gone")):
        rc = main(["promote", "--name", "m", "--study", "x", "--storage", url])
        _one_line(capfd, 5, rc, "does not exist")
        assert not path.exists()
    # in memory: refused before anything runs (it used to print 74 lines and lose the study)
    for url in ("sqlite:///", "sqlite://", "sqlite:///:memory:"):
        _one_line(capfd, 5, main(["search", "--space", str(space), "--storage", url, "--trials", "1"]), "in-memory")
    assert all_runs() == []


def test_a_deleted_experiment_is_refused_before_anything_is_created(workdir, tiny_folder, capfd):
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    client.delete_experiment(client.create_experiment("gone"))
    space = workdir / "space.yaml"
    space.write_text("entry_point: train\nfixed:\n"
                     f'  dataset: "imagefolder:{tiny_folder}"\n  epochs: 1\n  batch_size: 16\n  n_examples: 6\n'
                     "params:\n  lr: {type: float, low: 0.001, high: 0.1, log: true}\n"
                     "objective: {metric: val_clean_acc, direction: maximize}\n")
    capfd.readouterr()
    _one_line(capfd, 2, main(_tiny_train(tiny_folder, workdir / "ck", "--experiment", "gone")), "is deleted")
    _one_line(capfd, 2, main(["search", "--space", str(space), "--storage", f"sqlite:///{workdir / 'o.db'}",
                              "--trials", "1", "--experiment", "gone"]), "is deleted")
    _one_line(capfd, 2, main(["evaluate", "--model", str(workdir / "nope"), "--experiment", "gone",
                              "--device", "cpu"]), "")
    assert not (workdir / "o.db").exists() and not (workdir / "ck").exists()
    assert all_runs(client) == []


@pytest.mark.parametrize("n,batch_size", [(15, 7), (15, 14), (72, 71), (29, 4), (2, 1), (9, 8)])
def test_a_last_batch_of_one_example_is_merged_into_the_one_before(n, batch_size):
    import torch

    from robust_transfer.data import BatchLoader, ImageData

    data = ImageData(torch.zeros(n, 3, 8, 8, dtype=torch.uint8), torch.arange(n) % 2, classes=("a", "b"), spec="t", split="train")
    batches = BatchLoader(data, batch_size, seed=0, device="cpu").epoch(0)
    assert len(batches) == len(BatchLoader(data, batch_size, seed=0, device="cpu"))
    seen = torch.cat(batches).tolist()
    assert len(set(seen)) == len(seen)                                  # no example twice
    assert len(seen) == (n // batch_size * batch_size if n >= 2 * batch_size else n)  # (drop_last: as in train)
    assert batch_size == 1 or min(len(b) for b in batches) >= 2          # BatchNorm can train on every batch


@pytest.mark.parametrize("batch_size,per_class", [("71", None), ("7", "5"), ("14", "5")])
def test_transfer_with_a_batchnorm_head_trains_when_the_last_batch_would_hold_one_image(workdir, tiny_folder,
                                                                                       batch_size, per_class):
    from robust_transfer import create_model
    from robust_transfer.checkpoints import save_checkpoint

    save_checkpoint(workdir / "src", create_model("small-cnn", 3, input_size=16),
                    {"classes": ["class0", "class1", "class2"], "data_spec": f"imagefolder:{tiny_folder}"})
    argv = ["transfer", "--source-model", str(workdir / "src"), "--head", "mlp", "--batch-norm", "true",
            "--mlp-depth", "1", "--width", "16", "--epochs", "1", "--batch-size", batch_size, "--n-examples", "6",
            "--eval-steps", "1", "--progress", "false", "--device", "cpu"]
    assert main(argv + (["--per-class", per_class] if per_class else [])) == 0


# ------------------------------------------------------------------------------------------------------------
# Issue 28: images that lie about their size, archives whose members claim gigabytes. Each case runs as its own
# `rtl` process; its peak RSS (getrusage(RUSAGE_CHILDREN) of a parent that runs only it) is compared with a bare
# `rtl --help` measured the same way, in the same test.
from support.hostile_files import bmp, gif, jpeg, png, tar_gz_with_big_member  # noqa: E402

RSS_RUNNER = ("import resource, subprocess, sys\n"
              "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
              "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
              "sys.stderr.write(p.stderr)\n")
LYING_IMAGES = {   # file name -> bytes (a few hundred at most) whose header claims more than decode.MAX_PIXELS
    "jpeg-65000x65000.jpg": jpeg(65000, 65000),   # took the process past 6 GB
    "jpeg-20000x20000.jpg": jpeg(20000, 20000),   # 2.0 GB, accepted without a word
    "jpeg-8193x8192.jpg": jpeg(8193, 8192),       # one row over the cap (PIL only warns there)
    "jpeg-junk-before-frame.jpg": jpeg(65000, 65000, garbage_before_sof=b"\x12\x34\x56"),
    "png-12000x12000.png": png(12000, 12000),     # crashed the process (SIGSEGV in libpng)
    "png-2^31-1-square.png": png(2**31 - 1, 2**31 - 1),
    "gif-as-png-65535x65535.png": gif(65535, 65535),
    "bmp-100000x100000.bmp": bmp(100000, 100000),
}
MEMORY_BOUND_MB = 200


def _rss(workdir, *argv) -> tuple[int, int, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([sys.executable, "-c", RSS_RUNNER, *argv], cwd=workdir, env=env, capture_output=True,
                         text=True, timeout=600)
    rc, kb = map(int, out.stdout.split())
    return rc, kb // 1024, out.stderr


def _two_class_folder(root: Path) -> Path:
    from PIL import Image
    import numpy as np

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.mark.slow
def test_lying_images_and_archives_are_skipped_and_stay_small_in_memory(workdir):
    from robust_transfer import create_model
    from robust_transfer.checkpoints import save_checkpoint

    save_checkpoint(workdir / "ck", create_model("small-cnn", 2, input_size=16), {"classes": ["a", "b"]})

    def evaluate(spec):
        return _rss(workdir, str(BIN / "rtl"), "evaluate", "--model", str(workdir / "ck"), "--dataset", spec,
                    "--split", "train", "--n-examples", "4", "--attacks", "pgd1", "--device", "cpu", "--progress", "false")

    cases = {}
    for name, blob in LYING_IMAGES.items():
        folder = _two_class_folder(workdir / name.replace(".", "_"))
        (folder / "a" / name).write_bytes(blob)
        cases[name] = (f"imagefolder:{folder}:resize=16", "1 more than 64M pixels")
    clean = _two_class_folder(workdir / "clean")
    members = {f"{c}/{i}.png": (clean / c / f"{i}.png").read_bytes() for c in ("a", "b") for i in range(4)}
    tar_gz_with_big_member(workdir / "gib-member.tar.gz", "a/huge.png", 1 << 30, members)   # cost 3.0 GB
    assert (workdir / "gib-member.tar.gz").stat().st_size < 8 << 20
    cases["tar.gz-with-a-1GiB-member"] = (f"imagefolder:{workdir / 'gib-member.tar.gz'}:resize=16", "1 larger than 64 MB")

    rc, bare, err = _rss(workdir, str(BIN / "rtl"), "--help")
    assert rc == 0, err
    rc, clean_peak, err = evaluate(f"imagefolder:{clean}:resize=16")
    assert rc == 0, err
    peaks = {}
    for name, (spec, needle) in cases.items():
        rc, peaks[name], err = evaluate(spec)
        warnings = [ln for ln in err.splitlines() if ln.startswith("warning: ") and "skipped" in ln]
        assert rc == 0 and len(warnings) == 1 and f"skipped 1 files ({needle})" in warnings[0], (name, rc, err[-2000:])
    print(f"peak RSS (MB): bare rtl {bare}, clean folder {clean_peak}, per case {peaks}")
    worst = max(peaks, key=peaks.get)
    # Measured against the same command on a clean folder: `rtl --help` no longer imports torch (lazy imports),
    # so the bare CLI is no baseline for what an evaluate costs.
    assert peaks[worst] - clean_peak < MEMORY_BOUND_MB, (worst, peaks[worst], clean_peak, bare)


# ------------------------------------------------------------------------------------------------------------
# Issue 28: a run whose process is gone (kill -9) is closed KILLED by the next run in its experiment.
def test_running_runs_whose_process_is_gone_are_closed_and_no_others(workdir):
    from robust_transfer.processes import identity
    from robust_transfer.tracking.runs import close_dead_runs, tracked_run

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.create_experiment("sweep")
    host, me, start = identity()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()   # a pid that has certainly ended (and is not reused within this test)
    tags = {"dead": {"rtl.host": host, "rtl.pid": str(gone.pid)},
            "dead-suite-step": {"rtl.host": host, "rtl.suite_pid": str(gone.pid)},   # tagged before rtl.pid existed
            "pid-reused": {"rtl.host": host, "rtl.pid": str(me), "rtl.pid_start": "0000.1"},
            "alive": {"rtl.host": host, "rtl.pid": str(me), "rtl.pid_start": start},
            "other-host": {"rtl.host": "elsewhere.example", "rtl.pid": str(gone.pid)},
            "no-process": {}}
    runs = {name: client.create_run(exp, tags=t, run_name=name).info.run_id for name, t in tags.items()}
    finished = client.create_run(exp, tags=tags["dead"]).info.run_id
    client.set_terminated(finished, "FINISHED")
    assert close_dead_runs(client, [exp]) == 3
    status = {name: client.get_run(rid).info.status for name, rid in runs.items()}
    assert status == {"dead": "KILLED", "dead-suite-step": "KILLED", "pid-reused": "KILLED", "alive": "RUNNING",
                      "other-host": "RUNNING", "no-process": "RUNNING"}
    assert client.get_run(finished).info.status == "FINISHED"
    # a new run records its process, and sweeps its experiment first
    dead2 = client.create_run(exp, tags=tags["dead"]).info.run_id
    with tracked_run("probe", {}, {}, experiment="sweep") as log:
        mine = client.get_run(log.run_id).data.tags
    assert (mine["rtl.host"], mine["rtl.pid"], mine["rtl.pid_start"]) == (host, str(me), start)
    assert client.get_run(dead2).info.status == "KILLED"


@pytest.mark.slow
def test_a_killed_training_run_is_closed_by_the_next_command(workdir, tiny_folder):
    """`kill -9` of a real `rtl train`: its run stays RUNNING (nothing could end it) until the next command in its
    experiment starts, which closes it KILLED."""
    victim = _rtl(workdir, *_train_args(tiny_folder, "victim"))
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    deadline = time.time() + 300
    while time.time() < deadline and _epochs_done(workdir / "victim") < 1 and victim.poll() is None:
        time.sleep(0.05)
    assert victim.poll() is None, victim.stderr.read()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    [run] = all_runs(client)
    assert run.info.status == "RUNNING" and run.data.tags["rtl.pid"] == str(victim.pid)
    assert main(["evaluate", "--model", str(workdir / "victim"), "--n-examples", "4", "--attacks", "pgd1",
                 "--device", "cpu", "--progress", "false"]) == 0
    assert client.get_run(run.info.run_id).info.status == "KILLED"


def test_resume_refuses_a_deleted_run_and_a_missing_state_in_one_line(workdir, tiny_folder, capfd):
    """Issue 28: `--resume` on a DELETED run says it is deleted (not FINISHED); `--resume` with no saved state
    refuses (exit 4) instead of training from scratch. Neither creates a run."""
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    assert main(_tiny_train(tiny_folder, workdir / "a")) == 0
    run_a = json.loads((workdir / "a" / "train_state.json").read_text())["run_id"]
    client.delete_run(run_a)
    capfd.readouterr()
    _one_line(capfd, 4, main(_tiny_train(tiny_folder, workdir / "a", "--resume")), "is deleted")
    for missing in (workdir / "nothing-here", workdir / "empty"):
        if missing.name == "empty":
            missing.mkdir()
        _one_line(capfd, 4, main(_tiny_train(tiny_folder, missing, "--resume")), "no saved training state")
    assert not (workdir / "nothing-here").exists() and not list((workdir / "empty").iterdir())
    assert [r.info.run_id for r in all_runs(client)] == []   # the deleted run is hidden; nothing new was created
