"""Bad input to every entry point, table-driven (issue #8): for each case the exit code is the documented one
(README "Errors and exit codes": 2 config, 3 data, 4 model, 5 search, 6 registry, 7 suite), stderr is exactly one line
`error: ...` that names the bad value, there is no traceback (unless --debug), the MLflow run is FAILED or none
was created, and no file that existed before (checkpoints, data, a study, a search space) changed.

Every command in `robust_transfer.commands.COMMANDS` must have rows in CASES (a new entry point fails
`test_every_entry_point_has_bad_input_rows` until it gets them). Most cases go through `cli.main` in-process;
a few through the `rtl` console script and one through `mlflow run . -e <entry> --env-manager local`.

Unreadable files: tests may run as root, where chmod 000 does not stop a read, so "unreadable" is a directory
where a file is expected, an empty directory where a checkpoint is expected, or a corrupt file.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import write_imagefolder
from robust_transfer.cli import main

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CODES = {"config": 2, "data": 3, "model": 4, "search": 5, "registry": 6, "suite": 7}


@dataclass
class World:
    """Files every case may point at; they exist before each case and must not change."""

    root: Path
    folder: Path         # 3-class 16×16 imagefolder
    other: Path          # 4-class 16×16 imagefolder (a different task)
    src: Path            # small-cnn checkpoint, 3 classes, 16×16
    src32: Path          # small-cnn checkpoint, 3 classes, 32×32 inputs
    ten: Path            # small-cnn checkpoint, 10 classes
    corrupt: Path        # a checkpoint whose weights are garbage
    empty_dir: Path      # a directory where a checkpoint is expected
    text_file: Path      # a regular file where a checkpoint directory is expected
    space: Path          # a valid search space
    bad_yaml: Path       # a search space with a YAML syntax error
    bad_meta: Path       # a checkpoint whose meta.json is not JSON
    arch_swap: Path      # small-cnn metadata over wrn-10-1 weights
    bad_state: Path      # a checkpoint with a corrupt training state (train --resume)
    bad_tar: Path        # a .tar.gz that is not one
    list_yaml: Path      # a search space that is a YAML list, not a mapping


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_folder) -> World:
    from robust_transfer import create_model
    from robust_transfer.checkpoints import save_checkpoint

    root = tmp_path_factory.mktemp("bad-input-world")
    other = write_imagefolder(root / "other", n_classes=4, n_train=8, n_test=4, seed=7)
    spec = f"imagefolder:{tiny_folder}"
    meta = {"classes": ["class0", "class1", "class2"], "data_spec": spec}
    save_checkpoint(root / "src", create_model("small-cnn", 3, input_size=16), meta)
    save_checkpoint(root / "src32", create_model("small-cnn", 3, input_size=32), meta)
    save_checkpoint(root / "ten", create_model("small-cnn", 10), {"data_spec": "cifar10-jpeg"})
    shutil.copytree(root / "src", root / "corrupt")
    (root / "corrupt" / "model.safetensors").write_bytes(b"\x00not safetensors\x00" * 8)
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("not a checkpoint\n")
    (root / "space.yaml").write_text(
        "entry_point: train\nfixed:\n"
        f'  dataset: "{spec}"\n  epochs: 1\n  batch_size: 16\n  n_examples: 6\n  augment: false\n'
        "params:\n  lr: {type: float, low: 0.001, high: 0.1, log: true}\n"
        "objective: {metric: clean_acc, direction: maximize}\n")
    (root / "bad.yaml").write_text("entry_point: train\nparams:\n  lr: {type: float, low: 0.01\n  x: [\n")
    shutil.copytree(root / "src", root / "bad_meta")
    (root / "bad_meta" / "meta.json").write_text("{not json")
    save_checkpoint(root / "wrn", create_model("wrn-10-1", 3, input_size=16), meta)
    shutil.copytree(root / "src", root / "arch_swap")
    shutil.copy(root / "wrn" / "model.safetensors", root / "arch_swap" / "model.safetensors")
    shutil.copytree(root / "src", root / "bad_state")
    (root / "bad_state" / "train_state.json").write_text("{}")
    (root / "bad_state" / "train_state.safetensors").write_bytes(b"zz")
    (root / "bad.tar.gz").write_bytes(b"not gzip at all")
    (root / "list.yaml").write_text("- entry_point\n- train\n")
    return World(root, tiny_folder, other, root / "src", root / "src32", root / "ten", root / "corrupt",
                 root / "empty", root / "notes.txt", root / "space.yaml", root / "bad.yaml", root / "bad_meta",
                 root / "arch_swap", root / "bad_state", root / "bad.tar.gz", root / "list.yaml")


def _train(w: World, *extra):
    return ["train", "--dataset", f"imagefolder:{w.folder}", "--iterations", "1", "--batch-size", "16",
            "--n-examples", "6", "--eval-steps", "1", "--progress", "false", "--device", "cpu", *extra]


def _from_source(cmd: str, w: World, *extra, source=None):
    return [cmd, "--source-model", str(source or w.src), "--iterations", "1", "--batch-size", "16",
            "--n-examples", "6", "--eval-steps", "1", "--progress", "false", "--device", "cpu", *extra]


def _evaluate(w: World, *extra, model=None):
    return ["evaluate", "--model", str(model or w.src), "--n-examples", "6", "--attacks", "pgd1",
            "--progress", "false", "--device", "cpu", *extra]


def _search(w: World, *extra, space=None):
    return ["search", "--space", str(space or w.space), "--storage", "sqlite:///optuna.db", "--trials", "1", *extra]


# (id, command, argv(world), kind of error, text the one line must contain)
CASES = [
    # train: unknown names, out-of-range numbers, wrong types, missing data, corrupt resume state
    ("train-unknown-arch", "train", lambda w: _train(w, "--arch", "vgg11"), "config", "arch='vgg11'"),
    ("train-unknown-mode", "train", lambda w: _train(w, "--mode", "trades"), "config", "mode='trades'"),
    ("train-unknown-dataset", "train", lambda w: _train(w, "--dataset", "mnist"), "config", "dataset='mnist'"),
    ("train-epsilon-0", "train", lambda w: _train(w, "--epsilon", "0"), "config", "epsilon=0.0"),
    ("train-lr-0", "train", lambda w: _train(w, "--lr", "0"), "config", "lr=0.0"),
    ("train-epochs-abc", "train", lambda w: _train(w, "--epochs", "abc"), "config", "epochs='abc'"),
    ("train-batch_size-1.5", "train", lambda w: _train(w, "--batch-size", "1.5"), "config", "batch_size='1.5'"),
    ("train-missing-data", "train", lambda w: _train(w, "--dataset", f"imagefolder:{w.root / 'nope'}"), "data",
     str("nope")),
    ("train-data-is-a-file", "train", lambda w: _train(w, "--dataset", f"imagefolder:{w.text_file}"), "data",
     "notes.txt"),
    ("train-per_class-too-large", "train", lambda w: _train(w, "--per-class", "999"), "data", "per_class=999"),
    ("train-corrupt-archive", "train", lambda w: _train(w, "--dataset", f"imagefolder:{w.bad_tar}"), "data",
     "bad.tar.gz"),
    ("train-resume-corrupt-state", "train",
     lambda w: _train(w, "--resume", "true", "--checkpoint-dir", str(w.bad_state)), "model", "bad_state"),
    ("train-unknown-class-selector", "train", lambda w: _train(w, "--dataset", "cifar10:half-c"), "config",
     "half-c"),
    # the validation split (issue 13): out of (0, 0.5], a class left without a validation image, per_class after it
    ("train-val_fraction-0.6", "train", lambda w: _train(w, "--val-fraction", "0.6"), "config", "val_fraction=0.6"),
    ("train-val_fraction-0", "train", lambda w: _train(w, "--val-fraction", "0"), "config", "val_fraction=0.0"),
    ("train-val_fraction-leaves-a-class-without-validation", "train", lambda w: _train(w, "--val-fraction", "0.02"),
     "data", "val_fraction=0.02"),
    ("train-val_per_class-too-large", "train", lambda w: _train(w, "--val-per-class", "24"), "data",
     "val_per_class=24 leaves class"),
    ("train-per_class-after-the-validation-split", "train", lambda w: _train(w, "--per-class", "23"), "data",
     "after the validation split"),
    ("train-eval_epsilon-0", "train", lambda w: _train(w, "--eval-epsilon", "0"), "config", "eval_epsilon=0.0"),
    # evaluate: missing/corrupt/mismatched models, unknown suite, out-of-range epsilon, wrong type
    ("evaluate-missing-model", "evaluate", lambda w: _evaluate(w, model=w.root / "gone"), "model", "gone"),
    ("evaluate-corrupt-checkpoint", "evaluate", lambda w: _evaluate(w, model=w.corrupt), "model", "corrupt"),
    ("evaluate-empty-dir-as-checkpoint", "evaluate", lambda w: _evaluate(w, model=w.empty_dir), "model", "empty"),
    ("evaluate-file-as-checkpoint", "evaluate", lambda w: _evaluate(w, model=w.text_file), "model", "notes.txt"),
    ("evaluate-10-classes-vs-3", "evaluate", lambda w: _evaluate(w, "--dataset", f"imagefolder:{w.folder}",
                                                                 model=w.ten), "model", "10 classes"),
    ("evaluate-corrupt-meta", "evaluate", lambda w: _evaluate(w, model=w.bad_meta), "model", "bad_meta"),
    ("evaluate-weights-of-another-arch", "evaluate", lambda w: _evaluate(w, model=w.arch_swap), "model",
     "does not match arch='small-cnn'"),
    ("evaluate-unknown-suite", "evaluate", lambda w: _evaluate(w, "--suite", "ultra"), "config", "suite='ultra'"),
    ("evaluate-epsilon-negative", "evaluate", lambda w: _evaluate(w, "--epsilon", "-8"), "config", "epsilon=-8.0"),
    ("evaluate-n_examples-abc", "evaluate", lambda w: _evaluate(w, "--n-examples", "abc"), "config",
     "n_examples='abc'"),
    ("evaluate-unknown-registered-model", "evaluate", lambda w: _evaluate(w, model="models:/no-such@champion"),
     "model", "no-such"),
    # retrain-blocks
    ("retrain-blocks-k-abc", "retrain-blocks", lambda w: _from_source("retrain-blocks", w, "--k", "abc"), "config",
     "k='abc'"),
    ("retrain-blocks-k-too-large", "retrain-blocks", lambda w: _from_source("retrain-blocks", w, "--k", "9"),
     "config", "k=9"),
    ("retrain-blocks-lr-0", "retrain-blocks", lambda w: _from_source("retrain-blocks", w, "--lr", "0"), "config",
     "lr=0.0"),
    ("retrain-blocks-missing-source", "retrain-blocks",
     lambda w: _from_source("retrain-blocks", w, source=w.root / "gone"), "model", "gone"),
    ("retrain-blocks-corrupt-archive", "retrain-blocks",
     lambda w: _from_source("retrain-blocks", w, "--dataset", f"imagefolder:{w.bad_tar}"), "data", "bad.tar.gz"),
    ("retrain-blocks-classes-mismatch", "retrain-blocks",
     lambda w: _from_source("retrain-blocks", w, "--dataset", f"imagefolder:{w.other}"), "model",
     "has 4 classes but the source has 3"),
    # transfer
    ("transfer-unknown-head", "transfer", lambda w: _from_source("transfer", w, "--head", "conv"), "config",
     "head='conv'"),
    ("transfer-unknown-target", "transfer", lambda w: _from_source("transfer", w, "--target", "mnist"), "config",
     "dataset='mnist'"),
    ("transfer-batch_size-1.5", "transfer", lambda w: _from_source("transfer", w, "--batch-size", "1.5"), "config",
     "batch_size='1.5'"),
    ("transfer-corrupt-source", "transfer", lambda w: _from_source("transfer", w, source=w.corrupt), "model",
     "corrupt"),
    ("transfer-input-size-mismatch", "transfer", lambda w: _from_source("transfer", w, source=w.src32), "model",
     "upsample=true"),
    ("transfer-val_fraction-0.9", "transfer", lambda w: _from_source("transfer", w, "--val-fraction", "0.9"),
     "config", "val_fraction=0.9"),
    ("transfer-val_per_class-too-large", "transfer", lambda w: _from_source("transfer", w, "--val-per-class", "30"),
     "data", "val_per_class=30"),
    ("transfer-missing-target-data", "transfer",
     lambda w: _from_source("transfer", w, "--target", f"imagefolder:{w.root / 'nope'}"), "data", "nope"),
    # finetune-adv
    ("finetune-adv-epsilon-0", "finetune-adv", lambda w: _from_source("finetune-adv", w, "--epsilon", "0"), "config",
     "epsilon=0.0"),
    ("finetune-adv-eval_epsilon-300", "finetune-adv",
     lambda w: _from_source("finetune-adv", w, "--eval-epsilon", "300"), "config", "eval_epsilon=300.0"),
    ("finetune-adv-steps-abc", "finetune-adv", lambda w: _from_source("finetune-adv", w, "--steps", "abc"),
     "config", "steps='abc'"),
    ("finetune-adv-empty-dir-source", "finetune-adv",
     lambda w: _from_source("finetune-adv", w, source=w.empty_dir), "model", "empty"),
    ("finetune-adv-unknown-schedule", "finetune-adv",
     lambda w: _from_source("finetune-adv", w, "--schedule", "linear"), "config", "schedule='linear'"),
    # lwf
    ("lwf-warm_start-2", "lwf", lambda w: _from_source("lwf", w, "--warm-start", "2"), "config", "warm_start=2.0"),
    ("lwf-unknown-distance", "lwf", lambda w: _from_source("lwf", w, "--distance", "cosine"), "config",
     "distance='cosine'"),
    ("lwf-lambda_d-negative", "lwf", lambda w: _from_source("lwf", w, "--lambda-d", "-1"), "config",
     "lambda_d=-1.0"),
    ("lwf-corrupt-source", "lwf", lambda w: _from_source("lwf", w, source=w.corrupt), "model", "corrupt"),
    ("lwf-corrupt-meta", "lwf", lambda w: _from_source("lwf", w, source=w.bad_meta), "model", "bad_meta"),
    ("lwf-val_fraction-leaves-a-class-without-validation", "lwf",
     lambda w: _from_source("lwf", w, "--val-fraction", "0.01"), "data", "val_fraction=0.01"),
    ("lwf-unknown-teacher", "lwf", lambda w: _from_source("lwf", w, "--teacher", "ghost"), "config",
     "teacher='ghost'"),
    # search
    ("search-yaml-syntax", "search", lambda w: _search(w, space=w.bad_yaml), "search", "bad.yaml"),
    ("search-space-not-a-mapping", "search", lambda w: _search(w, space=w.list_yaml), "search", "list.yaml"),
    ("search-missing-space", "search", lambda w: _search(w, space=w.root / "gone.yaml"), "search", "gone.yaml"),
    ("search-space-is-a-directory", "search", lambda w: _search(w, space=w.empty_dir), "search", "empty"),
    ("search-unknown-backend", "search", lambda w: _search(w, "--backend", "spark"), "config", "backend='spark'"),
    ("search-unknown-storage", "search", lambda w: _search(w, "--storage", "mongo:db"), "search", "mongo:db"),
    ("search-trials-abc", "search", lambda w: _search(w, "--trials", "abc"), "config", "trials='abc'"),
    ("search-trials-0", "search", lambda w: _search(w, "--trials", "0"), "config", "trials=0"),
    ("search-unknown-param-in-set", "search", lambda w: _search(w, "--set", "lambda_dd=0.1"), "search", "lambda_dd"),
    # promote
    ("promote-unknown-model", "promote", lambda w: ["promote", "--name", "no-such-model"], "registry",
     "no-such-model"),
    ("promote-malformed-policy", "promote", lambda w: ["promote", "--name", "m", "--policy", "best accuracy"],
     "config", "policy='best accuracy'"),
    ("promote-version-abc", "promote", lambda w: ["promote", "--name", "m", "--version", "abc"], "config",
     "version='abc'"),
    ("promote-min_delta-negative", "promote", lambda w: ["promote", "--name", "m", "--min-delta", "-1"], "config",
     "min_delta=-1.0"),
    ("promote-unknown-study", "promote",
     lambda w: ["promote", "--name", "m", "--study", "no-such-study", "--storage", "sqlite:///optuna.db"],
     "search", "no-such-study"),
    # analyze
    ("analyze-unknown-what", "analyze", lambda w: ["analyze", "--what", "colour", "--model", str(w.src)], "config",
     "what='colour'"),
    ("analyze-missing-model", "analyze", lambda w: ["analyze", "--model", str(w.root / "gone"), "--progress", "false"],
     "model", "gone"),
    ("analyze-batch_size-1.5", "analyze", lambda w: ["analyze", "--model", str(w.src), "--batch-size", "1.5"],
     "config", "batch_size='1.5'"),
    # report
    ("report-missing-project", "report", lambda w: ["report", "--project", str(w.root / "gone.yaml")], "config",
     "gone.yaml"),
    ("report-directory-as-project", "report", lambda w: ["report", "--project", str(w.empty_dir)], "config",
     "empty"),
    # suite
    ("suite-missing-project", "suite", lambda w: ["suite", "--project", str(w.root / "gone.yaml")], "suite",
     "gone.yaml"),
    ("suite-unknown-reuse", "suite", lambda w: ["suite", "--project", str(w.bad_yaml), "--reuse", "sometimes"],
     "config", "reuse='sometimes'"),
]


def test_every_entry_point_has_bad_input_rows():
    """The rule: every command in COMMANDS (new ones too: analyze, report, suite, ...) has rows in CASES."""
    from robust_transfer.commands import COMMANDS

    covered = {c[1] for c in CASES}
    missing = sorted(set(COMMANDS) - covered)
    assert not missing, f"entry points without bad-input rows in tests/test_bad_input.py CASES: {missing}"
    assert len(CASES) >= 5 * len(COMMANDS) - 10


def _snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under `roots` (the MLflow store excluded: failed runs are written there)."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and not p.name.startswith("mlflow.db"):
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _runs(wd: Path):
    client = MlflowClient(f"sqlite:///{wd / 'mlflow.db'}")
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, max_results=1000) if exps else []


@pytest.fixture(scope="module")
def mlflow_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad-input-mlflow") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()   # tables created once, not per case
    return path


@pytest.fixture(scope="module")
def study_template(tmp_path_factory) -> Path:
    """An Optuna sqlite store with one finished study (`kept`), which no failing command may touch."""
    import optuna

    path = tmp_path_factory.mktemp("bad-input-optuna") / "optuna.db"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="kept", storage=f"sqlite:///{path}", direction="maximize")
    study.optimize(lambda t: t.suggest_float("lr", 0.001, 0.1), n_trials=1)
    return path


@pytest.fixture
def wd(workdir, mlflow_template, study_template, world) -> Path:
    """A working directory with an MLflow store, a finished checkpoint and a study that must survive."""
    shutil.copy(mlflow_template, workdir / "mlflow.db")
    shutil.copy(study_template, workdir / "optuna.db")
    shutil.copytree(world.src, workdir / "ck")
    return workdir


def _check(wd: Path, before: dict, rc: int, err: str, kind: str, needle: str, runs_before=()):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == CODES[kind], (rc, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in err
    new = [r for r in _runs(wd) if r.info.run_id not in set(runs_before)]
    assert all(r.info.status == "FAILED" for r in new), [(r.info.run_name, r.info.status) for r in new]
    after = _snapshot(*before["roots"])
    changed = [p for p, h in before["files"].items() if after.get(p) != h]
    assert not changed, f"damaged: {changed}"


def _before(wd: Path, world: World) -> dict:
    roots = (wd, world.root, world.folder)
    return {"roots": roots, "files": _snapshot(*roots)}


@pytest.mark.parametrize("cmd,argv,kind,needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_in_process(wd, world, capfd, cmd, argv, kind, needle):
    before = _before(wd, world)
    capfd.readouterr()
    try:
        rc = main(argv(world))
    except SystemExit as e:   # (main returns the code; a SystemExit would be a bug of its own, still checked)
        rc = e.code
    err = capfd.readouterr().err
    _check(wd, before, rc, err, kind, needle)


SUBPROCESS = ["evaluate-corrupt-checkpoint", "search-yaml-syntax"]  # (+ --debug, mlflow run)


def _env(wd: Path) -> dict:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_RUN_ID", None)
    return env


@pytest.mark.slow
def test_bad_input_through_the_rtl_console_script_and_debug_shows_the_traceback(wd, world):
    """The real `rtl` script: the same checks; and `--debug` turns the one line into the traceback. (One after
    the other: started together on 2 shared cores they were slower still.)"""
    before = _before(wd, world)
    for case in SUBPROCESS:
        _id, _cmd, argv, kind, needle = next(c for c in CASES if c[0] == case)
        out = subprocess.run([str(BIN / "rtl"), *argv(world)], cwd=wd, env=_env(wd), capture_output=True, text=True,
                             timeout=180)
        _check(wd, before, out.returncode, out.stderr, kind, needle)
    out = subprocess.run([str(BIN / "rtl"), "--debug", *_train(world, "--arch", "vgg11")], cwd=wd, env=_env(wd),
                         capture_output=True, text=True, timeout=180)
    assert out.returncode != 0
    assert "Traceback (most recent call last)" in out.stderr and "ConfigError: arch='vgg11'" in out.stderr, \
        out.stderr[-2000:]


@pytest.mark.slow
def test_bad_input_through_mlflow_run_fails_the_launcher_run(wd, world):
    """`mlflow run . -e lwf`: the launcher creates the run before `rtl` parses anything; it must end FAILED."""
    before = _before(wd, world)
    cmd = [str(BIN / "mlflow"), "run", str(REPO), "-e", "lwf", "--env-manager", "local",
           "-P", f"source_model={world.src}", "-P", "warm_start=2", "-P", "progress=false"]
    out = subprocess.run(cmd, cwd=wd, env=_env(wd), capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    ours = [ln for ln in out.stderr.splitlines() if ln.startswith("error: ")]
    assert ours == ["error: warm_start=2.0 is out of range; allowed: [0.0, 1.0]"], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    runs = _runs(wd)
    assert len(runs) == 1 and runs[0].info.status == "FAILED", [(r.info.run_id, r.info.status) for r in runs]
    after = _snapshot(*before["roots"])
    assert all(after.get(p) == h for p, h in before["files"].items())
