"""Sample-quality metrics beyond FID/KID, as plain functions on tensors and arrays.

- precision_recall: Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric for
  Assessing Generative Models": each set's manifold is the union of balls around its points
  with radius = distance to the k-th nearest neighbour in the same set. Precision = share of
  generated points inside the real manifold; recall = share of real points inside the
  generated manifold.
- density_coverage: Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative
  Models": the same k-NN balls around the real points only (the real manifold is sampled
  evenly; the generated one may not be). Density = mean number of real balls holding a
  generated point, / k (about 1 for matching distributions, unbounded above); coverage = share
  of real balls holding at least one generated point. Implemented here rather than calling the
  authors' `prdc` (it prints to stdout, where `dcganlab score` writes its JSON); tests check it
  against `prdc.compute_prdc`.
- mean_pairwise_ssim: diversity as mean SSIM (scikit-image) of random pairs; higher = more alike.
- class_histogram / mode_coverage / per_class_accuracy: what a domain classifier sees in samples.
- linear_probe: accuracy of a standardised logistic regression (scikit-learn), the
  representation-learning test of the DCGAN paper.
- fid_kid_features: FID and KID (torchmetrics) on precomputed features: what evaluate, quality,
  score and the extractor's calibration all compute.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn


# ---------------------------------------------------------------- FID / KID
class _Features(nn.Module):
    """Hands precomputed features to torchmetrics: each image set goes through the (possibly
    expensive) extractor once, and FID, KID and precision/recall share those features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@torch.no_grad()
def fid_kid_features(real_f: torch.Tensor, fake_f: torch.Tensor, kid_subset: int, seed: int = 0) -> dict:
    """FID and KID (torchmetrics) between two sets of feature vectors."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    identity = _Features(real_f.shape[1])
    fid = FrechetInceptionDistance(feature=identity, normalize=True)
    subset = min(kid_subset, len(real_f), len(fake_f))
    with warnings.catch_warnings():  # "KID keeps all features in memory": known, and small here
        warnings.filterwarnings("ignore", message=".*Kernel Inception Distance.*")
        kid = KernelInceptionDistance(feature=identity, subset_size=subset, normalize=True)
    for feats, is_real in ((real_f, True), (fake_f, False)):
        fid.update(feats, real=is_real)
        kid.update(feats, real=is_real)
    torch.manual_seed(seed)  # KID draws random subsets
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std), "kid_subset_size": subset}


# ---------------------------------------------------------------- precision / recall
def _kth_nn_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance of every row of x to its k-th nearest other row."""
    k = min(k, len(x) - 1)
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i : i + chunk], x)
        out.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(out)


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """For each point: is it within radii[j] of some centre j?"""
    out = []
    for i in range(0, len(points), chunk):
        d = torch.cdist(points[i : i + chunk], centres)
        out.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(out)


@torch.no_grad()
def precision_recall(real_feats: torch.Tensor, fake_feats: torch.Tensor, k: int = 3, chunk: int = 1024) -> dict:
    """k-NN manifold precision and recall of fake vs real features, both in [0, 1]."""
    real, fake = real_feats.double(), fake_feats.double()
    if len(real) < 2 or len(fake) < 2:
        raise ValueError("precision_recall needs at least 2 real and 2 fake feature vectors")
    precision = _inside(fake, real, _kth_nn_radius(real, k, chunk), chunk).double().mean()
    recall = _inside(real, fake, _kth_nn_radius(fake, k, chunk), chunk).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


@torch.no_grad()
def density_coverage(real_feats: torch.Tensor, fake_feats: torch.Tensor, k: int = 3, chunk: int = 1024) -> dict:
    """Density (>= 0) and coverage (in [0, 1]) of fake vs real features, with balls of the
    k-th nearest real neighbour's radius around each real point (Naeem et al. 2020)."""
    real, fake = real_feats.double(), fake_feats.double()
    if len(real) < 2 or len(fake) < 1:
        raise ValueError("density_coverage needs at least 2 real and 1 fake feature vectors")
    radii = _kth_nn_radius(real, k, chunk)
    hits = torch.zeros(len(fake), dtype=torch.float64)  # per fake point: real balls holding it
    nearest = torch.full((len(real),), math.inf, dtype=torch.float64)  # per real point: closest fake
    for i in range(0, len(real), chunk):
        d = torch.cdist(real[i : i + chunk], fake)
        hits += (d < radii[i : i + chunk, None]).sum(dim=0)
        nearest[i : i + chunk] = d.min(dim=1).values
    # strict "<" as in the authors' code (prdc), so that a duplicate point does not count
    return {"density": float(hits.mean() / min(k, len(real) - 1)), "coverage": float((nearest < radii).double().mean())}


