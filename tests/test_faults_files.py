"""Fault injection: damaged files the pipeline reads back, and a full disk (docs/robustness.md,
"Corrupt and unreadable files").

Each case damages one file of a tiny project built once for the module (truncated to half,
emptied, or overwritten with random bytes), runs the real CLI on it and puts the file back. The
answer must be exit code 1 and exactly one stderr line naming the file and what to do, never
torch's or NumPy's advice to unpickle it (`weights_only=False`, `allow_pickle=True`).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from contextlib import chdir, contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import copy_project, prepare_project, run_cmd
from typer.testing import CliRunner

from dcganlab.cli import app

pytestmark = pytest.mark.slow

HOW = ("truncated", "empty", "random")


def cli(root: Path, *args: str):
    """The command run from the project root, as `dvc repro` runs it: files are shown relative to it."""
    with chdir(root):
        return CliRunner().invoke(app, [*args, "--params", "params.yaml"])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A tiny project after every stage but `report` (which only reads): its root."""
    root = tmp_path_factory.mktemp("faults") / "project"
    prepare_project(root)
    for stage in (
        ["extractor", "digits"],
        ["train", "tiny"],
        ["sample", "tiny"],
        ["evaluate", "tiny"],
        ["quality", "tiny"],
    ):
        result = cli(root, *stage)
        assert result.exit_code == 0, result.output
    return root


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(random.Random(0).randbytes(max(len(data), 256)))


@contextmanager
def damaged(path: Path, how: str):
    """`path` damaged `how` for the duration; its bytes put back afterwards."""
    original = path.read_bytes()
    damage(path, how)
    try:
        yield path
    finally:
        path.write_bytes(original)


