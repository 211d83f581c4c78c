"""serving: the trained generator as an MLflow pyfunc model ("models from code").

MLflow runs this file when it loads the logged model (`mlflow.pyfunc.load_model`,
`mlflow models serve`): nothing is cloudpickled. The weights travel as an artifact (a plain
tensor dict in the one model-file format (modelfile.py), read with `torch.load(weights_only=True)`
by core/files.py) and the dcganlab package as the model's `code_paths`, so any Python with the
logged requirements can rebuild the generator. Only torch, numpy, pyyaml, core/files.py and
modelfile.py (the params dataclasses, the variant table, the networks) are imported here, which
keeps the model's requirements short (see `requirements`).

Input: z, float32 (N, z_dim), as an array or {"z": ...}; conditional generators also take
{"labels": int64 (N,)}. Output: images, float32 (N, C, H, W) in [-1, 1].
At most `max_latents` latents per call (the model config logged with it, from
`train.serve_max_latents`): the reply of N images is N*C*H*W floats, ~22 KB of JSON per 32x32
digit. Latents must be finite and labels integers in range; a refusal is a `BadInput` (a
ValueError, and a 400 with its message from `mlflow models serve`). Under `mlflow models serve`
the model also bounds and checks the request body before MLflow parses it (request_gate.py).
"""

from __future__ import annotations

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from dcganlab.core.files import load_torch
from dcganlab.gan.modelfile import build_generator

WEIGHTS = "generator"  # the artifact key of the weights file
MAX_LATENTS = "max_latents"  # the model config key of the per-request cap


class BadInput(MlflowException, ValueError):
    """Input the generator refuses. A ValueError to Python callers; MLflow's scoring server
    answers an MlflowException with its own message and status (400 here), and any other
    exception with a generic 400 that hides the message."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


KEYS = ("state_dict", "experiment", "channels", "image_size", "num_classes")  # what modelfile.model_blob writes
REMEDY = "log the model again: delete models/<exp>/train/finished.json and rerun `dcganlab train <exp>`"


def requirements() -> list[str]:
    """What this file imports, pinned to the running versions (torch without its +cuXXX/+cpu tag)."""
    import yaml

    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}", f"pyyaml=={yaml.__version__}"]


def signature(z_dim: int, channels: int, size: int, conditional: bool):
    """Named input tensors "z" (and "labels"), images out: what pyfunc validates every input against."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    inputs = [TensorSpec(np.dtype(np.float32), (-1, z_dim), "z")]
    if conditional:
        inputs.append(TensorSpec(np.dtype(np.int64), (-1,), "labels"))
    return ModelSignature(Schema(inputs), Schema([TensorSpec(np.dtype(np.float32), (-1, channels, size, size))]))


class GeneratorModel(PythonModel):
    # pyfunc validates our input against the explicit signature (named tensors "z" and
    # "labels"), which `predict` type hints cannot express (MLflow accepts list[...] hints only).
    # Without this MLflow switch, defining the class (at logging and at every load) warns
    # "Add type hints to the `predict` method", and no warnings filter can hide it.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from dcganlab.core.config import TrainParams
        from dcganlab.gan import request_gate

        blob = load_torch(context.artifacts[WEIGHTS], "generator weights", REMEDY, keys=KEYS)
        self.G, self.num_classes = build_generator(blob), blob["num_classes"]
        self.max_latents = int((context.model_config or {}).get(MAX_LATENTS, TrainParams.serve_max_latents))
        request_gate.install(request_gate.Limits(self.max_latents, blob["experiment"]["z_dim"], self.num_classes))

    def predict(self, context, model_input, params=None):
        z, labels = _unpack(model_input)
        z = np.asarray(z, dtype=np.float32)
        if len(z) > self.max_latents:
            raise BadInput(
                f"too many latents: {len(z)}, this model generates at most {self.max_latents} images "
                "per request (its serve_max_latents); split the latents over several requests"
            )
        if not np.isfinite(z).all():
            raise BadInput("latents must be finite numbers: got NaN or infinity")
        with torch.no_grad():
            return self.G(torch.as_tensor(z), self._labels(labels, len(z))).numpy()

    def _labels(self, labels, n: int):
        if not self.num_classes:
            return None  # unconditional: labels, if given, are ignored
        y = None if labels is None else np.asarray(labels).reshape(-1)
        # np.bool_ is not an np.integer: True is not label 1
        if (
            y is None
            or len(y) != n
            or not np.issubdtype(y.dtype, np.integer)
            or not np.isin(y, np.arange(self.num_classes)).all()
        ):
            raise BadInput(f"this conditional generator needs 'labels': {n} integers in 0..{self.num_classes - 1}")
        return torch.as_tensor(y.astype(np.int64))


def _unpack(model_input) -> tuple:
    """(z, labels or None) from an array or a mapping of named inputs (what pyfunc passes for a
    signature of named tensors)."""
    if isinstance(model_input, dict):
        return model_input["z"], model_input.get("labels")
    return model_input, None


mlflow.models.set_model(GeneratorModel())
