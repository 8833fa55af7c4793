"""Progress bars only where someone watches them (issue 27 §10): a tqdm bar redraws itself with `\r`, which in
a log file, a CI console or `mlflow run`'s captured output is one long line of partial updates."""
from __future__ import annotations


def bar_disabled(progress: bool) -> bool | None:
    """tqdm's `disable=`: True when progress is off; None (tqdm: off unless its stream is a terminal) when on."""
    return None if progress else True
