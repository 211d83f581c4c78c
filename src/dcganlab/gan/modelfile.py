"""The one model-file format: a generator (and optionally its discriminator) as plain tensors
plus the small spec that rebuilds it (experiment, channels, size, classes).

Used for models/<exp>/model.pt, the per-epoch generators in models/<exp>/train/generators/,
and the weights of the logged MLflow model (serving.py). Tensors and plain values only: loading
unpickles nothing (files.load_torch, weights_only). The keys and their order are the format;
files written before this module existed load unchanged (tests/test_modelfile.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dcganlab.core.config import ExperimentParams
from dcganlab.core.errors import UserError
from dcganlab.core.files import dvc_output, load_torch
from dcganlab.gan.variants import VARIANTS

KEYS = ("experiment", "state_dict", "channels", "image_size")  # what every model file holds


@dataclass(frozen=True)
class ModelSpec:
    """What rebuilds the networks: the experiment (variant, widths, z_dim...), image shape and
    number of classes (0: unconditional)."""

    experiment: ExperimentParams
    channels: int
    size: int
    num_classes: int = 0

    @classmethod
    def of(cls, blob: dict) -> "ModelSpec":
        experiment = blob["experiment"]
        if not isinstance(experiment, ExperimentParams):
            experiment = ExperimentParams(**experiment)
        return cls(experiment, blob["channels"], blob["image_size"], blob.get("num_classes", 0))

    def build(self):
        """(G, D) of the spec's variant, freshly initialised by their constructors."""
        return VARIANTS[self.experiment.variant].build(self.experiment, self.channels, self.size, self.num_classes)


def _cpu(net: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


def model_blob(spec: ModelSpec, G, D=None, origin: dict | None = None) -> dict:
    """The file's content. Training adds its `origin` ({"classes": the class names, "fingerprint":
    the run's}) and, for model.pt, D; the logged MLflow model holds the generator and spec only."""
    blob = {
        "state_dict": _cpu(G),
        "experiment": asdict(spec.experiment),
        "channels": spec.channels,
        "image_size": spec.size,
        "num_classes": spec.num_classes,
    }
    blob.update(origin or {})
    if D is not None:
        blob["discriminator"] = _cpu(D)
    return blob


def build_generator(blob: dict):
    """The generator of a model blob, in eval mode (BatchNorm running statistics)."""
    G, _ = ModelSpec.of(blob).build()
    G.load_state_dict(blob["state_dict"])
    return G.eval()


def load_model(path: Path, device: torch.device | str = "cpu", remedy: str | None = None):
    """(G, D or None, metadata) from models/<exp>/model.pt or a per-epoch generator file (give
    its `remedy`). Weights only: nothing is unpickled."""
    if not path.is_file():
        raise UserError(f"no trained model at {path} (run `dcganlab train` first)")
    remedy = remedy or dvc_output(path, f"train@{path.parent.name}")
    blob = load_torch(path, "model", remedy, keys=KEYS, map_location=device)
    spec = ModelSpec.of(blob)
    G, D = spec.build()
    G.load_state_dict(blob["state_dict"])
    if "discriminator" in blob:
        D.load_state_dict(blob["discriminator"])
        D = D.to(device).eval()
    else:
        D = None
    return G.to(device).eval(), D, {**blob, "experiment": spec.experiment}
