"""The seed papers' claims, each judged against what this pipeline measured.

One entry of CLAIMS per claim: the claim, its paper, the variants it is about (an experiment
of the first, and for comparisons one of the second on the same dataset), the setup in which
the paper made it (image sizes, data), how it is judged, and a judge that turns those
experiments' metrics into (measured, verdict, reason). Every experiment in params.yaml that
fits gets its own row: the default run's scaled-down ones and a paper preset's alike. Adding a
claim is adding one entry.

Verdicts: "supports", "does not support", "inconclusive". A row is inconclusive when
- its experiments are not the paper's setup (image size, data): "not the paper's setup:
  <what differs>", followed by what the numbers alone would read at this setup;
- no experiment of the variant is in params.yaml, or a metric it needs was not measured (n/a);
- its experiments trained fewer epochs than the paper: a comparison of two generators may
  flip either way with more training, so it gets no verdict; a capability shown by one
  experiment (the requested digit drawn, features that classify) stands, but its refutation
  does not (too short a run refutes nothing); likewise a refutation from a run whose quality
  curve was still falling at its last epoch;
- the measured difference is within the noise scale:
- comparing two generators: KID difference vs 2 x the combined KID subset std
  (sqrt(std_x^2 + std_y^2)); without KID std, FID difference vs the larger real floor
  (FID between two real samples of the same sizes);
- an accuracy vs a reference: 2 binomial standard errors at the evaluated sample count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

SUPPORTS, REFUTES, INCONCLUSIVE = "supports", "does not support", "inconclusive"


class Missing(Exception):
    """A metric a claim needs was not measured."""


@dataclass
class Evidence:
    """One experiment as the judges see it."""

    name: str
    metrics: dict  # the flattened eval JSON (dotted keys)
    quality: pd.DataFrame | None  # reports/quality/<exp>.csv (epoch, wall_s, fid, ...)
    image_size: int
    epochs: int
    variant: str = ""
    dataset: str = ""
    source: str = ""  # the dataset's fetch source: the kind of data
    recipe: dict = field(default_factory=dict)  # the experiment's params.yaml entry (ExperimentParams)

    def get(self, key: str) -> float:
        value = self.metrics.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise Missing(f"{key} of {self.name} not measured (n/a)")
        return value


def fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


# ---------------------------------------------------------------- shared judgements
def compare(x: Evidence, y: Evidence) -> tuple[int, str]:
    """-1: x better (lower) beyond noise, +1: y better, 0: within noise; with the rule used."""
    try:
        d = x.get("kid") - y.get("kid")
        noise = 2 * math.hypot(x.get("kid_std"), y.get("kid_std"))
        rule = f"KID difference {d:+.3g} vs noise {noise:.3g} (2 x combined subset std)"
    except Missing:
        d = x.get("fid") - y.get("fid")
        noise = max(x.get("fid_real_floor"), y.get("fid_real_floor"))
        rule = f"FID difference {d:+.3g} vs noise {noise:.3g} (real floor)"
    return (0 if abs(d) <= noise else (-1 if d < 0 else 1)), rule


def epochs_to_level(q: pd.DataFrame, level: float) -> tuple[int, float] | None:
    """First (epoch, wall_s) at which FID <= level."""
    hit = q[q["fid"] <= level + 1e-12].sort_values("epoch")
    return None if hit.empty else (int(hit["epoch"].iloc[0]), float(hit["wall_s"].iloc[0]))


def still_improving(q: pd.DataFrame | None) -> bool:
    """The curve's best FID is in its last fifth of epochs: training had not levelled off."""
    if q is None or len(q) < 5:
        return False
    q = q.sort_values("epoch")
    return int(q["fid"].to_numpy().argmin()) >= 0.8 * (len(q) - 1)


