"""report: one comparison of every experiment, for DVC metrics and for people.

Reads reports/eval/<exp>.json (required), reports/quality/<exp>.csv and
reports/samples/<exp>/ (optional: what is missing shows as "n/a"). Writes
- reports/metrics.json: experiment -> its eval metrics, nested objects flattened with dots
  (`dvc metrics show/diff`);
- reports/figures/: each experiment's FID vs epoch and vs wall-clock seconds, and one
  overlay per dataset (matplotlib, Agg backend);
- reports/summary.md and reports/summary.html (the same content, images inline as data
  URIs so the file stands alone): the comparison table, how each number was computed, the
  claims table (claims.py) and each experiment's figures.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from dcganlab.core import paths
from dcganlab.core.atomic import atomic_dir, write_json, write_text
from dcganlab.core.config import Params
from dcganlab.core.errors import UserError
from dcganlab.core.files import dvc_output, read_csv, read_json
from dcganlab.core.flat import flatten
from dcganlab.evaluation.claims import Evidence, fmt, judge_claims
from dcganlab.evaluation.curves import best_epoch

# comparison table: column title -> how to read it from an experiment's flattened metrics
COLUMNS = {
    "variant": "variant",
    "dataset": "dataset",
    "epochs": "epochs",
    "FID": "fid",
    "FID real floor": "fid_real_floor",
    "KID": "kid",
    "coverage": "coverage",
    "coverage real floor": "coverage_real_floor",
    "density": "density",
    "precision": "precision",
    "recall": "recall",
    "SSIM fake (diversity)": "diversity_ssim",
    "SSIM real": "diversity_ssim_real",
    "images/s": "images_per_s",
    "train wall s": "train_wall_s",
    "extractor": "extractor",
    "Inception FID": "inception.fid",
}
SAMPLE_FIGURES = [  # file in reports/samples/<exp>/, caption
    ("grid.png", "samples (not cherry-picked)"),
    ("nice.png", "discriminator-ranked samples (best of 20x as many)"),
    ("classes.png", "one row per requested class"),
    ("interpolation.png", "latent interpolation"),
    ("arithmetic.png", "latent vector arithmetic"),
    ("progression.png", "training progression (fixed noise)"),
    ("d_filters.png", "first discriminator layer's filters"),
]


def read_quality(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    q = read_csv(path, "quality curve", dvc_output(path, f"quality@{path.stem}"))
    if not {"epoch", "wall_s", "fid"} <= set(q.columns):
        raise UserError(f"{path} lacks the columns epoch, wall_s, fid")
    return q.dropna(subset=["fid"]).sort_values("epoch")


def generator_choice(q: pd.DataFrame) -> dict:
    """The final and the best (curves.best_epoch) generator of a quality curve, each with its
    epoch and curve FID: the registry's `latest` and `champion` versions."""

    final, best = q.loc[q["epoch"].idxmax()], q.loc[q["epoch"] == best_epoch(q)].iloc[0]
    return {
        "final_epoch": int(final["epoch"]),
        "final_curve_fid": float(final["fid"]),
        "best_epoch": int(best["epoch"]),
        "best_curve_fid": float(best["fid"]),
    }


def arithmetic(samples: Path, name: str) -> dict:
    """The latent-arithmetic summary the sample stage left in figures.json."""
    return read_json(samples / "figures.json", "sample figures", dvc_output(samples, f"sample@{name}"))["arithmetic"]


