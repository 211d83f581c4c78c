"""MLflow tracking: one experiment per dataset, one run per training experiment.

Default store: SQLite `mlflow.db` at the project root with artifacts in `mlartifacts/`;
`tracking.uri` in params.yaml or $MLFLOW_TRACKING_URI points at a server instead. Each DVC
stage is its own process, so sample/evaluate reopen the training run by its id
(models/<exp>/train/mlflow_run.json) instead of nesting.

DVC experiments (`dvc exp run`, `--temp`, `--queue`): runs go to the launching project's store
(`project_root`), never to the temporary copy DVC deletes afterwards; each run is tagged with
its DVC experiment (`dvc_tags`) and belongs to that one experiment only (`belongs`).

Faults: a run deleted in the UI is continued in a new run tagged `replaces_deleted_run`; what a
SIGKILL left open (a RUNNING run, a PENDING logged model) is ended at the next start (`settle`,
under the experiment's lock, locks.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dcganlab.core import paths
from dcganlab.core.atomic import write_json
from dcganlab.core.config import Params
from dcganlab.core.errors import UserError
from dcganlab.core.files import MLFLOW_DB, check_sqlite, read_json

try:
    import fcntl
except ImportError:  # Windows: no parallel-store lock
    fcntl = None

# No usage telemetry leaves this machine (MLflow 3 sends it by default).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# no tqdm bars of artifact downloads in DVC logs (sample, evaluate and serving load models)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


# Read once at start-up: mlflow.set_tracking_uri() writes this variable itself.
_ENV_URI = os.environ.get("MLFLOW_TRACKING_URI", "")


def _executor_base(path: Path) -> Path | None:
    """The repository whose `.dvc/tmp/exps/` holds `path` (a DVC executor copy), else None."""
    parts = path.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return None


def project_root(root: Path) -> Path:
    """The project whose mlflow.db and mlartifacts/ hold the runs of the project at `root`.

    `dvc exp run --temp` and queued experiments run their stages in a copy of the repository
    under `<repo>/.dvc/tmp/exps/[standalone/]<tmp>/`, deleted afterwards. The copy is the
    nearest folder above `root` holding a `.dvc/` folder, and lies inside `.dvc/tmp/exps/`; the
    launching repository is $DVC_ROOT (DVC 3 sets it to the launching repository, not the copy,
    for experiment stages) or, failing that, the folder above `.dvc/tmp/exps/`. The result keeps
    `root`'s place inside the repository (a project in a subfolder of its git repository).
    Anything else (a plain project, a workspace `dvc exp run`, `dvc repro`) is `root` itself."""
    root = root.resolve()
    copy = next((p for p in (root, *root.parents) if (p / ".dvc").is_dir()), None)
    base = _executor_base(copy) if copy is not None else None
    if base is None:
        return root
    dvc_root = Path(os.environ.get("DVC_ROOT") or copy).resolve()
    if _executor_base(dvc_root) is None:  # DVC_ROOT names the launching repository (DVC 3)
        base = dvc_root
    return base / root.relative_to(copy)


def tracking_uri(params: Params) -> str:
    if params.tracking.uri:
        return params.tracking.uri
    if _ENV_URI:
        return _ENV_URI
    return f"sqlite:///{(project_root(params.root) / 'mlflow.db').as_posix()}"


DVC_TAGS = {"dvc_exp_name": "DVC_EXP_NAME", "dvc_exp_baseline_rev": "DVC_EXP_BASELINE_REV"}


def dvc_tags() -> dict:
    """This process's DVC experiment as MLflow tags (DVC sets both variables for the stages of
    every `dvc exp run`: workspace, --temp, queued); {} outside an experiment (`dvc repro`, CLI)."""
    tags = {tag: os.environ.get(var, "") for tag, var in DVC_TAGS.items()}
    return tags if tags["dvc_exp_name"] else {}


def belongs(run_tags: dict, dvc: dict) -> bool:
    """Whether a saved run may be reopened: always outside a DVC experiment (today's resume);
    inside one only if the run was made by this same experiment (name and baseline), so an
    experiment never writes into its baseline's run or another experiment's."""
    return not dvc or all(run_tags.get(tag) == value for tag, value in dvc.items())


_SECRET_QUERY = re.compile(r"([?&][^=&#]*(?:token|password|passwd|secret|key|auth|signature)[^=&#]*=)[^&#]*", re.I)


def redact_uri(text: str) -> str:
    """`text` with the credentials of any URI in it masked: user:password@ and secret query values
    (token=, password=, ...). For everything printed or logged that may hold a tracking URI."""
    text = re.sub(r"(\w[\w+.-]*://)[^/@\s]*@", r"\1***@", text)
    return _SECRET_QUERY.sub(r"\1***", text)


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """One process at a time creates an SQLite store's tables and experiments: two queued
    experiments (`dvc queue start -j 2`) creating a new mlflow.db at once failed in MLflow's
    schema migration. A lock on the database's folder (nothing left behind); writes after that
    wait on SQLite's own busy timeout (MLflow sets 20 s)."""
    if not uri.startswith("sqlite:///") or fcntl is None:
        yield
        return
    folder = Path(uri.removeprefix("sqlite:///").split("?")[0]).parent
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def connect(params: Params):
    """Set the tracking URI and check the store answers, before any training starts."""
    import mlflow

    uri = tracking_uri(params)
    if redact_uri(uri) != uri:  # MLflow prints "View run ... at: <uri>" for servers: not with credentials in it
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:"):
        check_sqlite(Path(uri.removeprefix("sqlite:///").split("?")[0]), "MLflow store", MLFLOW_DB)
        with _store_lock(uri):  # creates the tables of a new store
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        try:
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
        except Exception as exc:
            raise UserError(
                f"MLflow tracking server {redact_uri(uri)} is not reachable ({type(exc).__name__}); "
                f"start it or set tracking.uri"
            ) from None
    return mlflow


# An experiment's kind for the MLflow UI: "custom_model_development" is the value its front end
# writes when a user picks "Machine learning" (vs "GenAI apps & agents", `genai_development`): our
# experiments hold training runs, not traces. MLflow 3.17's UI picks its view from a sidebar switch
# (GenAI unless changed) rather than from this tag: docs/mlflow.md gives the link that opens runs.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def _experiment_id(mlflow, params: Params, name: str) -> str:
    key, kind = EXPERIMENT_KIND
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(key) != kind:  # created by an older version (untagged)
            mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, key, kind)
        return exp.experiment_id
    artifacts = None
    if tracking_uri(params).startswith("sqlite:"):
        artifacts = (project_root(params.root) / "mlartifacts").as_uri()
    return mlflow.create_experiment(name, artifact_location=artifacts, tags={key: kind})