def _final(x: Evidence, y: Evidence) -> str:
    return (
        f"FID {fmt(x.metrics.get('fid'))} vs {fmt(y.metrics.get('fid'))}, KID {fmt(x.metrics.get('kid'))} vs "
        f"{fmt(y.metrics.get('kid'))} ({x.name} vs {y.name}, {x.epochs} vs {y.epochs} epochs)"
    )


def better_generator(x: Evidence, y: Evidence, caveat: str = "") -> tuple[str, str, str]:
    """The claim 'x gives better images than y', on the final FID/KID."""
    sign, rule = compare(x, y)
    verdict = {-1: SUPPORTS, 1: REFUTES, 0: INCONCLUSIVE}[sign]
    reason = {
        -1: f"{x.name} is better beyond noise",
        1: f"{x.name} is worse beyond noise",
        0: "difference within noise",
    }[sign]
    reason = f"{reason}: {rule}"
    return _final(x, y), verdict, reason + (f"; {caveat}" if caveat else "")


# ---------------------------------------------------------------- the judges
def judge_resnet(ev: list[Evidence]) -> tuple[str, str, str]:
    """Clearer images (final FID/KID) in fewer epochs (quality curves: first epoch at a FID
    level both runs reach, i.e. the worse of the two best FIDs)."""
    x, y = ev
    measured, verdict, reason = better_generator(x, y)
    qx, qy = x.quality, y.quality
    if qx is None or qy is None or qx.empty or qy.empty:
        if verdict == SUPPORTS:
            verdict, reason = INCONCLUSIVE, reason + "; no quality curve, so 'fewer epochs' cannot be judged"
        return measured + "; quality curves n/a", verdict, reason
    level = max(qx["fid"].min(), qy["fid"].min())
    (ex, wx), (ey, wy) = epochs_to_level(qx, level), epochs_to_level(qy, level)
    measured += f"; first reach FID <= {level:.4g} at epoch {ex} ({wx:.0f} s) vs epoch {ey} ({wy:.0f} s)"
    if verdict == SUPPORTS and ex > ey:
        verdict, reason = INCONCLUSIVE, reason + f"; but it needs more epochs ({ex} vs {ey}) to reach that FID"
    elif verdict == INCONCLUSIVE and ex < ey:
        reason += f"; it reaches FID {level:.4g} sooner ({ex} vs {ey} epochs) but ends level"
    return measured, verdict, reason


# what the cartoon recipe adds to its DCGAN; any other setting that differs spoils the ablation
_CARTOON_OWN = {"variant", "feature_matching", "smooth_sigma", "seed_offset"}


def judge_cartoon(ev: list[Evidence]) -> tuple[str, str, str]:
    """Final FID/KID of cartoon-128 vs its baseline; the reason says whether the pair is a clean
    ablation of smoothing + feature matching (every other setting equal) or names what else differs."""
    x, y = ev
    other = sorted(k for k in (x.recipe.keys() | y.recipe.keys()) - _CARTOON_OWN if x.recipe.get(k) != y.recipe.get(k))
    if x.recipe and y.recipe and not other:
        caveat = "a clean ablation: the same networks and settings without smoothing and feature matching"
    else:
        caveat = (
            f"{x.name} also differs from {y.name} in {', '.join(other) if other else 'settings not recorded'}: "
            "not a clean ablation of feature matching + smoothing"
        )
    return better_generator(x, y, caveat)


def judge_conditional(ev: list[Evidence]) -> tuple[str, str, str]:
    """Mean per-class accuracy of the requested digit vs chance and vs the classifier on real
    digits: supports if >= 80% of the real accuracy; does not if within 2 SE of chance."""
    (x,) = ev
    acc, real = x.get("class_accuracy.mean"), x.get("class_accuracy.classifier_test_accuracy")
    per_class = [k for k in x.metrics if k.startswith("class_accuracy.per_class.")]
    k = len(per_class) or x.get("mode_coverage.num_classes")
    n = x.get("class_accuracy.n_per_class") * k
    chance = 1.0 / k
    se = math.sqrt(chance * (1 - chance) / n)
    measured = (
        f"accuracy on requested digits {acc:.3f} (chance {chance:.3f}, classifier on real digits {real:.3f}; n={n})"
    )
    if acc <= chance + 2 * se:
        return measured, REFUTES, f"within 2 SE ({se:.3f}) of chance"
    if acc >= 0.8 * real:
        return measured, SUPPORTS, "at least 80% of the classifier's accuracy on real digits"
    return measured, INCONCLUSIVE, f"above chance but below 80% of the real-digit accuracy ({0.8 * real:.3f})"


