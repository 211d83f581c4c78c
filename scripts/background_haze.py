"""Is a rise in an experiment's quality curve the metric or the generator? Check one defect the eye
easily misses: a faint gray haze where real images are black (Fashion-MNIST's background is 0).

    python scripts/background_haze.py WORKSPACE EXPERIMENT [--extractor OTHER.pt ...]

For every saved epoch generator of EXPERIMENT in WORKSPACE (a project or DVC experiment folder
whose train and extractor stages ran), on the quality stage's own sample (evaluate.curve_samples
generated vs as many held-out real images, the same latents and seed), this prints
- how dark the background is: the share of pixels below 1 and below 8 gray levels (of 255) and
  the mean of the pixels below 32, beside the same numbers for the real images;
- FID as the quality stage computes it, and FID after "cleaning": every pixel below t gray
  levels set to black (t = 16, 32). A rise in FID that cleaning removes is the haze.
- a scale: FID of held-out real images with their dark pixels lifted to a haze of h gray levels.
Each --extractor repeats the FIDs with another extractor file (e.g. an older one) for comparison.
--figure FILE draws 16 real images and the same 16 latents at --epochs, as they are (top) and with
their darkest 32 gray levels stretched to the full range (bottom), where the haze shows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from dcganlab.core import paths
from dcganlab.core.config import load_params
from dcganlab.evaluation.extractor import embed, load_extractor
from dcganlab.evaluation.metrics import fid_kid_features
from dcganlab.evaluation.reference import reference
from dcganlab.gan.modelfile import load_model
from dcganlab.gan.sampling import balanced_labels, generate, sample_noise

CLEAN = (16, 32)  # gray levels below which a pixel is set to black
HAZE = (4, 8, 16, 24)  # gray levels of the haze put on real images' dark pixels


def gray(x: torch.Tensor) -> torch.Tensor:
    return (x.float() + 1) * 127.5


def clean(x: torch.Tensor, t: int) -> torch.Tensor:
    return torch.where(gray(x) < t, torch.full_like(x, -1.0), x)


def haze(x: torch.Tensor, h: int, gen: torch.Generator) -> torch.Tensor:
    """Dark pixels (< h) lifted to h gray levels, +-h/2 of uniform speckle (as the generator draws it)."""
    lifted = (h + h * (torch.rand(x.shape, generator=gen) - 0.5)) / 127.5 - 1
    return torch.where(gray(x) < h, lifted, x)


def dark(x: torch.Tensor) -> str:
    g = gray(x)
    return f"{(g < 1).float().mean():.3f} | {(g < 8).float().mean():.3f} | {g[g < 32].mean():.1f}"


def tile(x: torch.Tensor, stretch: bool) -> Image.Image:
    """16 images as a 4x4 block; stretch: gray levels 0..31 -> 0..248 (brighter pixels white)."""
    g = gray(x[:16, 0]).clamp(0, 255)
    g = (g * 8).clamp(0, 255) if stretch else g
    n, s = 4, g.shape[-1]
    block = g.reshape(n, n, s, s).permute(0, 2, 1, 3).reshape(n * s, n * s)
    return Image.fromarray(block.round().byte().numpy())


def figure(columns: dict[str, torch.Tensor], out: Path) -> None:
    side = 4 * next(iter(columns.values())).shape[-1]
    img = Image.new("L", (len(columns) * (side + 8), 2 * side + 40), 255)
    draw = ImageDraw.Draw(img)
    for i, (label, x) in enumerate(columns.items()):
        draw.text((i * (side + 8), 2), label, fill=0)
        img.paste(tile(x, False), (i * (side + 8), 16))
        img.paste(tile(x, True), (i * (side + 8), side + 32))
    draw.text((0, side + 18), "below: gray levels 0-31 stretched x8", fill=0)
    img.quantize(64).save(out, optimize=True)  # small for git


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("experiment")
    ap.add_argument("--extractor", type=Path, action="append", default=[], help="another extractor file to compare")
    ap.add_argument("--figure", type=Path, help="write the haze figure here (PNG)")
    ap.add_argument("--epochs", default="", help="epochs in the figure, e.g. 2,6")
    args = ap.parse_args()
    params = load_params(args.workspace / "params.yaml")
    ev, e = params.evaluate, params.experiment(args.experiment)
    gen = torch.Generator().manual_seed(params.seed + 400)  # the quality stage's sample
    real, _, _ = reference(params, e.dataset, ev.curve_samples, gen)
    z = sample_noise(ev.curve_samples, e.z_dim, e.noise, "cpu", gen)
    nets = {"this": load_extractor(paths.extractor_path(args.workspace, e.dataset))[0]}
    nets.update({p.name: load_extractor(p)[0] for p in args.extractor})
    real_f = {k: embed(net, real, ev.batch_size) for k, net in nets.items()}

    def fids(images: list[torch.Tensor]) -> str:
        return " | ".join(
            " / ".join(
                f"{fid_kid_features(real_f[k], embed(net, x, ev.batch_size), ev.kid_subset_size, params.seed)['fid']:.1f}"
                for x in images
            )
            for k, net in nets.items()
        )

    state = paths.state_dir(args.workspace, args.experiment)
    epochs = sorted(paths.saved_epochs(paths.generators_dir(state)).items())
    wanted = {int(x) for x in args.epochs.split(",") if x}
    names = " | ".join(f"FID {k}: as is / " + " / ".join(f"t={t}" for t in CLEAN) for k in nets)
    print(f"{len(z)} generated vs {len(real)} held-out real images of {e.dataset}")
    print(f"| epoch | pixels < 1 | < 8 | mean of < 32 | {names} |")
    print("|---|---:|---:|---:|" + "---|" * len(nets))
    print(f"| real | {dark(real)} | |")
    shown = {"real (held out)": real}
    for epoch, path in epochs:
        G, _, meta = load_model(path)
        fake = generate(G, z, balanced_labels(len(z), meta["num_classes"]))
        print(f"| {epoch} | {dark(fake)} | {fids([fake] + [clean(fake, t) for t in CLEAN])} |")
        if epoch in wanted:
            shown[f"epoch {epoch}"] = fake
    other, _, _ = reference(params, e.dataset, ev.curve_samples, torch.Generator().manual_seed(params.seed + 401))
    hazy = [other] + [haze(other, h, torch.Generator().manual_seed(h)) for h in HAZE]
    print(f"\nreal images with a haze of 0 / {' / '.join(map(str, HAZE))} gray levels: FID {fids(hazy)}")
    if args.figure:
        figure(shown, args.figure)


if __name__ == "__main__":
    main()
