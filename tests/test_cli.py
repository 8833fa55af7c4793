"""The `rtl` command and `mlflow run`: bad input gives one line and the right exit code; runs are tracked;
subcommands, flags, help and MLproject derive from one declaration per entry point; help is light."""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from robust_transfer.checkpoints import save_checkpoint
from robust_transfer.cli import main
from robust_transfer.models import create_model
from support.transfer import all_runs, mlflow_run, train_args

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _digest(path: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())).hexdigest()


# (extra args, expected exit code, text the one-line message must contain, whether a run is created). A bad choice,
# a non-number for a whole number and a non-boolean: every entry point's rows are derived (tests/test_bad_input.py).
TRAIN_BAD = [
    (["--dataset", "mnist"], 2, "dataset='mnist'", False),
    (["--arch", "vgg11"], 2, "arch='vgg11'", False),
    (["--epsilon", "-1"], 2, "epsilon=-1.0", False),
    (["--epsilon", "300"], 2, "epsilon=300.0", False),
    (["--step-size", "0"], 2, "step_size=0.0", False),
    (["--steps", "0"], 2, "steps=0", False),
    (["--lr", "-0.1"], 2, "lr=-0.1", False),
    (["--lr", "fast"], 2, "lr='fast' is not a number", False),
    (["--epochs", "2.5"], 2, "epochs='2.5' is not a whole number", False),
    (["--batch-size", "0"], 2, "batch_size=0", False),
    (["--no-such-flag", "1"], 2, "unrecognized arguments", False),
    (["--per-class", "1000"], 3, "per_class=1000", True),
    (["--dataset", "imagefolder:/nonexistent/data"], 3, "/nonexistent/data", True),
]


@pytest.mark.parametrize("extra,code,needle,creates_run", TRAIN_BAD, ids=[" ".join(c[0]) for c in TRAIN_BAD])
def test_train_bad_input_is_one_clear_line(workdir, tiny_folder, capsys, extra, code, needle, creates_run):
    assert main(train_args(tiny_folder, *extra)) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    runs = all_runs(workdir)
    if creates_run:
        assert [r.info.status for r in runs] == ["FAILED"]
    else:
        assert runs == []


@pytest.fixture
def saved_model(workdir):
    save_checkpoint(workdir / "m5", create_model("small-cnn", 5), {"data_spec": "cifar10-jpeg"})
    return workdir / "m5"


def _corrupt(path):
    (path / "model.safetensors").write_bytes(b"\x00" * 64)
    return path


EVAL_BAD = [
    (lambda w, f, m: ["--model", str(w / "missing")], 4, "does not exist"),
    (lambda w, f, m: ["--model", str(_corrupt(m))], 4, "corrupted weights"),
    (lambda w, f, m: ["--model", str(m), "--dataset", f"imagefolder:{f}"], 4, "has 5 classes"),
    (lambda w, f, m: ["--model", "models:/no-such-model@champion"], 4, "no-such-model"),
    (lambda w, f, m: ["--model", str(m), "--suite", "ultra"], 2, "suite='ultra'"),
    (lambda w, f, m: ["--model", str(m), "--attacks", "clean,pgdx"], 2, "pgdx"),
    (lambda w, f, m: ["--model", str(m), "--epsilon", "0"], 2, "epsilon=0.0"),
    (lambda w, f, m: ["--model", ""], 2, "model is required"),
]


@pytest.mark.parametrize("make_args,code,needle", EVAL_BAD, ids=[c[2] for c in EVAL_BAD])
def test_evaluate_bad_input_is_one_clear_line(workdir, tiny_folder, saved_model, capsys, make_args, code, needle):
    args = ["evaluate", "--progress", "false", "--device", "cpu", *make_args(workdir, tiny_folder, saved_model)]
    assert main(args) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert all(r.info.status == "FAILED" for r in all_runs(workdir))


def test_evaluate_n_examples_larger_than_the_split(workdir, tiny_folder, capsys):
    assert main(train_args(tiny_folder, "--checkpoint-dir", "ck")) == 0
    args = ["evaluate", "--model", "ck", "--n-examples", "1000", "--progress", "false"]
    assert main(args) == 2
    assert "n_examples=1000 is larger than the test split (36 examples)" in capsys.readouterr().err


