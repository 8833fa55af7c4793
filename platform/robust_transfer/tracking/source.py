"""The code a run ran: `mlflow.source.git.commit` on every run `rtl` starts from a git checkout (issue 27 §6),
as `mlflow run` records it for its own runs."""
from __future__ import annotations

import functools
import os
import re
import subprocess
from pathlib import Path

GIT_COMMIT_TAG = "mlflow.source.git.commit"


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the git checkout this package's code runs from; else `RTL_GIT_COMMIT`, which a frozen copy
    of a commit (`git archive`: no .git; bin/cpu-scale-run) sets to the commit it copied; None outside both (an
    installed wheel, a model's `code_paths` copy) or without git."""
    return _checkout_commit() or _valid(os.environ.get("RTL_GIT_COMMIT", "").strip())


def _valid(sha: str) -> str | None:
    return sha if re.fullmatch(r"[0-9a-f]{40,64}", sha) else None


def _checkout_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return _valid(out.stdout.strip()) if out.returncode == 0 else None


def source_tags(existing: dict[str, str]) -> dict[str, str]:
    """`mlflow.source.git.commit` for a run that has none yet (`mlflow run` sets its own)."""
    sha = git_commit()
    return {GIT_COMMIT_TAG: sha} if sha and GIT_COMMIT_TAG not in existing else {}
