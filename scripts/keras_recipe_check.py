"""Does our upsample-gan training step differ from keras-dcgan's in a way that matters?

    python scripts/keras_recipe_check.py WORKSPACE --epochs 2 --mode ours|keras|half [--out DIR]

WORKSPACE holds a prepared Fashion-MNIST dataset `fashion28` and its extractor (e.g. after
`dvc exp run $(dcganlab preset upsample-fashion --path /usr/share/datasets/fashion-mnist)`).
Trains the upsample-gan (the preset's SGD recipe: lr 5e-4, momentum 0.9, Nesterov, batch 128,
uniform noise, glorot init) on the train split, fp32, and prints FID on the domain extractor
(1000 fixed latents vs 1000 held-out real images) every half epoch; writes a grid per epoch.

Modes (what keras-dcgan's train loop does that our loop does not):
- `ours`: the pipeline's `train_step` (D loss = BCE(real) + BCE(fake), each a batch mean;
  D's fakes from G in training mode; G's step reuses those fakes);
- `half`: D loss halved, as Keras' one `train_on_batch` on the concatenated real + fake batch
  takes the mean over 2B;
- `keras`: `half`, plus D's fakes from `g.predict` (G's BatchNorm in inference mode, Keras'
  moving-average momentum 0.99 and epsilon 1e-3) and fresh noise for G's step.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.utils import save_image

from dcganlab.core.config import ExperimentParams
from dcganlab.evaluation.extractor import embed, load_extractor, to_float
from dcganlab.evaluation.metrics import fid_kid_features
from dcganlab.gan.sampling import generate, sample_noise
from dcganlab.gan.variants import VARIANTS
from dcganlab.training.step import StepNets, bce, build_networks, train_step


def keras_step(G, D, opt_g, opt_d, real, z_dim, predict_mode: bool):
    b = real.shape[0]
    z = sample_noise(b, z_dim, "uniform", "cpu")
    if predict_mode:
        G.eval()
        with torch.no_grad():
            fake = G(z)  # g.predict: inference-mode BatchNorm
        G.train()
    else:
        fake = G(z).detach()
    loss_d = 0.5 * (bce(D(real).logit, 1.0) + bce(D(fake).logit, 0.0))  # mean over the 2B batch
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    z = sample_noise(b, z_dim, "uniform", "cpu") if predict_mode else z
    loss_g = bce(D(G(z)).logit, 1.0)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--mode", choices=["ours", "half", "keras"], default="ours")
    ap.add_argument("--out", type=Path, default=Path("/tmp/keras_check"))
    args = ap.parse_args()
    torch.manual_seed(0)
    data = args.workspace / "data" / "processed" / "fashion28"
    images, split = np.load(data / "images.npy"), np.load(data / "split.npy")
    train, test = to_float(images[split == 0]), to_float(images[split == 1])
    extractor, _ = load_extractor(args.workspace / "models" / "extractors" / "fashion28.pt")
    gen = torch.Generator().manual_seed(1)
    real_f = embed(extractor, test[torch.randperm(len(test), generator=gen)[:1000]])
    z_eval = sample_noise(1000, 100, "uniform", "cpu", gen)

    e = ExperimentParams(
        variant="upsample-gan", z_dim=100, lr_g=5e-4, lr_d=5e-4, momentum=0.9, noise="uniform", batch_size=128
    )
    v = VARIANTS["upsample-gan"]
    G, D = build_networks(e, 1, 28)  # glorot init (Keras' default)
    if args.mode == "keras":
        for m in G.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.momentum, m.eps = 0.01, 1e-3
    opt_g, opt_d = v.optimizers(e, G, D)
    G.train(), D.train()
    args.out.mkdir(parents=True, exist_ok=True)
    steps = len(train) // e.batch_size
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(train))
        for i in range(steps):
            real = train[order[i * e.batch_size : (i + 1) * e.batch_size]]
            if args.mode == "ours":
                train_step(StepNets(G, D, opt_g, opt_d), e, real, None, 0)
            else:
                keras_step(G, D, opt_g, opt_d, real, e.z_dim, args.mode == "keras")
            if (i + 1) in (steps // 2, steps):
                fake = generate(G, z_eval)
                fid = fid_kid_features(real_f, embed(extractor, fake), 100)["fid"]
                print(
                    f"{args.mode} epoch {epoch - 1 + (i + 1) / steps:.1f}: FID {fid:.2f} "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
        save_image(
            generate(G, z_eval[:64]),
            args.out / f"{args.mode}_epoch{epoch}.png",
            normalize=True,
            value_range=(-1, 1),
            nrow=8,
        )


if __name__ == "__main__":
    main()
