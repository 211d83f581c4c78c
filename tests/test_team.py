"""Team tracking: a real MLflow tracking server over HTTP, and a DVC remote shared by clones."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port, git_project, run_cmd, stop_group, tiny_params, wait_http, write_params
from PIL import Image
from typer.testing import CliRunner

from dcganlab.cli import app


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on loopback: SQLite backend, proxied artifact store in tmp_path/server."""
    store = tmp_path / "server"
    store.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(store / "server.log", "w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination",
            str(store / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # own group: the teardown stops its workers too
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    try:
        wait_http(f"{url}/health", proc, store / "server.log", 60)
        yield url, store
    finally:
        stop_group(proc)
        log.close()


@pytest.mark.slow
def test_training_logs_to_a_tracking_server_over_http(prepared, mlflow_server, monkeypatch):
    from mlflow import MlflowClient

    url, store = mlflow_server
    # restored after the test: the client (and mlflow.set_tracking_uri) write these into os.environ
    for key, value in (
        ("MLFLOW_TRACKING_URI", url),
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"),
        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"),
    ):
        monkeypatch.setenv(key, value)
    write_params(prepared.root, tiny_params(**{"tracking.uri": url, "experiments.tiny.epochs": 2}))
    result = CliRunner().invoke(app, ["train", "tiny", "-p", str(prepared.root / "params.yaml")])
    assert result.exit_code == 0, result.output

    assert not (prepared.root / "mlflow.db").exists()  # nothing went to the local default store
    run_id = json.loads((prepared.root / "models/tiny/train/mlflow_run.json").read_text())["run_id"]
    client = MlflowClient(url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "digits"
    assert run.data.params["experiment.batch_size"] == "16" and run.data.params["experiment.variant"] == "dcgan"
    assert run.data.tags["experiment"] == "tiny" and run.data.tags["variant"] == "dcgan"
    for key in ("loss_d", "loss_g", "images_per_s"):
        history = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == [1, 2], key
    assert client.get_metric_history(run_id, "images_per_s")[0].value > 0

    # the per-epoch grids went over HTTP into the server's artifact store
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    images = [a.path for a in client.list_artifacts(run_id, "images")]
    grids = sorted(
        p for p in images if Path(p).name.startswith("samples") and p.endswith(".png") and "compressed" not in p
    )
    assert len(grids) == 2, images
    local = client.download_artifacts(run_id, grids[0], str(prepared.root / "downloaded"))
    with Image.open(local) as img:
        assert img.format == "PNG" and min(img.size) > 16
    assert any(p.suffix == ".png" for p in (store / "artifacts").rglob("*"))


def _digests(root: Path, outs: list[str]) -> dict:
    files = [p for out in outs for p in ([root / out] if (root / out).is_file() else sorted((root / out).rglob("*")))]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


@pytest.mark.slow
def test_dvc_push_to_a_local_remote_then_pull_into_a_fresh_clone(tmp_path):
    work, remote, clone = tmp_path / "project", tmp_path / "remote", tmp_path / "clone"
    env = git_project(work, tiny_params())
    (work / "dvc.lock").unlink(missing_ok=True)  # the repository's lock describes the full run, not this one
    dvc = [sys.executable, "-m", "dvc"]
    run_cmd(dvc + ["repro", "train@tiny"], work, env)  # fetch, prepare, train
    run_cmd(dvc + ["remote", "add", "-d", "team", str(remote)], work, env)
    run_cmd(["git", "add", "dvc.lock", ".dvc/config"], work, env)
    run_cmd(["git", "commit", "-qm", "tiny run + team remote"], work, env)
    run_cmd(dvc + ["push"], work, env)

    outs = ["data/raw/digits", "data/processed/digits", "models/tiny/model.pt"]
    before = _digests(work, outs)
    assert "models/tiny/model.pt" in before and "data/processed/digits/images.npy" in before

    run_cmd(["git", "clone", "-q", str(work), str(clone)], tmp_path, env)
    assert not (clone / "models").exists() and not (clone / "data/processed").exists()
    # what was run and pushed (a bare `dvc pull` also asks for the stages never run here)
    run_cmd(dvc + ["pull", "--with-deps", "train@tiny"], clone, env)
    assert _digests(clone, outs) == before
    status = run_cmd(dvc + ["status", "prepare@digits"], clone, env)
    assert "up to date" in status
