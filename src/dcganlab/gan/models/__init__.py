"""Network families. Each discriminator returns a `DOut`, so one training loop serves all."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class DOut(NamedTuple):
    logit: torch.Tensor  # (B,) real/fake logit
    features: torch.Tensor  # (B, F) last hidden features (feature matching, probes)
    class_logits: torch.Tensor | None = None  # (B, K) auxiliary classifier head (AC-GAN)


def dcgan_init(module: nn.Module) -> None:
    """Radford et al.: conv weights ~ N(0, 0.02); BatchNorm weights ~ N(1, 0.02), bias 0."""
    name = type(module).__name__
    if "Conv" in name or isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif "BatchNorm" in name:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
