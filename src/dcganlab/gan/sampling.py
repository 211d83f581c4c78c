"""Drawing from a generator: latent noise, batched generation in eval mode, image grids,
interpolation paths, class labels in turn and discriminator-ranked samples."""

from __future__ import annotations

import torch
from PIL import Image


def sample_noise(n: int, z_dim: int, kind: str, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Latents: drawn on `device` from its default RNG (no host-to-device copy per training step),
    or on the CPU from `generator` (fixed grids and evaluation samples, identical on every device)."""
    where = {"generator": generator} if generator is not None else {"device": device}
    if kind == "uniform":
        return torch.rand(n, z_dim, **where).mul_(2).sub_(1).to(device)
    return torch.randn(n, z_dim, **where).to(device)


@torch.no_grad()
def generate(G, z: torch.Tensor, labels: torch.Tensor | None = None, batch: int = 256) -> torch.Tensor:
    """Images in [-1, 1] from G in eval mode (BatchNorm running statistics)."""
    was_training = G.training
    G.eval()
    out = torch.cat(
        [G(z[i : i + batch], None if labels is None else labels[i : i + batch]) for i in range(0, len(z), batch)]
    )
    G.train(was_training)
    return out


def to_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2) -> Image.Image:
    """Images in [-1, 1] tiled `nrow` to a row with a black `pad`, as torchvision's make_grid
    draws them (pixel for pixel), without importing torchvision (over a second per process)."""
    x = images.float().cpu().clamp(-1, 1).add(1).div(2)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if len(x) == 1:  # make_grid returns a lone image unpadded
        grid = x[0]
    else:
        n, c, h, w = x.shape
        cols, rows = min(nrow, n), -(-n // min(nrow, n))
        grid = torch.zeros(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
        for k in range(n):
            r, q = divmod(k, cols)
            grid[:, r * (h + pad) + pad : (r + 1) * (h + pad), q * (w + pad) + pad : (q + 1) * (w + pad)] = x[k]
    return Image.fromarray(grid.mul(255).add_(0.5).clamp_(0, 255).byte().permute(1, 2, 0).numpy())


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of a and b at fractions t: (P, Z), (P, Z), (S,) -> (P, S, Z)."""
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((an * bn).sum(1).clamp(-1 + 1e-7, 1 - 1e-7))[:, None, None]
    t = t[None, :, None]
    return (torch.sin((1 - t) * omega) * a[:, None] + torch.sin(t * omega) * b[:, None]) / torch.sin(omega)


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int, spherical: bool) -> torch.Tensor:
    t = torch.linspace(0, 1, steps)
    if spherical:
        return slerp(a, b, t).reshape(-1, a.shape[1])
    return (a[:, None] * (1 - t[None, :, None]) + b[:, None] * t[None, :, None]).reshape(-1, a.shape[1])


def balanced_labels(n: int, num_classes: int) -> torch.Tensor | None:
    """0, 1, ..., K-1, 0, 1, ... (None for unconditional models)."""
    return torch.arange(n) % num_classes if num_classes else None


@torch.no_grad()
def nice_samples(
    G,
    D,
    n: int,
    z_dim: int,
    noise: str,
    factor: int = 20,
    gen: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw factor * n samples, score each with D, keep the n highest-scoring (best first).

    Returns (images, scores). Unlike the published Keras code, which always kept the same
    index, every candidate is scored and the top n are kept."""
    z = sample_noise(factor * n, z_dim, noise, "cpu", gen)
    cand_labels = None if labels is None else labels.repeat(factor)
    images = generate(G, z, cand_labels)
    scores = torch.cat([D(images[i : i + 256]).logit for i in range(0, len(images), 256)])
    top = scores.argsort(descending=True)[:n]
    return images[top], scores[top]