def test_a_failed_run_damages_nothing_already_saved(workdir, tiny_folder):
    assert main(train_args(tiny_folder, "--checkpoint-dir", "ck")) == 0
    before = _digest(workdir / "ck")
    assert main(train_args(tiny_folder, "--checkpoint-dir", "ck", "--per-class", "999")) == 3
    assert _digest(workdir / "ck") == before


def test_debug_shows_the_traceback(workdir, tiny_folder):
    with pytest.raises(Exception, match="mode='trades'"):
        main(["--debug", *train_args(tiny_folder, "--mode", "trades")])


def test_train_then_evaluate_tracks_runs_registers_and_loads_by_alias(workdir, tiny_folder, capsys):
    assert main(train_args(tiny_folder, "--register-as", "tiny-src", "--checkpoint-dir", "ck")) == 0
    assert main(["evaluate", "--model", "models:/tiny-src@challenger", "--n-examples", "6",
                 "--progress", "false", "--attacks", "pgd5"]) == 0
    runs = {r.data.tags["rtl.strategy"]: r for r in all_runs(workdir)}
    assert runs["train"].info.status == "FINISHED" and runs["evaluate"].info.status == "FINISHED"
    assert {"clean_acc", "pgd20_acc", "train_loss", "val_clean_acc", "val_pgd10_acc"} <= set(runs["train"].data.metrics)
    assert set(runs["evaluate"].data.metrics) == {"clean_acc", "pgd5_acc", "worst_acc"}
    assert runs["evaluate"].data.tags["rtl.data"] == f"imagefolder:{tiny_folder}"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    version = MlflowClient().get_registered_model("tiny-src").aliases["challenger"]
    tags = MlflowClient().get_model_version("tiny-src", version).tags
    assert float(tags["metric.clean_acc"]) == pytest.approx(runs["train"].data.metrics["clean_acc"], abs=1e-4)
    assert tags["threat.epsilon"] == "8.0" and tags["lineage.run_id"] == runs["train"].info.run_id


@pytest.mark.slow
def test_mlflow_run_train_and_evaluate(workdir, tiny_folder):
    out = mlflow_run(workdir, "train", dataset=f"imagefolder:{tiny_folder}", iterations=2, batch_size=16,
                     n_examples=6, checkpoint_dir=str(workdir / "ck"), device="cpu")
    assert out.returncode == 0, out.stderr[-2000:]
    (train_run,) = all_runs(workdir)
    assert train_run.info.status == "FINISHED" and "pgd20_acc" in train_run.data.metrics
    out = mlflow_run(workdir, "evaluate", model=f"runs:/{train_run.info.run_id}/checkpoint", n_examples=6)
    assert out.returncode == 0, out.stderr[-2000:]
    ev = next(r for r in all_runs(workdir) if r.data.tags.get("rtl.strategy") == "evaluate")
    assert ev.info.status == "FINISHED" and {"clean_acc", "pgd20_acc", "cw20_acc"} <= set(ev.data.metrics)
    # `mlflow run` logged norm='' (a None default) first; the threat resolved from the model is a tag beside it
    assert ev.data.params["norm"] in ("", "''") and ev.data.tags["rtl.resolved.norm"] == "linf"
    assert float(ev.data.tags["rtl.resolved.epsilon"]) == 8.0


@pytest.mark.slow
def test_mlflow_run_with_a_bad_value_fails_the_run(workdir, tiny_folder):
    out = mlflow_run(workdir, "train", dataset=f"imagefolder:{tiny_folder}", mode="trades")
    assert out.returncode != 0
    assert "error: mode='trades' is not allowed" in out.stderr
    assert [r.info.status for r in all_runs(workdir)] == ["FAILED"]


