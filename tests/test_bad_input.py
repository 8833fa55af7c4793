"""Bad input to every entry point, table-driven (issue #8): for each case the exit code is the documented one
(README "Errors and exit codes": 2 config, 3 data, 4 model, 5 search, 6 registry, 7 suite), stderr is exactly one line
`error: ...` that names the bad value, there is no traceback (unless --debug), the MLflow run is FAILED or none
was created, and no file that existed before (checkpoints, data, a study, a search space) changed.

Two kinds of rows. DERIVED: from every entry point's declaration (commands.COMMANDS and its config class), a bad
choice, a non-number and an out-of-range whole number, a non-boolean for every such field: config errors, one
shared store, fast. CASES: hand-written, for what derivation cannot reach (data, models, files, stores, hostile
inputs); every command needs some (`test_every_entry_point_has_bad_input_rows`). Most cases go through `cli.main`
in-process; a few through the `rtl` console script and one through `mlflow run . -e <entry> --env-manager local`.

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

from robust_transfer.cli import main
from support.synthetic import write_imagefolder
from support.transfer import all_runs

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
        "objective: {metric: val_clean_acc, direction: maximize}\n")
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
    _hostile_files(root, spec, tiny_folder)
    return World(root, tiny_folder, other, root / "src", root / "src32", root / "ten", root / "corrupt",
                 root / "empty", root / "notes.txt", root / "space.yaml", root / "bad.yaml", root / "bad_meta",
                 root / "arch_swap", root / "bad_state", root / "bad.tar.gz", root / "list.yaml")


# ---------------------------------------------------------------- hostile and careless inputs (issue 17)
HUGE_HEAD = {"kind": "mlp", "mlp_depth": 16, "width": 65536, "dropout": 0.0, "batch_norm": False}  # 17 GB if built
META_VARIANTS = {   # name -> change to the src checkpoint's meta.json (None: delete the key)
    "meta_no_arch": {"arch": None}, "meta_no_classes": {"num_classes": None},
    "meta_classes_str": {"num_classes": "3"}, "meta_classes_huge": {"num_classes": 10**12},
    "meta_input_abc": {"input_size": "abc"}, "meta_input_huge": {"input_size": 10**6},
    "meta_mean_short": {"mean": [0.5, 0.5]}, "meta_std_zero": {"std": [0.0, 0.0, 0.0]},
    "meta_std_str": {"std": "x"}, "meta_head_str": {"head": "mlp"}, "meta_head_kind": {"head": {"kind": "conv"}},
    "meta_head_key": {"head": {"kind": "mlp", "depth": 3}}, "meta_head_huge": {"head": HUGE_HEAD},
    "meta_head_big_fits_caps": {"head": {"kind": "mlp", "mlp_depth": 2, "width": 8192}},  # 268 MB: shapes refuse it
    "meta_wrn_10_0": {"arch": "wrn-10-0"}, "meta_arch_int": {"arch": 7},
}
BILLION_LAUGHS = "l0: &l0 lol\n" + "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n" for i in range(1, 10))


def _hostile_files(root: Path, spec: str, folder: Path) -> None:
    import json

    for name, change in META_VARIANTS.items():
        shutil.copytree(root / "src", root / name)
        meta = json.loads((root / name / "meta.json").read_text())
        for k, v in change.items():
            meta.pop(k) if v is None else meta.__setitem__(k, v)
        (root / name / "meta.json").write_text(json.dumps(meta))
    shutil.copytree(root / "src", root / "meta_nested")
    meta = (root / "meta_nested" / "meta.json").read_text()
    (root / "meta_nested" / "meta.json").write_text(meta[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    shutil.copytree(root / "src", root / "meta_spec_huge")
    meta = json.loads((root / "meta_spec_huge" / "meta.json").read_text())
    meta["data_spec"] = f"imagefolder:{folder}:classes=0-30000000"
    (root / "meta_spec_huge" / "meta.json").write_text(json.dumps(meta))
    # checkpoint directories that are the user's, not ours
    (root / "thesis").mkdir()
    (root / "thesis" / "thesis.txt").write_text("three years of work\n")
    shutil.copytree(root / "src", root / "ck_plus")
    (root / "ck_plus" / "notes.md").write_text("mine\n")
    (root / "nested_dir" / "sub").mkdir(parents=True)
    shutil.copytree(root / "src", root / "not_ours_meta")
    (root / "not_ours_meta" / "meta.json").write_text('{"format": "someone-else/1"}')
    # search spaces and suites that cost more than they weigh
    base = (root / "space.yaml").read_text()
    spaces = {
        "laughs": BILLION_LAUGHS + base,
        "laughs_in_fixed": base.replace("fixed:\n", "fixed:\n  note: &n0 [a, a, a, a, a, a, a, a, a, a]\n"
                                       + "".join(f"  n{i}: &n{i} [" + ", ".join([f'*n{i - 1}'] * 10) + "]\n"
                                                 for i in range(1, 8))),
        "self_anchor": base + "description: &d {self: *d}\n",
        "deep_seq": base + "description: " + "[" * 20_000 + "]" * 20_000 + "\n",
        "deep_map": base + "description: " + "{a: " * 20_000 + "b" + "}" * 20_000 + "\n",
        "alias_chain": base + "".join(f"c{i}: &c{i} [*c{i - 1}]\n" if i else "c0: &c0 [x]\n" for i in range(3000)),
        "grid_1e9": base.replace("params:\n", "sampler: {type: grid}\nparams:\n  seed: {type: int, low: 0, high: 1000000000}\n")
                        .replace("  lr: {type: float, low: 0.001, high: 0.1, log: true}\n", ""),
        "grid_product": base.replace("params:\n", "sampler: {type: grid}\nparams:\n  seed: {type: int, low: 0, high: 100000}\n"
                                     "  steps: {type: int, low: 1, high: 1000}\n")
                            .replace("  lr: {type: float, low: 0.001, high: 0.1, log: true}\n", ""),
        "int_1e23": base.replace("params:\n", "params:\n  seed: {type: int, low: 0, high: 100000000000000000000000}\n"),
        "timeout_neg": base + "timeout: -5\n",
        "timeout_zero": base + "timeout: 0\n",
        "startup_neg": base + "sampler: {type: tpe, n_startup_trials: -5}\n",
        "pruner_startup_neg": base + "pruner: {type: median, n_startup_trials: -5}\n",
        "sampler_seed_huge": base + "sampler: {type: tpe, seed: 100000000000000000000}\n",
        "sampler_seed_neg": base + "sampler: {type: random, seed: -1}\n",
    }
    for name, text in spaces.items():
        (root / f"{name}.yaml").write_text(text)
    (root / "latin1.yaml").write_bytes(base.replace("train", "train  # caf\u00e9", 1).encode("latin-1"))
    (root / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    suite = "name: s\nscales: {cpu: {}}\nsteps:\n  - {name: a, entry: train, params: {epochs: 1}}\n"
    (root / "suite_laughs.yaml").write_text(BILLION_LAUGHS + suite)
    (root / "suite_deep.yaml").write_text(suite + "report: " + "[" * 20_000 + "]" * 20_000 + "\n")
    (root / "suite_self.yaml").write_text(suite + "description: &d [*d]\n")
    (root / "suite_latin1.yaml").write_bytes(("# r\u00e9sum\u00e9\n" + suite).encode("latin-1"))


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
def _import(w: World, file, *extra):
    args = {"--format": "torchvision", "--arch": "resnet18", "--register-as": "imported"}
    for k, v in zip(extra[::2], extra[1::2]):
        args[k] = v
    return ["import", "--file", str(file), *[x for kv in args.items() for x in kv]]


CASES = [
    # train: unknown names, out-of-range numbers, missing data, corrupt resume state
    ("train-unknown-arch", "train", lambda w: _train(w, "--arch", "vgg11"), "config", "arch='vgg11'"),
    ("train-unknown-dataset", "train", lambda w: _train(w, "--dataset", "mnist"), "config", "dataset='mnist'"),
    ("train-epsilon-0", "train", lambda w: _train(w, "--epsilon", "0"), "config", "epsilon=0.0"),
    ("train-lr-0", "train", lambda w: _train(w, "--lr", "0"), "config", "lr=0.0"),
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
    # evaluate: missing/corrupt/mismatched models, unknown suite, out-of-range epsilon
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
    ("autoattack-split-dev", "evaluate", lambda w: _evaluate(w, "--suite", "autoattack", "--split", "dev"), "config",
     "split='dev' is not allowed; choose one of: test, train, val"),
    ("evaluate-epsilon-negative", "evaluate", lambda w: _evaluate(w, "--epsilon", "-8"), "config", "epsilon=-8.0"),
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
    ("transfer-unknown-target", "transfer", lambda w: _from_source("transfer", w, "--target", "mnist"), "config",
     "dataset='mnist'"),
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
    ("finetune-adv-empty-dir-source", "finetune-adv",
     lambda w: _from_source("finetune-adv", w, source=w.empty_dir), "model", "empty"),
    # lwf
    ("lwf-warm_start-2", "lwf", lambda w: _from_source("lwf", w, "--warm-start", "2"), "config", "warm_start=2.0"),
    ("lwf-lambda_d-negative", "lwf", lambda w: _from_source("lwf", w, "--lambda-d", "-1"), "config",
     "lambda_d=-1.0"),
    ("lwf-corrupt-source", "lwf", lambda w: _from_source("lwf", w, source=w.corrupt), "model", "corrupt"),
    ("lwf-corrupt-meta", "lwf", lambda w: _from_source("lwf", w, source=w.bad_meta), "model", "bad_meta"),
    ("lwf-val_fraction-leaves-a-class-without-validation", "lwf",
     lambda w: _from_source("lwf", w, "--val-fraction", "0.01"), "data", "val_fraction=0.01"),
    # search
    ("search-yaml-syntax", "search", lambda w: _search(w, space=w.bad_yaml), "search", "bad.yaml"),
    ("search-space-not-a-mapping", "search", lambda w: _search(w, space=w.list_yaml), "search", "list.yaml"),
    ("search-missing-space", "search", lambda w: _search(w, space=w.root / "gone.yaml"), "search", "gone.yaml"),
    ("search-space-is-a-directory", "search", lambda w: _search(w, space=w.empty_dir), "search", "empty"),
    ("search-unknown-storage", "search", lambda w: _search(w, "--storage", "mongo:db"), "search", "mongo:db"),
    ("search-trials-0", "search", lambda w: _search(w, "--trials", "0"), "config", "trials=0"),
    ("search-tracking-storage-no-name", "search", lambda w: _search(w, "--storage", "tracking:"), "search",
     "give a file name"),
    ("search-unknown-param-in-set", "search", lambda w: _search(w, "--set", "lambda_dd=0.1"), "search", "lambda_dd"),
    # promote
    ("promote-unknown-model", "promote", lambda w: ["promote", "--name", "no-such-model"], "registry",
     "no-such-model"),
    ("promote-malformed-policy", "promote", lambda w: ["promote", "--name", "m", "--policy", "best accuracy"],
     "config", "policy='best accuracy'"),
    ("promote-min_delta-negative", "promote", lambda w: ["promote", "--name", "m", "--min-delta", "-1"], "config",
     "min_delta=-1.0"),
    ("promote-unknown-study", "promote",
     lambda w: ["promote", "--name", "m", "--study", "no-such-study", "--storage", "sqlite:///optuna.db"],
     "search", "no-such-study"),
    # analyze
    ("analyze-missing-model", "analyze", lambda w: ["analyze", "--model", str(w.root / "gone"), "--progress", "false"],
     "model", "gone"),
    # report
    ("report-missing-project", "report", lambda w: ["report", "--project", str(w.root / "gone.yaml")], "config",
     "gone.yaml"),
    ("report-directory-as-project", "report", lambda w: ["report", "--project", str(w.empty_dir)], "config",
     "empty"),
    # import (issue #14): a file that is no checkpoint or does not match: exit 4 (unknown format or arch: DERIVED)
    ("import-key-mismatch", "import", lambda w: _import(w, w.src / "model.safetensors"), "model", "missing"),
    ("import-text-file", "import", lambda w: _import(w, w.text_file), "model", "notes.txt"),
    ("import-missing-file", "import", lambda w: _import(w, w.root / "gone.pth"), "model", "gone.pth"),
    ("import-directory-as-file", "import", lambda w: _import(w, w.empty_dir), "model", "empty"),
    ("import-bad-name", "import", lambda w: _import(w, w.text_file, "--register-as", "two words"), "config",
     "register_as='two words'"),
    # suite
    ("suite-missing-project", "suite", lambda w: ["suite", "--project", str(w.root / "gone.yaml")], "suite",
     "gone.yaml"),
]


def _promote(policy: str):
    return lambda w: ["promote", "--name", "m", "--policy", policy]


# Issue 17: a hostile or careless user. (id, command, argv(world), kind, needle), as above.
HOSTILE = [
    # §1 a checkpoint directory that is the user's is never emptied or replaced; a file is never moved aside
    ("train-checkpoint-dir-holds-user-files", "train", lambda w: _train(w, "--checkpoint-dir", str(w.root / "thesis")),
     "config", "thesis.txt"),
    ("train-checkpoint-dir-is-a-file", "train", lambda w: _train(w, "--checkpoint-dir", str(w.text_file)), "config",
     "is an existing file"),
    ("train-checkpoint-dir-ours-plus-a-user-file", "train",
     lambda w: _train(w, "--checkpoint-dir", str(w.root / "ck_plus")), "config", "notes.md"),
    ("train-checkpoint-dir-holds-a-subdir", "train", lambda w: _train(w, "--checkpoint-dir", str(w.root / "nested_dir")),
     "config", "'sub'"),
    ("train-checkpoint-dir-foreign-meta", "train",
     lambda w: _train(w, "--checkpoint-dir", str(w.root / "not_ours_meta")), "config", "no meta.json of ours"),
    ("transfer-checkpoint-dir-holds-user-files", "transfer",
     lambda w: _from_source("transfer", w, "--checkpoint-dir", str(w.root / "thesis")), "config", "thesis.txt"),
    ("lwf-checkpoint-dir-is-a-file", "lwf",
     lambda w: _from_source("lwf", w, "--checkpoint-dir", str(w.root / "thesis" / "thesis.txt")), "config",
     "is an existing file"),
    ("finetune-adv-checkpoint-dir-ours-plus-a-user-file", "finetune-adv",
     lambda w: _from_source("finetune-adv", w, "--checkpoint-dir", str(w.root / "ck_plus")), "config", "notes.md"),
    ("retrain-blocks-checkpoint-dir-holds-user-files", "retrain-blocks",
     lambda w: _from_source("retrain-blocks", w, "--checkpoint-dir", str(w.root / "thesis")), "config", "thesis.txt"),
    # §1 storages: never in memory; never somebody else's database or file
    ("search-storage-in-memory", "search", lambda w: _search(w, "--storage", "sqlite:///"), "search", "in-memory"),
    ("search-storage-in-memory-2", "search", lambda w: _search(w, "--storage", "sqlite://"), "search", "in-memory"),
    ("search-storage-memory-name", "search", lambda w: _search(w, "--storage", "sqlite:///:memory:"), "search",
     "in-memory"),
    ("promote-storage-in-memory", "promote",
     lambda w: ["promote", "--name", "m", "--study", "x", "--storage", "sqlite:///"], "search", "in-memory"),
    ("search-storage-not-a-database", "search", lambda w: _search(w, "--storage", f"sqlite:///{w.text_file}"),
     "search", "not a sqlite database"),
    ("search-journal-over-a-user-file", "search", lambda w: _search(w, "--storage", f"journal:{w.root / 'thesis' / 'thesis.txt'}"),
     "search", "not an Optuna journal"),
    ("promote-storage-missing-dir", "promote",
     lambda w: ["promote", "--name", "m", "--study", "x", "--storage", f"sqlite:///{w.root / 'missing' / 'dir' / 'x.db'}"],
     "search", "does not exist"),
    # §2 ranges that would become lists, bounded before they expand
    ("train-classes-range-30M", "train", lambda w: _train(w, "--dataset", f"imagefolder:{w.folder}:classes=0-30000000"),
     "config", "class indices go up to 99999"),
    ("train-classes-list-with-huge-range", "train",
     lambda w: _train(w, "--dataset", f"imagefolder:{w.folder}:classes=0,2,5-99999999999999"), "config", "99999"),
    ("transfer-target-classes-past-the-bound", "transfer",
     lambda w: _from_source("transfer", w, "--target", f"imagefolder:{w.folder}:classes=100000-100001"), "config",
     "class indices go up to 99999"),
    ("evaluate-checkpoint-data_spec-classes-30M", "evaluate", lambda w: _evaluate(w, model=w.root / "meta_spec_huge"),
     "config", "classes=0-30000000"),
    ("retrain-blocks-k-range-1e9", "retrain-blocks", lambda w: _from_source("retrain-blocks", w, "--k", "1-1000000000"),
     "config", "at most k=1000"),
    ("retrain-blocks-k-list-with-huge-range", "retrain-blocks",
     lambda w: _from_source("retrain-blocks", w, "--k", "1,3,7-99999999999"), "config", "at most k=1000"),
    ("search-grid-of-1e9-ints", "search", lambda w: _search(w, space=w.root / "grid_1e9.yaml"), "search",
     "more than 100000 points"),
    ("search-grid-product-1e8", "search", lambda w: _search(w, space=w.root / "grid_product.yaml"), "search",
     "more than 100000 points"),
    ("search-int-range-1e23", "search", lambda w: _search(w, space=w.root / "int_1e23.yaml"), "search",
     "9007199254740992"),
    # §2 YAML aliases and nesting, bounded before composing (search spaces, suites, reports)
    ("search-billion-laughs", "search", lambda w: _search(w, space=w.root / "laughs.yaml"), "search",
     "more than 100000 nodes"),
    ("search-billion-laughs-under-fixed", "search", lambda w: _search(w, space=w.root / "laughs_in_fixed.yaml"),
     "search", "more than 100000 nodes"),
    ("search-self-referencing-anchor", "search", lambda w: _search(w, space=w.root / "self_anchor.yaml"), "search",
     "refers to itself"),
    ("search-20k-deep-sequence", "search", lambda w: _search(w, space=w.root / "deep_seq.yaml"), "search",
     "deeper than 64 levels"),
    ("search-20k-deep-mapping", "search", lambda w: _search(w, space=w.root / "deep_map.yaml"), "search",
     "deeper than 64 levels"),
    ("search-3000-chained-aliases", "search", lambda w: _search(w, space=w.root / "alias_chain.yaml"), "search",
     "deeper than 64 levels"),
    ("suite-billion-laughs", "suite", lambda w: ["suite", "--project", str(w.root / "suite_laughs.yaml")], "suite",
     "more than 100000 nodes"),
    ("suite-20k-deep", "suite", lambda w: ["suite", "--project", str(w.root / "suite_deep.yaml")], "suite",
     "deeper than 64 levels"),
    ("suite-self-referencing-anchor", "suite", lambda w: ["suite", "--project", str(w.root / "suite_self.yaml")],
     "suite", "refers to itself"),
    ("report-20k-deep", "report", lambda w: ["report", "--project", str(w.root / "suite_deep.yaml")], "config",
     "deeper than 64 levels"),
    ("report-billion-laughs", "report", lambda w: ["report", "--project", str(w.root / "suite_laughs.yaml")], "config",
     "more than 100000 nodes"),
    # §2 heads: bounded at the CLI; a checkpoint's metadata checked against its weights' header before building
    ("transfer-head-16x65536", "transfer",
     lambda w: _from_source("transfer", w, "--head", "mlp", "--mlp-depth", "16", "--width", "65536"), "config",
     "at most 32768"),
    ("transfer-head-4x30000", "transfer",
     lambda w: _from_source("transfer", w, "--head", "mlp", "--mlp-depth", "4", "--width", "30000"), "config",
     "hidden"),
    ("transfer-head-3x8192", "transfer",
     lambda w: _from_source("transfer", w, "--head", "mlp", "--mlp-depth", "3", "--width", "8192"), "config",
     "at most 67108864"),
    ("evaluate-meta-head-16x65536", "evaluate", lambda w: _evaluate(w, model=w.root / "meta_head_huge"), "model",
     "meta_head_huge"),
    ("evaluate-meta-head-within-caps-but-not-the-weights", "evaluate",
     lambda w: _evaluate(w, model=w.root / "meta_head_big_fits_caps"), "model", "does not match"),
    ("transfer-source-meta-head-16x65536", "transfer",
     lambda w: _from_source("transfer", w, source=w.root / "meta_head_huge"), "model", "meta_head_huge"),
    ("evaluate-meta-num_classes-1e12", "evaluate", lambda w: _evaluate(w, model=w.root / "meta_classes_huge"), "model",
     "num_classes=1000000000000"),
    # §4 metadata the model is built from: each a model error (exit 4), one line, no warnings
    *[(f"evaluate-{name.replace('_', '-')}", "evaluate", (lambda w, n=name: _evaluate(w, model=w.root / n)), "model", name)
      for name in META_VARIANTS if name not in ("meta_head_huge", "meta_head_big_fits_caps", "meta_classes_huge")],
    ("evaluate-meta-nested-100k", "evaluate", lambda w: _evaluate(w, model=w.root / "meta_nested"), "model",
     "nested too deeply"),
    ("lwf-source-meta-no-arch", "lwf", lambda w: _from_source("lwf", w, source=w.root / "meta_no_arch"), "model",
     "without 'arch'"),
    ("finetune-adv-source-meta-wrn-10-0", "finetune-adv",
     lambda w: _from_source("finetune-adv", w, source=w.root / "meta_wrn_10_0"), "model", "wrn width=0"),
    ("analyze-meta-std-zero", "analyze",
     lambda w: ["analyze", "--model", str(w.root / "meta_std_zero"), "--progress", "false", "--device", "cpu"], "model",
     "std="),
    ("train-arch-wrn-10-0", "train", lambda w: _train(w, "--arch", "wrn-10-0"), "config", "wrn width=0"),
    ("train-arch-wrn-huge-width", "train", lambda w: _train(w, "--arch", "wrn-16-100000"), "config", "wrn width=100000"),
    # §4 policies
    ("promote-policy-divides-by-zero", "promote", _promote("max clean_acc / 0"), "config", "divides by zero"),
    ("promote-policy-divides-by-0.0", "promote", _promote("max (clean_acc + pgd20_acc) / 0.0"), "config",
     "divides by zero"),
    ("promote-policy-divides-by-constant-zero", "promote", _promote("max clean_acc / (2 - 2)"), "config",
     "divides by zero"),
    ("promote-policy-constraint-divides-by-zero", "promote",
     _promote("max pgd20_acc subject to clean_acc / 0 >= 0.5"), "config", "divides by zero"),
    ("promote-policy-min-of-one", "promote", _promote("max min(clean_acc)"), "config", "two or more"),
    ("promote-policy-max-of-none", "promote", _promote("max max()"), "config", "two or more"),
    ("promote-policy-30000-plus", "promote", _promote("max " + " + ".join(["clean_acc"] * 30_000)), "config",
     "characters long"),
    ("promote-policy-10000-plus", "promote", _promote("max " + " + ".join(["clean_acc"] * 10_000)), "config",
     "characters long"),   # (fits one argv entry: the RSS test runs it as a process)
    ("promote-policy-200-plus", "promote", _promote("max " + "+".join(["clean_acc"] * 200)), "config",
     "characters long"),
    ("promote-policy-deep-unary", "promote", _promote("max " + "-" * 900 + "clean_acc"), "config",
     "deeper than 50 levels"),
    # §4 seeds and experiment names
    ("train-seed-2**32", "train", lambda w: _train(w, "--seed", str(2**32)), "config", "[0, 4294967295]"),
    ("search-sampler-seed-1e20", "search", lambda w: _search(w, space=w.root / "sampler_seed_huge.yaml"), "search",
     "seed=100000000000000000000"),
    ("search-sampler-seed-negative", "search", lambda w: _search(w, space=w.root / "sampler_seed_neg.yaml"), "search",
     "seed=-1"),
    ("train-experiment-empty", "train", lambda w: _train(w, "--experiment", ""), "config", "experiment="),
    ("train-experiment-spaces", "train", lambda w: _train(w, "--experiment", "   "), "config", "experiment='   '"),
    ("train-experiment-600-chars", "train", lambda w: _train(w, "--experiment", "x" * 600), "config", "experiment="),
    ("evaluate-experiment-600-chars", "evaluate", lambda w: _evaluate(w, "--experiment", "e" * 600), "config",
     "1 to 256 characters"),
    ("search-experiment-empty", "search", lambda w: _search(w, "--experiment", ""), "config", "experiment="),
    ("suite-experiment-600-chars", "suite", lambda w: ["suite", "--project", str(w.bad_yaml), "--experiment", "s" * 600],
     "config", "1 to 256 characters"),
    # §4 search-space values accepted today and wrong; files that are not UTF-8
    ("search-timeout-negative", "search", lambda w: _search(w, space=w.root / "timeout_neg.yaml"), "search",
     "timeout=-5"),
    ("search-timeout-zero", "search", lambda w: _search(w, space=w.root / "timeout_zero.yaml"), "search", "timeout=0"),
    ("search-sampler-n_startup_trials-negative", "search", lambda w: _search(w, space=w.root / "startup_neg.yaml"),
     "search", "n_startup_trials=-5"),
    ("search-pruner-n_startup_trials-negative", "search",
     lambda w: _search(w, space=w.root / "pruner_startup_neg.yaml"), "search", "n_startup_trials=-5"),
    ("search-space-latin-1", "search", lambda w: _search(w, space=w.root / "latin1.yaml"), "search", "not UTF-8"),
    ("search-space-binary", "search", lambda w: _search(w, space=w.root / "binary.yaml"), "search", "not UTF-8"),
    ("suite-latin-1", "suite", lambda w: ["suite", "--project", str(w.root / "suite_latin1.yaml")], "suite",
     "not UTF-8"),
    ("transfer-batch-norm-batches-of-one", "transfer",
     lambda w: _from_source("transfer", w, "--head", "mlp", "--batch-norm", "true", "--batch-size", "1"), "config",
     "batch_size >= 2"),
]
CASES += HOSTILE


# ------------------------------------------------------------------------ rows derived from the declarations
# From every entry point's config class (commands.COMMANDS): for each field with a fixed set of values
# (config.field_choices) a value outside it, for each whole-number field a non-number and a number out of any
# range, for each boolean a non-boolean. Each is refused before anything runs: exit 2 (unless DOCUMENTED), one
# line naming the field and the value, no run left RUNNING. A new entry point or field gets its rows unasked.
OUT_OF_RANGE = str(2**64)
NOT_A_CHOICE = "not-a-choice"
# A valid value for each field an entry point requires (its default is ''), by field name.
REQUIRED = {"source_model": lambda w: str(w.src), "model": lambda w: str(w.src), "space": lambda w: str(w.space),
            "project": lambda w: str(w.space), "name": lambda w: "m", "format": lambda w: "torchvision",
            "file": lambda w: str(w.src / "model.safetensors"), "arch": lambda w: "resnet18",
            "register_as": lambda w: "imported"}
# docs/importing.md: an import with an unknown format or architecture is a model error (exit 4).
DOCUMENTED = {("import", "format"): "model", ("import", "arch"): "model"}


def _required(cls) -> list[str]:
    from dataclasses import fields

    return [f.name for f in fields(cls) if f.default == "" and f.name in REQUIRED]


def _derived_rows() -> list[tuple]:
    """(id, command, field, bad text, kind, allowed values the line must name)."""
    from dataclasses import fields

    from robust_transfer.commands import COMMANDS
    from robust_transfer.config import field_choices
    from robust_transfer.config.coerce import field_types

    rows = []
    for name, ep in COMMANDS.items():
        types, choices = field_types(ep.config), field_choices(ep.config)
        for f in fields(ep.config):
            kind = DOCUMENTED.get((name, f.name), "config")
            if f.name in choices:
                # a fixed set is named in full in the error; one with a pattern (wrn-<depth>-<width>, cuda:N) is open
                named = () if any("<" in c or ":N" in c for c in choices[f.name]) else choices[f.name]
                rows.append((f"{name}-{f.name}-not-a-choice", name, f.name, NOT_A_CHOICE, kind, named))
            elif types[f.name] is int:
                rows.append((f"{name}-{f.name}-not-a-number", name, f.name, "abc", kind, ()))
                rows.append((f"{name}-{f.name}-2**64", name, f.name, OUT_OF_RANGE, kind, ()))
            elif types[f.name] is bool:
                rows.append((f"{name}-{f.name}-not-a-bool", name, f.name, "maybe", kind, ()))
    return rows


DERIVED = _derived_rows()
# Issue 28: the newer doors (images and archives that lie about their size, suite variables that loop or explode,
# import heads over 100,000 classes, unknown image-folder options, one-class folders). Their files are built once,
# beside the world (not inside it: the per-case snapshot would hash a 44 MB checkpoint every time).
_R28_BUILT: set = set()


def _r28(w: World) -> Path:
    root = w.root.parent / "r28-files"
    if root in _R28_BUILT:
        return root
    import torch
    import torchvision

    import support.hostile_files as hf
    from robust_transfer import create_model

    root.mkdir(exist_ok=True)
    write_imagefolder(root / "one-class", n_classes=1, n_train=6, n_test=2)
    for name, files in {"liars": {"a/x.jpg": hf.jpeg(65000, 65000), "b/y.png": hf.png(12000, 12000)},
                        "liars-far-past-pil": {"a/x.png": hf.png(2**31 - 1, 2**31 - 1), "b/y.bmp": hf.bmp(10**6, 10**6),
                                               "b/z.png": hf.gif(65535, 65535)},
                        "liars-one-row-over": {"a/x.jpg": hf.jpeg(8193, 8192), "b/y.png": hf.png(8192, 8193)}}.items():
        for rel, blob in files.items():
            (root / name / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / name / rel).write_bytes(blob)
    hf.tar_gz_with_big_member(root / "liars.tar.gz", "b/y.png", 10, {"a/x.jpg": hf.jpeg(65000, 65000)})
    hf.tar_gz_with_big_member(root / "huge-members.tar.gz", "b/y.png", 65 << 20)
    suites = {"self": '    v0: "x{v0}"\n', "cycle2": '    v0: "{v1}"\n    v1: "{v0}"\n',
              "cycle5": "".join(f'    v{i}: "{{v{(i + 1) % 5}}}"\n' for i in range(5)),
              "bomb": "".join(f'    v{i}: "' + "{v%d}" % (i + 1) * 10 + '"\n' for i in range(9)) + '    v9: "abcdefghij"\n',
              "deep": "".join(f'    v{i}: "{{v{i + 1}}}"\n' for i in range(40)) + '    v40: "cifar10"\n'}
    for name, variables in suites.items():
        (root / f"suite-{name}.yaml").write_text(f"name: s\nscales:\n  cpu:\n{variables}steps:\n"
                                                 '  - {name: x, entry: train, params: {dataset: "{v0}", epochs: 1}}\n')
    zero = lambda rows, feat: (torch.zeros(1, feat).expand(rows, -1), torch.zeros(1).expand(rows))  # noqa: E731
    tv = torchvision.models.resnet18(num_classes=2).state_dict()
    tv["fc.weight"], tv["fc.bias"] = zero(50_000_000, 512)
    torch.save(tv, root / "tv-50M.pth")
    tv["fc.weight"], tv["fc.bias"] = zero(1, 512)
    torch.save(tv, root / "tv-1.pth")
    tv["fc.weight"], tv["fc.bias"] = zero(500_000, 512)
    torch.save({"model": {**{f"module.model.{k}": v for k, v in tv.items()},
                          "module.normalizer.new_mean": torch.tensor([0.5] * 3),
                          "module.normalizer.new_std": torch.tensor([0.25] * 3)}}, root / "madry-500k.ckpt")
    rb_head = zero(100_001, 64)   # (a RobustBench WRN's head is checked before anything else is read)
    torch.save({"conv1.weight": torch.zeros(16, 3, 3, 3), "fc.weight": rb_head[0], "fc.bias": rb_head[1]},
               root / "rb-100001.pt")
    ours = create_model("small-cnn", 2).state_dict()
    ours["head.weight"], ours["head.bias"] = zero(200_000, ours["head.weight"].shape[1])
    torch.save(ours, root / "km-200k.pt")
    (root / "km.yaml").write_text("rename: []\n")
    _R28_BUILT.add(root)
    return root


def _suite(w: World, name: str):
    return ["suite", "--project", str(_r28(w) / f"suite-{name}.yaml"), "--scale", "cpu", "--dry-run", "true"]


CASES += [
    # §2 images and archives whose headers claim more than they hold: skipped; nothing usable left is exit 3
    ("train-folder-of-lying-images", "train", lambda w: _train(w, "--dataset", f"imagefolder:{_r28(w) / 'liars'}"),
     "data", "2 more than 64M pixels"),
    ("evaluate-folder-of-images-far-past-pil-limit", "evaluate",
     lambda w: _evaluate(w, "--dataset", f"imagefolder:{_r28(w) / 'liars-far-past-pil'}:resize=16", "--split", "train"),
     "data",
     "3 more than 64M pixels"),
    ("transfer-target-images-one-row-over-the-cap", "transfer",
     lambda w: _from_source("transfer", w, "--target", f"imagefolder:{_r28(w) / 'liars-one-row-over'}"), "data",
     "2 more than 64M pixels"),
    ("train-archive-of-lying-images", "train", lambda w: _train(w, "--dataset", f"imagefolder:{_r28(w) / 'liars.tar.gz'}"),
     "data", "1 more than 64M pixels"),
    ("retrain-blocks-archive-member-over-64MB", "retrain-blocks",
     lambda w: _from_source("retrain-blocks", w, "--dataset", f"imagefolder:{_r28(w) / 'huge-members.tar.gz'}"), "data",
     "1 larger than 64 MB"),
    # §7 one class folder (data: exit 3, as documented); an image-folder option nobody knows
    ("train-one-class-folder", "train", lambda w: _train(w, "--dataset", f"imagefolder:{_r28(w) / 'one-class'}"), "data",
     "has one class ('class0')"),
    ("train-unknown-imagefolder-option", "train", lambda w: _train(w, "--dataset", f"imagefolder:{w.folder}:evil=1"),
     "config", "unknown option 'evil'; allowed: resize=R"),
    ("evaluate-unknown-imagefolder-option-after-resize", "evaluate",
     lambda w: _evaluate(w, "--dataset", f"imagefolder:{w.folder}:resize=16:evil=1"), "config", "unknown option 'evil'"),
    ("transfer-target-option-misspelt", "transfer",
     lambda w: _from_source("transfer", w, "--target", f"imagefolder:{w.folder}:Resize=16"), "config",
     "unknown option 'Resize'"),
    # §3 suite variables: cycles of any length, bombs, chains deeper than the limit: exit 7, naming the variable
    ("suite-variable-refers-to-itself", "suite", lambda w: _suite(w, "self"), "suite", "{v0} refers to itself"),
    ("suite-variable-cycle-of-2", "suite", lambda w: _suite(w, "cycle2"), "suite", "{v0} → {v1} → {v0}"),
    ("suite-variable-cycle-of-5", "suite", lambda w: _suite(w, "cycle5"), "suite", "{v3} → {v4} → {v0}"),
    ("suite-variable-bomb-9x10", "suite", lambda w: _suite(w, "bomb"), "suite", "expands to more than 10000 characters"),
    ("suite-variable-chain-of-40", "suite", lambda w: _suite(w, "deep"), "suite", "at most 16 deep"),
    # §5 imports: no format builds a head over 100,000 classes (exit 4, as the key-map path and the docs say)
    ("import-torchvision-stride0-head-50M", "import", lambda w: _import(w, _r28(w) / "tv-50M.pth"), "model",
     "a head for 50000000 classes; allowed: 2 to 100000"),
    ("import-torchvision-head-of-1", "import", lambda w: _import(w, _r28(w) / "tv-1.pth"), "model",
     "a head for 1 classes"),
    ("import-robustness-head-500k", "import", lambda w: _import(w, _r28(w) / "madry-500k.ckpt", "--format", "robustness"),
     "model", "a head for 500000 classes"),
    ("import-robustbench-head-100001", "import",
     lambda w: _import(w, _r28(w) / "rb-100001.pt", "--format", "robustbench", "--arch", "wrn-10-1"), "model",
     "a head for 100001 classes"),
    ("import-keymap-head-200k", "import",
     lambda w: _import(w, _r28(w) / "km-200k.pt", "--format", "keymap", "--arch", "small-cnn", "--key-map",
                       str(_r28(w) / "km.yaml")), "model", "a head for 200000 classes"),
]


def test_every_entry_point_has_bad_input_rows():
    """Every command in COMMANDS has rows: derived ones for its typed fields, hand-written ones in CASES for what
    derivation cannot reach (data, models, files, stores)."""
    from robust_transfer.commands import COMMANDS

    derived = {r[1] for r in DERIVED}
    assert len(derived) >= len(COMMANDS) - 1, sorted(set(COMMANDS) - derived)   # (report's fields are free text)
    assert {r[2] for r in DERIVED} >= {"mode", "epochs", "seed", "augment", "device", "split", "format"}
    hand = {c[1] for c in CASES}
    missing = sorted(set(COMMANDS) - hand)
    assert not missing, f"entry points without hand-written bad-input rows in CASES: {missing}"


def test_the_baseline_of_the_derived_rows_is_a_valid_config(world):
    """The derived rows change one flag of a valid command line: each config builds from its required values
    alone (so the one error a row sees is the row's own)."""
    from robust_transfer.commands import COMMANDS
    from robust_transfer.config.coerce import coerce_values

    built = [ep.config(**coerce_values(ep.config, {k: REQUIRED[k](world) for k in _required(ep.config)}))
             for ep in COMMANDS.values()]
    assert len(built) == len(COMMANDS) and any(_required(ep.config) for ep in COMMANDS.values())


@pytest.fixture(scope="module")
def derived_wd(tmp_path_factory, mlflow_db_template):
    """One working directory and MLflow store for every derived row (each is refused before a run opens)."""
    wd = tmp_path_factory.mktemp("bad-input-derived")
    shutil.copy(mlflow_db_template, wd / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(wd)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{wd / 'mlflow.db'}")
        mp.setenv("RTL_CACHE_DIR", str(wd / "cache"))
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        yield wd


@pytest.mark.parametrize("cmd,field,bad,kind,named", [r[1:] for r in DERIVED], ids=[r[0] for r in DERIVED])
def test_derived_bad_input_in_process(derived_wd, world, capfd, cmd, field, bad, kind, named):
    from robust_transfer.commands import COMMANDS

    flags = {k: REQUIRED[k](world) for k in _required(COMMANDS[cmd].config)} | {field: bad}
    capfd.readouterr()
    rc = main([cmd, *[x for k, v in flags.items() for x in ("--" + k.replace("_", "-"), v)]])
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == CODES[kind] and len(lines) == 1, (rc, err)
    needle = f"{field}={int(bad)}" if bad == OUT_OF_RANGE else f"{field}={bad!r}"
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert all(value in lines[0] for value in named), f"the line does not name what is allowed: {lines[0]}"
    assert "Traceback" not in err
    assert not [r.info.run_id for r in all_runs(derived_wd) if r.info.status == "RUNNING"]


def _snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under `roots` (the MLflow store excluded: failed runs are written there)."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and not p.name.startswith("mlflow.db"):
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


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
def wd(workdir, mlflow_db_template, study_template, world) -> Path:
    """A working directory with an MLflow store, a finished checkpoint and a study that must survive."""
    shutil.copy(mlflow_db_template, workdir / "mlflow.db")
    shutil.copy(study_template, workdir / "optuna.db")
    shutil.copytree(world.src, workdir / "ck")
    return workdir


def _check(wd: Path, before: dict, rc: int, err: str, kind: str, needle: str, runs_before=()):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == CODES[kind], (rc, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in err
    new = [r for r in all_runs(wd) if r.info.run_id not in set(runs_before)]
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
    runs = all_runs(wd)
    assert len(runs) == 1 and runs[0].info.status == "FAILED", [(r.info.run_id, r.info.status) for r in runs]
    after = _snapshot(*before["roots"])
    assert all(after.get(p) == h for p, h in before["files"].items())


RSS_RUNNER = ("import resource, subprocess, sys\n"
              "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
              "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
              "sys.stderr.write(p.stderr)\n")
RSS_CASES = ["search-billion-laughs", "search-20k-deep-sequence", "search-grid-of-1e9-ints", "train-classes-range-30M",
             "retrain-blocks-k-range-1e9", "evaluate-meta-head-16x65536", "evaluate-meta-nested-100k",
             "promote-policy-10000-plus", "evaluate-checkpoint-data_spec-classes-30M",
             "suite-billion-laughs", "evaluate-meta-wrn-10-0", "transfer-head-16x65536"]
RSS_CASES += ["train-folder-of-lying-images", "evaluate-folder-of-images-far-past-pil-limit",   # issue 28
              "retrain-blocks-archive-member-over-64MB", "suite-variable-bomb-9x10", "import-torchvision-stride0-head-50M"]


@pytest.mark.slow
def test_refused_small_inputs_stay_small_in_memory(wd, world):
    """Issue 17 §2: each refusal in its own `rtl` process exits with its documented code, and its peak RSS
    (measured by its parent, getrusage(RUSAGE_CHILDREN)) stays under 1 GB whatever the input says it would take."""
    peaks = {}
    for case in RSS_CASES:
        _id, _cmd, argv, kind, needle = next(c for c in CASES if c[0] == case)
        out = subprocess.run([sys.executable, "-c", RSS_RUNNER, str(BIN / "rtl"), *argv(world)], cwd=wd, env=_env(wd),
                             capture_output=True, text=True, timeout=300)
        rc, kb = map(int, out.stdout.split())
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
        assert rc == CODES[kind] and len(lines) == 1 and needle in lines[0], (case, out.stderr[-2000:])  # no warnings
        peaks[case] = kb // 1024
    print("peak RSS (MB) per refused input:", peaks)
    assert max(peaks.values()) < 1024, peaks
