"""MLflow "model from code": the pyfunc flavour of a robust-transfer checkpoint.

Logged by file path, so MLflow stores this source instead of pickling an object; the weights
are the checkpoint artifact (safetensors + JSON). `predict` takes pixels in [0,1], NCHW float32,
and returns logits.
"""
import warnings

# MLflow's own import (mlflow.types.responses) prints a notice about `Any` type hints: not ours.
warnings.filterwarnings("ignore", message=".*type hint", category=UserWarning)

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mlflow.pyfunc import PythonModel  # noqa: E402


class RobustTransferModel(PythonModel):
    def load_context(self, context):
        from robust_transfer.checkpoints import load_checkpoint

        self.model, self.meta = load_checkpoint(context.artifacts["checkpoint"])
        self.model.eval()

    def predict(self, context, model_input, params=None):
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return self.model(x).numpy()


mlflow.models.set_model(RobustTransferModel())
