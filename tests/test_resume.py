"""Interruption, resume and failures of `dcganlab train`: real SIGKILL / SIGTERM / SIGINT of a
subprocess, exact mid-epoch resume, NaN stops, discriminator collapse, tracking failures, secrets."""

import ast
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from conftest import prepare_project, tiny_params, train_through_a_lost_tracking_server, write_params

from dcganlab.core import paths

SRC = Path(__file__).resolve().parents[1] / "src"
TIMING = ["images_per_s", "train_s", "wall_s", "threads"]  # threads: the machine's load decides
EPOCHS, EVERY = 3, 2  # tiny: 96 training images / batch 16 = 6 steps per epoch, checkpoints every 2

# The real CLI in a subprocess; SLOW seconds of sleep before each step so the test can kill it
# between two checkpoints (the tiny GAN would otherwise finish before the first signal lands).
RUNNER = """
import os, sys, time
import dcganlab.training.loop as t
step, delay = t.train_step, float(os.environ.get("SLOW", "0"))
def slow_step(*args, **kwargs):
    time.sleep(delay)
    return step(*args, **kwargs)
t.train_step = slow_step
from dcganlab.cli import main
sys.argv[0] = "dcganlab"
main()
"""


def _project(root: Path, **overrides):
    raw = tiny_params(**{"experiments.tiny.epochs": EPOCHS, "train.checkpoint_every_steps": EVERY, **overrides})
    return prepare_project(root, raw)


def _start(root: Path, slow: float = 0.0) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(SLOW=str(slow), PYTHONPATH=os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, "train", "tiny", "-p", str(root / "params.yaml")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _position(root: Path) -> tuple[int, int]:
    """(epochs done, steps of the next epoch done) of the checkpoint on disk; (-1, 0) if none."""
    path = paths.state_dir(root, "tiny") / "checkpoint.pt"
    if not path.is_file():
        return (-1, 0)
    ckpt = torch.load(path, weights_only=True)  # atomic writes: never a partial file to read
    return (ckpt["epoch"], ckpt["step"])


def _run_until_past(root: Path, position: tuple[int, int], sig: int, mid_epoch: bool = False):
    """Start a slowed run, wait for a checkpoint past `position` (mid-epoch if asked), send `sig`."""
    proc = _start(root, slow=0.15)
    deadline = time.monotonic() + 180
    while not (_position(root) > position and (_position(root)[1] > 0 or not mid_epoch)):
        assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.communicate()}"
        assert time.monotonic() < deadline, "no new checkpoint within 180 s"
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def _run_id(root: Path) -> str:
    return json.loads((paths.state_dir(root, "tiny") / "mlflow_run.json").read_text())["run_id"]


def _client(root: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


def test_sigkill_sigterm_and_ctrl_c_then_resume_end_exactly_like_an_uninterrupted_run(tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    _project(straight)
    _project(broken)
    proc = _start(straight)
    assert proc.wait(timeout=300) == 0, proc.communicate()

    # SIGKILL right after a mid-epoch checkpoint: nothing can be cleaned up
    rc, _, _ = _run_until_past(broken, (-1, 0), signal.SIGKILL, mid_epoch=True)
    assert rc == -signal.SIGKILL
    killed_at = _position(broken)
    assert killed_at < (EPOCHS, 0)
    run_id = _run_id(broken)

    # SIGTERM, then Ctrl-C (SIGINT): each finishes its step, checkpoints, prints one line, exits 128+sig
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        before = _position(broken)
        rc, out, err = _run_until_past(broken, before, sig)
        assert rc == code
        assert "resuming at" in out
        assert err.splitlines() == [err.strip()] and err.startswith(f"tiny: stopped by {sig.name}; checkpoint")
        assert "Traceback" not in err
        assert before < _position(broken) < (EPOCHS, 0)
        run = _client(broken).get_run(run_id)
        assert run.info.status == "KILLED"

    proc = _start(broken)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert _position(broken) == (EPOCHS, 0)

    # same weights, same per-epoch metrics
    for key in ("state_dict", "discriminator"):
        a = torch.load(paths.model_path(straight, "tiny"), weights_only=True)[key]
        b = torch.load(paths.model_path(broken, "tiny"), weights_only=True)[key]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), key
    la, lb = (pd.read_csv(paths.report_dir(root, "tiny") / "losses.csv") for root in (straight, broken))
    assert list(la["epoch"]) == list(range(1, EPOCHS + 1))
    pd.testing.assert_frame_equal(la.drop(columns=TIMING), lb.drop(columns=TIMING), check_exact=True)
    assert (lb["d_collapse"] == 0).all()

    # one MLflow run, reopened by every rerun; each epoch's metrics logged exactly once
    client = _client(broken)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_id for r in runs] == [run_id] and runs[0].info.status == "FINISHED"
    history = client.get_metric_history(run_id, "loss_d")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
    straight_history = _client(straight).get_metric_history(_run_id(straight), "loss_d")
    assert sorted((m.step, m.value) for m in history) == sorted((m.step, m.value) for m in straight_history)


