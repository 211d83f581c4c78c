"""calibrate: a dataset's trained extractor scored on disturbed real images
(evaluation/calibration.py); the extractor stage does the same after training.

Reads models/extractors/<name>.pt and data/processed/<name>/; writes
models/extractors/<name>.calibration.json.
"""

from __future__ import annotations

from pathlib import Path

from dcganlab.core import paths
from dcganlab.core.config import Params
from dcganlab.data.processed import load_processed
from dcganlab.evaluation.calibration import calibrate_extractor
from dcganlab.evaluation.extractor import load_extractor


def run(params: Params, name: str) -> tuple[dict, Path]:
    """(the calibration table, its path)."""
    net, info = load_extractor(paths.extractor_path(params.root, name))
    return calibrate_extractor(params, name, net, info, load_processed(paths.processed_dir(params.root, name)))
