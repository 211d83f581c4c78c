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
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dcganlab import paths
from dcganlab.atomic import write_json
from dcganlab.config import Params
from dcganlab.extractor import describe, embed, load_extractor, predict_classes, to_float
from dcganlab.files import dvc_output, read_json
from dcganlab.inception import load_inception
from dcganlab.locks import experiment_lock
from dcganlab.metrics import (density_coverage, fid_kid_features, finite_or_none, linear_probe, mean_pairwise_ssim, mode_coverage,
                              per_class_accuracy, precision_recall)
from dcganlab.sample import balanced_labels, nice_samples
from dcganlab.tracking import existing_run, tag_model_versions
from dcganlab.train import generate, load_model, load_processed, sample_noise


def fid_kid(extractor, real: torch.Tensor, fake: torch.Tensor, kid_subset: int, batch: int = 250, seed: int = 0,
            desc: str = "") -> dict:
    """FID and KID between two sets of images in [-1, 1] on `extractor` features (progress under `desc`)."""
    return fid_kid_features(embed(extractor, real, batch, desc and f"{desc} (real)"),
                            embed(extractor, fake, batch, desc and f"{desc} (generated)"), kid_subset, seed)


def reference(params: Params, dataset: str, n: int, gen: torch.Generator) -> tuple[torch.Tensor, str, dict]:
    """Up to n random real images of the held-out test split (train split if there is none),
    the split's name, and the processed data."""
    data = load_processed(paths.processed_dir(params.root, dataset))
    images, split = data["images"], data["split"]
    ref_split = "test" if (split == 1).sum() >= 2 else "train"
    ref = images[split == (1 if ref_split == "test" else 0)]
    real = to_float(ref[torch.randperm(len(ref), generator=gen)[:min(n, len(ref))].numpy()])
    return real, ref_split, data


@torch.no_grad()
def _d_features(D, images: torch.Tensor, batch: int = 500) -> np.ndarray:
    return torch.cat([D(images[i: i + batch]).features for i in range(0, len(images), batch)]).numpy()


def _probe(params: Params, D, data: dict, gen: torch.Generator) -> dict:
    """Linear probe: logistic regression on D's features vs raw pixels, fitted on (a capped
    random subset of) the real training split, scored on the held-out test split."""
    images, labels, split = data["images"], data["labels"], data["split"]
    train_idx = np.flatnonzero(split == 0)
    train_idx = train_idx[torch.randperm(len(train_idx), generator=gen)[:params.evaluate.probe_train_n].numpy()]
    test_idx = np.flatnonzero(split == 1)
    x_train, x_test = to_float(images[train_idx]), to_float(images[test_idx])
    y_train, y_test = labels[train_idx], labels[test_idx]
    return {"d_features": linear_probe(_d_features(D, x_train), y_train, _d_features(D, x_test), y_test),
            "pixels": linear_probe(x_train.numpy(), y_train, x_test.numpy(), y_test),
            "train_n": int(len(train_idx)), "eval_n": int(len(test_idx)),
            "train_split": "train (real)", "eval_split": "test (held-out real)"}


