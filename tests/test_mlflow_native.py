"""MLflow as its users run it (issue 16): logged models load and serve without the checkout, `mlflow run`
leaves the checkout clean and runs through MLflow's own environment managers, readable run names."""
from __future__ import annotations

import json
import os
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
from support.net import free_port, wait_http
from support.transfer import all_runs, train_args

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _clean_env(**extra) -> dict:
    """The environment of a process that must not see this checkout: no PYTHONPATH."""
    # (MLflow's set_experiment exports MLFLOW_EXPERIMENT_ID for subprocesses: an earlier test's id must not leak)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")}
    return {**env, **extra}


@pytest.fixture
def champion(wd, tiny_folder, capsys):
    """A tiny trained model registered as `tiny-served`, alias `champion`; returns (name, train run)."""
    assert main(train_args(tiny_folder, "--register-as", "tiny-served", "--checkpoint-dir", "ck")) == 0
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
    assert run.info.run_name == "train-imagefolder:tiny-small-cnn-natural"



def test_logged_model_requires_runtime_packages_only(champion):
    """What `--env-manager virtualenv|conda` builds for the model (its requirements.txt) is runtime packages
    at requirements-runtime.txt's pins: no test tool, extra or CUDA pin (tests/test_packaging.py)."""
    import mlflow

    name, _ = champion
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion"))
    declared = [ln.strip() for ln in (local / "requirements.txt").read_text().splitlines() if ln.strip()]
    runtime = {ln.split("==")[0].lower().replace("_", "-"): ln.split("==")[1]
               for ln in (REPO / "requirements-runtime.txt").read_text().splitlines() if "==" in ln}
    pins = dict(ln.lower().replace("_", "-").split("==") for ln in declared)
    assert len(pins) == len(declared) and {"torch", "mlflow"} <= set(pins), declared
    assert {n: v for n, v in pins.items() if runtime.get(n) != v} == {}, "each at the runtime set's pin"