def judge_probe(ev: list[Evidence]) -> tuple[str, str, str]:
    """Linear probe on D's features vs on raw pixels, same held-out images."""
    (x,) = ev
    d, p, n = x.get("linear_probe.d_features"), x.get("linear_probe.pixels"), x.get("linear_probe.eval_n")
    se = math.sqrt((d * (1 - d) + p * (1 - p)) / n)
    measured = f"linear probe accuracy: D features {d:.3f} vs pixels {p:.3f} (n={n})"
    if d - p > 2 * se:
        return measured, SUPPORTS, f"D features beat pixels by more than 2 SE ({se:.3f})"
    if p - d > 2 * se:
        return measured, REFUTES, f"pixels beat D features by more than 2 SE ({se:.3f})"
    return measured, INCONCLUSIVE, f"difference within 2 SE ({se:.3f})"


def judge_ranked(ev: list[Evidence]) -> tuple[str, str, str]:
    """FID of D-ranked samples vs of random samples; noise = the real floor."""
    (x,) = ev
    ranked, plain, floor = x.get("fid_ranked"), x.get("fid"), x.get("fid_real_floor")
    factor = x.metrics.get("fid_ranked_factor") or "?"
    measured = f"FID ranked (D-best n of {factor}n) {ranked:.4g} vs random {plain:.4g} (real floor {floor:.3g})"
    if plain - ranked > floor:
        return measured, SUPPORTS, "ranked samples are closer to the real data by more than the real floor"
    if ranked - plain > floor:
        return measured, REFUTES, "ranked samples are further from the real data by more than the real floor"
    return measured, INCONCLUSIVE, "difference within the real floor"


def judge_plausible(ev: list[Evidence]) -> tuple[str, str, str]:
    """Precision (share of samples on the real manifold) vs real-vs-real precision, and every
    class drawn: supports if >= 80% of the real precision and all classes covered."""
    (x,) = ev
    prec, floor = x.get("precision"), x.get("precision_real_floor")
    covered, k = x.get("mode_coverage.classes_covered"), x.get("mode_coverage.num_classes")
    measured = f"precision {prec:.3f} (real vs real {floor:.3f}); classes drawn {covered}/{k}"
    if prec >= 0.8 * floor and covered == k:
        return measured, SUPPORTS, "precision within 80% of real data's and every digit drawn"
    if prec < 0.5 * floor:
        return measured, REFUTES, "precision below half of real data's"
    return measured, INCONCLUSIVE, "precision between 50% and 80% of real data's, or a digit missing"


@dataclass(frozen=True)
class Setup:
    """Where a paper made its claim. An experiment outside it gets no verdict."""

    sizes: tuple[int, ...]  # image sizes the paper trained at
    data: str  # the paper's data, in words
    epochs: int  # the paper's training length (its preset's epochs)
    sources: frozenset[str] | None = None  # fetch sources of that kind of data; None: the claim is not about the data
    # (a verdict then holds for the data it was measured on: the reason says so)

    def differs(self, ev: list[Evidence]) -> list[str]:
        out = [
            f"{x.name} at {x.image_size}x{x.image_size} (paper: {' or '.join(f'{s}x{s}' for s in self.sizes)})"
            for x in ev
            if x.image_size not in self.sizes
        ]
        out += [
            f"{x.name} on {x.source} data (paper: {self.data})"
            for x in ev
            if self.sources is not None and x.source not in self.sources
        ]
        return out

    def short(self, ev: list[Evidence]) -> list[str]:
        return [
            f"{x.name} trained {x.epochs} of the paper's {self.epochs} epochs" for x in ev if x.epochs < self.epochs
        ]


