"""The baseline DCGAN (Radford, Metz & Chintala, 2016), for any image size 2^k, 16..128.

Generator: z -> 4x4 by a transposed conv, then doubling transposed convs, BatchNorm + ReLU,
Tanh output. Discriminator: the mirror with strided convs and LeakyReLU(0.2), no BatchNorm
on its input layer. At 64x64 and ngf=ndf=64 this is exactly pytorch/examples' dcgan.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from dcganlab.models import DOut

SIZES = (16, 32, 64, 128)


def n_doublings(image_size: int) -> int:
    """Number of 2x steps between 4x4 and image_size."""
    return int(math.log2(image_size)) - 2


class Generator(nn.Module):
    def __init__(self, z_dim: int = 100, channels: int = 3, image_size: int = 64, ngf: int = 64):
        super().__init__()
        n = n_doublings(image_size)
        mult = 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, ngf * mult, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * mult),
            nn.ReLU(True),
        ]  # state size. (ngf*mult) x 4 x 4
        for _ in range(n - 1):
            layers += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * mult // 2),
                nn.ReLU(True),
            ]  # state size doubles, channels halve
            mult //= 2
        layers += [nn.ConvTranspose2d(ngf * mult, channels, 4, 2, 1, bias=False), nn.Tanh()]
        # state size. channels x image_size x image_size
        self.main = nn.Sequential(*layers)
        self.z_dim = z_dim

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.main(z.view(z.shape[0], -1, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, channels: int = 3, image_size: int = 64, ndf: int = 64):
        super().__init__()
        n = n_doublings(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        # state size. ndf x (image_size/2)^2 -- no BatchNorm on the input layer
        mult = 1
        for _ in range(n - 1):
            layers += [
                nn.Conv2d(ndf * mult, ndf * mult * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ndf * mult * 2),
                nn.LeakyReLU(0.2, True),
            ]  # state size halves, channels double
            mult *= 2
        self.features = nn.Sequential(*layers)  # state size. (ndf*mult) x 4 x 4
        self.head = nn.Conv2d(ndf * mult, 1, 4, 1, 0, bias=False)  # 1 x 1 x 1

    def forward(self, x: torch.Tensor) -> DOut:
        h = self.features(x)
        return DOut(logit=self.head(h).flatten(), features=h.flatten(1))
