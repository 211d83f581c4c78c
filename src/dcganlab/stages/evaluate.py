"""evaluate: how good, how diverse and how useful each experiment's generator is.

Every number is stored with how it was computed: extractor (and its own test quality),
number of generated and real images, and the real reference split.

- FID/KID (torchmetrics) on the offline `domain` extractor; the same on the standard
  InceptionV3 weights when they are available (`inception`, see inception.py).
- `fid_real_floor`: FID between two disjoint real samples of the same sizes (train vs
  reference split), the best a generator can hope for at this sample count; likewise
  `precision_real_floor` / `recall_real_floor` / `density_real_floor` / `coverage_real_floor`.
- `image_metrics` is every number that needs only the generated images: `dcganlab score`
  (score.py) computes exactly these for any images, with the same reference and seed.
- precision/recall and density/coverage (k-NN manifolds, one k: `prdc_k`), diversity (mean pairwise SSIM), and on labeled data the
  domain classifier's view: per-class accuracy (conditional models), mode coverage, and a
  linear probe on the discriminator's features vs raw pixels (see metrics.py).
- `fid_ranked`: FID of discriminator-ranked samples (the D-best n of nice_factor * n).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from dcganlab.core import paths
from dcganlab.core.atomic import write_json
from dcganlab.core.config import Params
from dcganlab.core.files import dvc_output, read_json
from dcganlab.core.flat import numbers
from dcganlab.core.locks import experiment_lock
from dcganlab.core.tracking import existing_run, tag_model_versions
from dcganlab.evaluation.extractor import embed, predict_classes, to_float
from dcganlab.evaluation.metrics import (
    fid_kid_features,
    finite_or_none,
    linear_probe,
    per_class_accuracy,
)
from dcganlab.evaluation.reference import image_metrics, load_reference
from dcganlab.gan.modelfile import load_model
from dcganlab.gan.sampling import balanced_labels, generate, nice_samples, sample_noise


@torch.no_grad()
def _d_features(D, images: torch.Tensor, batch: int = 500) -> np.ndarray:
    return torch.cat([D(images[i : i + batch]).features for i in range(0, len(images), batch)]).numpy()


def _probe(params: Params, D, data: dict, gen: torch.Generator) -> dict:
    """Linear probe: logistic regression on D's features vs raw pixels, fitted on (a capped
    random subset of) the real training split, scored on the held-out test split."""
    images, labels, split = data["images"], data["labels"], data["split"]
    train_idx = np.flatnonzero(split == 0)
    train_idx = train_idx[torch.randperm(len(train_idx), generator=gen)[: params.evaluate.probe_train_n].numpy()]
    test_idx = np.flatnonzero(split == 1)
    x_train, x_test = to_float(images[train_idx]), to_float(images[test_idx])
    y_train, y_test = labels[train_idx], labels[test_idx]
    return {
        "d_features": linear_probe(_d_features(D, x_train), y_train, _d_features(D, x_test), y_test),
        "pixels": linear_probe(x_train.numpy(), y_train, x_test.numpy(), y_test),
        "train_n": int(len(train_idx)),
        "eval_n": int(len(test_idx)),
        "train_split": "train (real)",
        "eval_split": "test (held-out real)",
    }


def run(params: Params, name: str) -> dict:
    """`_evaluate` under the experiment's lock (`locks`): never beside its training, which may rewrite
    the model and reopens the same MLflow run."""
    with experiment_lock(params.root, name, "evaluate"):
        return _evaluate(params, name)


def _evaluate(params: Params, name: str) -> dict:
    t_start = time.perf_counter()
    root, ev = params.root, params.evaluate
    e = params.experiment(name)
    G, D, meta = load_model(paths.model_path(root, name))
    k, classes = meta["num_classes"], meta["classes"]
    gen = torch.Generator().manual_seed(params.seed + 200)
    ref = load_reference(params, e.dataset, gen, f"evaluate {name}")
    extractor, info, data = ref.extractor, ref.info, ref.data
    n_fake = ev.num_samples
    z = sample_noise(n_fake, meta["experiment"].z_dim, meta["experiment"].noise, "cpu", gen)
    fake_labels = balanced_labels(n_fake, k)
    fake = generate(G, z, fake_labels)

    labeled = info["kind"] == "classifier"
    class_accuracy = probe = unconditional = None
    if labeled:
        if k:  # conditional: does G draw the requested digit? (fake used balanced labels)
            class_accuracy = {
                **per_class_accuracy(predict_classes(extractor, fake), fake_labels, classes),
                "n_per_class": n_fake // k,
                "classifier_test_accuracy": info["test_accuracy"],
            }
            # mode coverage of unconditional use: labels drawn uniformly at random
            z_u = sample_noise(n_fake, e.z_dim, e.noise, "cpu", gen)
            unconditional = generate(G, z_u, torch.randint(k, (n_fake,), generator=gen))
        if D is not None and (data["split"] == 1).sum() >= 2:
            probe = _probe(params, D, data, gen)
    shared = image_metrics(params, e.dataset, ref, fake, f"evaluate {name}", unconditional)

    fid_ranked = None
    if D is not None:
        ranked, _ = nice_samples(G, D, n_fake, e.z_dim, e.noise, ev.nice_factor, gen, fake_labels)
        fid_ranked = fid_kid_features(
            ref.real_f, embed(extractor, ranked, ev.batch_size), ev.kid_subset_size, params.seed
        )["fid"]

    train_info = {}
    train_json = paths.report_dir(root, name) / "train.json"
    if train_json.is_file():
        train_info = read_json(train_json, "training summary", dvc_output(train_json, f"train@{name}"))
    metrics = {
        **shared,
        "images_per_s": train_info.get("images_per_s"),
        "train_wall_s": train_info.get("train_wall_s"),
        "epochs": train_info.get("epochs"),
        "variant": e.variant,
        "dataset": e.dataset,
        "class_accuracy": class_accuracy,
        "linear_probe": probe,
        "fid_ranked": finite_or_none(fid_ranked),
        "fid_ranked_factor": ev.nice_factor if fid_ranked is not None else None,
    }
    metrics["eval_seconds"] = time.perf_counter() - t_start
    write_json(paths.eval_path(root, name), metrics)
    with existing_run(params, paths.state_dir(root, name)) as mlflow:
        if mlflow is not None:
            logged = (
                "fid",
                "kid",
                "kid_std",
                "fid_real_floor",
                "precision",
                "recall",
                "precision_real_floor",
                "recall_real_floor",
                "density",
                "coverage",
                "density_real_floor",
                "coverage_real_floor",
                "diversity_ssim",
                "diversity_ssim_real",
                "class_accuracy",
                "mode_coverage",
                "linear_probe",
                "fid_ranked",
                "inception",
                "eval_seconds",
            )
            mlflow.log_metrics(numbers({key: metrics[key] for key in logged}))
            mlflow.set_tags(
                {
                    "eval.extractor": metrics["extractor"],
                    "eval.n_fake": n_fake,
                    "eval.n_real": metrics["n_real"],
                    "eval.reference_split": metrics["reference_split"],
                    "eval.inception_status": metrics["inception_status"],
                }
            )
            tag_model_versions(
                mlflow, {"fid": metrics["fid"], "kid": metrics["kid"], "extractor": metrics["extractor"]}
            )
    return metrics
