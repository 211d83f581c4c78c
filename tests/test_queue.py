"""DVC experiments and MLflow: `dvc exp run --temp` and queued experiments (`dvc queue start -j 2`)
log to the launching project's store (or a server), one MLflow run per DVC experiment, tagged
with its name and baseline; a brand-new SQLite store survives parallel writers."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from conftest import git_project, prepare_project, run_cmd, tiny_params, write_params
from test_team import mlflow_server  # noqa: F401  (fixture: `mlflow server` on loopback)

from dcganlab.core import paths
from dcganlab.core.config import load_params
from dcganlab.core.tracking import belongs, dvc_tags, existing_run, project_root, training_run
from dcganlab.training.loop import train

SRC = Path(__file__).resolve().parents[1] / "src"
DVC = [sys.executable, "-m", "dvc"]


# ---------------------------------------------------------------- helpers
def _dvc_env(monkeypatch, name: str, rev: str = "b" * 40) -> None:
    monkeypatch.setenv("DVC_EXP_NAME", name)
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", rev)


def _runs(uri: str, **tags) -> list:
    """Runs of the store's `digits` experiment, newest first, with all of `tags`."""
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("digits")
    if exp is None:
        return []
    filters = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
    return client.search_runs([exp.experiment_id], filter_string=filters, order_by=["attributes.start_time DESC"])


def _steps(uri: str, run_id: str, key: str = "loss_d") -> list[int]:
    return sorted(m.step for m in mlflow.MlflowClient(uri).get_metric_history(run_id, key))


def _saved_id(root: Path) -> str:
    return json.loads((paths.state_dir(root, "tiny") / "mlflow_run.json").read_text())["run_id"]


# ---------------------------------------------------------------- the launching project
def test_project_root_is_the_project_itself_outside_dvc_executor_copies(tmp_path, monkeypatch):
    (tmp_path / ".dvc").mkdir()
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert project_root(tmp_path) == tmp_path.resolve()  # dvc repro, workspace dvc exp run
    (tmp_path / "sub").mkdir()
    assert project_root(tmp_path / "sub") == (tmp_path / "sub").resolve()
    monkeypatch.delenv("DVC_ROOT")
    assert project_root(tmp_path / "sub") == (tmp_path / "sub").resolve()  # plain CLI


@pytest.mark.parametrize("layout", ["standalone/tmpab12", "tmpcd34"])  # --temp, queued
@pytest.mark.parametrize("dvc_root", ["launching", "copy", "unset"])  # DVC 3 / an older DVC
def test_project_root_finds_the_launching_project_from_a_dvc_executor_copy(tmp_path, monkeypatch, layout, dvc_root):
    repo = tmp_path / "repo"
    copy = repo / ".dvc" / "tmp" / "exps" / layout
    (copy / ".dvc").mkdir(parents=True)
    (copy / "proj").mkdir()  # params.yaml in a subfolder of the repository
    if dvc_root == "unset":
        monkeypatch.delenv("DVC_ROOT", raising=False)
    else:
        monkeypatch.setenv("DVC_ROOT", str(repo if dvc_root == "launching" else copy))
    assert project_root(copy) == repo.resolve()
    assert project_root(copy / "proj") == (repo / "proj").resolve()


def test_dvc_tags_and_the_run_selection_rule(monkeypatch):
    for var in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(var, raising=False)
    assert dvc_tags() == {}
    assert belongs({}, {}) and belongs({"dvc_exp_name": "x", "dvc_exp_baseline_rev": "r"}, {})  # today's resume
    _dvc_env(monkeypatch, "x", "r")
    here = dvc_tags()
    assert here == {"dvc_exp_name": "x", "dvc_exp_baseline_rev": "r"}
    assert belongs({"dvc_exp_name": "x", "dvc_exp_baseline_rev": "r", "variant": "dcgan"}, here)
    assert not belongs({}, here)  # the baseline's run
    assert not belongs({"dvc_exp_name": "y", "dvc_exp_baseline_rev": "r"}, here)  # another experiment's
    assert not belongs({"dvc_exp_name": "x", "dvc_exp_baseline_rev": "s"}, here)  # same name, other baseline


def test_one_mlflow_run_per_dvc_experiment(tmp_path, monkeypatch):
    for var in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(var, raising=False)
    p = prepare_project(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    state = paths.state_dir(p.root, "tiny")
    train(p, "tiny", progress=False)
    base = _saved_id(p.root)

    # an experiment raising `epochs` resumes the baseline's checkpoint into a run of its own
    _dvc_env(monkeypatch, "exp-a")
    write_params(tmp_path, tiny_params(**{"experiments.tiny.epochs": 2}))
    p2 = load_params(tmp_path / "params.yaml")
    train(p2, "tiny", progress=False)
    run_a = _saved_id(p.root)
    assert run_a != base
    a = mlflow.MlflowClient(uri).get_run(run_a)
    assert a.data.tags["dvc_exp_name"] == "exp-a" and a.data.tags["dvc_exp_baseline_rev"] == "b" * 40
    assert a.data.tags["continued_from"] == base and a.data.params["experiment.epochs"] == "2"
    assert _steps(uri, run_a) == [1, 2]  # the history up to the checkpoint back-filled
    assert _steps(uri, base) == [1]  # the baseline's run untouched
    assert mlflow.MlflowClient(uri).get_run(base).data.params["experiment.epochs"] == "1"

    # the same experiment resumes into the same run (a rerun after SIGTERM)
    with training_run(p2, "tiny", "digits", "dcgan", state) as tracked:
        assert tracked.active_run().info.run_id == run_a
    with existing_run(p2, state) as tracked:
        assert tracked.active_run().info.run_id == run_a

    # another experiment whose training did not rerun (sample/evaluate only): its own run, made once
    _dvc_env(monkeypatch, "exp-b")
    with existing_run(p2, state) as tracked:
        run_b = tracked.active_run().info.run_id
        tracked.log_metric("fid", 1.0)
    with existing_run(p2, state) as tracked:
        assert tracked.active_run().info.run_id == run_b
    b = mlflow.MlflowClient(uri).get_run(run_b)
    assert run_b not in (base, run_a) and b.data.tags["dvc_exp_name"] == "exp-b"
    assert b.data.tags["continued_from"] == run_a and b.data.params == a.data.params
    assert "fid" not in mlflow.MlflowClient(uri).get_run(run_a).data.metrics
    assert len(_runs(uri, experiment="tiny")) == 3

    # outside any experiment: today's behaviour, the saved run
    for var in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(var)
    with existing_run(p2, state) as tracked:
        assert tracked.active_run().info.run_id == run_a


RACER = """
import sys, time
from pathlib import Path
from dcganlab.core.config import load_params
from dcganlab.core.tracking import connect, _dataset_experiment
p = load_params(Path(sys.argv[1]))
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # every process starts at the same moment
tracked = connect(p)
with tracked.start_run(experiment_id=_dataset_experiment(tracked, p, "digits")):
    for i in range(20):
        tracked.log_metric("x", i, step=i)
"""


@pytest.mark.slow
def test_parallel_stages_create_a_new_sqlite_store_safely(tmp_path):
    # without the lock, 3 processes starting together on a new mlflow.db failed in MLflow's
    # schema migration ("Online migration expected to match one row") in most tries
    write_params(tmp_path, tiny_params())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    start = time.time() + 10
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path / "params.yaml"), str(start)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    runs = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(runs) == 3 and all(
        len(mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_metric_history(r.info.run_id, "x")) == 20
        for r in runs
    )


# ---------------------------------------------------------------- the real dvc CLI
@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A committed tiny project after a full `dvc repro` (its MLflow run in its own mlflow.db)."""
    work = tmp_path_factory.mktemp("queue") / "project"
    env = git_project(work, tiny_params())
    for var in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_ROOT"):
        env.pop(var, None)
    (work / "dvc.lock").unlink(missing_ok=True)  # the repository's lock describes the full run, not this one
    run_cmd(DVC + ["repro", "-q"], work, env)
    run_cmd(["git", "add", "-A"], work, env)
    run_cmd(["git", "commit", "-qm", "baseline"], work, env)
    return work, env, _saved_id(work)


def _exp_show(work: Path, env) -> dict:
    """{experiment name: its reports/metrics.json data} from `dvc exp show --json`."""
    rows = json.loads(run_cmd(DVC + ["exp", "show", "--json"], work, env))
    return {
        e["name"]: e["revs"][0]["data"]["metrics"]["reports/metrics.json"]["data"]
        for row in rows
        for e in (row.get("experiments") or [])
    }


def _run_queue(work: Path, env, names: list[str]) -> None:
    """`dvc queue start -j 2`, wait (bounded) until `names` are done, stop the workers whatever happens."""
    try:
        run_cmd(DVC + ["queue", "start", "-j", "2"], work, env)
        deadline = time.monotonic() + 480
        while True:
            status = run_cmd(DVC + ["queue", "status"], work, env)
            rows = {
                line.split()[1]: line.split()[-1]
                for line in status.splitlines()
                if len(line.split()) > 2 and line.split()[1] in names
            }
            if any(s == "Failed" for s in rows.values()):
                logs = "\n".join(run_cmd(DVC + ["queue", "logs", n], work, env)[-3000:] for n in names)
                pytest.fail(f"a queued experiment failed:\n{status}\n{logs}")
            if len(rows) == len(names) and all(s == "Success" for s in rows.values()):
                return
            assert time.monotonic() < deadline, f"queue did not finish:\n{status}"
            time.sleep(3)
    finally:
        subprocess.run(DVC + ["queue", "stop", "--kill"], cwd=work, env=env, capture_output=True, timeout=120)
        deadline = time.monotonic() + 60  # idle workers keep their env: none may serve the next test
        while time.monotonic() < deadline:
            status = subprocess.run(DVC + ["queue", "status"], cwd=work, env=env, capture_output=True, text=True)
            if "0 active, 0 idle" in status.stdout:
                break
            time.sleep(2)


def _check_experiment_runs(uri: str, names: list[str], shown: dict, base: str, rev: str) -> None:
    for name in names:
        runs = _runs(uri, dvc_exp_name=name)
        assert len(runs) == 1, name
        run = runs[0]
        assert run.info.status == "FINISHED" and run.data.tags["dvc_exp_baseline_rev"] == rev
        assert run.data.tags["experiment"] == "tiny" and run.data.tags["continued_from"] == base
        # the MLflow run and the `dvc exp show` row hold the same evaluation
        assert run.data.metrics["fid"] == pytest.approx(shown[name]["tiny"]["fid"], rel=1e-6)
        assert str(shown[name]["tiny"]["n_fake"]) == run.data.tags["eval.n_fake"]


@pytest.mark.slow
def test_temp_experiment_logs_into_the_projects_store_in_a_run_of_its_own(baseline):
    work, env, base = baseline
    uri = f"sqlite:///{work / 'mlflow.db'}"
    fid_before = mlflow.MlflowClient(uri).get_run(base).data.metrics["fid"]
    run_cmd(
        DVC + ["exp", "run", "--temp", "-n", "t-epochs", "-S", "experiments.tiny.epochs=2", "train@tiny"], work, env
    )

    runs = _runs(uri, dvc_exp_name="t-epochs")
    assert len(runs) == 1
    run = runs[0]
    rev = run_cmd(["git", "rev-parse", "HEAD"], work, env).strip()
    assert run.data.tags["dvc_exp_baseline_rev"] == rev and run.data.tags["continued_from"] == base
    assert _steps(uri, run.info.run_id) == [1, 2] and run.data.params["experiment.epochs"] == "2"
    assert run.info.artifact_uri.startswith((work / "mlartifacts").resolve().as_uri())
    assert any((work / "mlartifacts" / run.info.run_id).rglob("*.png"))  # the epoch grids, in the project
    # the baseline's run is untouched
    assert _steps(uri, base) == [1] and len(mlflow.MlflowClient(uri).get_metric_history(base, "fid")) == 1
    assert mlflow.MlflowClient(uri).get_run(base).data.metrics["fid"] == fid_before
    assert mlflow.MlflowClient(uri).get_run(base).data.params["experiment.epochs"] == "1"


@pytest.mark.slow
def test_two_queued_experiments_in_parallel_on_sqlite(baseline):
    work, env, base = baseline
    uri = f"sqlite:///{work / 'mlflow.db'}"
    names = ["q-30", "q-32"]
    for name in names:  # evaluate + report rerun: both log into the project's store at once
        run_cmd(DVC + ["exp", "run", "--queue", "-n", name, "-S", f"evaluate.num_samples={name[2:]}"], work, env)
    _run_queue(work, env, names)

    shown = _exp_show(work, env)
    assert {shown[n]["tiny"]["n_fake"] for n in names} == {30, 32}
    rev = run_cmd(["git", "rev-parse", "HEAD"], work, env).strip()
    _check_experiment_runs(uri, names, shown, base, rev)
    assert len(mlflow.MlflowClient(uri).get_metric_history(base, "fid")) == 1  # the baseline's run untouched
    for name in names:
        logs = run_cmd(DVC + ["queue", "logs", name], work, env)
        assert "database is locked" not in logs and "Traceback" not in logs


@pytest.mark.slow
def test_two_queued_experiments_in_parallel_on_a_tracking_server(baseline, mlflow_server):  # noqa: F811
    work, env, base = baseline
    url, _ = mlflow_server
    local = f"sqlite:///{work / 'mlflow.db'}"
    before = len(_runs(local))
    names = ["s-26", "s-28"]
    for name in names:
        run_cmd(DVC + ["exp", "run", "--queue", "-n", name, "-S", f"evaluate.num_samples={name[2:]}"], work, env)
    # the workers (and so the stages) get the environment of `dvc queue start`
    _run_queue(work, {**env, "MLFLOW_TRACKING_URI": url}, names)

    shown = _exp_show(work, env)
    rev = run_cmd(["git", "rev-parse", "HEAD"], work, env).strip()
    _check_experiment_runs(url, names, shown, base, rev)  # the baseline's run is in another store: ids only
    assert len(_runs(local)) == before  # nothing went to the local store
