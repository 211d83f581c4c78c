"""The processed dataset (data/processed/<name>/, written by the prepare stage): pre-decoded
uint8 images N x C x H x W, labels, split (0 train, 1 test) and stats.json."""

from __future__ import annotations

from pathlib import Path

from dcganlab.core.errors import UserError
from dcganlab.core.files import dvc_output, load_npy, read_json


def load_processed(folder: Path) -> dict:
    if not (folder / "images.npy").is_file():
        raise UserError(f"no processed data at {folder} (run `dcganlab prepare` first)")
    remedy = dvc_output(folder, f"prepare@{folder.name}")
    data = {name: load_npy(folder / f"{name}.npy", "array", remedy) for name in ("images", "labels", "split")}
    data["stats"] = read_json(folder / "stats.json", "dataset stats", remedy)
    return data