MNIST_LIKE = frozenset({"mnist", "mnist-subset"})


@dataclass(frozen=True)
class Claim:
    claim: str
    paper: str
    variants: tuple[frozenset[str], ...]  # the experiment judged, then (comparisons) its baseline on the same dataset
    setup: Setup
    how: str
    judge: Callable[[list[Evidence]], tuple[str, str, str]]
    preset: str = ""  # the preset that runs the paper's setting, for rows without an experiment


def _v(*names: str) -> frozenset[str]:
    return frozenset(names)


CLAIMS: list[Claim] = [
    Claim(
        "two learning rates plus label smoothing 0.9/0.1 with the ResNet generator give clearer images in fewer epochs",
        "improved DCGAN (ResNet generator, anime faces)",
        (_v("resnet-dcgan"), _v("dcgan", "face-dcgan")),
        Setup((96,), "96x96 anime faces", 20),
        "final FID/KID vs a DCGAN on the same data; epochs and seconds to first reach the FID level both runs reach",
        judge_resnet,
        "resnet-exp8",
    ),
    Claim(
        "feature matching with Gaussian smoothing improves the 128x128 model",
        "cartoon-128 DCGAN",
        (_v("cartoon-128"), _v("face-dcgan", "dcgan")),
        Setup((128,), "128x128 cartoon faces", 50),
        "final FID/KID vs a face DCGAN / DCGAN on the same data",
        judge_cartoon,
        "cartoon-128",
    ),
    Claim(
        "the conditional model draws the requested digit",
        "conditional (AC-GAN) MNIST",
        (_v("cgan"),),
        Setup((28, 32), "MNIST digits", 25, MNIST_LIKE),
        "domain classifier's accuracy on generated digits of each requested class, vs chance and vs real digits",
        judge_conditional,
        "cgan-mnist",
    ),
    Claim(
        "discriminator features classify digits well",
        "upsampling GAN (Keras, MNIST / Fashion-MNIST)",
        (_v("upsample-gan"),),
        Setup((28,), "28x28 MNIST / Fashion-MNIST", 30, MNIST_LIKE | {"fashion-mnist"}),
        "logistic regression on D's features vs on raw pixels, held-out real images",
        judge_probe,
        "upsample-fashion",
    ),
    Claim(
        "discriminator features are a useful representation for classification",
        "DCGAN (Radford et al.)",
        (_v("dcgan"),),
        Setup((32, 64), "CIFAR-10 / SVHN at 32x32, D of a 64x64 DCGAN", 25),
        "logistic regression on D's features vs on raw pixels, held-out real images",
        judge_probe,
        "dcgan-fashion64",
    ),
    Claim(
        "discriminator-ranked sampling gives better samples",
        "upsampling GAN (Keras, MNIST / Fashion-MNIST)",
        (_v("upsample-gan"),),
        Setup((28,), "28x28 MNIST / Fashion-MNIST", 30, MNIST_LIKE | {"fashion-mnist"}),
        "FID of the best n of k*n samples ranked by D (k = evaluate.nice_factor) vs FID of n random samples",
        judge_ranked,
        "upsample-fashion",
    ),
    Claim(
        "DCGAN generates plausible digits",
        "DCGAN (Radford et al.)",
        (_v("dcgan"),),
        Setup((28, 32, 64), "MNIST digits", 25, MNIST_LIKE),
        "k-NN precision vs real-vs-real precision, and mode coverage of the domain classifier",
        judge_plausible,
    ),
]


