"""MLflow pyfunc flavour of a robust-transfer checkpoint (a `loader_module`: nothing is pickled).

`mlflow.pyfunc.load_model(uri)` calls `_load_pyfunc(<model dir>/data/<checkpoint>)`; `predict`
takes pixels in [0,1], NCHW float32, and returns logits. Pixels outside [0, 1] (0–255 images, most
likely) are refused with an MlflowException (HTTP 400 from `mlflow models serve`): the model would
answer them with confident garbage (logits near ±900), and a server's warnings reach nobody.
"""
from __future__ import annotations

import numpy as np
import torch

PIXEL_SLACK = 1e-3   # float rounding of an image in [0, 1] (a JPEG decoded and rescaled) stays inside this


class _CheckpointPredictor:
    def __init__(self, path: str):
        from ..checkpoints import load_checkpoint

        self.model, self.meta = load_checkpoint(path)
        self.model.eval()

    def predict(self, model_input, params=None):
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        check_pixels(x)
        with torch.no_grad():
            return self.model(x).numpy()


def _load_pyfunc(data_path: str):
    return _CheckpointPredictor(data_path)


def check_pixels(x: torch.Tensor) -> None:
    """Refuse pixels outside [0, 1]: one message naming the range found and the fix."""
    if x.numel() == 0:
        return
    lo, hi = float(x.min()), float(x.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -PIXEL_SLACK or hi > 1 + PIXEL_SLACK:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        hint = ": divide 0-255 images by 255" if hi > 1.5 else ""
        raise MlflowException(f"pixels must lie in [0, 1] (NCHW float32), got values in [{lo:g}, {hi:g}]{hint}",
                              error_code=INVALID_PARAMETER_VALUE)
