"""`rtl <command> --help`: one line per flag — what it is (the config field's comment), the allowed
values and the default.

The descriptions are the trailing `# comments` of the config dataclass fields (the single place they
are documented), read from the classes' source; fields shared by many configs and left uncommented
there get the generic line below.
"""
from __future__ import annotations

import inspect
import io
import re
import tokenize
from dataclasses import MISSING, fields

GENERIC = {
    "epochs": "passes over the training data (iterations wins when given)",
    "iterations": "optimizer updates; wins over epochs when given",
    "batch_size": "examples per batch",
    "lr": "learning rate of momentum SGD",
    "seed": "random seed (data order, initialisation, attacks)",
    "per_class": "train on this many examples per class (low-data runs); default: all",
    "n_examples": "test examples for the final clean and robust evaluation",
    "device": "where to run: auto picks cuda when available",
    "register_as": "register the model under this name (auto: <dataset>-<arch>-<strategy>)",
    "experiment": "MLflow experiment of the run",
    "data_dir": "where datasets are read and unpacked (default: RTL_DATA_DIR, else the shared data folder)",
    "progress": "show progress bars",
    "epsilon": "l-inf radius of the threat model, on the 0-255 scale",
    "step_size": "PGD step size, on the 0-255 scale",
    "momentum": "SGD momentum",
    "weight_decay": "SGD weight decay",
    "schedule": "learning-rate schedule",
    "augment": "random crop + horizontal flip of training images",
    "resize": "resize images to this side length (pixels)",
    "checkpoint_dir": "where the checkpoint is written (default: checkpoints/<run description>)",
    "resume": "continue an interrupted run from its checkpoint",
    "dataset": "a dataset spec, e.g. cifar10-jpeg, cifar10-jpeg:half-a, imagefolder:/path",
    "arch": "network architecture",
    "mode": "training: natural, PGD-k adversarial, free (replay m) or FGSM with random start",
    "head": "the new classifier head",
    "width": "hidden units of an mlp head",
    "dropout": "dropout before each head layer",
    "batch_norm": "batch normalisation in an mlp head",
    "split": "which split of the dataset",
    "target": "the dataset to transfer to (a dataset spec)",
    "lambda_d": "λ_d: weight of the feature-distance term d(z, z0)",
    "suite": "attack suite: quick (PGD-20, CW-20), standard (+ APGD-CE/DLR, Square) or full (AutoAttack-style)",
    "model": "a model: checkpoint path, runs:/<id>/..., models:/<name>/<version> or models:/<name>@<alias>",
    "source_model": "the source model: models:/name@alias, models:/name/version, runs:/... or a checkpoint path",
    "steps": "PGD steps of adversarial training",
    "replay": "free training: replays m of each minibatch",
    "milestones": "step schedule: fractions of the budget where lr drops x0.1",
    "eval_steps": "PGD steps of the final robust evaluation",
    "k": "how many of the deepest blocks to re-train",
    "mlp_depth": "hidden layers of an mlp head",
    "upsample": "resize the data to the source's input size",
    "apgd_iters": "APGD iterations per restart (default: the suite's)",
    "apgd_restarts": "APGD restarts (default: the suite's)",
    "apgd_targets": "target classes of targeted APGD-DLR (default: the suite's)",
    "square_queries": "Square attack queries (default: the suite's)",
    "square_restarts": "Square attack restarts (default: the suite's)",
    "deepfool_iters": "DeepFool iterations (default: the suite's)",
    "eval_epsilon": "l-inf radius of the final robust evaluation, on the 0-255 scale",
    "eval_step_size": "PGD step size of the final robust evaluation, on the 0-255 scale",
    "val_fraction": "share of the training split held out for validation",
    "storage": "the Optuna storage",
    "study_name": "the Optuna study to add trials to",
}
# Descriptions that say more than the field's comment (what `rtl` accepts beyond the config's own text).
OVERRIDE = {
    "space": "a search space: a YAML file, or the name of a shipped one ({search_spaces})",
    "project": "a suite: a YAML file, or the name of a shipped one ({projects})",
}
# A field comment that is a note (provenance, the default), not a description: shown after the generic line.
NOTE = re.compile(r"^(paper|default|A\.\d|wins|override|budget knobs|or |of |\()", re.IGNORECASE)


