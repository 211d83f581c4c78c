"""calibration: what a FID on the `domain` extractor's features means, in disturbances a person can see.

The protocol of the FID paper (Heusel et al. 2017, Fig. 1): real images disturbed at increasing
levels must score worse and worse. Reference = N real training-split images, disturbed = N
held-out (test-split) images, so level 0 is the real floor; N = min(max_n, what each split holds),
drawn with a fixed seed. Families:

- the paper's: Gaussian noise, Gaussian blur, black rectangles, swirl, salt-and-pepper;
- a faint high-frequency checkerboard (+-A gray levels of 255, alternating per pixel): what
  transposed convolutions leave in generated images, which the eye barely sees;
- mode dropping (labelled data): the disturbed images come from fewer and fewer classes (drawn
  from every real image outside the reference, with replacement only when the kept classes hold
  fewer than N).

Each level gets FID and KID (metrics.fid_kid_features, as evaluate) and precision, recall, density
and coverage with evaluate's k. Per family: Spearman's rank correlation of FID with the level, and
whether FID rises at every step. The headline gives the scale in words: "a 1-pixel blur of real
images scores FID X; checkerboard +-4 scores Y". The extractor stage writes the whole table to
models/extractors/<dataset>.calibration.json (paths.calibration_path).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from dcganlab.core import paths
from dcganlab.core.atomic import write_json
from dcganlab.core.errors import UserError
from dcganlab.core.files import read_json
from dcganlab.evaluation.extractor import describe, embed, to_float
from dcganlab.evaluation.metrics import density_coverage, fid_kid_features, precision_recall

MAX_N = 1000  # images per side (the FID paper's figure uses more; 1000 is evaluate's count)
BLUR_SIGMA = 1.0  # the headline's scale: a 1-pixel Gaussian blur ...
CHECKER_AMPLITUDE = 4.0  # ... against a +-4 gray-level checkerboard
CHECKER_RATIO_MAX = 0.3  # target: the checkerboard moves FID less than 0.3x the blur
SPEARMAN_MIN = 0.9  # target: every family gets worse with its level
KEEP_CLASSES = (8, 6, 4, 2, 1)  # mode dropping: classes kept after "all of them"


# ---------------------------------------------------------------- disturbances
# Each takes (N, C, H, W) float gray levels in 0..255, a level and a numpy Generator, and returns
# the disturbed images (clipped to 0..255 by `disturb`).
def gaussian_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(0.0, sigma, x.shape)


def gaussian_blur(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, (0, 0, sigma, sigma), mode="nearest")


def black_rectangles(x: np.ndarray, count: float, rng: np.random.Generator) -> np.ndarray:
    """`count` black squares of a quarter of the image side per image, at random places."""
    out, side = x.copy(), max(1, x.shape[-1] // 4)
    for image in out:
        for top, left in rng.integers(0, x.shape[-1] - side + 1, (int(count), 2)):
            image[:, top : top + side, left : left + side] = 0.0
    return out


def swirl(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """skimage.transform.swirl about the centre, radius = the image side."""
    from skimage.transform import swirl as sk_swirl

    hwc = x.transpose(0, 2, 3, 1)  # warp treats a last axis as channels
    return np.stack(
        [sk_swirl(image, strength=strength, radius=x.shape[-1], preserve_range=True, mode="edge") for image in hwc]
    ).transpose(0, 3, 1, 2)


def salt_and_pepper(x: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """`fraction` of the pixels (all channels of each) set to black or white at random."""
    n, _, h, w = x.shape
    hit = rng.random((n, 1, h, w)) < fraction
    value = rng.integers(0, 2, (n, 1, h, w)) * 255.0
    return np.where(hit, value, x)


def checkerboard(x: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """+-amplitude gray levels alternating pixel by pixel (transposed convolutions' artefact)."""
    h, w = x.shape[-2:]
    sign = (np.add.outer(np.arange(h), np.arange(w)) % 2) * 2.0 - 1.0
    return x + amplitude * sign


# family: (function, unit of its level, levels after 0)
FAMILIES = {
    "gaussian_noise": (gaussian_noise, "std, gray levels of 255", (8.0, 16.0, 32.0, 64.0)),
    "gaussian_blur": (gaussian_blur, "sigma, pixels", (0.5, 1.0, 2.0, 3.0)),
    "black_rectangles": (black_rectangles, "squares of 1/4 the side per image", (1.0, 2.0, 4.0, 8.0)),
    "swirl": (swirl, "swirl strength (radius = image side)", (0.5, 1.0, 2.0, 4.0)),
    "salt_and_pepper": (salt_and_pepper, "fraction of pixels", (0.01, 0.02, 0.05, 0.1, 0.2)),
    "checkerboard": (checkerboard, "+- gray levels of 255", (2.0, 4.0, 8.0, 16.0)),
    # the same pattern on a float generator's output near black, where it is not clipped: outside the range
    # of any real image, so extractors trained on real images are untested there (informative; no target)
    "checkerboard_unclipped": (checkerboard, "+- gray levels of 255, not clipped to 0..255", (2.0, 4.0, 8.0, 16.0)),
}
UNCLIPPED = {"checkerboard_unclipped"}


def disturb(images: np.ndarray, family: str, level: float, seed: int) -> torch.Tensor:
    """uint8 (N, C, H, W) images disturbed by `family` at `level`, in [-1, 1] (clipped, but for UNCLIPPED)."""
    fn = FAMILIES[family][0]
    x = images.astype(np.float64)
    if level:
        x = fn(x, level, np.random.default_rng(seed))
        x = x if family in UNCLIPPED else np.clip(x, 0.0, 255.0)
    return to_float(x)


# ---------------------------------------------------------------- measuring
def _scores(ref_f: torch.Tensor, f: torch.Tensor, k: int, kid_subset: int, seed: int) -> dict:
    s = fid_kid_features(ref_f, f, kid_subset, seed)
    return {"fid": s["fid"], "kid": s["kid"], **precision_recall(ref_f, f, k), **density_coverage(ref_f, f, k)}


def _trend(levels: list[float], fids: list[float]) -> dict:
    from scipy.stats import spearmanr

    if len(set(fids)) == 1:  # FID does not move at all: no trend (Spearman is undefined)
        return {"spearman": 0.0, "monotone": False}
    rho = round(float(spearmanr(levels, fids).statistic), 9)  # 0.8999999999999998 is 0.9 (one swap of five levels)
    return {"spearman": rho, "monotone": bool(all(b > a for a, b in zip(fids, fids[1:])))}


def _draw(n_pool: int, n: int, gen: torch.Generator) -> np.ndarray:
    """n indices into a pool: without replacement when the pool holds n, else with."""
    if n_pool >= n:
        return torch.randperm(n_pool, generator=gen)[:n].numpy()
    return torch.randint(n_pool, (n,), generator=gen).numpy()


def mode_dropping(
    net, data: dict, ref_idx: np.ndarray, ref_f: torch.Tensor, k: int, kid_subset: int, seed: int, batch: int
) -> dict:
    """FID etc. of N real images from the first `kept` classes of a seeded class order, kept =
    all, 8, 6, 4, 2, 1; the images are every real image outside the reference."""
    images, labels = data["images"], data["labels"]
    num_classes, n = len(data["stats"]["classes"]), len(ref_idx)
    pool = np.setdiff1d(np.arange(len(images)), ref_idx)
    order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed + 310)).numpy()
    rows = []
    for kept in [num_classes, *[c for c in KEEP_CLASSES if c < num_classes]]:
        candidates = pool[np.isin(labels[pool], order[:kept])]
        pick = candidates[_draw(len(candidates), n, torch.Generator().manual_seed(seed + 311 + kept))]
        f = embed(net, to_float(images[pick]), batch)
        rows.append(
            {
                "level": num_classes - kept,
                "kept_classes": kept,
                "with_replacement": bool(len(candidates) < n),
                **_scores(ref_f, f, k, kid_subset, seed),
            }
        )
    fids = [r["fid"] for r in rows]
    return {
        "unit": "classes dropped (disturbed images drawn from the rest)",
        "levels": rows,
        **_trend([r["level"] for r in rows], fids),
        "coverage_falls": bool(all(b["coverage"] < a["coverage"] for a, b in zip(rows, rows[1:]))),
    }