def comparison_table(metrics: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for name, m in metrics.items():
        row = {"experiment": name}
        for title, key in COLUMNS.items():
            row[title] = fmt(m.get(key))
        if m.get("kid") is not None and m.get("kid_std") is not None:
            row["KID"] = f"{fmt(m['kid'])} ± {fmt(m['kid_std'], 2)}"
        rows.append(row)
    return pd.DataFrame(rows, columns=["experiment", *COLUMNS])


# ---------------------------------------------------------------- figures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def quality_figure(curves: dict[str, pd.DataFrame], floors: dict[str, float | None], out: Path, title: str) -> None:
    """FID vs epoch and vs wall-clock seconds, one line per experiment; dotted: real floor."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for name, q in curves.items():
        for ax, x in zip(axes, ("epoch", "wall_s")):
            (line,) = ax.plot(q[x], q["fid"], marker=".", label=name)
            if floors.get(name) is not None:
                ax.axhline(floors[name], color=line.get_color(), linestyle=":", linewidth=1)
    for ax, label in zip(axes, ("epoch", "training wall-clock seconds")):
        ax.set_xlabel(label)
        ax.set_ylabel("FID (domain features, lower is better)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(out, format="png", dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------- one document, two renderings
def render_markdown(blocks: list[tuple]) -> str:
    out = []
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + args[0])
        elif kind == "p":
            out.append(args[0])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in args[0]))
        elif kind == "table":
            out.append(args[0].to_markdown(index=False))
        elif kind == "img":
            out.append(f"![{args[1]}]({args[2]})  \n*{args[1]}*")
        out.append("")
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escape, then `code` and **bold** (the only markup the text blocks use)."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def render_html(blocks: list[tuple]) -> str:
    out = [
        "<!DOCTYPE html>",
        "<html><head><meta charset='utf-8'><title>dcganlab summary</title>",
        "<style>body{font-family:sans-serif;max-width:1500px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
        "figure{display:inline-block;margin:6px;vertical-align:top}figcaption{font-size:12px}"
        ".supports{background:#dfd}.does-not-support{background:#fdd}.inconclusive{background:#ffd}</style>",
        "</head><body>",
    ]
    for kind, *args in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{_inline(args[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(args[0])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in args[0]) + "</ul>")
        elif kind == "table":
            frame = args[0]
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
            body = []
            for _, row in frame.iterrows():
                css = str(row.get("verdict", "")).replace(" ", "-")
                body.append(f"<tr class='{css}'>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
            out.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")
        elif kind == "img":
            data = base64.b64encode(args[0].read_bytes()).decode("ascii")
            out.append(
                f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(args[1])}'>"
                f"<figcaption>{html.escape(args[1])}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- the stage
def _how_computed(name: str, m: dict, q: pd.DataFrame | None) -> str:
    parts = [
        f"**{name}**: extractor {fmt(m.get('extractor'))}; {fmt(m.get('n_fake'))} generated vs "
        f"{fmt(m.get('n_real'))} real images from {fmt(m.get('reference_split'))}; KID subset size "
        f"{fmt(m.get('kid_subset_size'))}; precision/recall/density/coverage k={fmt(m.get('pr_k'))}; SSIM over "
        f"{fmt(m.get('ssim_pairs'))} pairs"
    ]
    if m.get("linear_probe.eval_n") is not None:
        parts.append(
            f"linear probe trained on {fmt(m.get('linear_probe.train_n'))} "
            f"({fmt(m.get('linear_probe.train_split'))}), evaluated on {fmt(m.get('linear_probe.eval_n'))} "
            f"({fmt(m.get('linear_probe.eval_split'))}) real images"
        )
    if m.get("class_accuracy.n_per_class") is not None:
        parts.append(f"class accuracy on {fmt(m.get('class_accuracy.n_per_class'))} samples per requested class")
    if m.get("mode_coverage.n") is not None:
        parts.append(f"mode coverage of {fmt(m.get('mode_coverage.n'))} samples")
    parts.append(f"Inception: {fmt(m.get('inception_status'))}")
    if q is not None:
        n = q["n_fake"].iloc[0] if "n_fake" in q and len(q) else None
        parts.append(f"quality curve: {len(q)} saved epochs, {fmt(n)} generated images each")
    else:
        parts.append("quality curve: n/a")
    return "; ".join(parts) + "."


def calibration_lines(root: Path, datasets: list[str]) -> list[str]:
    """`dataset: calibration headline` per dataset (calibration.py)."""
    from dcganlab.evaluation.calibration import read_headline  # loads torch: only when a report is written

    return [f"{ds}: {read_headline(root, ds).removeprefix('calibration: ')}" for ds in datasets]


def run(params: Params) -> dict:
    root = params.root
    reports = root / "reports"
    metrics, quality, evidence = {}, {}, {}
    for name, e in params.experiments.items():
        path = paths.eval_path(root, name)
        if not path.is_file():
            raise UserError(f"no metrics for experiment '{name}' at {path} (run `dcganlab evaluate {name}` first)")
        metrics[name] = flatten(read_json(path, "evaluation metrics", dvc_output(path, f"evaluate@{name}")))
        quality[name] = read_quality(paths.quality_path(root, name))
        if quality[name] is not None and len(quality[name]):  # which generator: final and best, by the curve
            metrics[name].update(flatten({"generator": generator_choice(quality[name])}))
        figures_json = paths.samples_dir(root, name) / "figures.json"
        if figures_json.is_file():  # a sample-stage number worth tracking next to the metrics
            agreement = arithmetic(figures_json.parent, name).get("agreement")
            metrics[name]["arithmetic_agreement"] = agreement
        ds = params.dataset(e.dataset)
        evidence[name] = Evidence(
            name,
            metrics[name],
            quality[name],
            ds.image_size,
            metrics[name].get("epochs") or e.epochs,
            e.variant,
            e.dataset,
            ds.source,
            asdict(e),
        )
    write_json(reports / "metrics.json", metrics)

    with atomic_dir(paths.figures_dir(root)) as tmp:  # swapped in whole: no stale figures
        drawn = {}
        for name, q in quality.items():
            if q is not None and len(q):
                quality_figure(
                    {name: q},
                    {name: metrics[name].get("fid_real_floor")},
                    tmp / f"{name}_quality.png",
                    f"{name}: quality over training",
                )
                drawn[name] = f"{name}_quality.png"
        by_dataset: dict[str, list[str]] = {}
        for name in drawn:
            by_dataset.setdefault(params.experiment(name).dataset, []).append(name)
        for ds, names in by_dataset.items():
            quality_figure(
                {n: quality[n] for n in names},
                {n: metrics[n].get("fid_real_floor") for n in names},
                tmp / f"quality_{ds}.png",
                f"dataset {ds}: FID during training",
            )
    figures = paths.figures_dir(root)

    claims = judge_claims(evidence)
    blocks: list[tuple] = [
        ("h1", "dcganlab summary"),
        (
            "p",
            "FID/KID: torchmetrics on the extractor named in each row, lower is better. `FID real floor` is the FID "
            "of two disjoint real samples of the same sizes (the best score at this sample count). Precision/recall: "
            "k-NN manifold estimate (Kynkäänniemi et al. 2019) on the same features; coverage/density: Naeem et "
            "al. 2020 on the same k-NN balls around real images only (coverage leads: bounded, with a real floor, "
            "robust to outliers; docs/evaluation.md). SSIM: mean pairwise SSIM "
            "among generated (fake) and real images, higher = less diverse. n/a: not measured.",
        ),
        ("table", comparison_table(metrics)),
        (
            "p",
            "The scale of these FIDs: each dataset's extractor scores real held-out images disturbed at increasing "
            "levels (its calibration, models/extractors/<dataset>.calibration.json; docs/evaluation.md).",
        ),
        ("ul", calibration_lines(root, sorted({params.experiment(n).dataset for n in metrics}))),
        ("h2", "How each number was computed"),
        ("ul", [_how_computed(n, metrics[n], quality[n]) for n in metrics]),
        ("h2", "Claims of the seed papers"),
        (
            "p",
            "Each claim next to what this pipeline measured, one row per experiment it fits. `setup` says whether "
            "the experiment is the paper's setting (image size, data, training length) or what differs from it; rows "
            "off the paper's size or data get no verdict (`inconclusive`), and their reason says what the numbers "
            "alone would read; fewer epochs than the paper voids comparisons and refutations, not a capability "
            "shown. A verdict is also "
            "`inconclusive` when no experiment of the claim's variant is in params.yaml, a needed metric was not "
            "measured, a refutation comes from a run still improving at its last epoch, or the difference is within "
            "the noise scale (2 x the combined KID subset std, the real FID floor, or 2 binomial standard errors).",
        ),
        ("table", claims),
    ]
    for ds in sorted({params.experiment(n).dataset for n in drawn}):
        blocks.append(
            (
                "img",
                figures / f"quality_{ds}.png",
                f"dataset {ds}: FID vs epoch and wall-clock",
                f"figures/quality_{ds}.png",
            )
        )
    for name in metrics:
        blocks.append(("h2", name))
        samples = paths.samples_dir(root, name)
        if name in drawn:
            blocks.append(
                ("img", figures / drawn[name], "FID vs epoch and vs wall-clock seconds", f"figures/{drawn[name]}")
            )
        else:
            blocks.append(("p", f"quality curve: n/a (no {paths.quality_path(root, name).relative_to(root)})"))
        if metrics[name].get("generator.best_epoch") is not None:
            m = metrics[name]
            blocks.append(
                (
                    "p",
                    f"Generator by the quality curve: final = epoch {m['generator.final_epoch']} (curve FID "
                    f"{fmt(m['generator.final_curve_fid'])}), best = epoch {m['generator.best_epoch']} "
                    f"(curve FID {fmt(m['generator.best_curve_fid'])}); the Model Registry's "
                    f"`models:/{name}@champion` is the best, `models:/{name}/latest` the final.",
                )
            )
        shown = [(f, c) for f, c in SAMPLE_FIGURES if (samples / f).is_file()]
        blocks += [("img", samples / f, c, f"samples/{name}/{f}") for f, c in shown]
        if not shown:
            blocks.append(("p", f"samples: n/a (no {samples.relative_to(root)})"))
        if (samples / "figures.json").is_file():
            a = arithmetic(samples, name)
            text = f"Latent arithmetic ({a['mode']}): {a['note']}."
            ok = sum(r["ok"] for r in a["rows"])
            text += (
                f" Skipped: {a['skipped']}." if a.get("skipped") else f" {ok} of {len(a['rows'])} came out as expected."
            )
            blocks.append(("p", text))
    write_text(reports / "summary.md", render_markdown(blocks))
    write_text(reports / "summary.html", render_html(blocks))
    return metrics
