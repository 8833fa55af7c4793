"""The commands we print for tools beside us (`optuna-dashboard`, `mlflow`): spelled with the path of the
environment's bin/ that runs this interpreter, so they work as printed without activating anything
(issue 27 §2). A bare name is only printed when the tool is not installed beside us."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def tool_command(name: str) -> str:
    """`name`'s console script beside `sys.executable`, relative to the working directory when inside it
    (`.venv/bin/optuna-dashboard`), else absolute; the bare `name` when there is none."""
    exe = Path(sys.executable).parent / name   # (not resolved: `.venv` is a link, and the link is what users type)
    if not exe.is_file():
        return name
    try:
        rel = exe.relative_to(Path.cwd())
    except ValueError:
        return str(exe)
    return str(rel) if os.sep in str(rel) else f".{os.sep}{rel}"
