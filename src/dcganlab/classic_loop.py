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


def classic_seconds(G, D, opt_g, opt_d, e, images: np.ndarray, labels: np.ndarray, device, batch: int,
                    warmup: int, steps: int, repeats: int = 1, workers: int = 2) -> list[float]:
    """Seconds of each of `repeats` runs of `steps` classic updates, after `warmup` untimed
    ones (unconditional G, D)."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    c, size = images.shape[1], images.shape[2]
    tmp = Path(tempfile.mkdtemp(prefix="dcganlab-classic-"))
    try:
        write_image_folder(images, labels, tmp)
        tf = transforms.Compose(([transforms.Grayscale(1)] if c == 1 else []) + [
            transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
            transforms.Normalize([0.5] * c, [0.5] * c)])
        loader = DataLoader(datasets.ImageFolder(str(tmp), transform=tf), batch_size=batch, shuffle=True,
                            num_workers=workers, drop_last=True)
        criterion = torch.nn.BCEWithLogitsLoss()
        it = iter(loader)

        def run(n: int) -> float:
            nonlocal it
            t0 = time.perf_counter()
            for _ in range(n):
                try:
                    data, _ = next(it)
                except StopIteration:  # next epoch
                    it = iter(loader)
                    data, _ = next(it)
                real = data.to(device)
                b = real.size(0)
                # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
                D.zero_grad()
                label = torch.full((b,), e.real_label, device=device)
                out = D(real).logit
                err_real = criterion(out, label)
                err_real.backward()
                d_x = out.sigmoid().mean().item()
                fake = G(torch.randn(b, e.z_dim, device=device))
                label.fill_(e.fake_label)
                out = D(fake.detach()).logit
                err_fake = criterion(out, label)
                err_fake.backward()
                d_g_z1 = out.sigmoid().mean().item()
                err_d = err_real + err_fake
                opt_d.step()
                # (2) Update G network: maximize log(D(G(z)))
                G.zero_grad()
                label.fill_(1.0)
                err_g = criterion(D(fake).logit, label)
                err_g.backward()
                opt_g.step()
                _ = (err_d.item(), err_g.item(), d_x, d_g_z1)  # what the classic loop prints
            return time.perf_counter() - t0

        run(warmup)
        seconds = [run(steps) for _ in range(repeats)]
        del it, loader  # stop the loader workers before the folder goes
        return seconds
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
