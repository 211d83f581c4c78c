"""report: one table of every experiment, for DVC metrics and people.

reports/metrics.json maps each experiment name to its metrics object (`dvc metrics show`);
reports/summary.md shows the comparison table, how each number was computed, and each
experiment's samples.
"""
from __future__ import annotations

import json

import pandas as pd

from dcganlab import paths
from dcganlab.atomic import write_json, write_text
from dcganlab.config import Params
from dcganlab.errors import UserError

COLUMNS = ["variant", "dataset", "epochs", "fid", "fid_real_floor", "kid", "images_per_s", "train_wall_s"]


def report(params: Params) -> dict:
    root = params.root
    metrics = {}
    for name in params.experiments:
        path = paths.eval_path(root, name)
        if not path.is_file():
            raise UserError(f"no metrics for experiment '{name}' at {path} (run `dcganlab evaluate {name}` first)")
        metrics[name] = json.loads(path.read_text())
    write_json(root / "reports" / "metrics.json", metrics)

    table = pd.DataFrame.from_dict(metrics, orient="index").reindex(columns=COLUMNS)
    lines = ["# dcganlab summary", "",
             "FID/KID: torchmetrics on the features named below; lower is better. `fid_real_floor` is the FID of "
             "two disjoint real samples of the same sizes (the floor at this sample count).", "",
             table.to_markdown(floatfmt=".4g"), "", "## How each number was computed", ""]
    for name, m in metrics.items():
        lines.append(f"- **{name}**: extractor {m['extractor']}; {m['n_fake']} generated vs {m['n_real']} real images "
                     f"from {m['reference_split']}; KID subset size {m['kid_subset_size']}.")
    for name in metrics:
        lines += ["", f"## {name}", "", f"![samples]({name}/samples/grid.png)", "",
                  f"![interpolation]({name}/samples/interpolation.png)"]
    write_text(root / "reports" / "summary.md", "\n".join(lines) + "\n")
    return metrics
