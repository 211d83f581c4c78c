"""The conditional digit generator (auxiliary-classifier GAN).

Generator input: noise concatenated with a one-hot label (100 + 10 = 110 dims), through five
transposed convolutions. Its discriminator is the DCGAN one with 1 + K outputs (real/fake and
K class logits): dcgan.Discriminator(num_classes=K).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dcganlab.gan.models.dcgan import n_doublings

N_LAYERS = 5


class ConditionalGenerator(nn.Module):
    def __init__(self, z_dim: int, num_classes: int, channels: int, image_size: int, ngf: int):
        super().__init__()
        n = n_doublings(image_size)  # 2x steps after the first 4x4 layer
        stride1 = N_LAYERS - 1 - n  # extra size-keeping layers to make five in all
        if stride1 < 0:
            raise ValueError(f"five transposed convs cannot reach {image_size}x{image_size}")
        mult = 2 ** (n - 1) if n > 0 else 1
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim + num_classes, ngf * mult, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * mult),
            nn.ReLU(True),
        ]  # (ngf*mult) x 4 x 4
        for _ in range(stride1):  # size kept
            layers += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult, 3, 1, 1, bias=False),
                nn.BatchNorm2d(ngf * mult),
                nn.ReLU(True),
            ]
        for _ in range(n - 1):  # size doubles, channels halve
            layers += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ngf * mult // 2),
                nn.ReLU(True),
            ]
            mult //= 2
        layers += [nn.ConvTranspose2d(ngf * mult, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.num_classes = num_classes

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            raise ValueError("the conditional generator needs labels")
        onehot = F.one_hot(labels.long(), self.num_classes).to(z.dtype)
        return self.main(torch.cat([z, onehot], 1)[:, :, None, None])
