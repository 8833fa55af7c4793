"""MLflow tracking: runs, the logger strategies report through, model logging and loading."""
from .runs import MLflowLogger, tracked_run, tracking_uri
from .models import log_checkpoint_model, resolve_checkpoint, register_checkpoint_model

__all__ = ["MLflowLogger", "tracked_run", "tracking_uri", "log_checkpoint_model", "resolve_checkpoint",
           "register_checkpoint_model"]