def ui_command(params: Params, host: str, port: int) -> tuple[list[str] | None, str]:
    """(`mlflow server` command line for the project's SQLite store, or None when a tracking
    server is configured; the UI's base URL)."""
    uri = tracking_uri(params)
    if uri.startswith(("http://", "https://")):
        return None, uri.rstrip("/")
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
    ]
    return command, f"http://{host}:{port}"


def ui_links(params: Params, base: str) -> list[str]:
    """One line per MLflow experiment of the store: its name and the link that opens it on its
    training runs (`?workflowType=machine_learning`: MLflow 3.17's UI ignores the experiment's
    `mlflow.experimentKind` tag and opens on GenAI traces unless told)."""
    import mlflow

    connect(params)
    experiments = sorted((e for e in mlflow.search_experiments() if e.name != "Default"), key=lambda e: e.name)
    if not experiments:
        return [f"MLflow UI: {redact_uri(base)}/ (no experiments yet: run `dvc repro` or `dcganlab train`)"]
    return [
        f"{e.name}: {redact_uri(base)}/#/experiments/{e.experiment_id}?workflowType=machine_learning"
        for e in experiments
    ]


# The version tag of a registered per-epoch generator (quality's `champion`): its epoch. Versions
# without it are the run's final generator, the one `evaluate` measures.
EPOCH_TAG = "epoch"


def model_versions(mlflow, run_id: str) -> list:
    """The Model Registry versions of a training run's generators: the final one (once the training
    finished) and, if it is another, the best epoch's (`EPOCH_TAG`)."""
    return mlflow.MlflowClient().search_model_versions(f"run_id='{run_id}'")


def final_versions(mlflow, run_id: str) -> list:
    """The registry versions of a training run's final generator (one, or two when quality
    re-registered it to stay `latest`)."""
    return [v for v in model_versions(mlflow, run_id) if EPOCH_TAG not in (v.tags or {})]


def tag_model_versions(mlflow, tags: dict) -> None:
    """Tag the registry versions of the active run's final generator, so the registry shows each
    version's quality (evaluate: FID, KID, extractor)."""
    client = mlflow.MlflowClient()
    for version in final_versions(mlflow, mlflow.active_run().info.run_id):
        for key, value in tags.items():
            client.set_model_version_tag(version.name, version.version, key, str(value))


def _saved_run(mlflow, state: Path) -> tuple:
    """(the run id in the state dir or None, that run if the current store has it or None)."""
    if not paths.run_file(state).is_file():
        return None, None
    run_id = read_json(paths.run_file(state), "MLflow run id", "delete it (training then starts a new MLflow run)")[
        "run_id"
    ]
    try:
        return run_id, mlflow.get_run(run_id)
    except Exception:
        return run_id, None  # a different tracking store


def saved_run_id(mlflow, state: Path) -> str | None:
    """The experiment's run id from its state dir, if that run exists in the current store."""
    run_id, run = _saved_run(mlflow, state)
    return run_id if run is not None else None


