"""Quality curves (reports/quality/<exp>.csv: FID per saved epoch) and what they choose."""

from __future__ import annotations

import pandas as pd


def best_epoch(table: pd.DataFrame) -> int:
    """The epoch with the lowest curve FID (the earliest of equals)."""
    return int(table.loc[table["fid"].idxmin(), "epoch"])
