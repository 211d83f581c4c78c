"""prepare stage: raw images -> the processed arrays training reads (data/prepare.py).

Detects and crops faces (if `detect_faces`), resizes, converts channels. Reads data/raw/<name>/;
writes data/processed/<name>/ (images.npy N x C x H x W uint8, labels.npy, split.npy, manifest.csv
with a status per input file, stats.json).
"""

from __future__ import annotations

from dcganlab.core import paths
from dcganlab.core.config import Params
from dcganlab.data.faces import CropSettings
from dcganlab.data.prepare import prepare


def run(params: Params, name: str) -> dict:
    """The dataset's stats (images in, kept, discarded by status...)."""
    dataset = params.datasets[name]
    return prepare(
        paths.raw_dir(params.root, name),
        paths.processed_dir(params.root, name),
        CropSettings.from_dataset(dataset),
        dataset.test_fraction,
        params.seed,
        dataset.workers,
    )
