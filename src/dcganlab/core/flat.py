"""The one flattening of nested metric names: {"a": {"b": 1}} -> {"a.b": 1}.

reports/metrics.json (the report stage, read by `dvc metrics show/diff`) and the metrics an
evaluation logs to MLflow use the same names, e.g. `class_accuracy.mean`.
"""

from __future__ import annotations

import math


def flatten(obj: dict, prefix: str = "") -> dict:
    """Nested dicts joined with dots; lists are left out (flat scalars keep `dvc metrics` readable)."""
    out = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            out[f"{prefix}{key}"] = value
    return out


def numbers(obj: dict) -> dict:
    """`flatten`, finite numbers only, as floats: what MLflow takes as metrics (no None, bool, text)."""
    return {
        key: float(value)
        for key, value in flatten(obj).items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }
