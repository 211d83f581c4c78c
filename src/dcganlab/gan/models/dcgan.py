"""The baseline DCGAN (Radford, Metz & Chintala, 2016), for image sizes 4*2^k or 3*2^k, 16..128.

Generator: z -> 4x4 by a transposed conv, then doubling transposed convs, BatchNorm + ReLU,
Tanh output. Discriminator: the mirror with strided convs and LeakyReLU(0.2), no BatchNorm
on its input layer. At 64x64 and ngf=ndf=64 this is exactly pytorch/examples' dcgan.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dcganlab.gan.models import DOut


def base_size(image_size: int) -> int:
    """Side of the first (generator) / last (discriminator) feature map: 4, or 3 for 3*2^k sizes."""
    return 3 if image_size % 3 == 0 else 4


def n_doublings(image_size: int) -> int:
    """Number of 2x steps between the base map and image_size."""
    return int(math.log2(image_size // base_size(image_size)))


def valid_size(image_size: int) -> bool:
    """16, 24, 32, 48, 64, 96, 128: base * 2^k with at least two doublings."""
    b = base_size(image_size)
    return 16 <= image_size <= 128 and image_size == b * 2 ** n_doublings(image_size) and n_doublings(image_size) >= 2


class Generator(nn.Module):
    def __init__(self, z_dim: int = 100, channels: int = 3, image_size: int = 64, ngf: int = 64):
        super().__init__()
        n = n_doublings(image_size)
        mult = 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, ngf * mult, base_size(image_size), 1, 0, bias=False),
            nn.BatchNorm2d(ngf * mult),
            nn.ReLU(True),
        ]  # state size. (ngf*mult) x 4 x 4 (3 x 3 for 3*2^k sizes)
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
    """DCGAN discriminator. Options used by other variants, all off for the baseline:
    `num_classes` adds an auxiliary class head (AC-GAN: 1 + K outputs); `extra_block` repeats
    the last conv block at stride 1 and `pool_head` replaces the 4x4 head conv by a 3x3 conv
    with global average pooling (the improved DCGAN's discriminator; works at any size /16)."""

    def __init__(
        self,
        channels: int = 3,
        image_size: int = 64,
        ndf: int = 64,
        num_classes: int = 0,
        extra_block: bool = False,
        pool_head: bool = False,
    ):
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
        if extra_block:  # the last block again, size kept
            layers += [
                nn.Conv2d(ndf * mult, ndf * mult, 3, 1, 1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        self.features = nn.Sequential(*layers)  # state size. (ndf*mult) x 4 x 4 (for 2^k sizes)
        outputs = 1 + num_classes
        if pool_head:
            self.head = nn.Sequential(nn.Conv2d(ndf * mult, outputs, 3, 1, 1, bias=False), nn.AdaptiveAvgPool2d(1))
        else:
            self.head = nn.Conv2d(ndf * mult, outputs, base_size(image_size), 1, 0, bias=False)  # outputs x 1 x 1
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> DOut:
        h = self.features(x)
        out = self.head(h).flatten(1)
        return DOut(logit=out[:, 0], features=h.flatten(1), class_logits=out[:, 1:] if self.num_classes else None)
