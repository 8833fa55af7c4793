"""Where datasets are read from and where decoded tensors are cached."""
from __future__ import annotations

import os
from pathlib import Path

# platform/robust_transfer/data/paths.py -> parents[3] is the repository root
_REPO_ROOT = Path(__file__).resolve().parents[3]


def default_data_dir() -> Path:
    """RTL_DATA_DIR if set; else the shared offline data folder beside the project; else ~/.cache."""
    env = os.environ.get("RTL_DATA_DIR")
    if env:
        return Path(env).expanduser()
    for candidate in (Path.cwd() / ".." / "shared" / "data", _REPO_ROOT / ".." / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return Path.home() / ".cache" / "robust-transfer" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """An explicit `data_dir` beats RTL_DATA_DIR, which beats the defaults."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def cache_dir() -> Path:
    """RTL_CACHE_DIR if set, else ~/.cache/robust-transfer (never inside the repository)."""
    env = os.environ.get("RTL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "robust-transfer"