def groups(claim: Claim, evidence: dict[str, Evidence]) -> list[list[Evidence]]:
    """The experiments each row of `claim` judges: one of its variant, then (comparisons) one
    of the baseline variants trained on the same dataset."""
    first, *rest = claim.variants
    rows = [[x] for x in evidence.values() if x.variant in first]
    for wanted in rest:
        rows = [
            row + [y]
            for row in rows
            for y in evidence.values()
            if y.variant in wanted and y.dataset == row[0].dataset and y.name != row[0].name
        ]
    return rows


def judge_row(claim: Claim, ev: list[Evidence]) -> dict:
    """measured, verdict, reason and setup of one row, with the setup and training-length rules applied."""
    try:
        measured, verdict, reason = claim.judge(ev)
    except Missing as err:
        return {"measured": "n/a", "verdict": INCONCLUSIVE, "reason": str(err), "setup": _setup_text(claim, ev)}
    rising = [x.name for x in ev if still_improving(x.quality)]  # too few epochs: this may change with more
    short = claim.setup.short(ev)
    if short and (len(ev) > 1 or verdict == REFUTES):  # a comparison may flip either way with more training;
        verdict, reason = INCONCLUSIVE, f"{reason}; too short: {'; '.join(short)}"  # a capability shown stands
    elif verdict == REFUTES and rising:
        verdict, reason = INCONCLUSIVE, f"{reason}; too short to refute: {', '.join(rising)} still improving"
    elif rising or short:
        reason += "".join(f"; {n} still improving at the last epoch (too few epochs?)" for n in rising)
        reason += "".join(f"; {'shown although ' if verdict == SUPPORTS else ''}{s}" for s in short)
    differs = claim.setup.differs(ev)
    if differs:
        reason = (
            f"not the paper's setup: {'; '.join(differs)}. At this setup the numbers alone read '{verdict}': {reason}"
        )
        verdict = INCONCLUSIVE
    elif claim.setup.sources is None:
        reason += f"; holds for {', '.join(sorted({x.source for x in ev}))} data (paper: {claim.setup.data})"
    return {"measured": measured, "verdict": verdict, "reason": reason, "setup": _setup_text(claim, ev)}


def _setup_text(claim: Claim, ev: list[Evidence]) -> str:
    """The claims table's `setup` column: the paper's, or what differs from it (size, data, training length)."""
    differs, short = claim.setup.differs(ev), claim.setup.short(ev)
    if differs:
        head = "not the paper's: " + "; ".join(differs)
    elif claim.setup.sources is None:
        head = f"paper's image size; data {', '.join(sorted({x.source for x in ev}))} (paper: {claim.setup.data})"
    else:
        head = "paper's size and data"
    return head + "".join(f"; shorter: {s}" for s in short)


def judge_claims(evidence: dict[str, Evidence], claims: list[Claim] = CLAIMS) -> pd.DataFrame:
    """One row per claim and fitting experiment(s): claim, paper, experiments, setup, how judged,
    measured, verdict, reason."""
    rows = []
    for c in claims:
        base = {"claim": c.claim, "paper": c.paper}
        found = groups(c, evidence)
        if not found:
            wanted = " + ".join("/".join(sorted(v)) for v in c.variants)
            hint = f" (the paper's setting: `dvc exp run $(dcganlab preset {c.preset})`)" if c.preset else ""
            rows.append(
                {
                    **base,
                    "experiments": "none",
                    "setup": "n/a",
                    "how judged": c.how,
                    "measured": "n/a",
                    "verdict": INCONCLUSIVE,
                    "reason": f"no {wanted} experiment in params.yaml{hint}",
                }
            )
        for ev in found:
            row = judge_row(c, ev)
            rows.append(
                {
                    **base,
                    "experiments": ", ".join(x.name for x in ev),
                    "setup": row.pop("setup"),
                    "how judged": c.how,
                    **row,
                }
            )
    return pd.DataFrame(
        rows, columns=["claim", "paper", "experiments", "setup", "how judged", "measured", "verdict", "reason"]
    )