LOAD_SCRIPT = textwrap.dedent("""
    import importlib.util, json, sys
    from pathlib import Path
    # This venv may hold an editable install of some checkout (a .pth entry): drop every path that
    # holds the package, so only the model's own copy (code_paths) can provide it.
    sys.path[:] = [p for p in sys.path if not (Path(p or ".") / "robust_transfer").is_dir()]
    # ... and pip's editable-install finder (`pip install -e`, as `make venv` does), which maps the package to
    # whichever checkout installed it, whatever sys.path holds
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__name__.lower()
                        and "editable" not in str(getattr(f, "__name__", f)).lower()]
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
    port = free_port()
    log = open(wd / "serve.log", "w")
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}@champion",
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                              cwd=wd, env=_clean_env(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"),
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", server, log=wd / "serve.log")
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


def _copy_checkout(dst: Path) -> Path:
    """The working tree as a user would have it (no .git, venv link, caches): `pip install .` builds in it."""
    import shutil

    shutil.copytree(REPO, dst, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", "outputs", "mlruns", "*.db", ".pytest_cache"))
    return dst


@pytest.mark.slow
@pytest.mark.installs
def test_pip_install_into_an_empty_venv_then_search_a_shipped_space_by_name(tmp_path, tiny_folder):
    """`pip install <checkout>` (not editable) into an empty venv, then from an empty folder outside the
    checkout: `rtl train` a source, `rtl search --space lwf_lambda --trials 1 --set ...`.

    Wheels from the local index (/opt/pypi, /opt/wheels; torch + CUDA libraries ≈ 6 GB unpacked). Measured
    on the 2-core machine with 8 jobs competing: pip install 1678 s, train + search 187 s (36 min in all);
    expect a few minutes for the install on an idle machine.
    """
    venv, src, work = tmp_path / "venv", _copy_checkout(tmp_path / "checkout"), tmp_path / "empty"
    work.mkdir()
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
    t0 = time.monotonic()
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(src)],
                         capture_output=True, text=True, timeout=1800, env=_clean_env())
    install_s = time.monotonic() - t0
    assert out.returncode == 0, out.stderr[-3000:]
    rtl = str(venv / "bin" / "rtl")
    env = _clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", RTL_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("MLFLOW_TRACKING_URI", None)  # the default store: mlflow.db in the folder the user is in
    # nothing of the checkout is importable: the installed package (and its shipped YAML) is used
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import robust_transfer.resources as r; "
                            "print(r.named_file('search_spaces', 'lwf_lambda'))"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0 and str(venv) in probe.stdout and "site-packages/robust_transfer/" in probe.stdout, \
        probe.stdout + probe.stderr
    t1 = time.monotonic()
    out = subprocess.run([rtl, "train", "--dataset", f"imagefolder:{tiny_folder}", "--iterations", "2", "--batch-size",
                          "16", "--n-examples", "6", "--progress", "false", "--device", "cpu", "--checkpoint-dir", "src"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    sets = (f"source_model={work / 'src'} target=imagefolder:{tiny_folder} iterations=2 batch_size=16 "
            "n_examples=6 per_class=8 device=cpu")
    out = subprocess.run([rtl, "search", "--space", "lwf_lambda", "--trials", "1", "--set", sets], cwd=work, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    print(f"pip install: {install_s:.0f} s; train + search: {time.monotonic() - t1:.0f} s")
    assert {"mlflow.db", "optuna.db", "src"} <= {p.name for p in work.iterdir()}
    import optuna

    study = optuna.load_study(study_name="lwf-lambda", storage=f"sqlite:///{work / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    # the optional extras are not installed; using one says which to install
    out = subprocess.run([rtl, "search", "--space", "lwf_lambda", "--trials", "1", "--backend", "ray", "--set", sets],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "pip install 'robust-transfer[ray]'" in out.stderr, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].startswith("error: backend=ray (Ray Tune) needs the `ray` extra")


def test_help_describes_every_flag_with_its_allowed_values_and_default(capsys):
    from robust_transfer.commands import COMMANDS
    from robust_transfer.helptext import flag_help

    for name, (cls, _, _) in COMMANDS.items():
        for field, text in flag_help(cls).items():
            description = text.split(";")[0]
            assert "default:" in text and description != field.replace("_", " "), f"rtl {name} --{field}: {text!r}"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--mode VALUE training: natural, PGD-k adversarial" in out
    assert "one of: natural, pgd, free, fgsm-rs; default: natural" in out
    assert "--augment [BOOL] random crop + horizontal flip of training images; one of: true, false; default: true" in out
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    assert "lwf_lambda" in capsys.readouterr().out  # shipped spaces, by name


@pytest.mark.parametrize("argv, hint", [(["train", "--bogus", "1"], "see `rtl train --help`"),
                                        (["lwf", "--lambda-d"], "see `rtl lwf --help`"),
                                        (["nosuch"], "see `rtl --help`")])
def test_a_usage_error_names_the_right_help(argv, hint, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and err.endswith(hint + ")") and len(err.splitlines()) == 1


def test_a_shipped_space_is_found_by_name_and_an_unknown_one_lists_them(wd):
    from robust_transfer.errors import SearchError
    from robust_transfer.search import load_space

    assert "lwf" in load_space("lwf_lambda").entry_points
    with pytest.raises(SearchError, match="lwf_lambda, lwf_lambda_pareto, mlp_head"):
        load_space("no_such_space")


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    import importlib.util

    from robust_transfer import extras
    from robust_transfer.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("redis", "psycopg2", "psycopg")
                        else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs the `redis` extra .*pip install 'robust-transfer\[redis\]'"):
        extras.require_for_url("redis://127.0.0.1:6379/0", "storage")
    with pytest.raises(ConfigError, match=r"pip install 'robust-transfer\[postgres\]'"):
        extras.require_for_url("postgresql://u:secret@db:5432/x", "storage")
    try:
        extras.require_for_url("postgresql://u:secret@db:5432/x", "storage")
    except ConfigError as e:
        assert "secret" not in str(e)
    extras.require_for_url("sqlite:///optuna.db", "storage")  # the core needs nothing


def _checkout_state() -> set[str]:
    """Every changed, untracked or ignored path of the checkout (bytecode caches aside)."""
    out = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--ignored", "--untracked-files=all"],
                         capture_output=True, text=True, check=True).stdout
    return {ln for ln in out.splitlines() if "__pycache__" not in ln and not ln.endswith(".pyc")}


def _mlflow_run(cwd: Path, uri: str, entry: str, params: dict, *extra: str, timeout: int = 900, **env_extra):
    env = _clean_env(**{"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **env_extra})
    env.pop("MLFLOW_TRACKING_URI", None)  # MLflow's default store: mlflow.db where the user typed the command
    cmd = [str(BIN / "mlflow"), "run", uri, "-e", entry, *extra]
    for k, v in params.items():
        cmd += ["-P", f"{k}={v}"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_mlflow_run_search_from_a_scratch_folder_keeps_everything_there_and_the_checkout_clean(workdir, tiny_folder,
                                                                                               capsys):
    """`mlflow run <checkout> -e search` with every default: optuna.db, mlflow.db, the artifacts and checkpoints/
    land in the folder the command was typed in (MLflow runs the entry point in the checkout). ~2-4 min.
    (A fresh store, not the `wd` template: that one's Default experiment keeps the artifact folder it was made in.)"""
    wd = workdir
    assert main(train_args(tiny_folder, "--checkpoint-dir", "src")) == 0
    capsys.readouterr()
    before = _checkout_state()
    sets = (f"source_model={wd / 'src'} target=imagefolder:{tiny_folder} iterations=2 batch_size=16 n_examples=6 "
            "per_class=8 device=cpu")
    out = _mlflow_run(wd, str(REPO), "search", {"space": "lwf_lambda", "trials": 1, "set": sets},
                      "--env-manager", "local", RTL_CACHE_DIR=str(wd / "cache"))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert _checkout_state() == before, "mlflow run wrote into the checkout"
    import optuna

    study = optuna.load_study(study_name="lwf-lambda", storage=f"sqlite:///{wd / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    assert list((wd / "checkpoints").glob("lwf-*")), "the trial's checkpoint is under the launch folder"
    runs = [r for r in all_runs(wd) if r.data.tags.get("rtl.strategy") in ("search", "lwf")]
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 2  # the search and its trial
    trial = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    search = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert trial.info.run_name == "lwf-lambda-trial-0" and search.info.run_name == "search-lwf-lambda"


@pytest.mark.slow
def test_mlflow_run_from_a_git_uri_with_the_venv_not_activated(tmp_path, tiny_folder):
    """`mlflow run file://<clone> -e train` (MLflow clones it into a temporary folder) with `.venv/bin/mlflow`
    and nothing activated: bin/mlflow-entry finds the interpreter running `mlflow`; the checkpoint and the
    store land in the folder the command was typed in, and the run has a readable name. ~1 min."""
    clone, work = tmp_path / "clone", tmp_path / "work"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()], check=True)
    work.mkdir()
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p).resolve() != BIN.resolve())
    out = _mlflow_run(work, f"file://{clone}", "train",
                      {"dataset": f"imagefolder:{tiny_folder}", "iterations": 2, "batch_size": 16, "n_examples": 6,
                       "device": "cpu"}, "--env-manager", "local", RTL_CACHE_DIR=str(tmp_path / "cache"), PATH=path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    (run,) = all_runs(work)
    assert run.info.status == "FINISHED" and run.info.run_name == "train-imagefolder:tiny-small-cnn-natural"
    assert list((work / "checkpoints").glob("train-*")) and not (clone / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.installs
def test_mlflow_run_through_the_virtualenv_env_manager(tmp_path, tiny_folder):
    """`mlflow run <checkout> -e train --env-manager virtualenv`: MLflow derives a virtualenv from conda.yaml
    (pyenv's python 3.11.7, the lock's packages via pip from this machine's local index), then runs the
    checkout's code in it. The first run builds the environment under ~/.mlflow/envs/ (keyed by conda.yaml):
    about 10 min on an idle 2-core machine (≈6 GB of torch/CUDA wheels), 37 min measured with 8 jobs
    competing; later runs reuse it: 101 s measured under the same load."""
    import shutil

    if shutil.which("pyenv") is None:
        pytest.skip("MLflow's virtualenv manager needs pyenv (to provide the python of conda.yaml)")
    work = tmp_path / "work"
    work.mkdir()
    out = _mlflow_run(work, str(REPO), "train",
                      {"dataset": f"imagefolder:{tiny_folder}", "iterations": 2, "batch_size": 16, "n_examples": 6,
                       "device": "cpu"}, "--env-manager", "virtualenv", timeout=3600,
                      RTL_CACHE_DIR=str(tmp_path / "cache"))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "bin/activate && bash bin/mlflow-entry train" in out.stderr
    (run,) = all_runs(work)
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.project.env"] == "virtualenv"
    assert list((work / "checkpoints").glob("train-*"))