def _flat_numbers(prefix: str, value, out: dict) -> None:
    """{"a": {"b": 1}} -> {"a_b": 1}; numbers only (MLflow metrics)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flat_numbers(f"{prefix}_{k}" if prefix else str(k), v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        out[prefix] = float(value)


@dataclass
class Reference:
    """The real side of every comparison, drawn the same way by `evaluate` and `dcganlab score`."""
    extractor: nn.Module
    info: dict            # the extractor's kind, classes, test quality
    real: torch.Tensor    # up to evaluate.num_samples held-out real images in [-1, 1]
    real_f: torch.Tensor
    other_f: torch.Tensor | None  # as many other real images (train split): the real floors; None without a test split
    split: str
    data: dict            # the processed dataset


def load_reference(params: Params, dataset: str, gen: torch.Generator, desc: str = "") -> Reference:
    """The extractor, the reference images (drawn with `gen`) and their features. The floor's real
    images come from their own seeded stream, so they do not depend on what else `gen` draws."""
    ev = params.evaluate
    extractor, info = load_extractor(paths.extractor_path(params.root, dataset))
    real, ref_split, data = reference(params, dataset, ev.num_samples, gen)
    real_f = embed(extractor, real, ev.batch_size, desc and f"{desc}: features (real)")
    train_imgs = data["images"][data["split"] == 0]
    other_f = None
    if ref_split == "test" and len(train_imgs) >= 2:
        floor_gen = torch.Generator().manual_seed(params.seed + 201)
        other = to_float(train_imgs[torch.randperm(len(train_imgs), generator=floor_gen)[:ev.num_samples].numpy()])
        other_f = embed(extractor, other, ev.batch_size)
    return Reference(extractor, info, real, real_f, other_f, ref_split, data)


def _manifold(ref_f: torch.Tensor, f: torch.Tensor, k: int) -> dict:
    """precision, recall, density, coverage: one k for all four (Naeem et al. use the same balls)."""
    return {**precision_recall(ref_f, f, k), **density_coverage(ref_f, f, k)}


def image_metrics(params: Params, dataset: str, ref: Reference, fake: torch.Tensor, desc: str = "",
                  mode_images: torch.Tensor | None = None) -> dict:
    """Every metric that needs only generated images (no G, no D): what `evaluate` and `dcganlab
    score` share, so both give the same numbers for the same images. `mode_images`: the images
    whose classes count for mode coverage (default: `fake`)."""
    ev, seed = params.evaluate, params.seed
    fake_f = embed(ref.extractor, fake, ev.batch_size, desc and f"{desc}: features (generated)")
    scores = fid_kid_features(ref.real_f, fake_f, ev.kid_subset_size, seed)
    floor, manifold_floor = {}, {}
    if ref.other_f is not None:
        floor = fid_kid_features(ref.real_f, ref.other_f, ev.kid_subset_size, seed)
        manifold_floor = _manifold(ref.real_f, ref.other_f, ev.pr_k)
    coverage = None
    if ref.info["kind"] == "classifier":
        images = fake if mode_images is None else mode_images
        coverage = mode_coverage(predict_classes(ref.extractor, images), ref.info["classes"])
    inception, status = load_inception(ev.inception, params.root / ev.inception_weights, ev.inception_url,
                                       shown=ev.inception_weights)
    inception_scores = None
    if inception is not None:  # the first inception_samples of the same real and generated images
        n_i = min(ev.inception_samples, len(ref.real), len(fake))
        s = fid_kid(inception, ref.real[:n_i], fake[:n_i], ev.kid_subset_size, 50, seed, desc and f"{desc}: inception")
        inception_scores = {"fid": s["fid"], "kid": s["kid"], "kid_std": s["kid_std"], "kid_subset_size": s["kid_subset_size"],
                            "n_fake": n_i, "n_real": n_i}
    ref_split = ref.split
    return {
        **scores,
        "fid_real_floor": floor.get("fid"),
        "extractor": describe(ref.info),
        "n_fake": len(fake),
        "n_real": len(ref.real),
        "reference_split": f"{dataset}:{ref_split} (held-out real images)" if ref_split == "test" else f"{dataset}:train",
        **_manifold(ref.real_f, fake_f, ev.pr_k),
        "pr_k": ev.pr_k,
        "prdc_k": ev.pr_k,  # density/coverage use the same k-NN balls as precision/recall
        **{f"{key}_real_floor": manifold_floor.get(key) for key in ("precision", "recall", "density", "coverage")},
        "diversity_ssim": mean_pairwise_ssim(fake, ev.ssim_pairs, seed),
        "diversity_ssim_real": mean_pairwise_ssim(ref.real, ev.ssim_pairs, seed),
        "ssim_pairs": ev.ssim_pairs,
        "mode_coverage": coverage,
        "inception": inception_scores,
        "inception_status": status,
    }


def evaluate(params: Params, name: str) -> dict:
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
            class_accuracy = {**per_class_accuracy(predict_classes(extractor, fake), fake_labels, classes),
                              "n_per_class": n_fake // k, "classifier_test_accuracy": info["test_accuracy"]}
            # mode coverage of unconditional use: labels drawn uniformly at random
            z_u = sample_noise(n_fake, e.z_dim, e.noise, "cpu", gen)
            unconditional = generate(G, z_u, torch.randint(k, (n_fake,), generator=gen))
        if D is not None and (data["split"] == 1).sum() >= 2:
            probe = _probe(params, D, data, gen)
    shared = image_metrics(params, e.dataset, ref, fake, f"evaluate {name}", unconditional)

    fid_ranked = None
    if D is not None:
        ranked, _ = nice_samples(G, D, n_fake, e.z_dim, e.noise, ev.nice_factor, gen, fake_labels)
        fid_ranked = fid_kid_features(ref.real_f, embed(extractor, ranked, ev.batch_size), ev.kid_subset_size,
                                      params.seed)["fid"]

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
            numbers: dict = {}
            for key in ("fid", "kid", "kid_std", "fid_real_floor", "precision", "recall", "precision_real_floor",
                        "recall_real_floor", "density", "coverage", "density_real_floor", "coverage_real_floor",
                        "diversity_ssim", "diversity_ssim_real", "class_accuracy",
                        "mode_coverage", "linear_probe", "fid_ranked", "inception", "eval_seconds"):
                _flat_numbers(key, metrics[key], numbers)
            mlflow.log_metrics(numbers)
            mlflow.set_tags({"eval.extractor": metrics["extractor"], "eval.n_fake": n_fake, "eval.n_real": metrics["n_real"],
                             "eval.reference_split": metrics["reference_split"],
                             "eval.inception_status": metrics["inception_status"]})
            tag_model_versions(mlflow, {"fid": metrics["fid"], "kid": metrics["kid"], "extractor": metrics["extractor"]})
    return metrics
