"""The 128x128 cartoon-face DCGAN: the DCGAN generator (one more upsampling layer than at
64x64) whose output passes a Gaussian filter and a stride-1 average pool, both fixed,
size-preserving and differentiable, for smoother images. The discriminator is the DCGAN
one; its features feed the generator's feature-matching loss (see training/step.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dcganlab.gan.models.dcgan import Generator


def gaussian_kernel(sigma: float, size: int = 5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


class Smooth(nn.Module):
    """Gaussian blur (depthwise, reflect-padded) then 3x3 average pool at stride 1."""

    def __init__(self, channels: int, sigma: float = 1.0, size: int = 5):
        super().__init__()
        self.register_buffer("kernel", gaussian_kernel(sigma, size).expand(channels, 1, size, size).clone())
        self.pad = size // 2
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(F.pad(x, [self.pad] * 4, mode="reflect"), self.kernel, groups=x.shape[1])
        return self.pool(x)


class SmoothGenerator(nn.Module):
    def __init__(self, z_dim: int, channels: int, image_size: int, ngf: int, sigma: float):
        super().__init__()
        self.net = Generator(z_dim, channels, image_size, ngf)
        self.smooth = Smooth(channels, sigma)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.smooth(self.net(z))
