"""train stage: one experiment's GAN, trained by the one loop (training/loop.py).

Reads data/processed/<dataset>/ and params `experiments.<exp>`, `train`, `seed`; writes
models/<exp>/model.pt, models/<exp>/train/ (checkpoint, per-epoch generators and grids),
reports/<exp>/losses.csv and train.json; logs an MLflow run. Resumes from the checkpoint.
"""

from __future__ import annotations

from dcganlab.core.config import Params
from dcganlab.training.loop import train


def run(params: Params, name: str, progress: bool = True) -> dict:
    """The training summary ({} on a torchrun process other than rank 0: rank 0 reports)."""
    return train(params, name, progress)
