"""Where every stage reads and writes, relative to the project root (params.yaml's folder).

Dataset and experiment names become single folder or file names: params validation allows
only letters, digits, '-' and '_', and `_part` refuses anything that could leave its folder
even if a caller skipped that validation.
"""

from __future__ import annotations

import re
from pathlib import Path


def _part(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"'{name}' is not a plain name (it would leave its folder)")
    return name


def raw_dir(root: Path, dataset: str) -> Path:
    return root / "data" / "raw" / _part(dataset)


def processed_dir(root: Path, dataset: str) -> Path:
    return root / "data" / "processed" / _part(dataset)


def downloads_dir(root: Path) -> Path:
    """Cache for torchvision downloads: outside DVC's outputs, so a re-fetch does not re-download."""
    return root / "data" / "downloads"


def model_dir(root: Path, experiment: str) -> Path:
    return root / "models" / _part(experiment)


def state_dir(root: Path, experiment: str) -> Path:
    """Resumable training state (checkpoint, per-epoch generators and grids); DVC `persist`.
    Its layout is the functions below: nothing else spells a file name inside it."""
    return model_dir(root, experiment) / "train"


# ---------------------------------------------------------------- inside a state directory
EPOCH_FILE = re.compile(r"^epoch_(\d+)\.(pt|png)$")  # grids/epoch_0001.png, generators/epoch_0001.pt


def checkpoint_path(state: Path) -> Path:
    """The full training checkpoint (networks, optimizers, position, RNG states, history)."""
    return state / "checkpoint.pt"


def finished_path(state: Path) -> Path:
    """Written once the run's model and summary are logged to MLflow."""
    return state / "finished.json"


def run_file(state: Path) -> Path:
    """The MLflow run id of the experiment's training run (reopened by every later stage)."""
    return state / "mlflow_run.json"


def grids_dir(state: Path) -> Path:
    return state / "grids"


def generators_dir(state: Path) -> Path:
    return state / "generators"


def grid_path(state: Path, epoch: int) -> Path:
    """The epoch's fixed-noise grid (PNG)."""
    return grids_dir(state) / f"epoch_{epoch:04d}.png"


def generator_path(state: Path, epoch: int) -> Path:
    """The epoch's generator (a model file, gan/modelfile.py)."""
    return generators_dir(state) / f"epoch_{epoch:04d}.pt"


def saved_epochs(folder: Path) -> dict[int, Path]:
    """epoch -> its file in `folder` (grids_dir or generators_dir): every epoch_NNNN.png/.pt there."""
    if not folder.is_dir():
        return {}
    return {int(m.group(1)): p for p in folder.iterdir() if (m := EPOCH_FILE.match(p.name))}


def model_path(root: Path, experiment: str) -> Path:
    return model_dir(root, experiment) / "model.pt"


def extractor_path(root: Path, dataset: str) -> Path:
    return root / "models" / "extractors" / f"{_part(dataset)}.pt"


def calibration_path(root: Path, dataset: str) -> Path:
    """The extractor's calibration table (calibration.py), written beside it by the extractor stage."""
    return extractor_path(root, dataset).with_suffix(".calibration.json")


def report_dir(root: Path, experiment: str) -> Path:
    return root / "reports" / _part(experiment)


def eval_path(root: Path, experiment: str) -> Path:
    """One experiment's evaluation (the report stage depends on the folder of these)."""
    return root / "reports" / "eval" / f"{_part(experiment)}.json"


def inside(base: Path, rel: str) -> Path:
    """`base / rel`, or ValueError (why) unless `rel` is a relative path without '..': paths
    read from manifests never name the rest of the disk. Links are followed: DVC's `symlink`
    and `hardlink` cache types check out data/raw/ as links into the cache."""
    if not rel or not str(rel).strip():
        raise ValueError("empty path")
    if Path(rel).is_absolute() or "\\" in rel or (len(rel) > 1 and rel[1] == ":"):
        raise ValueError("absolute path")
    if ".." in Path(rel).parts:
        raise ValueError("'..' leaves the folder")
    return base / rel


def samples_dir(root: Path, experiment: str) -> Path:
    """The sample stage's figures (one DVC output per experiment)."""
    return root / "reports" / "samples" / _part(experiment)


def quality_path(root: Path, experiment: str) -> Path:
    """FID per saved epoch (the quality stage); the report draws its curves."""
    return root / "reports" / "quality" / f"{_part(experiment)}.csv"


def figures_dir(root: Path) -> Path:
    """The report's own figures."""
    return root / "reports" / "figures"