# ---------------------------------------------------------------- diversity
def mean_pairwise_ssim(images: torch.Tensor | np.ndarray, pairs: int, seed: int = 0) -> float:
    """Mean SSIM over `pairs` random pairs of distinct images (N, C, H, W) in [-1, 1].
    1 = all identical; lower = more diverse."""
    from skimage.metrics import structural_similarity

    x = torch.as_tensor(images).float().clamp(-1, 1).numpy()
    n = len(x)
    if n < 2:
        raise ValueError("mean_pairwise_ssim needs at least 2 images")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, pairs)
    b = (a + rng.integers(1, n, pairs)) % n  # never the same index as a
    side = x.shape[-1]
    win = min(7, side if side % 2 else side - 1)  # skimage needs an odd window <= image side
    scores = []
    for i, j in zip(a, b):
        # (C, H, W) -> (H, W, C); one channel -> 2-D
        u, v = np.moveaxis(x[i], 0, -1), np.moveaxis(x[j], 0, -1)
        if u.shape[-1] == 1:
            scores.append(structural_similarity(u[..., 0], v[..., 0], data_range=2.0, win_size=win))
        else:
            scores.append(structural_similarity(u, v, data_range=2.0, channel_axis=-1, win_size=win))
    return float(np.mean(scores))


# ---------------------------------------------------------------- classes
def class_histogram(pred: torch.Tensor | np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of predictions in each class (sums to 1)."""
    counts = np.bincount(np.asarray(pred, dtype=np.int64), minlength=num_classes)[:num_classes]
    return counts / max(1, counts.sum())


def mode_coverage(pred: torch.Tensor | np.ndarray, classes: list[str], min_share: float = 0.1) -> dict:
    """Class histogram of unconditional samples. A class counts as covered when it gets at
    least `min_share` of its uniform share (1/K): a few stray misclassified samples do not
    make a dropped mode look covered. kl_to_uniform = KL(histogram || uniform), 0 = balanced."""
    k = len(classes)
    hist = class_histogram(pred, k)
    nz = hist > 0
    kl = float((hist[nz] * np.log(hist[nz] * k)).sum())
    return {
        "histogram": {c: float(h) for c, h in zip(classes, hist)},
        "classes_covered": int((hist >= min_share / k).sum()),
        "num_classes": k,
        "n": int(len(np.asarray(pred))),
        "kl_to_uniform": kl,
    }


def per_class_accuracy(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, classes: list[str]) -> dict:
    """Accuracy on the samples of each requested class, and their mean (classes with no samples: None)."""
    pred, target = np.asarray(pred), np.asarray(target)
    per = {}
    for i, c in enumerate(classes):
        mask = target == i
        per[c] = float((pred[mask] == i).mean()) if mask.any() else None
    valid = [v for v in per.values() if v is not None]
    return {"per_class": per, "mean": float(np.mean(valid)) if valid else None}


# ---------------------------------------------------------------- representation learning
def linear_probe(train_x, train_y, eval_x, eval_y, max_iter: int = 2000) -> float:
    """Accuracy on (eval_x, eval_y) of a logistic regression fitted on standardised train_x.
    lbfgs with a fixed start: deterministic."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x = np.asarray(train_x, dtype=np.float64).reshape(len(train_x), -1)
    eval_x = np.asarray(eval_x, dtype=np.float64).reshape(len(eval_x), -1)
    if len(np.unique(train_y)) < 2:
        raise ValueError("linear_probe needs at least 2 classes in the training set")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    model.fit(train_x, np.asarray(train_y))
    return float(model.score(eval_x, np.asarray(eval_y)))


def finite_or_none(x: float | None) -> float | None:
    """JSON-safe number: NaN/inf become None."""
    return None if x is None or not math.isfinite(x) else float(x)
