"""Under `mlflow run`, relative paths mean the directory the user launched from, not the project's.

MLflow runs an entry point in the project directory (for a git URI: a temporary clone). So that
`sqlite:///optuna.db`, `sqlite:///mlflow.db`, `checkpoints/`, `--space my_space.yaml`, caches and
every other relative path resolve where the user typed the command, `bin/mlflow-entry` (what every
MLproject entry point runs) sets RTL_PROJECT_DIR, and `rtl` then changes to the launch directory:

- RTL_LAUNCH_DIR when set (an explicit front door: `RTL_LAUNCH_DIR=$PWD mlflow run ...`), else
- the working directory of the process that started the entry point: the nearest ancestor that is
  not a shell (`mlflow run` in a terminal, or the Python process calling `mlflow.projects.run`).

It is then exported as RTL_LAUNCH_DIR, so steps a suite launches from there land in the same place.
Nothing here runs outside `bin/mlflow-entry` (plain `rtl` already runs where the user is).
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ENV = "RTL_PROJECT_DIR"
LAUNCH_ENV = "RTL_LAUNCH_DIR"
SHELLS = frozenset({"bash", "sh", "dash", "zsh", "ksh", "fish", "env", "timeout"})


def launcher_cwd() -> Path | None:
    """The working directory of the nearest ancestor process that is not a shell (None if unknown)."""
    try:
        import psutil

        proc = psutil.Process().parent()
        while proc is not None:
            if proc.name() not in SHELLS:
                return Path(proc.cwd())
            proc = proc.parent()
    except Exception:  # psutil missing or a process we may not inspect: keep the project directory
        return None
    return None


def enter_launch_dir() -> Path | None:
    """chdir to the launch directory when running as an MLproject entry point; returns it (else None)."""
    project = os.environ.get(PROJECT_ENV)
    if not project:
        return None
    try:
        if Path.cwd().resolve() != Path(project).resolve():
            return None  # not started in the project directory: not by the launcher
    except OSError:
        return None
    explicit = os.environ.get(LAUNCH_ENV)
    target = Path(explicit) if explicit else launcher_cwd()
    if target is None or not target.is_dir():
        return None
    target = target.resolve()
    os.environ[LAUNCH_ENV] = str(target)
    os.chdir(target)
    return target
