"""A generator as an MLflow pyfunc model: logged from code (serving.py), its weights a model
file (modelfile.py), the dcganlab package as its code."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from dcganlab.gan.modelfile import ModelSpec, model_blob
from dcganlab.gan.sampling import sample_noise

PACKAGE = Path(__file__).parents[1]  # src/dcganlab: travels with the model as its code


def log_pyfunc_generator(
    mlflow, G, spec: ModelSpec, max_latents: int, name: str = "generator", registered_name: str | None = None
):
    """A generator as an MLflow pyfunc model `name` of the active run (serving.py, "models from
    code": its weights are a tensor file, nothing is unpickled at load), registered as a new
    version of `registered_name` if given; its ModelInfo. Input: z (N, z_dim) float32, plus
    labels (N,) int64 for conditional variants; at most `max_latents` latents per call (the model
    config, which travels with the model)."""
    from dcganlab.gan import serving  # here: importing it declares the pyfunc model (mlflow.models.set_model)

    e = spec.experiment
    example = {"z": sample_noise(2, e.z_dim, e.noise, "cpu", torch.Generator().manual_seed(0)).numpy()}
    if spec.num_classes:
        example["labels"] = np.arange(2, dtype=np.int64)
    signature = serving.signature(e.z_dim, spec.channels, spec.size, bool(spec.num_classes))
    with tempfile.TemporaryDirectory() as tmp:
        weights, package = Path(tmp) / "generator.pt", Path(tmp) / "dcganlab"  # the package's sources, no caches
        torch.save(model_blob(spec, G), weights)
        shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=serving.__file__,
            artifacts={serving.WEIGHTS: str(weights)},
            code_paths=[str(package)],
            signature=signature,
            input_example=example,
            model_config={serving.MAX_LATENTS: max_latents},
            pip_requirements=serving.requirements(),
            registered_model_name=registered_name,
        )
