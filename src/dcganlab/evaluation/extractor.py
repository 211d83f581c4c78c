"""The `domain` feature extractor for FID/KID: a small conv net trained on the real
training split of one dataset, so evaluation works offline.

Features are the linear bottleneck of the encoder, standardised per dimension on the real
training split (so FID/KID have one scale across datasets and extractor kinds).

- labeled data (>= 2 classes, e.g. digits): a classifier; features = its penultimate layer,
  and its test accuracy is recorded (a classifier that cannot tell digits apart would make
  FID meaningless).
- unlabeled data (faces): a convolutional autoencoder; features = its bottleneck. It needs
  no labels and is trained to keep what distinguishes one image of the domain from another,
  which is what the Frechet distance compares.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dcganlab.core.atomic import save_torch, write_json
from dcganlab.core.config import ExtractorParams
from dcganlab.core.errors import UserError
from dcganlab.core.files import dvc_output, load_torch
from dcganlab.core.progress import progress


def working_size(image_size: int, work_size: int) -> int:
    """The side the net sees: images larger than `work_size` are resized down to it (0: native)."""
    return image_size if not work_size or image_size <= work_size else work_size


class Encoder(nn.Sequential):
    """The conv stack behind an antialiased resize to the working size and a [1 2 1] low-pass.
    A stride-2 convolution samples every other pixel: without a low-pass first, a pattern at the
    pixel grid's own frequency (the faint checkerboard transposed convolutions leave) aliases into
    coarse features, and a 64x64 extractor scored it worse than a visible blur (issue #19). The
    [1 2 1] filter (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again") is zero at
    exactly that frequency. Fashion-MNIST at 96 or 128 is upscaled 28x28: resizing it to 64 loses nothing.
    The low-pass and the black level apply from `extractor.robust_from` (33): at 28 or 32 pixels the
    grid frequency carries the strokes themselves (the low-pass cost fashion28 0.01 of accuracy), and
    faint levels crushed to black left a digits' checkerboard family flat at the floor."""

    def __init__(self, work: int, lowpass: bool, black_level: float, *layers: nn.Module):
        super().__init__(*layers)
        self.work, self.lowpass, self.black_level = work, lowpass, black_level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_working_size(crush_blacks(x.float(), self.black_level), self.work)
        return super().forward(low_pass(x) if self.lowpass else x)


def crush_blacks(x: torch.Tensor, gray_levels: float) -> torch.Tensor:
    """Gray levels below `gray_levels` (of 255) read as black, the rest stretched back to the range:
    no one sees 0..8 of 255 apart, but a clipped faint checkerboard on a black background is
    exactly such a shift (0 -> 0 or +A), and a net would otherwise read it as a brighter background."""
    if not gray_levels:
        return x
    t = gray_levels / 127.5
    return (x + 1 - t).clamp_min(0) * (2 / (2 - t)) - 1


def low_pass(x: torch.Tensor) -> torch.Tensor:
    """[1 2 1]/4 in each direction, per channel, edges replicated."""
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    k = (k[:, None] * k[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=x.shape[1])


def to_working_size(x: torch.Tensor, work: int) -> torch.Tensor:
    if x.shape[-1] == work:
        return x
    return F.interpolate(x, size=(work, work), mode="bilinear", antialias=True, align_corners=False)


class DomainNet(nn.Module):
    """forward(x in [-1, 1]) -> (B, num_features) features, as torchmetrics expects."""

    def __init__(
        self,
        channels: int,
        image_size: int,
        num_features: int = 128,
        num_classes: int = 0,
        work: int | None = None,
        black_level: float = 0.0,
        lowpass: bool = True,
    ):
        super().__init__()
        self.num_features = num_features
        # work None: an extractor saved before working sizes (native size, no low-pass)
        self.work = image_size if work is None else work
        self.encoder = Encoder(
            self.work,
            lowpass and work is not None,
            black_level,
            nn.Conv2d(channels, 32, 3, 2, 1),
            nn.ReLU(True),
            nn.Conv2d(32, 64, 3, 2, 1),
            nn.BatchNorm2d(64),
            nn.ReLU(True),
            nn.Conv2d(64, 128, 3, 2, 1),
            nn.BatchNorm2d(128),
            nn.ReLU(True),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(512, num_features),  # linear bottleneck: no dead units in the features
        )
        out = channels * self.work * self.work  # the autoencoder reconstructs the working-size image
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(num_features, num_classes)) if num_classes else None
        self.decoder = (
            None
            if num_classes
            else nn.Sequential(nn.ReLU(), nn.Linear(num_features, 512), nn.ReLU(True), nn.Linear(512, out), nn.Tanh())
        )
        self.shape = (channels, self.work, self.work)
        # per-feature standardisation, fitted on the real training split after training, so
        # FID/KID have the same scale whatever the dataset and extractor kind
        self.register_buffer("feat_mean", torch.zeros(num_features))
        self.register_buffer("feat_std", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.encoder(x.float()) - self.feat_mean) / self.feat_std

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        if self.head is not None:
            return F.cross_entropy(self.head(h), y)
        return F.mse_loss(self.decoder(h).view(-1, *self.shape), to_working_size(x, self.work))


def to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(images).float().div(127.5).sub(1.0)


def train_extractor(data: dict, p: ExtractorParams, seed: int, out: Path, dataset: str) -> dict:
    """Train the extractor on the training split, standardise its features there, score it on the
    held-out split and save it. Images stay uint8 until each batch (60,000 at 128x128 as floats: 3.9 GB)."""
    images, labels, split = data["images"], data["labels"], data["split"]
    classes = data["stats"]["classes"]
    labeled = len(classes) >= 2 and (labels >= 0).all()
    train, test = split == 0, split == 1
    if train.sum() < 2:
        raise UserError(f"dataset '{dataset}' has too few training images for the extractor")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    channels, size = images.shape[1], images.shape[2]
    work, robust = working_size(size, p.work_size), size >= p.robust_from
    black = p.black_level if robust else 0.0
    net = DomainNet(channels, size, p.features, len(classes) if labeled else 0, work, black, robust)
    x_train, y_train = torch.as_tensor(images[train]), torch.as_tensor(labels[train])
    _fit(net, x_train, y_train, p, seed, dataset)
    net.eval()
    _standardise(net, x_train)
    x_eval, y_eval = (
        (torch.as_tensor(images[test]), torch.as_tensor(labels[test])) if test.any() else (x_train, y_train)
    )
    info = {
        "dataset": dataset,
        "kind": "classifier" if labeled else "autoencoder",
        "features": p.features,
        "channels": channels,
        "image_size": size,
        "classes": classes if labeled else [],
        "train_images": int(train.sum()),
        "quality_split": "test" if test.any() else "train",
        **_quality(net, x_eval, y_eval, labeled),
        "work_size": work,
        "black_level": black,
        "lowpass": robust,
        "lr_schedule": p.lr_schedule,
        "train_seconds": time.perf_counter() - t0,
    }
    save_torch(out, {"state_dict": net.state_dict(), "info": info})
    write_json(out.with_suffix(".json"), info)
    return info


def _fit(net: DomainNet, x: torch.Tensor, y: torch.Tensor, p: ExtractorParams, seed: int, dataset: str) -> None:
    """Adam over shuffled uint8 batches; `cosine` decays the rate to 0 by the last step, so the
    extractor ends where the loss settled rather than wherever the last noisy step left it."""
    opt = torch.optim.Adam(net.parameters(), lr=p.lr)
    per_epoch = -(-len(x) // p.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, p.epochs * per_epoch) if p.lr_schedule == "cosine" else None
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for epoch in range(1, p.epochs + 1):
        perm = torch.randperm(len(x), generator=gen)
        for i in progress(
            range(0, len(perm), p.batch_size),
            f"extractor {dataset} epoch {epoch}/{p.epochs}",
            unit="img",
            per_item=p.batch_size,
            after=(p.epochs - epoch) * per_epoch,
        ):
            idx = perm[i : i + p.batch_size]
            if len(idx) < 2:
                continue
            loss = net.loss(to_float(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()


def _batches(x: torch.Tensor, size: int = 500):
    return (to_float(x[i : i + size]) for i in range(0, len(x), size))


@torch.no_grad()
def _standardise(net: DomainNet, x: torch.Tensor) -> None:
    feats = torch.cat([net.encoder(b) for b in _batches(x)])
    net.feat_mean.copy_(feats.mean(0))
    net.feat_std.copy_(feats.std(0).clamp_min(1e-4))


@torch.no_grad()
def _quality(net: DomainNet, x: torch.Tensor, y: torch.Tensor, labeled: bool) -> dict:
    """Held-out accuracy (classifier) or reconstruction mse (autoencoder)."""
    if labeled:
        pred = torch.cat([net.head(net.encoder(b)).argmax(1) for b in _batches(x)])
        return {"test_accuracy": float((pred == y).float().mean())}
    ys = (y[i : i + 500] for i in range(0, len(x), 500))
    return {"test_mse": float(sum(net.loss(b, yb) * len(b) for b, yb in zip(_batches(x), ys)) / len(x))}


def load_extractor(path: Path) -> tuple[DomainNet, dict]:
    if not path.is_file():
        raise UserError(f"no feature extractor at {path} (run `dcganlab extractor` first)")
    remedy = dvc_output(path, f"extractor@{path.stem}")
    blob = load_torch(path, "feature extractor", remedy, keys=("state_dict", "info"))
    info = blob["info"]
    net = DomainNet(
        info["channels"],
        info["image_size"],
        info["features"],
        len(info["classes"]),
        info.get("work_size"),
        info.get("black_level", 0.0),
        info.get("lowpass", True),
    )
    net.load_state_dict(blob["state_dict"])
    return net.eval(), info


def describe(info: dict) -> str:
    q = f"test acc {info['test_accuracy']:.3f}" if "test_accuracy" in info else f"test mse {info['test_mse']:.4f}"
    return f"domain:{info['dataset']} ({info['kind']}, {info['features']}-d, {q})"


@torch.no_grad()
def embed(net: nn.Module, images: torch.Tensor, batch: int = 500, desc: str = "") -> torch.Tensor:
    """Features of images in [-1, 1], batch by batch (with progress under `desc`, if given)."""
    starts = range(0, len(images), batch)
    if desc:
        starts = progress(starts, desc, noun="batch", unit="img", per_item=batch)
    return torch.cat([net(images[i : i + batch]) for i in starts])


@torch.no_grad()
def predict_classes(net: DomainNet, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Class indices from a classifier extractor (labeled datasets)."""
    if net.head is None:
        raise UserError("this extractor is an autoencoder (unlabeled data): it has no classes")
    return torch.cat(
        [net.head(net.encoder(images[i : i + batch].float())).argmax(1) for i in range(0, len(images), batch)]
    )
