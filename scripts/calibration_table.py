"""Markdown rows from extractors' .json and .calibration.json, for docs/evaluation.md.

    python scripts/calibration_table.py LABEL=PROJECT_ROOT [LABEL=PROJECT_ROOT ...]

One row per dataset whose models/extractors/<dataset>.calibration.json the project holds:
held-out accuracy, training seconds, FID of a 1-pixel blur and of a +-4 checkerboard, their
ratio (raw, and above the real floor), the ratio an extractor blind to the checkerboard would
score (floor / blur), the worst family's Spearman, and mode dropping.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DATASETS = ("digits", "fashion28", "fashion64", "fashion96", "fashion128")
HEADER = (
    "| dataset (size) | extractor | held-out acc | train s | blur σ=1 FID | checkerboard ±4 FID | ratio | "
    "ratio above floor | blind ratio | unclipped ±4 ratio | min Spearman (family) | real floor | "
    "mode dropping FID 10→8→6→4→2→1 classes | coverage falls |\n" + "|---" * 14 + "|"
)


def _fid(family: dict, level: float) -> float:
    return next(r["fid"] for r in family["levels"] if r["level"] == level)


def row(label: str, root: Path, ds: str) -> str | None:
    cal = root / "models" / "extractors" / f"{ds}.calibration.json"
    if not cal.is_file():
        return None
    table, info = json.loads(cal.read_text()), json.loads(cal.with_name(f"{ds}.json").read_text())
    fams, checks, floor = table["families"], table["checks"], table["real_floor"]["fid"]
    blur, checker = _fid(fams["gaussian_blur"], 1.0), _fid(fams["checkerboard"], 4.0)
    unclipped = _fid(fams["checkerboard_unclipped"], 4.0)
    drop = " → ".join(format(r["fid"], ".1f") for r in fams["mode_dropping"]["levels"])
    return (
        f"| {ds} ({info['image_size']}) | {label} | {info['test_accuracy']:.3f} | {info.get('train_seconds', float('nan')):.0f} | "
        f"{blur:.2f} | {checker:.2f} | {checker / blur:.2f} | {max(checker - floor, 0) / (blur - floor):.2f} | "
        f"{floor / blur:.2f} | {unclipped / blur:.2f} | {checks['spearman_min']:.2f} ({checks['spearman_min_family']}) | "
        f"{floor:.2f} | {drop} | {'yes' if fams['mode_dropping']['coverage_falls'] else 'no'} |"
    )


def main() -> None:
    print(HEADER)
    for arg in sys.argv[1:]:
        label, root = arg.split("=", 1)
        for ds in DATASETS:
            line = row(label, Path(root), ds)
            if line:
                print(line)


if __name__ == "__main__":
    main()
