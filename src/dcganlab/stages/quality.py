"""quality: FID and KID of every saved epoch generator, for quality-vs-epoch and
quality-vs-wall-clock curves.

Cheap on purpose (`evaluate.curve_samples` images per epoch, domain extractor): the curve
shows the trend; the final number with full sample counts comes from `evaluate`. Every
epoch is scored against the same real images with the same latent vectors, so epochs
differ only in the generator. wall_s is the training wall clock at the end of that epoch
(from the checkpoint's history). Writes reports/quality/<exp>.csv and logs the curve to
the experiment's MLflow run as metrics `fid_curve` / `kid_curve` with step = epoch and
timestamp = run start + wall_s, so MLflow's relative-time axis shows training wall clock.

The curve also chooses the generator (`best_epoch`: lowest FID). With `train.log_model`, the
registered model `<exp>` gets the alias `champion` on that epoch's generator: the final version
when the best epoch is the last, else the epoch's generator logged to the run (`generator_epoch_N`)
and registered as a version tagged `epoch` (once: a rerun reuses it). MLflow reserves the alias
`latest` and resolves it to the highest version number, so the final generator is registered
again after a new champion version: `models:/<exp>/latest` stays the final generator.
"""

from __future__ import annotations

import pandas as pd
import torch

from dcganlab.core import paths
from dcganlab.core.atomic import write_csv
from dcganlab.core.config import Params
from dcganlab.core.errors import UserError
from dcganlab.core.files import CHECKPOINT, load_torch, restore
from dcganlab.core.locks import experiment_lock
from dcganlab.core.progress import progress
from dcganlab.core.tracking import EPOCH_TAG, existing_run, final_versions, model_versions
from dcganlab.evaluation.curves import best_epoch
from dcganlab.evaluation.extractor import embed, load_extractor
from dcganlab.evaluation.metrics import fid_kid_features
from dcganlab.evaluation.reference import reference
from dcganlab.gan.mlflow_model import log_pyfunc_generator
from dcganlab.gan.modelfile import ModelSpec, load_model
from dcganlab.gan.sampling import balanced_labels, generate, sample_noise


def _wall_clock(state) -> dict[int, float]:
    """epoch -> training wall seconds at its end, from the checkpoint's history."""
    ckpt = paths.checkpoint_path(state)
    if not ckpt.is_file():
        return {}
    history = load_torch(ckpt, "training checkpoint", CHECKPOINT, keys=("history",))["history"]
    return {int(row["epoch"]): float(row["wall_s"]) for row in history}


def run(params: Params, name: str) -> pd.DataFrame:
    """`_quality` under the experiment's lock (`locks`): never beside its training, which may rewrite
    the model and reopens the same MLflow run."""
    with experiment_lock(params.root, name, "quality"):
        return _quality(params, name)


def _quality(params: Params, name: str) -> pd.DataFrame:
    root, ev = params.root, params.evaluate
    e = params.experiment(name)
    state = paths.state_dir(root, name)
    files = sorted(paths.saved_epochs(paths.generators_dir(state)).items())
    if not files:
        raise UserError(
            f"no saved epoch generators in {paths.generators_dir(state)} (run `dcganlab train {name}` first)"
        )
    extractor, _ = load_extractor(paths.extractor_path(root, e.dataset))
    gen = torch.Generator().manual_seed(params.seed + 400)
    real, _, _ = reference(params, e.dataset, ev.curve_samples, gen)
    z = sample_noise(ev.curve_samples, e.z_dim, e.noise, "cpu", gen)  # the same latents for every epoch
    real_f = embed(extractor, real, ev.batch_size)
    wall = _wall_clock(state)
    rows = []
    for epoch, path in progress(files, f"quality {name}", noun="epoch", unit="img", per_item=len(z)):
        G, _, meta = load_model(path, remedy=f"delete it (the curve then skips epoch {epoch}) or {restore(state)}")
        fake = generate(G, z, balanced_labels(len(z), meta["num_classes"]))
        s = fid_kid_features(real_f, embed(extractor, fake, ev.batch_size), ev.kid_subset_size, params.seed)
        rows.append(
            {
                "epoch": epoch,
                "wall_s": wall.get(epoch, float("nan")),
                "fid": s["fid"],
                "kid": s["kid"],
                "n_fake": len(fake),
                "n_real": len(real),
            }
        )
    table = pd.DataFrame(rows, columns=["epoch", "wall_s", "fid", "kid", "n_fake", "n_real"])
    write_csv(paths.quality_path(root, name), table)
    _log_curve(params, name, table)
    _crown_champion(params, name, table, dict(files))
    return table


