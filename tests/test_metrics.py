"""The metrics measure what they claim, on real digits and toys (no numbers from a run)."""

import numpy as np
import pytest
import torch
from torchvision.transforms.functional import gaussian_blur

from dcganlab.evaluation.extractor import embed, predict_classes
from dcganlab.evaluation.metrics import (
    class_histogram,
    density_coverage,
    linear_probe,
    mean_pairwise_ssim,
    mode_coverage,
    per_class_accuracy,
    precision_recall,
)
from dcganlab.evaluation.reference import fid_kid


def _fid(d, real, other):
    return fid_kid(d.net, real, other, 50)["fid"]


# ---------------------------------------------------------------- FID / KID
def test_fid_of_two_real_splits_is_small(digit_features):
    d = digit_features
    base = _fid(d, d.a, d.b)
    constant = _fid(d, d.a, torch.zeros_like(d.b))
    assert 0 <= base < 0.05 * constant


def test_fid_rises_monotonically_with_gaussian_noise(digit_features):
    d = digit_features
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(d.b.shape, generator=gen)
    fids = [_fid(d, d.a, (d.b + s * noise).clamp(-1, 1)) for s in (0.0, 0.1, 0.3, 0.6, 1.0)]
    assert all(x < y for x, y in zip(fids, fids[1:])), fids


def test_fid_rises_monotonically_with_blur(digit_features):
    d = digit_features
    fids = [_fid(d, d.a, d.b)] + [
        _fid(d, d.a, gaussian_blur(d.b, [k, k], [s, s])) for k, s in ((3, 0.5), (3, 0.8), (5, 1.2), (7, 2.5))
    ]
    assert all(x < y for x, y in zip(fids, fids[1:])), fids


def test_fid_of_constant_images_is_large(digit_features):
    d = digit_features
    base = _fid(d, d.a, d.b)
    for value in (-1.0, 0.0, 1.0):
        assert _fid(d, d.a, torch.full_like(d.b, value)) > 20 * max(base, 1e-3)


def test_kid_is_near_zero_for_two_samples_of_one_distribution(digit_features):
    d = digit_features
    same = fid_kid(d.net, d.a, d.b, 50)
    far = fid_kid(d.net, d.a, -d.b, 50)["kid"]
    assert abs(same["kid"]) < 0.02 * far
    assert abs(same["kid"]) < 3 * same["kid_std"] + 1e-3  # zero within its own spread


# ---------------------------------------------------------------- precision / recall
def test_precision_recall_is_exactly_one_for_identical_sets():
    x = torch.randn(50, 4)
    assert precision_recall(x, x.clone(), k=3) == {"precision": 1.0, "recall": 1.0}


def test_precision_recall_near_one_for_real_vs_real_and_fall_when_half_the_modes_are_dropped(digit_features):
    d = digit_features
    fa, fb = embed(d.net, d.a), embed(d.net, d.b)
    both = precision_recall(fa, fb, k=3)
    assert both["precision"] > 0.85 and both["recall"] > 0.85, both
    gen = torch.Generator().manual_seed(0)
    # fake covers only digits 0-4: recall falls (half the real manifold is missed), precision stays.
    # Compared with a random half of the same size, so the smaller set itself is not the cause.
    modes = torch.as_tensor(d.yb < 5)
    random_half = precision_recall(fa, fb[torch.randperm(len(fb), generator=gen)[: int(modes.sum())]], k=3)
    half_fake = precision_recall(fa, fb[modes], k=3)
    assert half_fake["recall"] < random_half["recall"] - 0.15 and half_fake["precision"] > 0.85, (
        half_fake,
        random_half,
    )
    # the reference holds only digits 0-4: half the fakes lie off the real manifold, precision falls
    modes = torch.as_tensor(d.ya < 5)
    random_half = precision_recall(fa[torch.randperm(len(fa), generator=gen)[: int(modes.sum())]], fb, k=3)
    half_real = precision_recall(fa[modes], fb, k=3)
    assert half_real["precision"] < random_half["precision"] - 0.15 and half_real["recall"] > 0.85, (
        half_real,
        random_half,
    )


def test_precision_recall_of_disjoint_clouds_is_zero():
    x = torch.randn(40, 3)
    assert precision_recall(x, x + 100.0, k=3) == {"precision": 0.0, "recall": 0.0}


# ---------------------------------------------------------------- density / coverage
def test_density_coverage_match_the_authors_prdc():
    from prdc import compute_prdc

    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(200, 6, generator=gen), torch.randn(150, 6, generator=gen) * 1.3 + 0.2
    ours = density_coverage(real, fake, k=5, chunk=64)  # chunks smaller than the sets: the chunking is tested too
    theirs = compute_prdc(real.numpy(), fake.numpy(), nearest_k=5)
    assert ours["density"] == pytest.approx(float(theirs["density"]), abs=1e-9)
    assert ours["coverage"] == pytest.approx(float(theirs["coverage"]), abs=1e-9)
    assert 0.0 < ours["coverage"] < 1.0 and ours["density"] > 0.0, ours