def test_sigterm_mid_epoch_then_resume_is_exact_in_process(tmp_path, monkeypatch):
    import dcganlab.training.loop as t

    straight, broken = _project(tmp_path / "straight"), _project(tmp_path / "broken")
    t.train(straight, "tiny", progress=False)
    calls, step = [0], t.train_step

    def sigterm_at_9(*args, **kwargs):  # a real signal during the 9th update (epoch 2, step 3)
        calls[0] += 1
        if calls[0] == 9:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(*args, **kwargs)

    def connect_then_sigterm(params):  # a signal while starting up, before the first step
        os.kill(os.getpid(), signal.SIGTERM)
        return connect(params)

    import dcganlab.training.run_log as run_log

    connect = run_log.connect
    monkeypatch.setattr(run_log, "connect", connect_then_sigterm)
    with pytest.raises(t.Interrupted) as err:
        t.train(broken, "tiny", progress=False)
    assert "checkpoint (the start)" in str(err.value) and _position(broken.root) == (0, 0)
    run_id = _run_id(broken.root)
    monkeypatch.setattr(run_log, "connect", connect)

    monkeypatch.setattr(t, "train_step", sigterm_at_9)
    with pytest.raises(t.Interrupted) as err:
        t.train(broken, "tiny", progress=False)
    assert err.value.exit_code == 143 and "checkpoint (epoch 2, step 3/6)" in str(err.value)
    assert _position(broken.root) == (1, 3)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    monkeypatch.setattr(t, "train_step", step)
    t.train(broken, "tiny", progress=False)
    runs = _client(broken.root).search_runs([_client(broken.root).get_run(run_id).info.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    a, b = (torch.load(paths.model_path(p.root, "tiny"), weights_only=True) for p in (straight, broken))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    la, lb = (
        pd.read_csv(paths.report_dir(p.root, "tiny") / "losses.csv").drop(columns=TIMING) for p in (straight, broken)
    )
    pd.testing.assert_frame_equal(la, lb, check_exact=True)


def test_epochs_checkpointed_but_not_logged_are_sent_once_on_rerun(tmp_path, monkeypatch):
    def checkpointed_first():  # the checkpoint came before the failed logging
        assert _position(tmp_path) == (2, 0)

    train_through_a_lost_tracking_server(_project(tmp_path), monkeypatch, checkpointed_first)
    history = _client(tmp_path).get_metric_history(_run_id(tmp_path), "loss_d")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))


def test_a_nan_stops_the_run_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import dcganlab.training.loop as t

    p = _project(tmp_path)
    calls, step = [0], t.train_step

    def poisoned(nets, *args, **kwargs):  # the 9th update (epoch 2, step 3) sees NaN weights
        calls[0] += 1
        if calls[0] == 9:
            with torch.no_grad():
                next(nets.G.parameters()).fill_(float("nan"))
        return step(nets, *args, **kwargs)

    monkeypatch.setattr(t, "train_step", poisoned)
    with pytest.raises(t.Diverged) as err:
        t.train(p, "tiny", progress=False)
    message = str(err.value)
    assert "non-finite loss at epoch 2, step 3/6 (global step 9" in message
    assert "last good checkpoint (epoch 2, step 2/6) kept" in message and "\n" not in message
    ckpt = torch.load(paths.state_dir(tmp_path, "tiny") / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 2)
    assert all(torch.isfinite(v).all() for net in ("G", "D") for v in ckpt[net].values() if v.is_floating_point())
    assert not (paths.state_dir(tmp_path, "tiny") / "generators/epoch_0002.pt").exists()
    assert not paths.model_path(tmp_path, "tiny").exists()
    run = _client(tmp_path).get_run(_run_id(tmp_path))
    assert run.info.status == "FAILED" and "global step 9" in run.data.tags["failure"]


