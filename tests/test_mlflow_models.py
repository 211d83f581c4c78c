"""The logged generator through MLflow: pyfunc, `mlflow models serve`, the Model Registry, and the
experiment kind the MLflow UI reads."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from conftest import free_port, prepare_project, stop_group, tiny_params, wait_http

from dcganlab.core import paths
from dcganlab.core.tracking import EXPERIMENT_KIND

KIND_KEY, KIND = EXPERIMENT_KIND


def _uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


def _run_id(root: Path, name: str) -> str:
    return json.loads((paths.state_dir(root, name) / "mlflow_run.json").read_text())["run_id"]


def _env(root: Path) -> dict:
    """A user's shell: tracking URI in the environment, no PYTHONPATH (the model must carry its code)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "MLFLOW_TRACKING_URI": _uri(root), "MLFLOW_DISABLE_TELEMETRY": "true"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Two tiny trained experiments (dcgan `tiny`, cgan `tinyc`) with `log_model: true`, trained by
    the real CLI in a subprocess (its stderr is kept), into an experiment "digits" that an older
    version created without the experiment-kind tag."""
    root = tmp_path_factory.mktemp("models")
    # the store named in params: it wins over any MLFLOW_TRACKING_URI an earlier test left in os.environ
    raw = tiny_params(**{"train.log_model": True, "tracking.uri": _uri(root)})
    raw["experiments"]["tinyc"] = {**raw["experiments"]["tiny"], "variant": "cgan"}
    p = prepare_project(root, raw)
    mlflow.MlflowClient(_uri(root)).create_experiment("digits", artifact_location=(root / "mlartifacts").as_uri())
    result = subprocess.run(
        [sys.executable, "-m", "dcganlab", "train", "-p", str(root / "params.yaml")],
        cwd=root,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(_uri(root))
    return p, result.stderr


def _predictions(root: Path, name: str, z: np.ndarray, labels: np.ndarray | None = None) -> tuple:
    """(pyfunc output, the project's own generator output) for the same latents."""
    from dcganlab.gan.modelfile import load_model
    from dcganlab.gan.sampling import generate

    mlflow.set_tracking_uri(_uri(root))
    model = mlflow.pyfunc.load_model(f"runs:/{_run_id(root, name)}/generator")
    out = model.predict(z if labels is None else {"z": z, "labels": labels})
    G, _, _ = load_model(paths.model_path(root, name))
    ours = generate(G, torch.from_numpy(z), None if labels is None else torch.from_numpy(labels)).numpy()
    return out, ours, model


def test_pyfunc_generator_is_our_generator(project):
    p, _ = project
    z = np.random.default_rng(1).standard_normal((6, 8)).astype(np.float32)
    out, ours, model = _predictions(p.root, "tiny", z)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (6, 1, 16, 16)
    assert -1 <= out.min() and out.max() <= 1 and out.std() > 0
    assert np.array_equal(out, ours)
    assert np.array_equal(model.predict({"z": z}), out)  # the named form of the same input
    with pytest.raises(mlflow.exceptions.MlflowException, match="does not match expected shape"):
        model.predict(z[:, :7])  # checked against the signature


def test_pyfunc_conditional_generator_takes_labels(project):
    p, _ = project
    z = np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32)
    labels = np.array([0, 3, 7, 9], dtype=np.int64)
    out, ours, model = _predictions(p.root, "tinyc", z, labels)
    assert out.dtype == np.float32 and out.shape == (4, 1, 16, 16) and -1 <= out.min() and out.max() <= 1
    assert np.array_equal(out, ours)
    assert not np.array_equal(model.predict({"z": z, "labels": labels[::-1].copy()}), out)  # labels matter
    with pytest.raises(mlflow.exceptions.MlflowException, match="missing inputs"):
        model.predict(z)
    with pytest.raises(ValueError, match="integers in 0..9"):
        model.predict({"z": z, "labels": np.array([0, 1, 2, 10])})