def _dataset_experiment(mlflow, params: Params, dataset: str) -> str:
    """The dataset's MLflow experiment, made once even when parallel stages ask at the same time."""
    with _store_lock(tracking_uri(params)):
        try:
            return _experiment_id(mlflow, params, dataset)
        except mlflow.exceptions.MlflowException:  # made by a parallel stage (on a server) since we looked
            return _experiment_id(mlflow, params, dataset)


def _run_tags(params: Params, experiment: str, dataset: str, variant: str, previous: str | None) -> dict:
    tags = {
        "variant": variant,
        "dataset": dataset,
        "experiment": experiment,
        "git_commit": git_commit(params.root),
        **dvc_tags(),
    }
    if previous:  # the run this one continues: the checkpoint's (training) or the model's (other stages)
        tags["continued_from"] = previous
    return tags


@contextmanager
def training_run(params: Params, experiment: str, dataset: str, variant: str, state: Path) -> Iterator:
    """Start the experiment's run, or continue it when the state dir holds its id (resume) and
    the run `belongs` here. A DVC experiment resuming its baseline's checkpoint (raised `epochs`)
    starts its own run instead, tagged `continued_from` (the training loop back-fills the history)."""
    mlflow = connect(params)
    run_id, saved = _saved_run(mlflow, state)
    replaces = {}
    if _deleted(saved) and belongs(saved.data.tags, dvc_tags()):  # deleted in the UI: continue in another run
        _say_replaced(experiment, run_id)
        saved, replaces = _replacement(mlflow, saved), {REPLACES: run_id}
    if saved is not None and belongs(saved.data.tags, dvc_tags()):
        settle(mlflow, saved, state)
        run = mlflow.start_run(run_id=saved.info.run_id)
    else:
        tags = {**_run_tags(params, experiment, dataset, variant, run_id), **replaces}
        run = mlflow.start_run(
            experiment_id=_dataset_experiment(mlflow, params, dataset), run_name=experiment, tags=tags
        )
    if run.info.run_id != run_id:
        write_json(paths.run_file(state), {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id})
    try:
        yield mlflow
    except BaseException as exc:
        # Ctrl-C / SIGTERM (train.Interrupted): KILLED, and a rerun reopens this same run;
        # anything else (a non-finite loss, a bug): FAILED
        killed = isinstance(exc, KeyboardInterrupt) or getattr(exc, "interrupted", False)
        try:
            if not killed:  # why it failed, on the run itself (e.g. the step of a non-finite loss)
                mlflow.set_tag("failure", redact_uri(f"{type(exc).__name__}: {exc}")[:1000])
            mlflow.end_run(status="KILLED" if killed else "FAILED")
        except Exception:
            pass  # the tracking store may be what failed: report the original error, not this one
        raise
    else:
        mlflow.end_run(status="FINISHED")


def _experiment_run(mlflow, params: Params, state: Path, run_id: str | None, saved) -> str:
    """This DVC experiment's run of the training experiment whose state dir is `state`: the one
    with its tags, else a new one (params copied from the run the model came from)."""
    name = next((n for n in params.experiments if paths.state_dir(params.root, n) == state), state.parent.name)
    exp_id = _dataset_experiment(mlflow, params, params.experiment(name).dataset)
    dvc = dvc_tags()
    for run in mlflow.search_runs(
        [exp_id],
        filter_string=f"tags.experiment = '{name}'",
        output_format="list",
        order_by=["attributes.start_time DESC"],
    ):
        if all(run.data.tags.get(tag) == value for tag, value in dvc.items()):
            return run.info.run_id
    return _copied_run(mlflow, params, name, exp_id, run_id, saved)


def _copied_run(mlflow, params: Params, name: str, exp_id: str, run_id: str | None, saved, **tags) -> str:
    """A new run of training experiment `name`, tagged `continued_from` `run_id`, with the params
    of `saved` (the run the model came from) when there is one."""
    from mlflow.entities import Param

    e = params.experiment(name)
    client = mlflow.MlflowClient()
    run = client.create_run(
        exp_id, tags={**_run_tags(params, name, e.dataset, e.variant, run_id), **tags}, run_name=name
    )
    copied = [Param(k, v) for k, v in (saved.data.params if saved is not None else {}).items()]
    for i in range(0, len(copied), 100):  # MLflow's log_batch limit
        client.log_batch(run.info.run_id, params=copied[i : i + 100])
    return run.info.run_id


