"""The YAML files that ship with the package, found by name: `--space lwf_lambda`, `--project table2`.

In a checkout they live in the top-level search_spaces/ and projects/ (the canonical copies, edited
there); a built wheel carries them inside the package as robust_transfer/search_spaces/ and
robust_transfer/projects/ (setup.py maps them in). A value that names an existing file is used as is.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
KINDS = ("search_spaces", "projects")
SUFFIXES = (".yaml", ".yml")


def data_dir(kind: str) -> Path | None:
    """The installed copy (inside the package), else the checkout's top-level folder."""
    for d in (PACKAGE / kind, PACKAGE.parents[1] / kind):
        if d.is_dir():
            return d
    return None


def names(kind: str) -> list[str]:
    d = data_dir(kind)
    return sorted(p.stem for p in d.iterdir() if p.suffix in SUFFIXES) if d else []


def named_file(kind: str, value: str) -> Path | None:
    """`lwf_lambda`, `lwf_lambda.yaml` or `search_spaces/lwf_lambda.yaml` → the shipped file; None when
    `value` is an existing file (use it as is) or names no shipped file."""
    value = str(value or "")
    if not value or Path(value).is_file():
        return None
    d = data_dir(kind)
    if d is None:
        return None
    name = Path(value).name
    for cand in (name, *(name + s for s in SUFFIXES)):
        if (d / cand).is_file() and (d / cand).suffix in SUFFIXES:
            return d / cand
    return None


def resolve(kind: str, value: str) -> str:
    """`value`, or the shipped file it names."""
    found = named_file(kind, value)
    return str(found) if found else value
