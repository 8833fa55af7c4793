"""MLflow tracking: runs (`runs`), logged models and their loading (`models`), the model registry
(`registry`), and the one MlflowClient factory (`mlflow_client`) every module uses."""
from .runs import MLflowLogger, mlflow_client, tracked_run, tracking_uri
from .models import load_model_with_meta, log_checkpoint_model, resolve_checkpoint, register_checkpoint_model

__all__ = ["MLflowLogger", "mlflow_client", "tracked_run", "tracking_uri", "log_checkpoint_model",
           "load_model_with_meta", "resolve_checkpoint", "register_checkpoint_model"]
