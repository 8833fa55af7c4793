"""`search`: a search space explored with Optuna or Ray Tune, one MLflow child run per trial (search/runner.py).

Search knows no command table: it is handed `run_entry(entry_point, config) -> dict`, the function that runs
one trial's command (`registry.run_entry_point`)."""
from __future__ import annotations

from ..config import SearchConfig
from .registry import entry_point, run_entry_point


@entry_point(SearchConfig, help="Search a space (search_spaces/*.yaml) with Optuna or Ray Tune; one MLflow child "
                                "run per trial.")
def run_search(cfg: SearchConfig, callbacks=()) -> dict:
    from ..search.runner import run_search as search

    return search(cfg, run_entry_point, callbacks)
