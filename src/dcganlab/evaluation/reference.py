"""The real side of every comparison and the metrics that need only generated images.

`load_reference` draws the held-out real images and their extractor features (and, from the
train split, the real floors); `image_metrics` scores generated images against them: FID/KID,
precision/recall, density/coverage, diversity, mode coverage and the InceptionV3 FID when its
weights are present. The evaluate, quality and score stages share them, so the same images
give the same numbers everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dcganlab.core import paths
from dcganlab.core.config import Params
from dcganlab.data.processed import load_processed
from dcganlab.evaluation.extractor import describe, embed, load_extractor, predict_classes, to_float
from dcganlab.evaluation.inception import load_inception
from dcganlab.evaluation.metrics import (
    density_coverage,
    fid_kid_features,
    mean_pairwise_ssim,
    mode_coverage,
    precision_recall,
)


def fid_kid(
    extractor, real: torch.Tensor, fake: torch.Tensor, kid_subset: int, batch: int = 250, seed: int = 0, desc: str = ""
) -> dict:
    """FID and KID between two sets of images in [-1, 1] on `extractor` features (progress under `desc`)."""
    return fid_kid_features(
        embed(extractor, real, batch, desc and f"{desc} (real)"),
        embed(extractor, fake, batch, desc and f"{desc} (generated)"),
        kid_subset,
        seed,
    )


def reference(params: Params, dataset: str, n: int, gen: torch.Generator) -> tuple[torch.Tensor, str, dict]:
    """Up to n random real images of the held-out test split (train split if there is none),
    the split's name, and the processed data."""
    data = load_processed(paths.processed_dir(params.root, dataset))
    images, split = data["images"], data["split"]
    ref_split = "test" if (split == 1).sum() >= 2 else "train"
    ref = images[split == (1 if ref_split == "test" else 0)]
    real = to_float(ref[torch.randperm(len(ref), generator=gen)[: min(n, len(ref))].numpy()])
    return real, ref_split, data


@dataclass
class Reference:
    """The real side of every comparison, drawn the same way by `evaluate` and `dcganlab score`."""

    extractor: nn.Module
    info: dict  # the extractor's kind, classes, test quality
    real: torch.Tensor  # up to evaluate.num_samples held-out real images in [-1, 1]
    real_f: torch.Tensor
    other_f: torch.Tensor | None  # as many other real images (train split): the real floors; None without a test split
    split: str
    data: dict  # the processed dataset


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
        other = to_float(train_imgs[torch.randperm(len(train_imgs), generator=floor_gen)[: ev.num_samples].numpy()])
        other_f = embed(extractor, other, ev.batch_size)
    return Reference(extractor, info, real, real_f, other_f, ref_split, data)


def _manifold(ref_f: torch.Tensor, f: torch.Tensor, k: int) -> dict:
    """precision, recall, density, coverage: one k for all four (Naeem et al. use the same balls)."""
    return {**precision_recall(ref_f, f, k), **density_coverage(ref_f, f, k)}


def image_metrics(
    params: Params,
    dataset: str,
    ref: Reference,
    fake: torch.Tensor,
    desc: str = "",
    mode_images: torch.Tensor | None = None,
) -> dict:
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
    inception, status = load_inception(
        ev.inception, params.root / ev.inception_weights, ev.inception_url, shown=ev.inception_weights
    )
    inception_scores = None
    if inception is not None:  # the first inception_samples of the same real and generated images
        n_i = min(ev.inception_samples, len(ref.real), len(fake))
        s = fid_kid(inception, ref.real[:n_i], fake[:n_i], ev.kid_subset_size, 50, seed, desc and f"{desc}: inception")
        inception_scores = {
            "fid": s["fid"],
            "kid": s["kid"],
            "kid_std": s["kid_std"],
            "kid_subset_size": s["kid_subset_size"],
            "n_fake": n_i,
            "n_real": n_i,
        }
    ref_split = ref.split
    return {
        **scores,
        "fid_real_floor": floor.get("fid"),
        "extractor": describe(ref.info),
        "n_fake": len(fake),
        "n_real": len(ref.real),
        "reference_split": f"{dataset}:{ref_split} (held-out real images)"
        if ref_split == "test"
        else f"{dataset}:train",
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
