"""Where every stage reads and writes, relative to the project root (params.yaml's folder)."""
from __future__ import annotations

from pathlib import Path


def raw_dir(root: Path, dataset: str) -> Path:
    return root / "data" / "raw" / dataset


def processed_dir(root: Path, dataset: str) -> Path:
    return root / "data" / "processed" / dataset


def downloads_dir(root: Path) -> Path:
    """Cache for torchvision downloads: outside DVC's outputs, so a re-fetch does not re-download."""
    return root / "data" / "downloads"


def model_dir(root: Path, experiment: str) -> Path:
    return root / "models" / experiment


def state_dir(root: Path, experiment: str) -> Path:
    """Resumable training state (checkpoint, per-epoch generators and grids); DVC `persist`."""
    return model_dir(root, experiment) / "train"


def model_path(root: Path, experiment: str) -> Path:
    return model_dir(root, experiment) / "model.pt"


def extractor_path(root: Path, dataset: str) -> Path:
    return root / "models" / "extractors" / f"{dataset}.pt"


def report_dir(root: Path, experiment: str) -> Path:
    return root / "reports" / experiment


def eval_path(root: Path, experiment: str) -> Path:
    """One experiment's evaluation (the report stage depends on the folder of these)."""
    return root / "reports" / "eval" / f"{experiment}.json"


def samples_dir(root: Path, experiment: str) -> Path:
    """The sample stage's figures (one DVC output per experiment)."""
    return root / "reports" / "samples" / experiment


def quality_path(root: Path, experiment: str) -> Path:
    """FID per saved epoch (the quality stage); the report draws its curves."""
    return root / "reports" / "quality" / f"{experiment}.csv"


def figures_dir(root: Path) -> Path:
    """The report's own figures."""
    return root / "reports" / "figures"