def one_line(stderr: str, path: str | Path, *remedy: str) -> str:
    """The single stderr line; it names `path` (as shown), says `remedy`, and relays no unsafe advice."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith(f"error: {path}: "), line
    assert all(words in line for words in remedy), line
    for unsafe in ("weights_only", "allow_pickle", "Traceback", "unexpected"):
        assert unsafe not in line, line
    return line


def case(rel: str, how: str, command: str, *remedy: str):
    """A damaged `rel`, read by `command`; `remedy`: words the line must hold."""
    return pytest.param(rel, how, command, remedy, id=f"{rel}-{how}-{command.split()[0]}")


CASES = [
    *[case("models/tiny/train/checkpoint.pt", how, "train tiny", "delete it to retrain from scratch") for how in HOW],
    case("models/tiny/train/checkpoint.pt", "random", "quality tiny", "delete it to retrain from scratch"),
    case(
        "models/tiny/train/generators/epoch_0001.pt",
        "truncated",
        "quality tiny",
        "delete it",
        "dvc checkout --force models/tiny/train",
    ),
    *[case("models/tiny/model.pt", how, "sample tiny", "dvc checkout", "dvc repro train@tiny") for how in HOW],
    case("models/tiny/model.pt", "empty", "evaluate tiny", "dvc checkout", "dvc repro train@tiny"),
    case("models/extractors/digits.pt", "random", "evaluate tiny", "dvc checkout", "dvc repro extractor@digits"),
    *[
        case("data/processed/digits/images.npy", how, "train tiny", "dvc checkout", "dvc repro prepare@digits")
        for how in HOW
    ],
    case("data/processed/digits/split.npy", "random", "extractor digits", "dvc repro prepare@digits"),
    case("data/processed/digits/stats.json", "truncated", "train tiny", "dvc repro prepare@digits"),
    case("data/raw/digits/manifest.csv", "empty", "prepare digits", "dvc checkout", "dvc repro fetch@digits"),
    case("data/raw/digits/manifest.csv", "random", "prepare digits", "dvc repro fetch@digits"),
    case(
        "models/tiny/train/grids/epoch_0001.png",
        "truncated",
        "sample tiny",
        "delete it",
        "dvc checkout --force models/tiny/train",
    ),
    case("reports/eval/tiny.json", "truncated", "report", "dvc checkout", "dvc repro evaluate@tiny"),
    case("reports/quality/tiny.csv", "empty", "report", "dvc repro quality@tiny"),
    case("reports/samples/tiny/figures.json", "random", "report", "dvc repro sample@tiny"),
    case("models/tiny/train/mlflow_run.json", "empty", "sample tiny", "delete it"),
    case("models/tiny/train/finished.json", "truncated", "train tiny", "delete it"),
    *[case("mlflow.db", how, "sample tiny", "remove it to start a new, empty store") for how in HOW],
]


@pytest.mark.parametrize("rel, how, command, remedy", CASES)
def test_a_damaged_file_is_one_line_naming_it_and_the_remedy(built, rel, how, command, remedy):
    path = built / rel
    with damaged(path, how):
        bad = path.read_bytes()
        result = cli(built, *command.split())
        assert result.exit_code == 1, result.output
        assert "unreadable" in one_line(result.stderr, rel, *remedy)
        assert path.read_bytes() == bad  # refused, not read as something else (a new mlflow.db) and rewritten


def test_the_whole_process_prints_one_line_for_a_truncated_checkpoint(built):
    """Out of process too: no library warning or traceback before the line."""
    path = built / "models/tiny/train/checkpoint.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with damaged(path, "truncated"):
        result = subprocess.run(
            [sys.executable, "-m", "dcganlab", "train", "tiny"],
            cwd=built,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    assert result.returncode == 1
    one_line(result.stderr, "models/tiny/train/checkpoint.pt", "delete it to retrain from scratch")


def test_the_dvc_checkout_the_line_suggests_restores_the_file(dvc_baseline, tmp_path):
    """The remedy works as printed: in a copy of the `dvc repro` baseline, the suggested command
    restores a damaged model, a processed array and a per-epoch generator (a persisted output)."""
    src, env, _ = dvc_baseline
    root = copy_project(src, tmp_path / "project")
    for rel, command in (
        ("models/tiny/model.pt", "sample tiny"),
        ("data/processed/digits/images.npy", "train tiny"),
        ("models/tiny/train/generators/epoch_0001.pt", "quality tiny"),
    ):
        path = root / rel
        original = path.read_bytes()
        damage(path, "random")
        result = subprocess.run(
            [sys.executable, "-m", "dcganlab", *command.split()],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 1
        line = one_line(result.stderr, rel)
        suggested = re.search(r"`(dvc checkout [^`]+)`", line).group(1).split()
        run_cmd([sys.executable, "-m", *suggested], root, env)
        assert path.read_bytes() == original, line


@pytest.mark.parametrize("how", HOW)
def test_damaged_inception_weights_are_reported_in_the_metrics_not_relayed(tmp_path, how):
    """evaluate carries on without InceptionV3; its status says why and what to do, in our words."""
    from dcganlab.evaluation.inception import load_inception

    weights = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(64)}, weights)
    damage(weights, how)
    net, status = load_inception("auto", weights, "", shown="models/w.pth")
    assert net is None and status.startswith("unavailable: weights at models/w.pth did not load (")
    assert "delete it to download it again" in status and "weights_only" not in status


@pytest.mark.parametrize("how", HOW)
def test_damaged_mlflow_model_weights_name_the_file_when_served(built, tmp_path, how):
    """What `mlflow models serve` and pyfunc.load_model call: load_context on the logged weights."""
    from dcganlab.core.errors import UserError
    from dcganlab.gan import serving
    from dcganlab.gan.modelfile import ModelSpec, load_model, model_blob

    G, _, meta = load_model(built / "models/tiny/model.pt")
    weights = tmp_path / "weights.pt"
    torch.save(model_blob(ModelSpec.of(meta), G), weights)
    model = serving.GeneratorModel()
    model.load_context(SimpleNamespace(artifacts={serving.WEIGHTS: str(weights)}, model_config={}))  # intact: it loads
    damage(weights, how)
    with pytest.raises(UserError) as err:
        model.load_context(SimpleNamespace(artifacts={serving.WEIGHTS: str(weights)}, model_config={}))
    message = str(err.value)
    assert message.startswith(f"{weights}: unreadable generator weights (") and "log the model again" in message
    assert "weights_only" not in message


needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")


@needs_dev_full
def test_a_full_disk_names_the_output_and_keeps_the_previous_one(built):
    """A real ENOSPC: the atomic write's temp file (named after this process) leads to /dev/full."""
    out = built / "models/extractors/digits.pt"
    before = out.read_bytes()
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}{out.suffix}")
    tmp.symlink_to("/dev/full")
    try:
        result = cli(built, "extractor", "digits")
    finally:
        leftover = tmp.is_symlink()
        tmp.unlink(missing_ok=True)
    assert result.exit_code == 1
    line = one_line(
        result.stderr, "models/extractors/digits.pt", "No space left on device", "free disk space and rerun"
    )
    assert "could not write" in line
    assert out.read_bytes() == before and not leftover


@needs_dev_full
def test_a_full_disk_while_building_a_folder_keeps_the_previous_folder(tmp_path):
    from dcganlab.core.atomic import atomic_dir
    from dcganlab.core.errors import UserError

    folder = tmp_path / "samples"
    folder.mkdir()
    (folder / "grid.png").write_bytes(b"old")
    with pytest.raises(UserError) as err:
        with atomic_dir(folder) as tmp:
            (tmp / "grid.png").symlink_to("/dev/full")
            (tmp / "grid.png").write_bytes(b"new")
    assert str(err.value).startswith(f"{folder}: could not write (No space left on device); free disk space")
    assert (folder / "grid.png").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples"]
