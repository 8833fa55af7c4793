"""Search: YAML search spaces → Optuna studies (in-process trials) or Ray Tune, every trial an MLflow child run.

    from robust_transfer.search import load_space
    space = load_space("search_spaces/mlp_head.yaml")     # SearchError `FILE:LINE: key: ...` when malformed
"""
from ..expr import Constraint, Expr
from .space import ParamSpec, SearchSpace
from .space_yaml import load_space, loads_space

__all__ = ["load_space", "loads_space", "SearchSpace", "ParamSpec", "Expr", "Constraint"]
