"""MLflow pyfunc flavour of a robust-transfer checkpoint (a `loader_module`: nothing is pickled).

`mlflow.pyfunc.load_model(uri)` calls `_load_pyfunc(<model dir>/data/<checkpoint>)`; `predict`
takes pixels in [0,1], NCHW float32, and returns logits.
"""
from __future__ import annotations

import numpy as np
import torch


class _CheckpointPredictor:
    def __init__(self, path: str):
        from ..checkpoints import load_checkpoint

        self.model, self.meta = load_checkpoint(path)
        self.model.eval()

    def predict(self, model_input, params=None):
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return self.model(x).numpy()


def _load_pyfunc(data_path: str):
    return _CheckpointPredictor(data_path)
