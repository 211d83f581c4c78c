"""The Keras-style upsampling GAN for MNIST / Fashion-MNIST (s = image_size / 4).

Layer for layer the paper's Keras listing (keras-dcgan's generator_model / discriminator_model;
shapes at 28x28 in the comments, pinned with parameter counts in tests/test_variants.py):
Generator: Dense(1024)-tanh -> Dense(128*s*s)-BatchNorm-tanh -> reshape -> twice
(2x upsample + 5x5 'same' conv), tanh. Discriminator: 5x5 'same' conv-tanh-maxpool, 5x5
'valid' conv-tanh-maxpool -> Dense(1024)-tanh -> one logit; its 1024 features are reused for
classification probes.
"""

from __future__ import annotations

import torch
from torch import nn

from dcganlab.gan.models import DOut


class UpsampleGenerator(nn.Module):
    def __init__(self, z_dim: int, channels: int, image_size: int):
        super().__init__()
        s = image_size // 4
        self.s = s
        self.dense = nn.Sequential(
            nn.Linear(z_dim, 1024), nn.Tanh(), nn.Linear(1024, 128 * s * s), nn.BatchNorm1d(128 * s * s), nn.Tanh()
        )  # -> 128 x 7 x 7
        self.conv = nn.Sequential(
            nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 64, 5, padding=2),
            nn.Tanh(),  # 64 x 14 x 14
            nn.Upsample(scale_factor=2),
            nn.Conv2d(64, channels, 5, padding=2),
            nn.Tanh(),  # C x 28 x 28
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(self.dense(z).view(-1, 128, self.s, self.s))


def d_map_size(image_size: int) -> int:
    """The discriminator's last map side: pool, 'valid' 5x5 conv (-4), pool: 28 -> 5, 16 -> 2."""
    return (image_size // 2 - 4) // 2


class UpsampleDiscriminator(nn.Module):
    def __init__(self, channels: int, image_size: int):
        super().__init__()
        t = d_map_size(image_size)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 64, 5, padding=2),
            nn.Tanh(),
            nn.MaxPool2d(2),  # 64 x 14 x 14 ('same')
            nn.Conv2d(64, 128, 5),
            nn.Tanh(),
            nn.MaxPool2d(2),  # 128 x 10 x 10 ('valid') -> 5 x 5
            nn.Flatten(),
            nn.Linear(128 * t * t, 1024),
            nn.Tanh(),  # 1024 features
        )
        self.head = nn.Linear(1024, 1)

    def forward(self, x: torch.Tensor) -> DOut:
        h = self.features(x)
        return DOut(logit=self.head(h).flatten(), features=h)
