"""Optional features and the pip extra that brings each (pyproject `[project.optional-dependencies]`).

The core install runs train/transfer/evaluate/search (Optuna, SQLite) and tracks in MLflow; these
need an extra. Using one without it is one line naming the extra (exit 2), not an ImportError.
"""
from __future__ import annotations

import importlib.util

from .errors import ConfigError

# extra → (the module it provides, what needs it)
EXTRAS = {
    "ray": ("ray", "backend=ray (Ray Tune)"),
    "postgres": ("psycopg2", "a postgresql:// store"),
    "redis": ("redis", "a redis:// Optuna storage"),
    "auth": ("flask_wtf", "MLflow's basic-auth server (mlflow server --app-name basic-auth)"),
}


def has_extra(extra: str) -> bool:
    return importlib.util.find_spec(EXTRAS[extra][0]) is not None


def require(extra: str, what: str | None = None) -> None:
    """ConfigError unless the `extra`'s module is importable."""
    module, needs = EXTRAS[extra]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what or needs} needs the `{extra}` extra ({module} is not installed): "
                          f"pip install 'robust-transfer[{extra}]'")


def require_for_url(url: str, what: str) -> None:
    """The extra a database/storage URL needs (postgresql:// → postgres, redis:// → redis), if any."""
    url = str(url)
    if url.startswith(("postgresql", "postgres:")) and importlib.util.find_spec("psycopg") is None:
        require("postgres", f"{what}={url.split('@')[-1]!r} (PostgreSQL)")
    elif url.startswith(("redis://", "rediss://", "unix://")):
        require("redis", f"{what}={url.split('@')[-1]!r} (Redis)")
