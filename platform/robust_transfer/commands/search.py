"""`search`: a search space explored with Optuna or Ray Tune, one MLflow child run per trial (search/runner.py).

Search knows no command table: it is handed `run_entry(entry_point, config) -> dict`, the function that runs
one trial's command (commands/__init__.py hands it `run_entry_point`)."""
from __future__ import annotations

from ..config import SearchConfig


def run_search(cfg: SearchConfig, run_entry, callbacks=()) -> dict:
    from ..search.runner import run_search as search

    return search(cfg, run_entry, callbacks)