@contextmanager
def existing_run(params: Params, state: Path) -> Iterator:
    """Reopen the training run of an experiment (sample / evaluate / quality stages); None if
    there is none. In a DVC experiment whose training did not rerun, the state dir names the
    baseline's run: the stage logs into this DVC experiment's own run instead (`_experiment_run`)."""
    mlflow = connect(params)
    run_id, saved = _saved_run(mlflow, state)
    if saved is not None and belongs(saved.data.tags, dvc_tags()):
        chosen = _undeleted(mlflow, params, state, saved) if _deleted(saved) else run_id
    else:
        chosen = _experiment_run(mlflow, params, state, run_id, saved) if dvc_tags() else None
    if chosen is None:
        yield None
        return
    settle(mlflow, mlflow.get_run(chosen), state)
    with mlflow.start_run(run_id=chosen):
        yield mlflow


# ---------------------------------------------------------------- runs deleted in the MLflow UI
REPLACES = "replaces_deleted_run"  # on the run that continues a deleted one (with `continued_from`)


def _deleted(run) -> bool:
    """A run deleted in the MLflow UI (or `mlflow runs delete`): MLflow refuses to start it again."""
    return run is not None and run.info.lifecycle_stage == "deleted"


def _say_replaced(experiment: str, run_id: str) -> None:
    print(
        f"{experiment}: MLflow run {run_id} was deleted; logging to a new run tagged {REPLACES}={run_id}",
        file=sys.stderr,
    )


def _replacement(mlflow, deleted):
    """The run that an earlier train or evaluate already made in place of `deleted`, or None."""
    found = mlflow.search_runs(
        [deleted.info.experiment_id],
        filter_string=f"tags.{REPLACES} = '{deleted.info.run_id}'",
        output_format="list",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return found[0] if found else None


def _undeleted(mlflow, params: Params, state: Path, deleted) -> str:
    """The run a stage after training logs into when the training's run was deleted: its
    replacement (made by an earlier stage or a resumed training), else a new one with its params.
    The state dir keeps naming the deleted run (it is the train stage's DVC output); a later
    training finds the replacement by its tag."""
    found = _replacement(mlflow, deleted)
    if found is not None:
        return found.info.run_id
    name = deleted.data.tags.get("experiment") or state.parent.name
    _say_replaced(name, deleted.info.run_id)
    return _copied_run(
        mlflow,
        params,
        name,
        deleted.info.experiment_id,
        deleted.info.run_id,
        deleted,
        **{REPLACES: deleted.info.run_id},
    )


# ---------------------------------------------------------------- what a killed process left behind
def settle(mlflow, run, state: Path) -> None:
    """End what a process killed with SIGKILL left open in the experiment's run. Called under the
    experiment's lock (`locks`), so no live process is using the run: a RUNNING run is ended
    FINISHED if its training had finished (finished.json names it: e.g. evaluate was killed
    while logging), else KILLED (a killed training, which its rerun reopens); a logged model
    still PENDING (killed while `log_model` uploaded it) is deleted: the rerun logs it again."""

    client, run_id = mlflow.MlflowClient(), run.info.run_id
    if run.info.status == "RUNNING":
        finished = paths.finished_path(state)
        done = finished.is_file() and json.loads(finished.read_text()).get("run_id") == run_id
        client.set_terminated(run_id, "FINISHED" if done else "KILLED")
    for model in client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"):
        if model.status == "PENDING":
            client.delete_logged_model(model.model_id)


def settle_saved(params: Params, state: Path) -> None:
    """`settle` the experiment's saved run, for a start that otherwise leaves MLflow alone (a
    rerun after a complete training); a tracking server that does not answer is left for later."""
    try:
        mlflow = connect(params)
    except UserError:
        return
    _, saved = _saved_run(mlflow, state)
    if saved is not None and not _deleted(saved) and belongs(saved.data.tags, dvc_tags()):
        settle(mlflow, saved, state)


# ---------------------------------------------------------------- the training data, for the UI's Dataset column
def dvc_dir_md5(folder: Path) -> str:
    """The hash DVC gives a folder output (dvc.lock's `md5: <hex>.dir`; dvc_data's
    Tree.digest/as_bytes): md5 of the JSON list of its files' {md5, relpath}, sorted by relpath."""
    import hashlib

    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        md5 = hashlib.md5()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                md5.update(chunk)
        entries.append({"md5": md5.hexdigest(), "relpath": path.relative_to(folder).as_posix()})
    entries.sort(key=lambda entry: entry["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def log_dataset(mlflow, params: Params, dataset: str) -> None:
    """The active run's training data as an MLflow dataset input: its name, its folder (relative
    to the project) and DVC's hash of that folder as digest, so the UI's Dataset column shows
    which data version trained the run. Computed rather than read from dvc.lock, which a direct
    `dcganlab prepare` leaves stale."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    folder = paths.processed_dir(params.root, dataset)
    source = LocalArtifactDatasetSource(folder.relative_to(params.root).as_posix())
    mlflow.log_input(MetaDataset(source, name=dataset, digest=dvc_dir_md5(folder)), context="training")
