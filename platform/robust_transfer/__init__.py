"""robust-transfer: adversarially robust transfer learning (Shafahi et al., ICLR 2020) as a platform.

    from robust_transfer import create_model, load_model, evaluate

The public API only: these re-export (lazily, so importing the package stays light) what lives in
`models`, `tracking.models` and `evaluation`. The entry points are `commands/` (`rtl`, MLproject).
"""
from __future__ import annotations

import os as _os

# OpenMP threads that spin-wait at every barrier burn the time slices of a shared CPU: on these
# 2-core machines, with other jobs running, a training step at 2 threads is ~3x slower with
# libgomp's default spinning than with passive waiting (benchmarks/bench_train.py, "wait policy").
# libgomp reads this when torch loads, so it only takes effect if we are imported first (the `rtl`
# command, `mlflow run`, the benchmarks); an explicit OMP_WAIT_POLICY wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def __getattr__(name: str):
    """`create_model` is the registry's own function, imported on first use: importing the package (as
    `rtl --help` does) must not load torch (tests/test_cli.py holds it)."""
    if name == "create_model":
        from .models import create_model

        return create_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_model(uri_or_path: str, *, train: bool = False):
    """The model (pixels in [0,1] → logits), in eval mode: plain `model(x)` gives each image's logits whatever
    the batch, and leaves BatchNorm's statistics alone. `train=True` (or `model.train()`) for fine-tuning.
    Loading never unpickles."""
    return load_model_with_meta(uri_or_path, train=train)[0]


def load_model_with_meta(uri_or_path: str, *, train: bool = False):
    """(model, metadata) for `models:/name@alias`, `models:/name/version`, `runs:/...` or a checkpoint path;
    the model in eval mode unless `train=True` (see `load_model`)."""
    from .tracking.models import load_model_with_meta as _load

    model, meta = _load(uri_or_path)
    return model.train(train), meta


def evaluate(model, dataset: str = "", **kwargs):
    """See `robust_transfer.evaluation.evaluate`."""
    from .evaluation import evaluate as _evaluate

    return _evaluate(model, dataset, **kwargs)


def import_model(file: str, format: str, arch: str, register_as: str, **kwargs) -> dict:
    """Convert a published checkpoint into ours and register it (`rtl import`; docs/importing.md)."""
    from .importers import import_model as _import_model

    return _import_model(file, format, arch, register_as, **kwargs)


__all__ = ["create_model", "load_model", "load_model_with_meta", "evaluate", "import_model"]
__version__ = "0.1.0"
