"""End to end: `dvc repro` on a tiny params file in a temp copy of the project."""

import json
import sys

import pytest
from conftest import copy_project
from conftest import run_cmd as _run


@pytest.mark.slow
def test_dvc_repro_builds_every_output_and_a_second_repro_does_nothing(dvc_baseline, tmp_path):
    src, env, _ = dvc_baseline  # conftest: `dvc repro` of a tiny project with digits and 30 face photos
    work = copy_project(src, tmp_path / "project")
    dvc = [sys.executable, "-m", "dvc"]

    for out in [
        "data/raw/digits/manifest.csv",
        "data/raw/faces/manifest.csv",
        "data/processed/digits/images.npy",
        "data/processed/faces/stats.json",
        "models/extractors/digits.pt",
        "models/extractors/faces.pt",
        "models/tiny/model.pt",
        "models/tiny/train/checkpoint.pt",
        "reports/tiny/losses.csv",
        "reports/tiny/train.json",
        "reports/samples/tiny/grid.png",
        "reports/samples/tiny/interpolation.png",
        "reports/eval/tiny.json",
        "reports/samples/tiny/arithmetic.png",
        "reports/samples/tiny/progression.png",
        "reports/samples/tiny/d_filters.png",
        "reports/metrics.json",
        "reports/summary.md",
        "reports/summary.html",
        "mlflow.db",
    ]:
        assert (work / out).is_file(), out
    faces = json.loads((work / "data/processed/faces/stats.json").read_text())
    assert faces["kept"] >= 28 and faces["discarded"].get("no_face", 0) == 30 - faces["kept"]
    metrics = json.loads((work / "reports/metrics.json").read_text())
    assert {"fid", "kid", "images_per_s", "extractor", "n_fake", "reference_split"} <= set(metrics["tiny"])

    assert "up to date" in _run(dvc + ["status"], work, env)
    second = _run(dvc + ["repro"], work, env)
    assert "Running stage" not in second
    assert "tiny" in _run(dvc + ["metrics", "show"], work, env)
    assert "tiny.fid" in _run(dvc + ["metrics", "diff", "--all"], work, env)  # workspace vs HEAD
    quality = (work / "reports/quality/tiny.csv").read_text().splitlines()
    assert quality[0] == "epoch,wall_s,fid,kid,n_fake,n_real" and len(quality) == 1 + 1  # one row per epoch
    plots = json.loads(_run(dvc + ["plots", "show", "--json"], work, env))
    assert not plots.get("errors"), plots.get("errors")
    x_fields = {
        entry["content"]["encoding"]["x"]["field"]
        for name, entries in plots["data"].items()
        if "reports/quality/tiny.csv" in name
        for entry in entries
    }
    assert x_fields == {"epoch", "wall_s"}  # quality vs epoch and vs wall clock
