"""Sampling extras: latent vector arithmetic, the epoch-progression strip and the first
discriminator layer's filters (the sample stage writes them next to its grids).

Latent arithmetic (Radford et al. 2016, section 6.3.2): average the latents of a few samples
of kind A, of kind B and of kind C, generate from mean(A) - mean(B) + mean(C) and check that
the result is of the kind the analogy predicts. Averaging 3 latents (as the paper does) keeps
the result's per-dimension variance at 3 x 1/3 = 1, so it lies where G was trained. Which
"kind" a sample is must be observable, so it depends on the model:

- unconditional digits: the class the dataset's domain classifier gives the sample.
  A = confident samples of digit a, B = of digit b, C = other samples of digit b: does the
  direction mean(a) - mean(b) turn another b into an a? The classifier judges the result.
- conditional digits (cgan): the class is an input, so the arithmetic is on the style latent:
  kind = stroke weight (mean pixel value). A = heavy-stroke styles, B = light, C = other
  light ones, each rendered with the row's requested digit; the result should be heavier
  than C and still be that digit (the classifier says).
- unlabeled faces: no attribute labels (smile, glasses) exist, so the only honest observable
  kind is brightness (mean pixel value: lighting and skin tone together); same A/B/C scheme.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from torchvision.utils import make_grid

from dcganlab.core import paths
from dcganlab.core.config import SampleParams
from dcganlab.core.files import load_image, restore
from dcganlab.gan.sampling import generate, sample_noise, to_grid

PROGRESSION_EPOCHS = (1, 5, 10, 20)  # the epochs; the last saved epoch is added
FONT = ImageFont.load_default(size=12)
TITLE_H = 18  # height of a column-title band, pixels
GAP = 4  # space between cells
WHITE = (255, 255, 255)


# ---------------------------------------------------------------- layout helpers
def _text_width(text: str) -> int:
    return int(math.ceil(FONT.getlength(text)))


def labelled_table(
    cells: list[list[Image.Image]], col_titles: list[str], row_texts: list[str] | None = None
) -> Image.Image:
    """Images in rows x columns (all cells of a column the same size), a title over each
    column and an optional text to the right of each row; white background."""
    widths = [max(max(row[j].width for row in cells), _text_width(col_titles[j]) + 4) for j in range(len(col_titles))]
    heights = [max(c.height for c in row) for row in cells]
    text_w = max((_text_width(t) for t in row_texts), default=0) + 2 * GAP if row_texts else 0
    W = sum(widths) + GAP * (len(widths) + 1) + text_w
    H = TITLE_H + sum(heights) + GAP * (len(heights) + 1)
    canvas = Image.new("RGB", (W, H), WHITE)
    draw = ImageDraw.Draw(canvas)
    x = GAP
    for j, title in enumerate(col_titles):
        draw.text((x, 2), title, fill=(0, 0, 0), font=FONT)
        x += widths[j] + GAP
    y = TITLE_H + GAP
    for i, row in enumerate(cells):
        x = GAP
        for j, cell in enumerate(row):
            canvas.paste(cell.convert("RGB"), (x, y))
            x += widths[j] + GAP
        if row_texts:
            draw.text((x + GAP, y + heights[i] // 2 - 7), row_texts[i], fill=(0, 0, 0), font=FONT)
        y += heights[i] + GAP
    return canvas


def note_image(text: str, width: int = 420) -> Image.Image:
    """A figure that says why there is no figure (the reason travels with the outputs)."""
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and _text_width(f"{line} {w}") > width - 2 * GAP:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    canvas = Image.new("RGB", (width, 16 * len(lines) + 2 * GAP), WHITE)
    draw = ImageDraw.Draw(canvas)
    for i, text_line in enumerate(lines):
        draw.text((GAP, GAP + 16 * i), text_line, fill=(0, 0, 0), font=FONT)
    return canvas


def _tile(image: torch.Tensor, min_side: int = 64) -> Image.Image:
    """One image in [-1, 1] as a PIL tile, enlarged (nearest) to at least `min_side`."""
    pil = to_grid(image[None], nrow=1)
    scale = max(1, math.ceil(min_side / image.shape[-1]))
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


# ---------------------------------------------------------------- latent arithmetic
@torch.no_grad()
def classify(net, images: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, its probability) from the domain classifier's head."""
    probs = torch.cat(
        [F.softmax(net.head(net.encoder(images[i : i + batch].float())), 1) for i in range(0, len(images), batch)]
    )
    p, pred = probs.max(1)
    return pred, p


