"""Faults around runs, locks and tracking state (issue #21, items 3, 4, 6): two processes on one
experiment, MLflow runs deleted in the UI, SIGKILL while evaluate or model logging talks to
MLflow, a tracking server lost mid-training; and the dataset input of every training run.
Real subprocesses, real signals, the real MLflow client and (for `dvc repro`) the real DVC."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import copy_project, prepare_project, tiny_params, train_through_a_lost_tracking_server

from dcganlab.core import paths

SRC = Path(__file__).resolve().parents[1] / "src"

# The real CLI in a subprocess, with the training step or one MLflow call replaced by `stall`,
# which writes $MARKER and waits there until the test kills the process.
RUNNER = """
import os, pathlib, sys, time
hook, marker = os.environ.get("HOOK", ""), pathlib.Path(os.environ.get("MARKER", "/dev/null"))
def stall(*args, **kwargs):
    marker.write_text(str(os.getpid()))
    time.sleep(600)
if hook == "train_step":
    import dcganlab.training.loop as t
    t.train_step = stall
elif hook == "log_metrics":
    import mlflow
    mlflow.log_metrics = stall
elif hook == "log_model_artifacts":
    import mlflow
    mlflow.MlflowClient.log_model_artifacts = stall
from dcganlab.cli import main
sys.argv[0] = "dcganlab"
main()
"""


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PYTHONPATH=os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]), **extra)
    return env


def _start(root: Path, *args: str, hook: str = "") -> tuple[subprocess.Popen, Path]:
    """`dcganlab <args> -p root/params.yaml` in a subprocess with `hook`; (process, its marker file)."""
    marker = root / f".marker-{hook or 'none'}-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, *args, "-p", str(root / "params.yaml")],
        env=_env(HOOK=hook, MARKER=str(marker)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, marker


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", RUNNER, *args, "-p", str(root / "params.yaml")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _wait_for(marker: Path, proc: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not marker.is_file():
        assert proc.poll() is None, f"exited before the fault point: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{marker.name} not reached in {seconds} s"
        time.sleep(0.05)


def _kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _client(root: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


def _run_id(root: Path) -> str:
    return json.loads((paths.state_dir(root, "tiny") / "mlflow_run.json").read_text())["run_id"]


def _runs(root: Path) -> list:
    client = _client(root)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def _with_extractor(p):
    from dcganlab.data.processed import load_processed
    from dcganlab.evaluation.extractor import train_extractor

    data = load_processed(paths.processed_dir(p.root, "digits"))
    train_extractor(data, p.extractor, p.seed, paths.extractor_path(p.root, "digits"), "digits")
    return p


# ---------------------------------------------------------------- item 3: one process per experiment
@pytest.mark.slow
def test_a_second_start_exits_1_naming_the_holder_and_a_killed_holders_lock_is_taken_over(tmp_path):
    p = prepare_project(tmp_path, tiny_params(**{"experiments.tiny.epochs": 3, "train.checkpoint_every_steps": 2}))
    first, marker = _start(tmp_path, "train", "tiny", hook="train_step")
    _wait_for(marker, first)  # at its first step: the lock is held, the MLflow run is open

    for stage in ("train", "evaluate"):
        second = _cli(tmp_path, stage, "tiny")
        assert second.returncode == 1, second
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr, second.stderr
        assert second.stderr.startswith("error: tiny is in use by `dcganlab train` "), second.stderr
        assert f"(PID {first.pid} on host {socket.gethostname()}, since " in second.stderr
    assert len(_runs(tmp_path)) == 1  # the refused start made no run

    _kill9(first)  # the kernel drops its lock; the lock file (with its PID) stays behind
    assert str(first.pid) in paths.model_dir(tmp_path, "tiny").joinpath("experiment.lock").read_text()
    again = _cli(tmp_path, "train", "tiny")
    assert again.returncode == 0, again.stderr
    assert "resuming at" in again.stdout
    runs = _runs(tmp_path)
    assert [r.info.run_id for r in runs] == [_run_id(p.root)] and runs[0].info.status == "FINISHED"
    steps = [m.step for m in _client(tmp_path).get_metric_history(_run_id(p.root), "loss_d")]
    assert sorted(steps) == [1, 2, 3]


@pytest.mark.slow
def test_under_torchrun_rank_0_takes_the_lock_and_a_refusal_stops_every_rank(prepared):
    from test_distributed import _torchrun

    from dcganlab.core.locks import experiment_lock

    with experiment_lock(prepared.root, "tiny", "train"):  # this test process is the holder
        t0 = time.monotonic()
        result = _torchrun(prepared.root)
        assert time.monotonic() - t0 < 120  # no rank left waiting for rank 0
    assert result.returncode != 0
    assert f"error: tiny is in use by `dcganlab train` (PID {os.getpid()} on host" in result.stderr
    assert result.stderr.count("is in use by") == 1  # one lock per training: rank 1 never asked
    assert not paths.state_dir(prepared.root, "tiny").exists() and not (prepared.root / "mlflow.db").exists()


@pytest.mark.slow
def test_a_dcganlab_train_beside_dvc_repro_refuses_the_repro(dvc_baseline, tmp_path):
    """DVC's own lock (.dvc/tmp/rwlock) only covers DVC: the experiment lock stops the repro's stage.
    The same project also shows that the run's dataset digest is DVC's hash of the data."""
    base, env, _ = dvc_baseline
    work = copy_project(base, tmp_path / "project")
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    outs = lock["stages"]["prepare@digits"]["outs"]
    assert [o["path"] for o in outs] == ["data/processed/digits"]
    inputs = _client(base).get_run(_run_id(work)).inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest, i.dataset.source) for i in inputs] == [
        ("digits", outs[0]["md5"], json.dumps({"uri": "data/processed/digits"}))
    ]

    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["experiments"]["tiny"]["epochs"] = 3  # the train stage changed: repro must rerun it
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    direct, marker = _start(work, "train", "tiny", hook="train_step")
    try:
        _wait_for(marker, direct)
        repro = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", "train@tiny"],
            cwd=work,
            env=_env(PATH=env["PATH"]),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert repro.returncode != 0, repro.stdout
        assert f"tiny is in use by `dcganlab train` (PID {direct.pid} on host" in repro.stdout + repro.stderr
    finally:
        _kill9(direct)


# ---------------------------------------------------------------- item 4: runs deleted in the UI
def test_a_run_deleted_in_the_ui_is_continued_in_a_new_run_by_train_and_by_evaluate(tmp_path, capsys):
    from dcganlab.core.config import load_params
    from dcganlab.stages.evaluate import run as evaluate
    from dcganlab.training.loop import train
    from dcganlab.training.resilience import image_steps

    p = _with_extractor(prepare_project(tmp_path))
    train(p, "tiny", progress=False)
    client, old = _client(tmp_path), _run_id(tmp_path)
    client.delete_run(old)

    # raised epochs: the training resumes its checkpoint in a new run that carries the whole history
    raw = tiny_params(**{"experiments.tiny.epochs": 2})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    p = load_params(tmp_path / "params.yaml")
    train(p, "tiny", progress=False)
    err = capsys.readouterr().err
    assert f"tiny: MLflow run {old} was deleted; logging to a new run tagged replaces_deleted_run={old}\n" in err
    new = _run_id(tmp_path)
    run = client.get_run(new)
    assert new != old and run.info.status == "FINISHED"
    assert run.data.tags["replaces_deleted_run"] == old and run.data.tags["continued_from"] == old
    assert sorted(m.step for m in client.get_metric_history(new, "loss_d")) == [1, 2]
    assert image_steps(client, new, "samples") == {1, 2}
    assert run.data.params["experiment.z_dim"] == "8" and len(run.inputs.dataset_inputs) == 1

    # deleted again, after the training finished: evaluate logs into one new run, reused by the next evaluate
    client.delete_run(new)
    evaluate(p, "tiny")
    assert f"tiny: MLflow run {new} was deleted; logging to a new run tagged replaces_deleted_run={new}\n" in (
        capsys.readouterr().err
    )
    evaluate(p, "tiny")
    assert "was deleted" not in capsys.readouterr().err
    live = _runs(tmp_path)
    assert len(live) == 1 and live[0].info.run_id not in (old, new)
    assert live[0].data.tags["replaces_deleted_run"] == new and live[0].info.status == "FINISHED"
    assert "fid" in live[0].data.metrics and live[0].data.params == client.get_run(new).data.params


# ---------------------------------------------------------------- item 6: state a fault left behind
def test_resume_after_a_lost_tracking_server_backfills_grids_and_logs_the_dataset_once(tmp_path, monkeypatch):
    from dcganlab.core.tracking import dvc_dir_md5
    from dcganlab.training.resilience import image_steps

    def grid_on_disk():  # the epoch's grid was saved before its logging failed
        assert (paths.state_dir(tmp_path, "tiny") / "grids" / "epoch_0002.png").is_file()

    p = prepare_project(tmp_path, tiny_params(**{"experiments.tiny.epochs": 3}))
    train_through_a_lost_tracking_server(p, monkeypatch, grid_on_disk)

    client, run_id = _client(tmp_path), _run_id(tmp_path)
    assert image_steps(client, run_id, "samples") == {1, 2, 3}
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss_d")) == [1, 2, 3]
    inputs = client.get_run(run_id).inputs.dataset_inputs  # logged by the first start only
    assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [
        ("digits", dvc_dir_md5(paths.processed_dir(tmp_path, "digits")))
    ]
    assert [t.value for t in inputs[0].tags if t.key == "mlflow.data.context"] == ["training"]


@pytest.mark.slow
def test_sigkill_in_evaluates_mlflow_phase_leaves_no_running_run_after_the_next_start(tmp_path):
    from dcganlab.training.loop import train

    p = _with_extractor(prepare_project(tmp_path))
    train(p, "tiny", progress=False)
    proc, marker = _start(tmp_path, "evaluate", "tiny", hook="log_metrics")
    _wait_for(marker, proc)
    _kill9(proc)
    client, run_id = _client(tmp_path), _run_id(p.root)
    assert client.get_run(run_id).info.status == "RUNNING"  # what SIGKILL leaves
    again = _cli(tmp_path, "train", "tiny")  # e.g. `dvc repro` after a code change: nothing to train
    assert again.returncode == 0 and "already trained" in again.stdout, again.stderr
    assert client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_sigkill_while_the_model_is_logged_leaves_no_pending_model_after_the_rerun(tmp_path):
    p = prepare_project(tmp_path, tiny_params(**{"train.log_model": True}))
    proc, marker = _start(tmp_path, "train", "tiny", hook="log_model_artifacts")
    _wait_for(marker, proc, seconds=300)
    _kill9(proc)
    client, run_id = _client(tmp_path), _run_id(p.root)
    experiment_id = client.get_run(run_id).info.experiment_id
    assert [m.status.name for m in client.search_logged_models([experiment_id])] == ["PENDING"]
    again = _cli(tmp_path, "train", "tiny")
    assert again.returncode == 0, again.stderr
    models = client.search_logged_models([experiment_id])
    assert [(m.status.name, m.source_run_id) for m in models] == [("READY", run_id)]
    versions = client.search_model_versions("name='tiny'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", run_id)]
    assert client.get_run(run_id).info.status == "FINISHED"