def _choices() -> dict[str, tuple]:
    """Allowed values per field name, from the constants the configs validate with."""
    from . import config
    from .models import HEAD_KINDS

    modules = [config, getattr(config, "common", None)]  # the config module, or the package and its parts
    out = {}
    for name, const in (("mode", "TRAIN_MODES"), ("schedule", "SCHEDULES"), ("precision", "PRECISIONS"),
                        ("channels_last", "CHANNELS_LAST"), ("distance", "LWF_DISTANCES"),
                        ("teacher", "LWF_TEACHERS"), ("backend", "SEARCH_BACKENDS"), ("what", "ANALYSES"),
                        ("reuse", "SUITE_REUSE")):
        value = next((getattr(m, const) for m in modules if m is not None and hasattr(m, const)), None)
        if value:
            out[name] = tuple(value)
    devices = next((getattr(m, "DEVICES") for m in modules if m is not None and hasattr(m, "DEVICES")), None)
    if devices:
        out["device"] = (*devices, "cuda:N")
    out["head"] = tuple(HEAD_KINDS)
    out["split"] = ("train", "test")
    return out


_FIELD = re.compile(r"^\s+([A-Za-z_]\w*)\s*:")


def field_docs(cls) -> dict[str, str]:
    """{field: its trailing comment}, over the class and its bases (a subclass's comment wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or "__dataclass_fields__" not in vars(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        names = set(vars(klass)["__dataclass_fields__"])
        comments: dict[int, str] = {}
        try:
            for tok in tokenize.generate_tokens(io.StringIO(source).readline):
                if tok.type == tokenize.COMMENT:
                    comments[tok.start[0]] = tok.string.lstrip("#").strip()
        except (tokenize.TokenError, IndentationError):
            continue
        lines = source.splitlines()
        last = None
        for i, line in enumerate(lines, start=1):
            m = _FIELD.match(line)
            if m and m.group(1) in names and "=" in line:
                last = m.group(1)
                if i in comments:
                    docs[last] = comments[i]
            elif last and line.strip().startswith("#") and i in comments and last in docs:
                docs[last] += " " + comments[i]  # a comment continued on the next line
            elif line.strip():
                last = None
    return docs


def _show(value) -> str:
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def flag_help(cls) -> dict[str, str]:
    """{field: one help line}: description; allowed values; default."""
    import typing

    docs, choices = field_docs(cls), _choices()
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        default = f.default if f.default is not MISSING else None
        doc, generic = docs.get(f.name, ""), GENERIC.get(f.name, "")
        if f.name in OVERRIDE:
            from .resources import names

            text = OVERRIDE[f.name].format(search_spaces=", ".join(names("search_spaces")),
                                           projects=", ".join(names("projects")))
        elif doc and NOTE.match(doc) and generic:
            text = f"{generic} ({doc})"
        else:
            text = doc or generic or f.name.replace("_", " ")
        typ = hints[f.name]
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        base = args[0] if args else typ
        allowed = getattr(cls, "SPLITS", None) if f.name == "split" else None   # a config's own splits
        allowed = allowed or choices.get(f.name)
        if base is bool:
            allowed = ("true", "false")
        parts = [text.rstrip(".")]
        if allowed:
            parts.append("one of: " + ", ".join(map(str, allowed)))
        elif base in (int, float):
            parts.append("a whole number" if base is int else "a number")
        parts.append(f"default: {_show(default)}")
        out[f.name] = "; ".join(parts).replace("%", "%%")  # argparse formats help with %
    return out
