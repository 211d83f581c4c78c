"""The seed papers' claims, each judged against what this pipeline measured.

One entry of CLAIMS per claim: the claim, its paper, the experiments it needs (by name in
params.yaml), how it is judged, and a judge that turns those experiments' metrics into
(measured, verdict, reason). Adding a claim is adding one entry.

Verdicts: "supports", "does not support", "inconclusive". A claim is inconclusive when an
experiment it needs is not in params.yaml, when a metric it needs was not measured (n/a), or
when the measured difference is within the noise scale:
- comparing two generators: KID difference vs 2 x the combined KID subset std
  (sqrt(std_x^2 + std_y^2)); without KID std, FID difference vs the larger real floor
  (FID between two real samples of the same sizes);
- an accuracy vs a reference: 2 binomial standard errors at the evaluated sample count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd

SUPPORTS, REFUTES, INCONCLUSIVE = "supports", "does not support", "inconclusive"


class Missing(Exception):
    """A metric a claim needs was not measured."""


@dataclass
class Evidence:
    """One experiment as the judges see it."""
    name: str
    metrics: dict                       # the flattened eval JSON (dotted keys)
    quality: pd.DataFrame | None        # reports/quality/<exp>.csv (epoch, wall_s, fid, ...)
    image_size: int
    epochs: int

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
    return (f"FID {fmt(x.metrics.get('fid'))} vs {fmt(y.metrics.get('fid'))}, KID {fmt(x.metrics.get('kid'))} vs "
            f"{fmt(y.metrics.get('kid'))} ({x.name} vs {y.name}, {x.epochs} vs {y.epochs} epochs)")


def better_generator(x: Evidence, y: Evidence, caveat: str = "") -> tuple[str, str, str]:
    """The claim 'x gives better images than y', on the final FID/KID."""
    sign, rule = compare(x, y)
    verdict = {-1: SUPPORTS, 1: REFUTES, 0: INCONCLUSIVE}[sign]
    reason = {-1: f"{x.name} is better beyond noise", 1: f"{x.name} is worse beyond noise",
              0: "difference within noise"}[sign]
    reason = f"{reason}: {rule}"
    rising = [e.name for e in (x, y) if still_improving(e.quality)]
    if rising:  # too few epochs: the comparison may change with more training
        reason += f"; {', '.join(rising)} still improving at the last epoch (too few epochs?)"
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


def judge_cartoon(ev: list[Evidence]) -> tuple[str, str, str]:
    x, y = ev
    caveat = (f"measured at {x.image_size}x{x.image_size}, not 128x128, and cartoon-128 also differs from face-dcgan in "
              "learning rates, lr decay, flips and noise: not a clean ablation of feature matching + smoothing")
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
    measured = f"accuracy on requested digits {acc:.3f} (chance {chance:.3f}, classifier on real digits {real:.3f}; n={n})"
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
class Claim:
    claim: str
    paper: str
    needs: tuple[str, ...]       # experiment names in params.yaml, in the order the judge takes them
    how: str
    judge: Callable[[list[Evidence]], tuple[str, str, str]]


CLAIMS: list[Claim] = [
    Claim("two learning rates plus label smoothing 0.9/0.1 with the ResNet generator give clearer images in fewer epochs",
          "improved DCGAN (ResNet generator, anime faces)", ("faces-resnet", "faces-face-dcgan"),
          "final FID/KID vs the face DCGAN; epochs and seconds to first reach the FID level both runs reach",
          judge_resnet),
    Claim("feature matching with Gaussian smoothing improves the 128x128 model", "cartoon-128 DCGAN",
          ("faces-cartoon", "faces-face-dcgan"), "final FID/KID vs the face DCGAN on the same faces", judge_cartoon),
    Claim("the conditional model draws the requested digit", "conditional (AC-GAN) MNIST", ("digits-cgan",),
          "domain classifier's accuracy on generated digits of each requested class, vs chance and vs real digits",
          judge_conditional),
    Claim("discriminator features classify digits well", "upsampling GAN (Keras, MNIST)", ("digits-upsample",),
          "logistic regression on D's features vs on raw pixels, held-out real digits", judge_probe),
    Claim("discriminator features are a useful representation for classification", "DCGAN (Radford et al.)",
          ("digits-dcgan",), "logistic regression on D's features vs on raw pixels, held-out real digits", judge_probe),
    Claim("discriminator-ranked sampling gives better samples", "upsampling GAN (Keras, MNIST)", ("digits-upsample",),
          "FID of the best n of k*n samples ranked by D (k = evaluate.nice_factor) vs FID of n random samples", judge_ranked),
    Claim("DCGAN generates plausible digits", "DCGAN (Radford et al.)", ("digits-dcgan",),
          "k-NN precision vs real-vs-real precision, and mode coverage of the domain classifier", judge_plausible),
]


def judge_claims(evidence: dict[str, Evidence], claims: list[Claim] = CLAIMS) -> pd.DataFrame:
    """One row per claim: claim, paper, experiments, how judged, measured, verdict, reason."""
    rows = []
    for c in claims:
        row = {"claim": c.claim, "paper": c.paper, "experiments": ", ".join(c.needs), "how judged": c.how}
        absent = [n for n in c.needs if n not in evidence]
        if absent:
            row.update(measured="n/a", verdict=INCONCLUSIVE, reason=f"experiment {', '.join(absent)} not in params.yaml")
        else:
            try:
                measured, verdict, reason = c.judge([evidence[n] for n in c.needs])
                row.update(measured=measured, verdict=verdict, reason=reason)
            except Missing as err:
                row.update(measured="n/a", verdict=INCONCLUSIVE, reason=str(err))
        rows.append(row)
    return pd.DataFrame(rows)
