"""The Keras-style upsampling GAN for MNIST / Fashion-MNIST (s = image_size / 4).

Generator: Dense(1024)-tanh -> Dense(128*s*s)-BatchNorm-tanh -> reshape -> twice
(2x upsample + 5x5 conv), tanh. Discriminator: twice (5x5 conv-tanh-maxpool) ->
Dense(1024)-tanh -> one logit; its 1024 features are reused for classification probes.
"""
from __future__ import annotations

import torch
from torch import nn

from dcganlab.models import DOut


class UpsampleGenerator(nn.Module):
    def __init__(self, z_dim: int, channels: int, image_size: int):
        super().__init__()
        s = image_size // 4
        self.s = s
        self.dense = nn.Sequential(nn.Linear(z_dim, 1024), nn.Tanh(), nn.Linear(1024, 128 * s * s),
                                   nn.BatchNorm1d(128 * s * s), nn.Tanh())
        self.conv = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(128, 64, 5, padding=2), nn.Tanh(),       # 64 x 2s x 2s
            nn.Upsample(scale_factor=2), nn.Conv2d(64, channels, 5, padding=2), nn.Tanh(),  # C x 4s x 4s
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(self.dense(z).view(-1, 128, self.s, self.s))


class UpsampleDiscriminator(nn.Module):
    def __init__(self, channels: int, image_size: int):
        super().__init__()
        s = image_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(channels, 64, 5, padding=2), nn.Tanh(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 5, padding=2), nn.Tanh(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(128 * s * s, 1024), nn.Tanh(),
        )
        self.head = nn.Linear(1024, 1)

    def forward(self, x: torch.Tensor) -> DOut:
        h = self.features(x)
        return DOut(logit=self.head(h).flatten(), features=h)