def _split_samples(data: dict, seed: int, max_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of N reference (training-split) and N held-out (test-split) images."""
    split = data["split"]
    train, test = np.flatnonzero(split == 0), np.flatnonzero(split == 1)
    if len(test) < 2:  # no held-out split (a tiny dataset): two disjoint halves of the training split
        half = len(train) // 2
        train, test = train[:half], train[half:]
    n = min(max_n, len(train), len(test))
    if n < 2:
        raise UserError(f"calibration needs at least 2 reference and 2 held-out images, the dataset has {n}")
    gen = torch.Generator().manual_seed(seed + 300)
    return train[_draw(len(train), n, gen)], test[_draw(len(test), n, gen)]


@torch.no_grad()
def calibrate(
    net, info: dict, data: dict, k: int, kid_subset: int, seed: int, max_n: int = MAX_N, batch: int = 250
) -> dict:
    """The whole calibration table of extractor `net` (its `info`) on a processed dataset."""
    t0 = time.perf_counter()
    images = data["images"]
    ref_idx, held_idx = _split_samples(data, seed, max_n)
    ref_f = embed(net, to_float(images[ref_idx]), batch)
    held = images[held_idx]
    floor = _scores(ref_f, embed(net, to_float(held), batch), k, kid_subset, seed)
    families = {}
    for i, (name, (_, unit, levels)) in enumerate(FAMILIES.items()):
        rows = [{"level": 0.0, **floor}]
        for level in levels:
            f = embed(net, disturb(held, name, level, seed + 320 + i), batch)
            rows.append({"level": level, **_scores(ref_f, f, k, kid_subset, seed)})
        families[name] = {"unit": unit, "levels": rows, **_trend([r["level"] for r in rows], [r["fid"] for r in rows])}
    if info.get("kind") == "classifier" and len(data["stats"]["classes"]) >= 2:
        families["mode_dropping"] = mode_dropping(net, data, ref_idx, ref_f, k, kid_subset, seed, batch)
    table = {
        "extractor": describe(info),
        "n": len(ref_idx),
        "reference": "train split",
        "disturbed": "test split",
        "k": k,
        "kid_subset_size": min(kid_subset, len(ref_idx)),
        "seed": seed,
        "real_floor": floor,
        "families": families,
    }
    table["checks"] = checks(families, floor["fid"])
    table["headline"] = headline(table)
    table["seconds"] = time.perf_counter() - t0
    return table


def _fid_at(family: dict, level: float) -> float:
    return next(r["fid"] for r in family["levels"] if r["level"] == level)


def checks(families: dict, floor: float) -> dict:
    """The targets: every family Spearman >= SPEARMAN_MIN; checkerboard +-4 <= 0.3 x blur sigma 1.
    The ratio is also given above the real floor, (checker - floor) / (blur - floor), with the ratio
    an extractor blind to the checkerboard would score (floor / blur): where a 1-pixel blur barely
    clears the floor (an upscaled 28x28 image at 96 or 128), that blind ratio exceeds 0.3, and only
    the ratio above the floor says whether the extractor sees the checkerboard."""
    spearman = {name: f["spearman"] for name, f in families.items() if name not in UNCLIPPED}  # informative only
    worst = min(spearman, key=spearman.get)
    blur, checker = _fid_at(families["gaussian_blur"], BLUR_SIGMA), _fid_at(families["checkerboard"], CHECKER_AMPLITUDE)
    ratio, excess = checker / blur, max(checker - floor, 0.0) / max(blur - floor, 1e-12)
    out = {
        "spearman_min": spearman[worst],
        "spearman_min_family": worst,
        "spearman_ok": bool(spearman[worst] >= SPEARMAN_MIN),
        "spearman_target": SPEARMAN_MIN,
        "checkerboard_ratio": ratio,
        "checkerboard_ok": bool(ratio <= CHECKER_RATIO_MAX),
        "checkerboard_ratio_target": CHECKER_RATIO_MAX,
        "checkerboard_blind_ratio": floor / blur,
        "checkerboard_ratio_above_floor": excess,
        "checkerboard_above_floor_ok": bool(excess <= CHECKER_RATIO_MAX),
        "checkerboard_unclipped_ratio": _fid_at(families["checkerboard_unclipped"], CHECKER_AMPLITUDE)
        / _fid_at(families["gaussian_blur"], BLUR_SIGMA),
    }
    if "mode_dropping" in families:
        out["coverage_falls_as_classes_drop"] = families["mode_dropping"]["coverage_falls"]
    return out


def headline(table: dict) -> str:
    fam, c = table["families"], table["checks"]
    blur = _fid_at(fam["gaussian_blur"], BLUR_SIGMA)
    checker = _fid_at(fam["checkerboard"], CHECKER_AMPLITUDE)
    return (
        f"on these features ({table['extractor']}), a {BLUR_SIGMA:g}-pixel blur of real images scores FID "
        f"{blur:.2f}; a +-{CHECKER_AMPLITUDE:g} gray-level checkerboard {checker:.2f} (ratio {c['checkerboard_ratio']:.2f}, "
        f"{c['checkerboard_ratio_above_floor']:.2f} above the floor); "
        f"real floor {table['real_floor']['fid']:.2f} ({table['n']} vs {table['n']} real images)"
    )


# ---------------------------------------------------------------- the file
def write_calibration(root: Path, dataset: str, table: dict) -> Path:
    path = paths.calibration_path(root, dataset)
    write_json(path, {"dataset": dataset, **table})
    return path


def read_headline(root: Path, dataset: str) -> str:
    """The calibration's headline, as `dcganlab score` and the report print it."""
    path = paths.calibration_path(root, dataset)
    if not path.is_file():
        return f"calibration: not computed yet (run `dcganlab extractor {dataset}`)"
    found = read_json(path, "extractor calibration", f"delete it or rerun `dcganlab extractor {dataset}`")
    text = found.get("headline") if isinstance(found, dict) else None
    return f"calibration: {text}" if text else f"calibration: see {path}"


def calibrate_extractor(params, dataset: str, net, info: dict, data: dict) -> tuple[dict, Path]:
    """Calibrate `dataset`'s extractor with the evaluation's k, KID subset size, seed and batch, and
    write the table beside it (the extractor stage after training; `dcganlab calibrate`)."""
    ev = params.evaluate
    table = calibrate(net, info, data, ev.pr_k, ev.kid_subset_size, params.seed, batch=ev.batch_size)
    return table, write_calibration(params.root, dataset, table)