def brightness(images: torch.Tensor) -> torch.Tensor:
    """Mean pixel value in [0, 1] (stroke weight for white-on-black digits)."""
    return images.float().add(1).div(2).mean(dim=(1, 2, 3))


def _rows_by_class(z, pred, prob, m: int, rows: int, classes: list[str]):
    """A = m confident samples of digit a, B = of digit b, C = the next m of digit b."""
    members = {}
    for k in range(len(classes)):
        idx = (pred == k).nonzero().flatten()
        members[k] = idx[prob[idx].argsort(descending=True)]
    eligible = [k for k in members if len(members[k]) >= 2 * m]
    if len(eligible) < 2:
        return [], (
            f"only {len(eligible)} classes have {2 * m} generated samples among {len(z)}; the arithmetic needs two"
        )
    out = []
    for r in range(min(rows, len(eligible))):
        a, b = eligible[(r + 1) % len(eligible)], eligible[r]
        out.append(
            {
                "A": z[members[a][:m]],
                "B": z[members[b][:m]],
                "C": z[members[b][m : 2 * m]],
                "label": None,
                "kinds": (f"'{classes[a]}'", f"'{classes[b]}'", f"other '{classes[b]}'"),
                "expected": a,
            }
        )
    return out, None


def _rows_by_value(z, value, m: int, rows: int, num_classes: int, words: tuple[str, str, str]):
    """A = the m highest values, B = the m lowest, C = the next-lowest m. Unconditional: row r
    takes the r-th next-lowest group as C; conditional: every row uses one C, rendered as digit r."""
    if len(z) < 3 * m:
        return [], f"{len(z)} latents are too few for 3 groups of {m}"
    order = value.argsort()  # lowest first
    n_rows = rows if num_classes else min(rows, len(z) // m - 2)
    out = []
    for r in range(n_rows):
        g = 1 if num_classes else 1 + r
        out.append(
            {
                "A": z[order[-m:]],
                "B": z[order[:m]],
                "C": z[order[m * g : m * (g + 1)]],
                "label": r % num_classes if num_classes else None,
                "kinds": words,
                "expected": None,
            }
        )
    return out, None


@torch.no_grad()
def latent_arithmetic(
    G,
    z_dim: int,
    noise: str,
    num_classes: int,
    classifier,
    classes: list[str],
    settings: SampleParams,
    gen: torch.Generator,
) -> tuple[Image.Image, dict]:
    """The arithmetic figure and its description (kinds, verdict per row); `settings`: its
    arithmetic_pool (latents drawn), arithmetic_mean_of (latents per kind), arithmetic_rows."""
    pool, mean_of, rows = settings.arithmetic_pool, settings.arithmetic_mean_of, settings.arithmetic_rows
    z = sample_noise(pool, z_dim, noise, "cpu", gen)
    if classifier is not None and not num_classes:
        mode = "class"
        note = (
            "kinds = the class the dataset's domain classifier gives each generated sample; "
            "A = digit a, B = digit b, C = other samples of digit b; expected: the result shows digit a"
        )
        pred, prob = classify(classifier, generate(G, z))
        row_specs, problem = _rows_by_class(z, pred, prob, mean_of, rows, classes)
    else:
        word = "stroke weight" if num_classes else "brightness"
        if num_classes:  # stroke weight of each style latent, averaged over every requested digit
            labels = torch.arange(num_classes).repeat(pool)
            value = brightness(generate(G, z.repeat_interleave(num_classes, 0), labels)).view(pool, num_classes).mean(1)
            mode = "style"
            note = (
                "conditional model: the class is an input, so the arithmetic is on the style latent; kind = stroke "
                "weight (mean pixel value). A = heaviest styles, B = lightest, C = other light ones, each rendered "
                "as the row's digit; expected: the result is heavier than C and still the requested digit"
            )
        else:
            value = brightness(generate(G, z))
            mode = "brightness"
            note = (
                "unlabeled images: the only observable kind without attribute labels is brightness (mean pixel "
                "value: lighting and skin tone together; the paper's smile/glasses need labels this data lacks). "
                "A = brightest, B = darkest, C = other dark samples; expected: the result is brighter than C"
            )
        words = ("heaviest", "lightest", "other light") if num_classes else ("brightest", "darkest", "other dark")
        row_specs, problem = _rows_by_value(z, value, mean_of, rows, num_classes, words)
    info = {"mode": mode, "note": note, "mean_of": mean_of, "pool": pool, "rows": []}
    if problem:
        info["skipped"] = problem
        return note_image(f"latent arithmetic skipped: {problem}"), info

    cells, texts = [], []
    for spec in row_specs:
        means = [spec[k].mean(0, keepdim=True) for k in "ABC"]
        result = means[0] - means[1] + means[2]
        lab = None if spec["label"] is None else torch.tensor([spec["label"]])
        images = [generate(G, v, lab) for v in (*means, result)]
        row = {"A": spec["kinds"][0], "B": spec["kinds"][1], "C": spec["kinds"][2]}
        if mode == "class":
            p, q = classify(classifier, images[3])
            row.update(expected=classes[spec["expected"]], got=classes[int(p)], p=round(float(q), 3))
            row["ok"] = row["got"] == row["expected"]
            text = f"classifier: '{row['got']}' ({row['p']:.2f}), expected '{row['expected']}'"
        else:
            vals = [float(brightness(im)) for im in images]
            row.update(value_A=round(vals[0], 4), value_C=round(vals[2], 4), value_result=round(vals[3], 4))
            row["ok"] = vals[3] > vals[2]
            text = f"{word} {vals[3]:.2f} (A {vals[0]:.2f}, C {vals[2]:.2f})"
            if mode == "style":
                p, q = classify(classifier, images[3]) if classifier is not None else (None, None)
                row.update(digit=classes[spec["label"]], got=None if p is None else classes[int(p)])
                row["ok"] = row["ok"] and (p is None or row["got"] == row["digit"])
                text = f"digit '{row['digit']}': " + text + ("" if p is None else f", classifier '{row['got']}'")
        cells.append([_tile(im[0]) for im in images])
        texts.append(("ok  " if row["ok"] else "no  ") + f"{row['A']} - {row['B']} + {row['C']}: " + text)
        info["rows"].append(row)
    info["agreement"] = sum(r["ok"] for r in info["rows"]) / len(info["rows"])
    titles = ["mean A", "- mean B", "+ mean C", "= result"]
    return labelled_table(cells, titles, texts), info


# ---------------------------------------------------------------- epoch progression
def closest_epochs(saved: list[int], targets=PROGRESSION_EPOCHS) -> list[int]:
    """For each target the closest saved epoch (the earlier one on a tie), plus the last saved."""
    if not saved:
        return []
    picked = {min(saved, key=lambda e: (abs(e - t), e)) for t in targets}
    return sorted(picked | {max(saved)})


def progression(grid_dir: Path) -> tuple[Image.Image, list[int]]:
    """The fixed-noise grids of the chosen epochs side by side, each titled with its epoch."""
    saved = paths.saved_epochs(grid_dir)
    epochs = closest_epochs(list(saved))
    if not epochs:
        return note_image(f"no per-epoch grids under {grid_dir}: nothing to show"), []
    grids = [load_image(saved[e], "training grid", f"delete it or {restore(grid_dir.parent)}") for e in epochs]
    return labelled_table([grids], [f"epoch {e}" for e in epochs]), epochs


# ---------------------------------------------------------------- discriminator filters
def first_conv(D: nn.Module) -> nn.Conv2d:
    return next(m for m in D.modules() if isinstance(m, nn.Conv2d))


def filter_grid(D: nn.Module, min_side: int = 24) -> Image.Image:
    """The first Conv2d's filters, each min-max normalised on its own, as a grid (RGB for 3
    input channels, gray for 1, the channel mean otherwise); enlarged with nearest pixels."""
    w = first_conv(D).weight.detach().float().cpu()  # (out, in, kh, kw)
    if w.shape[1] not in (1, 3):
        w = w.mean(1, keepdim=True)
    flat = w.flatten(1)
    lo, hi = flat.min(1).values[:, None, None, None], flat.max(1).values[:, None, None, None]
    w = (w - lo) / (hi - lo).clamp_min(1e-8)
    scale = max(1, math.ceil(min_side / w.shape[-1]))
    w = w.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    grid = make_grid(w, nrow=math.ceil(math.sqrt(len(w))), padding=2, pad_value=1.0)
    return Image.fromarray(grid.mul(255).add_(0.5).clamp_(0, 255).byte().permute(1, 2, 0).numpy())
