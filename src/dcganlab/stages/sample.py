"""sample: what a trained generator draws, as figures.

Writes to reports/samples/<experiment>/ and the experiment's MLflow run (artifacts `samples/`):
- grid.png: the first `sample.num` samples of a seeded draw (not cherry-picked);
- interpolation.png: one row per random pair of latent vectors, `interpolation_steps`
  images from one end to the other (spherical for Gaussian noise, linear for uniform);
- nice.png: discriminator-ranked samples (the best `sample.num` of 20x as many);
- classes.png (conditional models): one row per class;
- arithmetic.png: latent vector arithmetic (figures.py says how kinds are chosen for each
  kind of model);
- progression.png: the training grids of epochs 1, 5, 10, 20 (closest saved) and the last;
- d_filters.png: the first discriminator layer's filters;
- figures.json: what the figures show (the arithmetic's kinds and verdict per row, the
  progression's epochs), so the report can print it next to them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from dcganlab.core import paths
from dcganlab.core.atomic import atomic_dir, save_png, write_json
from dcganlab.core.config import Params
from dcganlab.core.errors import UserError
from dcganlab.core.locks import experiment_lock
from dcganlab.core.tracking import existing_run
from dcganlab.evaluation.extractor import load_extractor
from dcganlab.evaluation.figures import filter_grid, latent_arithmetic, progression
from dcganlab.gan.modelfile import load_model
from dcganlab.gan.sampling import balanced_labels, generate, interpolate, nice_samples, sample_noise, to_grid


def draw_label(params: Params, name: str, label: str, num: int, out: Path) -> Path:
    """`dcganlab sample EXP --label 7`: `num` samples of one class from a conditional model."""
    G, _, meta = load_model(paths.model_path(params.root, name))
    if not meta["num_classes"]:
        raise UserError(f"experiment '{name}' ({meta['experiment'].variant}) is not conditional; --label needs cgan")
    if label not in meta["classes"]:
        raise UserError(f"unknown label '{label}' (classes: {', '.join(meta['classes'])})")
    e = meta["experiment"]
    z = sample_noise(num, e.z_dim, e.noise, "cpu", torch.Generator().manual_seed(params.seed + 300))
    images = generate(G, z, torch.full((num,), meta["classes"].index(label)))
    save_png(out, to_grid(images, nrow=math.ceil(math.sqrt(num))))
    return out


def run(params: Params, name: str) -> dict:
    """`_sample` under the experiment's lock (`locks`): never beside its training, which may rewrite
    the model and reopens the same MLflow run."""
    with experiment_lock(params.root, name, "sample"):
        return _sample(params, name)


def _sample(params: Params, name: str) -> dict:
    root = params.root
    G, D, meta = load_model(paths.model_path(root, name))
    e, k = meta["experiment"], meta["num_classes"]
    gen = torch.Generator().manual_seed(params.seed + 100)
    settings = params.sample
    out = paths.samples_dir(root, name)
    written = {}

    z = sample_noise(settings.num, e.z_dim, e.noise, "cpu", gen)
    written["grid"] = to_grid(generate(G, z, balanced_labels(settings.num, k)), nrow=math.ceil(math.sqrt(settings.num)))
    a = sample_noise(settings.interpolation_pairs, e.z_dim, e.noise, "cpu", gen)
    b = sample_noise(settings.interpolation_pairs, e.z_dim, e.noise, "cpu", gen)
    z_path = interpolate(a, b, settings.interpolation_steps, e.noise == "normal")
    path_labels = (
        None
        if not k
        else (torch.arange(settings.interpolation_pairs) % k).repeat_interleave(settings.interpolation_steps)
    )
    written["interpolation"] = to_grid(generate(G, z_path, path_labels), nrow=settings.interpolation_steps)
    if D is not None:
        nice, _ = nice_samples(G, D, settings.num, e.z_dim, e.noise, 20, gen, balanced_labels(settings.num, k))
        written["nice"] = to_grid(nice, nrow=math.ceil(math.sqrt(settings.num)))
        written["d_filters"] = filter_grid(D)
    if k:  # one row per class, 8 samples each
        z = sample_noise(8, e.z_dim, e.noise, "cpu", gen).repeat(k, 1)
        written["classes"] = to_grid(generate(G, z, torch.arange(k).repeat_interleave(8)), nrow=8)

    # the domain classifier (labeled datasets) decides which digit a generated sample shows
    extractor, info = load_extractor(paths.extractor_path(root, e.dataset))
    classifier = extractor if info["kind"] == "classifier" else None
    classes = info["classes"] if classifier is not None else meta["classes"]
    written["arithmetic"], arithmetic = latent_arithmetic(
        G, e.z_dim, e.noise, k, classifier, classes, settings, torch.Generator().manual_seed(params.seed + 400)
    )
    written["progression"], epochs = progression(paths.grids_dir(paths.state_dir(root, name)))
    described = {"arithmetic": arithmetic, "progression_epochs": epochs}  # what the figures show, for the report

    with atomic_dir(out) as tmp:  # the folder is swapped in whole: no stale or partial images
        for key, image in written.items():
            image.save(tmp / f"{key}.png", format="PNG")
        write_json(tmp / "figures.json", described)
    files = {key: out / f"{key}.png" for key in written}
    with existing_run(params, paths.state_dir(root, name)) as mlflow:
        if mlflow is not None:
            for path in sorted(out.iterdir()):
                mlflow.log_artifact(str(path), "samples")
    return {key: str(path) for key, path in files.items()}