def test_logging_and_loading_print_no_warning_and_the_model_carries_its_code(project):
    p, train_stderr = project
    assert "warning" not in train_stderr.lower(), train_stderr[-3000:]
    code = (
        "import sys, numpy as np, mlflow; m = mlflow.pyfunc.load_model('models:/tinyc/1'); "
        "print(m.predict({'z': np.zeros((2, 8), np.float32), 'labels': np.array([1, 2])}).shape); "
        "print(sys.modules['dcganlab'].__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=p.root, env=_env(p.root), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning" not in result.stderr.lower(), result.stderr
    shape, package = result.stdout.split("\n")[:2]
    assert shape == "(2, 1, 16, 16)"
    assert "/mlartifacts/models/" in package and package.endswith("/code/dcganlab/__init__.py")
    requirements = Path(package).parents[2] / "requirements.txt"
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements.read_text().split()


def test_every_training_registers_one_version_and_a_rerun_registers_none(project, capsys):
    from dcganlab.training.loop import train

    p, _ = project
    client = mlflow.MlflowClient(_uri(p.root))
    for name in ("tiny", "tinyc"):
        versions = client.search_model_versions(f"name='{name}'")
        assert [(str(v.version), v.run_id) for v in versions] == [("1", _run_id(p.root, name))]
    train(p, "tiny", progress=False)  # a rerun after a complete training
    assert "nothing logged" in capsys.readouterr().out
    assert len(client.search_model_versions("name='tiny'")) == 1
    # killed after registering but before finished.json was written: the rerun registers nothing either
    (paths.state_dir(p.root, "tiny") / "finished.json").unlink()
    train(p, "tiny", progress=False)
    assert len(client.search_model_versions("name='tiny'")) == 1
    assert len(client.search_logged_models([client.get_run(_run_id(p.root, "tiny")).info.experiment_id])) == 2


def test_evaluate_tags_the_model_version_with_its_quality(project):
    from dcganlab.data.processed import load_processed
    from dcganlab.evaluation.extractor import train_extractor
    from dcganlab.stages.evaluate import run as evaluate

    p, _ = project
    data = load_processed(paths.processed_dir(p.root, "digits"))
    train_extractor(data, p.extractor, p.seed, paths.extractor_path(p.root, "digits"), "digits")
    m = evaluate(p, "tiny")
    version = mlflow.MlflowClient(_uri(p.root)).get_model_version("tiny", "1")
    assert float(version.tags["fid"]) == m["fid"] and float(version.tags["kid"]) == m["kid"]
    assert version.tags["extractor"] == m["extractor"] and m["extractor"].startswith("domain:digits")
    assert "fid" not in mlflow.MlflowClient(_uri(p.root)).get_model_version("tinyc", "1").tags  # not evaluated


def test_experiments_carry_the_kind_the_ui_opens_on_training_runs(project):
    from dcganlab.core.tracking import _experiment_id, connect

    p, _ = project
    assert KIND == "custom_model_development"  # the UI's "Machine learning" kind
    # "digits" was created untagged (an older version): tagged when training next logged to it
    assert mlflow.MlflowClient(_uri(p.root)).get_experiment_by_name("digits").tags[KIND_KEY] == KIND
    experiment_id = _experiment_id(connect(p), p, "faces")  # a new experiment: created with it
    assert mlflow.MlflowClient(_uri(p.root)).get_experiment(experiment_id).tags[KIND_KEY] == KIND


# ---------------------------------------------------------------- `mlflow models serve`
def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


@pytest.mark.slow
def test_models_serve_answers_with_images_over_http(project):
    p, _ = project
    port = free_port()
    log = open(p.root / "serve.log", "w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            f"runs:/{_run_id(p.root, 'tinyc')}/generator",
            "--env-manager",
            "local",
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
        ],
        cwd=p.root,
        env=_env(p.root),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, p.root / "serve.log")
        z = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
        labels = np.array([1, 5, 8])
        url = f"http://127.0.0.1:{port}/invocations"
        status, body = _post(url, {"inputs": {"z": z.tolist(), "labels": labels.tolist()}})
        assert status == 200, body
        images = np.asarray(body["predictions"], dtype=np.float32)
        assert images.shape == (3, 1, 16, 16) and -1 <= images.min() and images.max() <= 1
        _, ours, _ = _predictions(p.root, "tinyc", z, labels)
        assert np.array_equal(images, ours)
        status, body = _post(url, {"inputs": {"z": z[:, :5].tolist(), "labels": [1, 2, 3]}})
        assert status == 400 and "shape" in body["message"]
    finally:
        stop_group(proc)
        log.close()


# ---------------------------------------------------------------- `dcganlab ui`
@pytest.mark.slow
def test_ui_serves_the_project_store_and_links_open_on_training_runs(project):
    """MLflow 3.17's UI ignores the experiment kind tag and opens on GenAI traces; `dcganlab ui`
    prints links that name the training view, and the server it starts answers with our runs."""
    p, _ = project
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dcganlab", "ui", "-p", str(p.root / "params.yaml"), "--port", str(port)],
        cwd=p.root,
        env=_env(p.root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        digits = mlflow.MlflowClient(_uri(p.root)).get_experiment_by_name("digits").experiment_id
        line = proc.stdout.readline()  # one line per experiment, by name
        assert line.strip() == f"digits: http://127.0.0.1:{port}/#/experiments/{digits}?workflowType=machine_learning"
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        status, body = _post(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search", {"experiment_ids": [digits]})
        assert status == 200 and {r["info"]["run_name"] for r in body["runs"]} >= {"tiny", "tinyc"}
    finally:
        stop_group(proc)
