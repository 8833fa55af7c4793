"""The small logging interface that strategies report through.

Strategies never import MLflow (docs/architecture.md): they call a `RunLogger`. `tracking.MLflowLogger`
implements it for real runs; `NullLogger` and `MemoryLogger` serve tests and Ray trials.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol


class RunLogger(Protocol):
    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...


class NullLogger:
    def log_params(self, params):
        pass

    def log_metrics(self, metrics, step=None):
        pass

    def set_tags(self, tags):
        pass

    def log_artifact(self, path, artifact_path=None):
        pass


class MemoryLogger:
    """Keeps everything in lists: what tests assert on, and what Ray trials forward."""

    def __init__(self):
        self.params: dict = {}
        self.metrics: list[tuple[int | None, dict[str, float]]] = []
        self.tags: dict[str, str] = {}
        self.artifacts: list[tuple[str, str | None]] = []

    def log_params(self, params):
        self.params.update(params)

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))

    def set_tags(self, tags):
        self.tags.update(tags)

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append((str(path), artifact_path))

    def history(self, name: str) -> list[float]:
        return [m[name] for _, m in self.metrics if name in m]
