"""extractor stage: the offline `domain` feature extractor for FID/KID, trained on a dataset's
real training split, then calibrated (evaluation/extractor.py, evaluation/calibration.py).

Reads data/processed/<name>/ and params `extractor`, `evaluate.pr_k`, `evaluate.kid_subset_size`;
writes models/extractors/<name>.pt, .json (kind, feature size, test accuracy or error, training
seconds) and .calibration.json.
"""

from __future__ import annotations

from pathlib import Path

from dcganlab.core import paths
from dcganlab.core.config import Params
from dcganlab.data.processed import load_processed
from dcganlab.evaluation.calibration import calibrate_extractor
from dcganlab.evaluation.extractor import load_extractor, train_extractor


def run(params: Params, name: str) -> tuple[dict, dict, Path]:
    """(the extractor's info, its calibration table, the table's path)."""
    data = load_processed(paths.processed_dir(params.root, name))
    info = train_extractor(data, params.extractor, params.seed, paths.extractor_path(params.root, name), name)
    net = load_extractor(paths.extractor_path(params.root, name))[0]
    table, out = calibrate_extractor(params, name, net, info, data)
    return info, table, out
