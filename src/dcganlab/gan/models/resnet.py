"""The improved DCGAN's ResNet generator (anime faces, 96x96).

z -> a 1 x S x S noise map (linear layer) -> 5 stride-2 convolutions (BatchNorm + ReLU)
-> 9 residual blocks -> 5 stride-2 transposed convolutions (BatchNorm + ReLU) -> Tanh.
S must be divisible by 32 (32, 64, 96, 128). Its discriminator is the DCGAN one with the last
block repeated and an average-pooling head (dcgan.Discriminator(extra_block, pool_head)).
"""

from __future__ import annotations

import torch
from torch import nn

N_DOWN, N_RES, N_UP = 5, 9, 5


class ResidualBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 1, 1, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(True),
            nn.Conv2d(ch, ch, 3, 1, 1, bias=False),
            nn.BatchNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    def __init__(self, z_dim: int, channels: int, image_size: int, ngf: int):
        super().__init__()
        self.size = image_size
        self.project = nn.Linear(z_dim, image_size * image_size)
        widths = [min(ngf * 2**i, ngf * 8) for i in range(N_DOWN)]  # ngf, 2ngf, 4ngf, 8ngf, 8ngf
        down, ch = [], 1
        for w in widths:  # size halves
            down += [nn.Conv2d(ch, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True)]
            ch = w
        self.down = nn.Sequential(*down)  # state size. (8ngf) x S/32 x S/32
        self.res = nn.Sequential(*[ResidualBlock(ch) for _ in range(N_RES)])
        up = []
        for w in reversed(widths[:-1]):  # size doubles: 4 layers with BatchNorm + ReLU ...
            up += [nn.ConvTranspose2d(ch, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True)]
            ch = w
        up += [nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False), nn.Tanh()]  # ... and the 5th to the image
        self.up = nn.Sequential(*up)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.project(z).view(-1, 1, self.size, self.size)
        return self.up(self.res(self.down(x)))
