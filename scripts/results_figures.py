"""Copy the figures of finished experiments into docs/ (small) and print their numbers as markdown.

    python scripts/results_figures.py WORKSPACE EXPERIMENT... [--out docs/results] [--epochs 1,2]

WORKSPACE is a project (or DVC experiment) folder whose `dvc exp run` / `dvc repro` finished the
experiments' train, sample, evaluate and quality stages. For each experiment this writes
- `<exp>-quality.png`: FID by epoch and by wall-clock (the report's quality figure);
- `<exp>-epochs.png`: the fixed-noise grid at the given epochs and at the last one;
- `<exp>-ranked.png`: random samples (left) next to the discriminator's best of 5n (right);
each at most 600 px wide, and prints one table row per experiment (the numbers docs/results.md quotes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw

WIDTH = 600


def save(img: Image.Image, path: Path) -> None:
    """Small files for git: 64 colours (grey images stay grey), optimised."""
    img.convert("RGB").quantize(64).save(path, optimize=True)


def _shrink(img: Image.Image, width: int = WIDTH) -> Image.Image:
    if img.width <= width:
        return img
    return img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)


def _row(images: list[Image.Image], labels: list[str], tile: int) -> Image.Image:
    """The images side by side, each `tile` px wide, a label above each."""
    tiles = [im.convert("RGB").resize((tile, round(im.height * tile / im.width)), Image.LANCZOS) for im in images]
    out = Image.new("RGB", (tile * len(tiles) + 8 * (len(tiles) - 1), max(t.height for t in tiles) + 16), "white")
    draw = ImageDraw.Draw(out)
    for i, (t, label) in enumerate(zip(tiles, labels)):
        out.paste(t, (i * (tile + 8), 16))
        draw.text((i * (tile + 8), 2), label, fill="black")
    return out


def figures(ws: Path, exp: str, out: Path, epochs: list[int]) -> None:
    save(_shrink(Image.open(ws / "reports" / "figures" / f"{exp}_quality.png")), out / f"{exp}-quality.png")
    grids = sorted((ws / "models" / exp / "train" / "grids").glob("epoch_*.png"))
    last = int(grids[-1].stem.split("_")[1])
    shown = [e for e in epochs if e < last] + [last]
    images = [Image.open(ws / "models" / exp / "train" / "grids" / f"epoch_{e:04d}.png") for e in shown]
    save(_row(images, [f"epoch {e}" for e in shown], WIDTH // len(shown) - 8), out / f"{exp}-epochs.png")
    samples = ws / "reports" / "samples" / exp
    pair = [Image.open(samples / "grid.png"), Image.open(samples / "nice.png")]
    save(_row(pair, ["random samples", "D-ranked: best n of 5n"], WIDTH // 2 - 8), out / f"{exp}-ranked.png")


def side_by_side(ws: Path, exps: list[str], out: Path) -> None:
    """The last epoch's fixed-noise grid of each experiment, side by side (same seed: same noise)."""
    grids = [sorted((ws / "models" / exp / "train" / "grids").glob("epoch_*.png"))[-1] for exp in exps]
    save(_row([Image.open(g) for g in grids], exps, WIDTH // len(exps) - 8), out / f"{'-vs-'.join(exps)}.png")


def table_row(ws: Path, exp: str) -> str:
    m = json.loads((ws / "reports" / "eval" / f"{exp}.json").read_text())
    train = json.loads((ws / "reports" / exp / "train.json").read_text())
    stats = json.loads((ws / "data" / "processed" / m["dataset"] / "stats.json").read_text())
    probe = m.get("linear_probe") or {}
    rss = f", {train['peak_rss_mb'] / 1024:.2f} GiB" if "peak_rss_mb" in train else ""
    return (
        f"| {exp} | {m['variant']} | {m['dataset']} {stats['image_size']}x{stats['image_size']} | "
        f"{stats['train']:,} / {stats['test']:,} | {m['epochs']} | {m['train_wall_s'] / 60:.1f} min, "
        f"{m['images_per_s']:.0f} img/s{rss} | {m['fid']:.2f} ({m['fid_real_floor']:.2f}) | "
        f"{m['kid']:.3f} ± {m['kid_std']:.3f} | {m['precision']:.2f} / {m['recall']:.2f} "
        f"({m['precision_real_floor']:.2f} / {m['recall_real_floor']:.2f}) | "
        f"{m['density']:.2f} / {m['coverage']:.2f} ({m['density_real_floor']:.2f} / {m['coverage_real_floor']:.2f}) | "
        f"{probe.get('d_features', float('nan')):.3f} vs {probe.get('pixels', float('nan')):.3f} "
        f"(n={probe.get('eval_n', 'n/a')}) | {m['fid_ranked']:.2f} vs {m['fid']:.2f} |"
    )


HEADER = (
    "| experiment | variant | data | train / held-out images | epochs | training (peak RSS) | FID (real floor) | "
    "KID ± std | precision / recall (real) | density / coverage (real) | probe: D features vs pixels | "
    "FID: D-ranked vs random |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("experiments", nargs="+")
    ap.add_argument("--out", type=Path, default=Path("docs/results"))
    ap.add_argument("--epochs", default="1,2", help="epochs whose grids to show (the last is always shown)")
    ap.add_argument("--side-by-side", default="", help="A,B: also the last grids of these experiments side by side")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    epochs = [int(e) for e in args.epochs.split(",")]
    print(HEADER)
    for exp in args.experiments:
        figures(args.workspace, exp, args.out, epochs)
        print(table_row(args.workspace, exp))
    if args.side_by_side:
        side_by_side(args.workspace, args.side_by_side.split(","), args.out)


if __name__ == "__main__":
    main()
