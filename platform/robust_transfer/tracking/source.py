"""The code a run ran: `mlflow.source.git.commit` on every run `rtl` starts from a git checkout (issue 27 §6),
as `mlflow run` records it for its own runs."""
from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

GIT_COMMIT_TAG = "mlflow.source.git.commit"


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the git checkout this package's code runs from; None outside one (an installed wheel,
    a model's `code_paths` copy) or without git."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", sha) else None


def source_tags(existing: dict[str, str]) -> dict[str, str]:
    """`mlflow.source.git.commit` for a run that has none yet (`mlflow run` sets its own)."""
    sha = git_commit()
    return {GIT_COMMIT_TAG: sha} if sha and GIT_COMMIT_TAG not in existing else {}
