"""The classic DCGAN training loop, kept only as the benchmark's reference.

Written the way pytorch/examples `dcgan/main.py` (and most tutorials) train: images as PNG
files read by torchvision's ImageFolder, decoded by PIL and transformed per image in
DataLoader worker processes, and the losses and D outputs read back with `.item()` every
step. `dcganlab bench` runs it with the same networks, batch and optimizers as our loop.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_image_folder(images: np.ndarray, labels: np.ndarray, root: Path) -> None:
    """N x C x H x W uint8 -> root/class_<label>/<i>.png, the layout ImageFolder reads."""
    for i, (img, lab) in enumerate(zip(images, labels)):
        folder = root / f"class_{max(int(lab), 0)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(folder / f"{i:06d}.png")


def classic_transform(channels: int, size: int):
    """main.py's per-image transforms (PIL decode happens in ImageFolder)."""
    from torchvision import transforms

    return transforms.Compose(
        ([transforms.Grayscale(1)] if channels == 1 else [])
        + [
            transforms.Resize(size),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * channels, [0.5] * channels),
        ]
    )


def classic_update(
    nets: tuple, real: torch.Tensor, z_dim: int, criterion, targets: tuple[float, float] = (1.0, 0.0)
) -> tuple:
    """One GAN update as main.py writes it, D(x) and D(G(z)) read back with `.item()` each step.
    `nets`: (G, D, opt_g, opt_d); `targets`: the real and fake labels.
    Returns (err_d, err_g, D(x), D(G(z)) before the D step, D(G(z)) after it, as a tensor)."""
    G, D, opt_g, opt_d = nets
    real_label, fake_label = targets
    b = real.size(0)
    # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
    D.zero_grad()
    label = torch.full((b,), real_label, device=real.device)
    out = D(real).logit
    err_real = criterion(out, label)
    err_real.backward()
    d_x = out.sigmoid().mean().item()
    fake = G(torch.randn(b, z_dim, device=real.device))
    label.fill_(fake_label)
    out = D(fake.detach()).logit
    err_fake = criterion(out, label)
    err_fake.backward()
    d_g_z1 = out.sigmoid().mean().item()
    err_d = err_real + err_fake
    opt_d.step()
    # (2) Update G network: maximize log(D(G(z)))
    G.zero_grad()
    label.fill_(1.0)
    out = D(fake).logit
    err_g = criterion(out, label)
    err_g.backward()
    opt_g.step()
    return err_d, err_g, d_x, d_g_z1, out.detach().sigmoid().mean()


@dataclass(frozen=True)
class Timing:
    """How `classic_seconds` times the loop: `repeats` runs of `steps` updates of `batch` images
    after `warmup` untimed ones, the DataLoader with `workers` processes."""

    batch: int
    warmup: int
    steps: int
    repeats: int = 1
    workers: int = 2


