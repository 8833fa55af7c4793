"""robust-transfer: adversarially robust transfer learning (Shafahi et al., ICLR 2020) as a platform.

    from robust_transfer import create_model, load_model, evaluate
"""
from __future__ import annotations

from .models import create_model


def load_model_with_meta(uri_or_path: str):
    """(model, metadata) for `models:/name@alias`, `models:/name/version`, `runs:/...` or a checkpoint path."""
    import tempfile

    from .checkpoints import load_checkpoint
    from .tracking import resolve_checkpoint

    with tempfile.TemporaryDirectory(prefix="rtl-model-") as tmp:  # weights are read into memory
        return load_checkpoint(resolve_checkpoint(uri_or_path, tmp))


def load_model(uri_or_path: str):
    """A trainable `nn.Module` (pixels in [0,1] → logits); loading never unpickles."""
    return load_model_with_meta(uri_or_path)[0]


def evaluate(model, dataset: str = "", **kwargs):
    """See `robust_transfer.evaluation.evaluate`."""
    from .evaluation import evaluate as _evaluate

    return _evaluate(model, dataset, **kwargs)


__all__ = ["create_model", "load_model", "load_model_with_meta", "evaluate"]
__version__ = "0.1.0"
