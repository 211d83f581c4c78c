"""The training run's MLflow half: one MLflow run per experiment, reopened by every rerun.

Only rank 0 talks to MLflow (and prints the epoch lines); on every other torchrun rank each
method here does nothing. That rule lives here, not in the loop.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from dcganlab.core import paths
from dcganlab.core.atomic import write_json
from dcganlab.core.config import Params, as_dict
from dcganlab.core.tracking import connect, final_versions, log_dataset, redact_uri, settle_saved, training_run
from dcganlab.gan.modelfile import ModelSpec
from dcganlab.training.resilience import LoopState, backfill, epoch_metrics


@dataclass
class RunLog:
    """What the loop tells MLflow: params once per run, each epoch's metrics and grid, the summary,
    the model; `finished.json` once all of it is logged."""

    params: Params
    name: str
    main: bool  # rank 0: the only process that logs
    mlflow: Any = None  # the mlflow module while the run is open (rank 0)

    @property
    def state(self) -> Path:
        return paths.state_dir(self.params.root, self.name)

    def check_server(self) -> None:
        """An unreachable tracking server stops us here, before any state is touched."""
        if self.main:
            connect(self.params)

    def settle(self) -> None:
        """A rerun after a complete training: a run left RUNNING (e.g. by an evaluate killed with SIGKILL) is ended."""
        if self.main:
            settle_saved(self.params, self.state)

    @contextlib.contextmanager
    def opened(self):
        """The experiment's MLflow run on rank 0, ended FINISHED, KILLED (a signal) or FAILED."""
        if not self.main:
            yield
            return
        experiment = self.params.experiment(self.name)
        with training_run(self.params, self.name, experiment.dataset, experiment.variant, self.state) as mlflow:
            self.mlflow = mlflow
            yield

    def start(self, position: LoopState, hardware: dict) -> None:
        """A resumed run: the raised `epochs` and the history a killed process never logged; a new
        run: its params (`hardware`: device, shapes, processes, accel settings) and dataset."""
        if self.mlflow is None:
            return
        experiment = self.params.experiment(self.name)
        if position.resumed:
            self.mlflow.set_tag(
                "epochs_target", experiment.epochs
            )  # params are immutable; `epochs` may have been raised
            # epochs (metrics and grids) a killed or failed process never logged; for a new run continuing
            # another's checkpoint: the whole history
            backfill(self.mlflow, position.history, self.state)
        if not self.mlflow.active_run().data.params:  # a new run (not a reopened one)
            self.log_params(hardware)
            log_dataset(self.mlflow, self.params, experiment.dataset)  # once per run, like its params

    def log_params(self, hardware: dict) -> None:
        """What a new MLflow run is compared by: the experiment, the dataset, the hardware settings."""
        experiment = self.params.experiment(self.name)
        dataset = self.params.dataset(experiment.dataset)
        logged = {
            **{f"experiment.{k}": v for k, v in as_dict(experiment).items()},
            **{f"dataset.{k}": v for k, v in as_dict(dataset).items() if k != "path"},
            "seed": self.params.seed,
            **hardware,
        }
        self.mlflow.log_params({k: redact_uri(v) if isinstance(v, str) else v for k, v in logged.items()})

    def epoch(self, row: dict, grid: Image.Image | None, longest: float) -> None:
        """The epoch in MLflow (metrics, grid) and in the log; a collapsed discriminator is flagged in both."""
        if self.mlflow is None:
            return
        epoch, epochs, limits = row["epoch"], self.params.experiment(self.name).epochs, self.params.train
        self.mlflow.log_metrics(epoch_metrics(row), step=epoch)
        # synchronous: MLflow's async image queue polls once a second, so ending the run waited ~1 s
        # for it; a grid per epoch is one small PNG, and it is in the store when the epoch is reported
        self.mlflow.log_image(grid, key="samples", step=epoch, synchronous=True)
        print(
            f"{self.name} epoch {epoch}/{epochs}: loss_d {row['loss_d']:.3f} loss_g {row['loss_g']:.3f} "
            f"D(x) {row['d_real']:.3f} D(G(z)) {row['d_fake']:.3f} {row['images_per_s']:.0f} img/s"
        )
        if row["d_collapse"]:
            self.mlflow.set_tag("d_collapse", "true")
            print(
                f"{self.name}: warning: discriminator collapse in epoch {epoch}: D(x) > {limits.collapse_real} and "
                f"D(G(z)) < {limits.collapse_fake} for {longest:.0f} consecutive steps "
                f"(G gets almost no gradient; try label smoothing or a lower lr_d)",
                file=sys.stderr,
            )

    def finish(self, summary: dict, G, spec: ModelSpec) -> None:
        """The run's summary metrics and (optionally) the registered model; then finished.json,
        which marks all of it as done."""
        if self.mlflow is None:
            return
        self.mlflow.log_metrics(
            {"train_images_per_s": summary["images_per_s"], "train_wall_s": summary["train_wall_s"]}
        )
        if self.params.train.log_model:
            self.log_model(G, spec)
        write_json(
            paths.finished_path(self.state),
            {"run_id": self.mlflow.active_run().info.run_id, "epochs": self.params.experiment(self.name).epochs},
        )

    def log_model(self, G, spec: ModelSpec) -> None:
        """The final generator, logged (log_pyfunc_generator) and registered as a new version of
        the experiment's registered model."""
        from dcganlab.gan.mlflow_model import log_pyfunc_generator

        if final_versions(self.mlflow, self.mlflow.active_run().info.run_id):
            return  # logged and registered by a process killed before it wrote finished.json
        log_pyfunc_generator(self.mlflow, G, spec, self.params.train.serve_max_latents, registered_name=self.name)