# ------------------------------------------------------------------ one declaration per entry point (issue 23)
def test_everything_about_an_entry_point_derives_from_its_one_declaration():
    """The `rtl` subcommands, MLproject's entry points and parameters, the config table search and suites read, and
    the spellings accepted: all from `@entry_point(Config, help=...)` and the config's ENTRY_POINT."""
    import yaml

    from robust_transfer.cli import build_parser
    from robust_transfer.commands import COMMANDS, entry_point
    from robust_transfer.config import CONFIGS, SourceConfig, canonical_entry_point, spellings
    from robust_transfer.mlproject import render

    assert list(COMMANDS) == list(CONFIGS) and len(COMMANDS) >= 12
    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(subcommands.choices) == list(COMMANDS)
    mlproject = yaml.safe_load(render())["entry_points"]
    assert list(mlproject) == [ep.mlproject_name for ep in COMMANDS.values()]
    for name, ep in COMMANDS.items():
        assert ep.config is CONFIGS[name] and ep.help and ep.run.__name__.startswith("run_")
        assert set(mlproject[ep.mlproject_name]["parameters"]) == {f.name for f in fields(ep.config)}
        assert all(canonical_entry_point(s) == name for s in spellings(name))
    assert {"import_model", "retrain_blocks"} <= set(mlproject)
    with pytest.raises(TypeError, match="names no entry point"):   # a mixin is not an entry point
        entry_point(SourceConfig, help="x")


@pytest.mark.parametrize("spelling,shown", [("retrain_blocks", "retrain-blocks"), ("import_model", "import"),
                                            ("finetune_adv", "finetune-adv")])
def test_either_spelling_of_a_subcommand_works_and_help_shows_one(spelling, shown, capsys):
    with pytest.raises(SystemExit):
        main([spelling, "--help"])
    assert capsys.readouterr().out.startswith(f"usage: rtl {shown} ")
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert shown in top and spelling not in top


def test_a_bad_value_through_the_other_spelling_is_the_same_one_line(workdir, capsys):
    assert main(["retrain_blocks", "--source-model", "ck", "--k", "abc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: k='abc'"), err


def test_every_flag_has_one_description_and_names_no_internals():
    """Each flag's text comes from its field's comment (every field has one), states its default once, and names
    no internal function or constant."""
    from robust_transfer.commands import COMMANDS
    from robust_transfer.helptext import field_docs, flag_help

    internal = re.compile(r"\w\(\)|\b[a-z_]+\.[A-Z][A-Z_]+\b")   # cache_dir(), evaluation.SUITE_BUDGETS
    checked = 0
    for name, ep in COMMANDS.items():
        undocumented = [f.name for f in fields(ep.config) if f.name not in field_docs(ep.config)]
        assert not undocumented, f"rtl {name}: fields without a # comment: {undocumented}"
        for field, text in flag_help(ep.config).items():
            assert text.count("default:") == 1, f"rtl {name} --{field}: {text!r}"
            assert not internal.search(text) and " | " not in text, f"rtl {name} --{field}: {text!r}"
            checked += 1
    assert checked > 100


def test_arch_help_lists_the_model_registry(capsys):
    from robust_transfer.models import list_archs

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    arch = out[out.index("--arch VALUE"):]
    assert all(name in arch for name in list_archs()) and "default: small-cnn" in arch


# A subprocess: which of torch and mlflow `rtl --help`, every `rtl <cmd> --help` and the whole parser import, and
# the package files on the stack when each was first imported.
LIGHT = r"""
import contextlib, io, json, sys, traceback
first = {}
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "mlflow") and name not in first:
            first[name] = [f.filename for f in traceback.extract_stack() if "robust_transfer" in f.filename]
        return None
sys.meta_path.insert(0, Watch())
from robust_transfer.cli import build_parser, main
from robust_transfer.commands import COMMANDS
build_parser()
for argv in (["--help"], *([name, "--help"] for name in COMMANDS)):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
print(json.dumps({m: first[m] for m in ("torch", "mlflow") if m in sys.modules}))
"""


def test_help_imports_neither_torch_nor_mlflow():
    """`rtl --help` and `rtl <cmd> --help` must be fast (issue 27: 6 s of CPU): a module-set check, not a timing."""
    out = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "mlflow" not in loaded, f"mlflow imported by: {loaded['mlflow']}"
    via = loaded.get("torch", [])
    assert not any("/strategies/" in p for p in via), f"config/ reaches strategies/ (torch): {via}"   # issue 23 §2
    assert "torch" not in loaded, f"torch imported by: {via}"