def test_coverage_falls_monotonically_as_classes_are_dropped(digit_features):
    d = digit_features
    real = embed(d.net, d.a)
    pool, labels = embed(d.net, d.train_x), d.train_y
    coverage = []
    for kept in (10, 8, 6, 4, 2):  # always 150 real digits as "fakes": only the classes change
        coverage.append(density_coverage(real, pool[np.flatnonzero(labels < kept)[:150]], k=3)["coverage"])
    assert all(a > b for a, b in zip(coverage, coverage[1:])), coverage
    assert coverage[0] > 0.6 and coverage[-1] < 0.35, coverage


def _lfw_faces_8x8(n: int) -> torch.Tensor:
    """Real faces (scikit-image's LFW subset) at the digits' 8x8, gray, in [-1, 1]."""
    from skimage.data import lfw_subset

    faces = torch.as_tensor(lfw_subset()[:n], dtype=torch.float32)[:, None]
    return torch.nn.functional.interpolate(faces, size=(8, 8), mode="area") * 2 - 1


def test_coverage_does_not_rise_when_another_datasets_images_are_mixed_in(digit_features):
    d = digit_features
    real, digits, faces = embed(d.net, d.a), embed(d.net, d.b), embed(d.net, _lfw_faces_8x8(150))
    pure = density_coverage(real, digits, k=3)
    mixed = density_coverage(real, torch.cat([digits[:150], faces]), k=3)  # same count, half faces
    half = density_coverage(real, digits[:150], k=3)
    # (density may rise: 8x8 faces land in crowded digit regions; that is why coverage leads the report)
    assert mixed["coverage"] < pure["coverage"], (mixed, pure)
    # the 150 faces cover far fewer digits than 150 more digits would
    assert mixed["coverage"] < (half["coverage"] + pure["coverage"]) / 2, (mixed, half, pure)


# ---------------------------------------------------------------- diversity
def test_ssim_is_one_for_identical_images_and_lower_for_real_digits(digit_features):
    d = digit_features
    same = d.b[:1].repeat(20, 1, 1, 1)
    assert mean_pairwise_ssim(same, 30) == pytest.approx(1.0)
    real = mean_pairwise_ssim(d.b, 100, seed=0)
    assert real < 0.9
    assert mean_pairwise_ssim(d.b, 100, seed=0) == real  # seeded: reproducible
    rgb = torch.rand(10, 3, 16, 16) * 2 - 1
    assert mean_pairwise_ssim(rgb[:1].repeat(5, 1, 1, 1), 10) == pytest.approx(1.0)
    assert mean_pairwise_ssim(rgb, 20) < 0.5  # independent noise images are dissimilar


# ---------------------------------------------------------------- classes
def test_class_histogram_mode_coverage_and_per_class_accuracy_on_a_toy():
    classes = ["a", "b", "c", "d"]
    pred = np.array([0] * 50 + [1] * 49 + [3])  # c never, d once: a stray sample is not coverage
    assert class_histogram(pred, 4).tolist() == [0.5, 0.49, 0.0, 0.01]
    cov = mode_coverage(pred, classes)
    assert cov["classes_covered"] == 2 and cov["num_classes"] == 4 and cov["n"] == 100
    assert cov["histogram"]["a"] == 0.5 and cov["kl_to_uniform"] > 0
    uniform = mode_coverage(np.arange(100) % 4, classes)
    assert uniform["classes_covered"] == 4 and uniform["kl_to_uniform"] == pytest.approx(0.0)

    target = np.array([0, 0, 1, 1, 2, 2])
    acc = per_class_accuracy(np.array([0, 0, 1, 0, 0, 0]), target, ["x", "y", "z", "w"])
    assert acc["per_class"] == {"x": 1.0, "y": 0.5, "z": 0.0, "w": None} and acc["mean"] == pytest.approx(0.5)


def test_domain_classifier_recognises_held_out_digits(digit_features):
    d = digit_features
    acc = per_class_accuracy(predict_classes(d.net, d.b), d.yb, [str(i) for i in range(10)])
    assert acc["mean"] > 0.5  # chance is 0.1


# ---------------------------------------------------------------- linear probe
def test_linear_probe_beats_chance_on_real_digits_and_is_deterministic(digit_features):
    d = digit_features
    pixels = linear_probe(d.train_x[:500].numpy(), d.train_y[:500], d.b.numpy(), d.yb)
    assert pixels > 0.5  # 10 classes: chance is 0.1
    assert linear_probe(d.train_x[:500].numpy(), d.train_y[:500], d.b.numpy(), d.yb) == pixels
    shuffled = np.random.default_rng(0).permutation(d.train_y[:500])
    assert linear_probe(d.train_x[:500].numpy(), shuffled, d.b.numpy(), d.yb) < 0.3  # labels carry the signal
