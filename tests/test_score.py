"""`dcganlab score DATASET IMAGES`: any images, the metrics `evaluate` uses, through the real CLI
(folders, arrays, MLflow run URIs) and its one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import prepare_project, tiny_params
from PIL import Image
from typer.testing import CliRunner

from dcganlab.cli import app
from dcganlab.core import paths

SAME = ("fid", "kid", "precision", "recall", "density", "coverage", "diversity_ssim", "n_fake", "n_real")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The tiny digits project, trained (1 epoch, generator logged to a private MLflow store) and
    evaluated; and 60 real training digits (N, H, W) uint8, more than evaluate's 40."""
    from dcganlab.data.processed import load_processed
    from dcganlab.evaluation.extractor import train_extractor
    from dcganlab.stages.evaluate import run as evaluate
    from dcganlab.training.loop import train

    root = tmp_path_factory.mktemp("score")
    p = prepare_project(
        root, tiny_params(**{"train.log_model": True, "tracking.uri": f"sqlite:///{root / 'mlflow.db'}"})
    )
    data = load_processed(paths.processed_dir(root, "digits"))
    train_extractor(data, p.extractor, p.seed, paths.extractor_path(root, "digits"), "digits")
    train(p, "tiny", progress=False)
    evaluate(p, "tiny")
    digits = data["images"][data["split"] == 0][:60, 0]
    return p, digits


def _score(p, *args):
    """(exit code, stdout, stderr) of `dcganlab score` with the project's params."""
    result = CliRunner().invoke(app, ["score", *map(str, args), "--params", str(p.root / "params.yaml")])
    return result.exit_code, result.stdout, result.stderr


def _json(p, *args) -> dict:
    code, out, err = _score(p, *args)
    assert code == 0, err
    return json.loads(out)


def test_a_folder_and_arrays_of_the_same_images_score_the_same(project, tmp_path):
    p, digits = project
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(digits):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    np.save(tmp_path / "x.npy", digits)  # (N, H, W)
    np.savez(tmp_path / "x.npz", digits[..., None])  # (N, H, W, 1) as arr_0
    from_folder = _json(p, "digits", folder)
    assert from_folder["n_fake"] == 40 and from_folder["n_real"] == 24  # evaluate's counts: a subset of the 60
    assert from_folder["reference_split"].startswith("digits:test") and from_folder["prdc_k"] == 3
    assert from_folder["calibration"].startswith("calibration: not computed yet")
    for array in ("x.npy", "x.npz"):
        scored = _json(p, "digits", tmp_path / array)
        assert {k: scored[k] for k in SAME} == {k: from_folder[k] for k in SAME}, array
    # real digits against real digits: close to the real floors, far from noise
    noise = np.random.default_rng(0).integers(0, 256, (40, 16, 16), dtype=np.uint8)
    np.save(tmp_path / "noise.npy", noise)
    scored_noise = _json(p, "digits", tmp_path / "noise.npy")
    assert from_folder["coverage"] > scored_noise["coverage"] and from_folder["fid"] < scored_noise["fid"]
    assert scored_noise["coverage"] < 0.2 and from_folder["coverage"] > 0.5, (scored_noise, from_folder)


def test_a_runs_uri_scores_exactly_what_evaluate_reported(project, tmp_path):
    p, _ = project
    run_id = json.loads((paths.state_dir(p.root, "tiny") / "mlflow_run.json").read_text())["run_id"]
    out = tmp_path / "sub" / "score.json"
    code, stdout, stderr = _score(p, "digits", f"runs:/{run_id}/generator", "--out", out)
    assert code == 0, stderr
    assert stdout == "" and stderr.startswith("score digits: FID") and "calibration: not computed yet" in stderr
    scored = json.loads(out.read_text())
    evaluated = json.loads(paths.eval_path(p.root, "tiny").read_text())
    for key in SAME:
        assert scored[key] == pytest.approx(evaluated[key], rel=1e-6, abs=1e-9), key
    assert scored["mode_coverage"]["histogram"] == evaluated["mode_coverage"]["histogram"]
    # the real CLI in a fresh process: stdout is the JSON alone (MLflow's loading chatter goes to stderr)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dcganlab",
            "score",
            "digits",
            f"runs:/{run_id}/generator",
            "--params",
            str(p.root / "params.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["coverage"] == scored["coverage"]


def test_the_calibration_headline_is_printed_beside_the_numbers(project, tmp_path):
    p, digits = project
    np.save(tmp_path / "x.npy", digits)
    calibration = paths.extractor_path(p.root, "digits").with_suffix(".calibration.json")
    calibration.write_text(json.dumps({"headline": "FID tracks blur monotonically (test stub)"}))
    try:
        assert (
            _json(p, "digits", tmp_path / "x.npy")["calibration"]
            == "calibration: FID tracks blur monotonically (test stub)"
        )
    finally:
        calibration.unlink()


def _bad_inputs(tmp_path, digits) -> dict:
    """name -> (IMAGES argument, words the error must contain)."""
    small = tmp_path / "small"
    small.mkdir()
    for i in range(40):
        Image.fromarray(digits[i][::2, ::2]).save(small / f"{i}.png")
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    for i in range(40):
        Image.fromarray(np.repeat(digits[i][..., None], 3, axis=2)).save(rgb / f"{i}.jpg")
    rgba = tmp_path / "rgba"
    rgba.mkdir()
    for i in range(40):
        Image.fromarray(np.repeat(digits[i][..., None], 4, axis=2), mode="RGBA").save(rgba / f"{i}.png")
    np.savez(tmp_path / "two.npz", images=digits, labels=np.zeros(len(digits), np.uint8))
    np.save(tmp_path / "few.npy", digits[:10])
    np.save(tmp_path / "float.npy", digits.astype(np.float32))
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "empty").mkdir()
    return {
        "size": (small, "8x8"),
        "channels": (rgb, "3 channel"),
        "count": (tmp_path / "few.npy", "10 images"),
        "dtype": (tmp_path / "float.npy", "uint8"),
        "broken": (tmp_path / "broken.npy", "unreadable"),
        "empty": (tmp_path / "empty", "no PNG or JPEG"),
        "missing": (tmp_path / "nope", "no such"),
        "run": ("runs:/0123456789abcdef0123456789abcdef/generator", "cannot load MLflow model"),
        "rgba": (rgba, "image mode RGBA"),
        "npz": (tmp_path / "two.npz", "arrays images, labels"),
    }


@pytest.mark.slow
def test_bad_images_give_one_line_errors_and_write_nothing(project, tmp_path):
    p, digits = project
    out = tmp_path / "out.json"
    for name, (images, words) in _bad_inputs(tmp_path, digits).items():
        code, stdout, stderr = _score(p, "digits", images, "--out", out)
        assert code != 0 and stdout == "", name
        assert stderr.startswith("error: ") and stderr.count("\n") == 1 and words in stderr, (name, stderr)
        assert "unexpected" not in stderr, (name, stderr)
        assert not out.exists(), name
    code, _, stderr = _score(p, "nodata", tmp_path / "few.npy")
    assert code != 0 and "unknown dataset 'nodata'" in stderr