def classic_seconds(nets: tuple, e, images: np.ndarray, labels: np.ndarray, device, timing: Timing) -> list[float]:
    """Seconds of each timed run of classic updates (unconditional G, D; `nets`: G, D, opt_g, opt_d)."""
    from torch.utils.data import DataLoader
    from torchvision import datasets

    c, size = images.shape[1], images.shape[2]
    tmp = Path(tempfile.mkdtemp(prefix="dcganlab-classic-"))
    try:
        write_image_folder(images, labels, tmp)
        loader = DataLoader(
            datasets.ImageFolder(str(tmp), transform=classic_transform(c, size)),
            batch_size=timing.batch,
            shuffle=True,
            num_workers=timing.workers,
            drop_last=True,
        )
        criterion = torch.nn.BCEWithLogitsLoss()
        it = iter(loader)

        def run(n: int) -> float:
            nonlocal it
            t0 = time.perf_counter()
            for _ in range(n):
                try:
                    data, _ = next(it)
                except StopIteration:  # next epoch
                    it = iter(loader)  # noqa: F821 (a false positive: `loader` is the enclosing function's)
                    data, _ = next(it)
                err_d, err_g, _, _, _ = classic_update(
                    nets, data.to(device), e.z_dim, criterion, (e.real_label, e.fake_label)
                )
                _ = (err_d.item(), err_g.item())  # what the classic loop prints
            return time.perf_counter() - t0

        run(timing.warmup)
        seconds = [run(timing.steps) for _ in range(timing.repeats)]
        del it, loader  # stop the loader workers before the folder goes
        return seconds
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- the classic script, whole process
def main(argv: list[str] | None = None) -> None:
    """`python -m dcganlab.bench.classic_loop FOLDER`: pytorch/examples' dcgan/main.py as a whole
    process (imports, ImageFolder + DataLoader, the loop printing every step, sample images
    every 100 steps, both networks saved every epoch), with our DCGAN networks (identical to
    its at 64x64). `dcganlab bench` times it against `dcganlab train` at the same settings."""
    import argparse

    t0 = time.perf_counter()
    ap = argparse.ArgumentParser(prog="python -m dcganlab.bench.classic_loop")
    ap.add_argument("dataroot", type=Path)
    ap.add_argument("--outf", type=Path, required=True)
    for name, default in (
        ("imageSize", 64),
        ("nc", 3),
        ("nz", 100),
        ("ngf", 64),
        ("ndf", 64),
        ("batchSize", 64),
        ("niter", 1),
        ("workers", 2),
        ("manualSeed", 0),
    ):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--lr", type=float, default=0.0002)
    ap.add_argument("--beta1", type=float, default=0.5)
    a = ap.parse_args(argv)
    if not a.dataroot.is_dir() or not any(a.dataroot.glob("*/*.png")):
        raise SystemExit(f"error: {a.dataroot} holds no class folders of PNG files (ImageFolder layout)")

    import torchvision.utils as vutils
    from torch.utils.data import DataLoader
    from torchvision import datasets

    from dcganlab.gan.models import dcgan, dcgan_init

    torch.manual_seed(a.manualSeed)
    c = a.nc
    loader = DataLoader(
        datasets.ImageFolder(str(a.dataroot), transform=classic_transform(c, a.imageSize)),
        batch_size=a.batchSize,
        shuffle=True,
        num_workers=a.workers,
    )
    netG, netD = dcgan.Generator(a.nz, c, a.imageSize, a.ngf), dcgan.Discriminator(c, a.imageSize, a.ndf)
    netG.apply(dcgan_init)
    netD.apply(dcgan_init)
    criterion = torch.nn.BCEWithLogitsLoss()
    fixed_noise = torch.randn(a.batchSize, a.nz)
    optD = torch.optim.Adam(netD.parameters(), lr=a.lr, betas=(a.beta1, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=a.lr, betas=(a.beta1, 0.999))
    a.outf.mkdir(parents=True, exist_ok=True)
    images, loop_s = 0, 0.0
    for epoch in range(a.niter):
        t_loop = time.perf_counter()
        for i, (data, _) in enumerate(loader):
            real, b = data, data.size(0)
            err_d, err_g, d_x, d_g_z1, d_g_z2 = classic_update((netG, netD, optG, optD), real, a.nz, criterion)
            images += b
            print(
                f"[{epoch}/{a.niter}][{i}/{len(loader)}] Loss_D: {err_d.item():.4f} Loss_G: {err_g.item():.4f} "
                f"D(x): {d_x:.4f} D(G(z)): {d_g_z1:.4f} / {d_g_z2.item():.4f}"
            )
            if i % 100 == 0:
                vutils.save_image(real, a.outf / "real_samples.png", normalize=True)
                with torch.no_grad():
                    vutils.save_image(netG(fixed_noise), a.outf / f"fake_samples_epoch_{epoch:03d}.png", normalize=True)
        loop_s += time.perf_counter() - t_loop
        torch.save(netG.state_dict(), a.outf / f"netG_epoch_{epoch}.pth")
        torch.save(netD.state_dict(), a.outf / f"netD_epoch_{epoch}.pth")
    # one machine-readable line for the bench: images through the loop / seconds in it
    print(f"classic: {images} images, loop {images / loop_s:.1f} img/s, process {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