def _log_curve(params: Params, name: str, table: pd.DataFrame) -> None:
    with existing_run(params, paths.state_dir(params.root, name)) as mlflow:
        if mlflow is None:
            return
        from mlflow.entities import Metric

        run = mlflow.active_run()
        start_ms = run.info.start_time
        metrics = []
        for row in table.itertuples():
            # no wall clock known: fall back to the run start, the step still orders the points
            ts = start_ms + int(1000 * row.wall_s) if row.wall_s == row.wall_s else start_ms
            metrics += [
                Metric("fid_curve", float(row.fid), ts, int(row.epoch)),
                Metric("kid_curve", float(row.kid), ts, int(row.epoch)),
            ]
        client = mlflow.MlflowClient()
        for i in range(0, len(metrics), 1000):  # MLflow's log_batch limit
            client.log_batch(run.info.run_id, metrics=metrics[i : i + 1000])


CHAMPION = "champion"


def _crown_champion(params: Params, name: str, table: pd.DataFrame, files: dict) -> None:
    """Alias `champion` on the registry version of the best epoch's generator (see the module doc)."""
    if not params.train.log_model:
        return
    best, last = best_epoch(table), int(table["epoch"].max())
    with existing_run(params, paths.state_dir(params.root, name)) as mlflow:
        if mlflow is None:
            return
        run_id = mlflow.active_run().info.run_id
        finals = sorted(final_versions(mlflow, run_id), key=lambda v: int(v.version))
        if not finals:
            return  # training has not registered its final generator (yet): nothing to stand beside
        final = finals[-1]
        champion = final if best == last else _epoch_version(mlflow, run_id, final.name, best, files[best], params)
        mlflow.MlflowClient().set_registered_model_alias(final.name, CHAMPION, champion.version)
        _keep_latest_final(mlflow.MlflowClient(), final)
        mlflow.set_tags({"best_epoch": best, "final_epoch": last})


def _keep_latest_final(client, final) -> None:
    """MLflow's `latest` is the newest version number: when that is one of this run's epoch
    generators, register the final generator again (same logged model and tags) to be newer."""
    newest = max(client.search_model_versions(f"name='{final.name}'"), key=lambda v: int(v.version))
    if newest.run_id == final.run_id and EPOCH_TAG in (newest.tags or {}):
        client.create_model_version(final.name, final.source, final.run_id, tags=final.tags, model_id=final.model_id)


def _epoch_version(mlflow, run_id: str, registered: str, epoch: int, path, params: Params):
    """The registry version of epoch `epoch`'s generator: the one a previous run of this stage
    registered, else logged and registered now (tagged with its epoch)."""
    for version in model_versions(mlflow, run_id):
        if (version.tags or {}).get(EPOCH_TAG) == str(epoch):
            return version
    G, _, meta = load_model(path, remedy=f"rerun `dcganlab train {registered}`")
    info = log_pyfunc_generator(
        mlflow, G, ModelSpec.of(meta), params.train.serve_max_latents, name=f"generator_epoch_{epoch}"
    )
    return mlflow.register_model(info.model_uri, registered, tags={EPOCH_TAG: str(epoch)})
