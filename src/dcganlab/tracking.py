"""MLflow tracking: one experiment per dataset, one run per training experiment.

Default store: SQLite `mlflow.db` at the project root with artifacts in `mlartifacts/`;
`tracking.uri` in params.yaml or $MLFLOW_TRACKING_URI points at a server instead. Each DVC
stage is its own process, so sample/evaluate reopen the training run by its id
(models/<exp>/train/mlflow_run.json) instead of nesting.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dcganlab.atomic import write_json
from dcganlab.config import Params
from dcganlab.errors import UserError

# No usage telemetry leaves this machine (MLflow 3 sends it by default).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


# Read once at start-up: mlflow.set_tracking_uri() writes this variable itself.
_ENV_URI = os.environ.get("MLFLOW_TRACKING_URI", "")


def tracking_uri(params: Params) -> str:
    if params.tracking.uri:
        return params.tracking.uri
    if _ENV_URI:
        return _ENV_URI
    return f"sqlite:///{(params.root / 'mlflow.db').resolve().as_posix()}"


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


def connect(params: Params):
    """Set the tracking URI and check the store answers, before any training starts."""
    import mlflow

    uri = tracking_uri(params)
    if redact_uri(uri) != uri:  # MLflow prints "View run ... at: <uri>" for servers: not with credentials in it
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    mlflow.set_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        try:
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
        except Exception as exc:
            raise UserError(f"MLflow tracking server {redact_uri(uri)} is not reachable ({type(exc).__name__}); "
                            f"start it or set tracking.uri") from None
    return mlflow


# An experiment's kind for the MLflow UI: "custom_model_development" is the value its front end
# writes when a user picks "Machine learning" (vs "GenAI apps & agents", `genai_development`): our
# experiments hold training runs, not traces. MLflow 3.17's UI picks its view from a sidebar switch
# (GenAI unless changed) rather than from this tag: README "MLflow" gives the link that opens runs.
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
        artifacts = (params.root / "mlartifacts").resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=artifacts, tags={key: kind})


def model_versions(mlflow, run_id: str) -> list:
    """The Model Registry versions of a training run's generator (one once the training finished)."""
    return mlflow.MlflowClient().search_model_versions(f"run_id='{run_id}'")


def tag_model_versions(mlflow, tags: dict) -> None:
    """Tag the registry versions of the active run's generator, so the registry shows each
    version's quality (evaluate: FID, KID, extractor)."""
    client = mlflow.MlflowClient()
    for version in model_versions(mlflow, mlflow.active_run().info.run_id):
        for key, value in tags.items():
            client.set_model_version_tag(version.name, version.version, key, str(value))


def run_file(state: Path) -> Path:
    return state / "mlflow_run.json"


def saved_run_id(mlflow, state: Path) -> str | None:
    """The experiment's run id from its state dir, if that run exists in the current store."""
    if not run_file(state).is_file():
        return None
    run_id = json.loads(run_file(state).read_text())["run_id"]
    try:
        mlflow.get_run(run_id)
    except Exception:
        return None  # a different tracking store
    return run_id


@contextmanager
def training_run(params: Params, experiment: str, dataset: str, variant: str, state: Path) -> Iterator:
    """Start the experiment's run, or continue it when the state dir holds its id (resume)."""
    mlflow = connect(params)
    run_id = saved_run_id(mlflow, state)
    if run_id:
        run = mlflow.start_run(run_id=run_id)
    else:
        tags = {"variant": variant, "dataset": dataset, "experiment": experiment, "git_commit": git_commit(params.root)}
        run = mlflow.start_run(experiment_id=_experiment_id(mlflow, params, dataset), run_name=experiment, tags=tags)
        write_json(run_file(state), {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id})
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


@contextmanager
def existing_run(params: Params, state: Path) -> Iterator:
    """Reopen the training run of an experiment (sample / evaluate stages); None if there is none."""
    mlflow = connect(params)
    run_id = saved_run_id(mlflow, state)
    if run_id is None:
        yield None
        return
    with mlflow.start_run(run_id=run_id):
        yield mlflow
