"""fetch stage: a dataset's raw images from its source into data/raw/<name>/ (data/sources.py).

Reads params `datasets.<name>` (source, path, split, limit); writes data/raw/<name>/images/ and
data/raw/<name>/manifest.csv (file, label, source, checksum). Download sources cache archives in
data/downloads/.
"""

from __future__ import annotations

import pandas as pd

from dcganlab.core import paths
from dcganlab.core.config import Params
from dcganlab.data.sources import fetch


def run(params: Params, name: str) -> pd.DataFrame:
    """The dataset's manifest, one row per fetched image."""
    root = params.root
    return fetch(params.datasets[name], paths.raw_dir(root, name), paths.downloads_dir(root), root)
