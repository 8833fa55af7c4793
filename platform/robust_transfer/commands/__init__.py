"""The entry points: one module per `rtl` subcommand / MLproject entry point, each the same shape (a config
in, one tracked MLflow run, the library call, a printed table, a dict out), each declared once with
`@entry_point(Config, help=...)` (registry.py). The library layers below never import this package.

`COMMANDS` (name → `EntryPoint(config, run, help)`) is what `cli.py`, `mlproject.py` and the tests read;
`run_<name>` are the commands themselves (`from robust_transfer.commands import run_train`). Importing
this package imports every command module (so every declaration has run) and stays light: a command
imports torch, MLflow and the library it calls inside its function (tests/test_cli.py holds it).
"""
from __future__ import annotations

import importlib
import pkgutil

from .common import print_table
from .registry import EntryPoint, declared, entry_point, run_entry_point

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

# name (rtl spelling) → EntryPoint(config, run, help), in config.CONFIGS' order
COMMANDS: dict[str, EntryPoint] = declared()
_RUN = {ep.run.__name__: ep.run for ep in COMMANDS.values()}


def __getattr__(name: str):
    """`run_train`, `run_import`, ...: each command by its function's name."""
    if name in _RUN:
        return _RUN[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["COMMANDS", "EntryPoint", "entry_point", "run_entry_point", "print_table", *_RUN]