def test_a_collapsed_discriminator_is_flagged_in_the_log_and_in_mlflow(tmp_path, capsys):
    from dcganlab.training.loop import train

    # thresholds every step meets: D "wins" from the first step on
    p = _project(
        tmp_path,
        **{
            "experiments.tiny.epochs": 1,
            "train.collapse_real": 0.0,
            "train.collapse_fake": 1.0,
            "train.collapse_steps": 4,
        },
    )
    train(p, "tiny", progress=False)
    err = capsys.readouterr().err
    assert "tiny: warning: discriminator collapse in epoch 1" in err and "6 consecutive steps" in err
    run = _client(tmp_path).get_run(_run_id(tmp_path))
    assert run.data.tags["d_collapse"] == "true" and run.data.metrics["d_collapse"] == 1.0
    assert pd.read_csv(paths.report_dir(tmp_path, "tiny") / "losses.csv")["d_collapse"].tolist() == [1.0]


def test_a_rerun_after_complete_training_rewrites_outputs_and_logs_nothing_twice(tmp_path, capsys):
    from dcganlab.training.loop import train

    p = _project(tmp_path, **{"experiments.tiny.epochs": 1, "train.log_model": True})
    train(p, "tiny", progress=False)
    model = paths.model_path(tmp_path, "tiny")
    first = torch.load(model, weights_only=True)["state_dict"]
    for output in (model, paths.report_dir(tmp_path, "tiny") / "losses.csv"):
        output.unlink()  # as `dvc repro` removes a stage's outputs before rerunning it
    train(p, "tiny", progress=False)
    assert "already trained" in capsys.readouterr().out
    again = torch.load(model, weights_only=True)["state_dict"]
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert (paths.report_dir(tmp_path, "tiny") / "losses.csv").is_file()
    client, run_id = _client(tmp_path), _run_id(tmp_path)
    experiment_id = client.get_run(run_id).info.experiment_id
    assert len(client.search_logged_models([experiment_id])) == 1
    for metric in ("loss_d", "train_images_per_s"):
        assert len(client.get_metric_history(run_id, metric)) == 1


def test_an_unreachable_tracking_server_is_a_fast_one_line_error_without_credentials(prepared):
    from typer.testing import CliRunner

    from dcganlab.cli import app

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    raw = tiny_params(**{"tracking.uri": f"http://alice:s3cret@127.0.0.1:{port}/?token=t0k3n"})
    write_params(prepared.root, raw)
    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["train", "tiny", "--params", str(prepared.root / "params.yaml")])
    assert time.monotonic() - t0 < 30
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "is not reachable" in result.output and f"127.0.0.1:{port}" in result.output
    assert "s3cret" not in result.output and "t0k3n" not in result.output
    assert not paths.state_dir(prepared.root, "tiny").exists()  # nothing trained, nothing written


def test_tracking_credentials_are_never_logged(prepared, monkeypatch, capsys):
    from dcganlab.core.tracking import redact_uri
    from dcganlab.training.loop import train

    assert (
        redact_uri("https://bob:pw1@mlflow.example:5000/?token=abc&x=1")
        == "https://***@mlflow.example:5000/?token=***&x=1"
    )
    assert redact_uri("http://h/api?access_token=abc&api_key=k") == "http://h/api?access_token=***&api_key=***"
    assert redact_uri("sqlite:///tmp/mlflow.db") == "sqlite:///tmp/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-9f8e7d")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-1a2b3c")
    train(prepared, "tiny", progress=False)
    run = _client(prepared.root).get_run(_run_id(prepared.root))
    logged = json.dumps([run.data.params, run.data.tags]) + "".join(capsys.readouterr())
    assert "pw-9f8e7d" not in logged and "tok-1a2b3c" not in logged


def test_every_torch_load_in_src_is_weights_only():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                safe = any(
                    k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in node.keywords
                )
                if not safe:
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == []
    # and the check sees the calls it should (an empty scan would pass vacuously)
    assert "weights_only=True" in (SRC / "dcganlab/core/files.py").read_text()
