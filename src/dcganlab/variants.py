"""Every architecture variant, declared in one place.

A variant is a recipe: which networks, which sizes they can produce, which optimizers.
Hyperparameters (learning rates, label smoothing, noise...) are params.yaml entries of the
experiment; the one training loop in train.py runs every variant.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from dcganlab.models import dcgan


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    build: Callable[..., tuple[nn.Module, nn.Module]]  # (experiment, channels, image_size) -> (G, D)
    sizes: tuple[int, ...]
    conditional: bool = False

    def check(self, e, ds) -> str | None:
        """Why this experiment cannot run on this dataset, or None. Runs before any work."""
        if ds.image_size not in self.sizes:
            return (f"variant '{self.name}' cannot produce {ds.image_size}x{ds.image_size} images "
                    f"(sizes: {', '.join(map(str, self.sizes))}); change datasets.{e.dataset}.image_size")
        return None

    def optimizers(self, e, G: nn.Module, D: nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        return (torch.optim.Adam(G.parameters(), lr=e.lr_g, betas=(e.beta1, e.beta2)),
                torch.optim.Adam(D.parameters(), lr=e.lr_d, betas=(e.beta1, e.beta2)))


def _build_dcgan(e, channels: int, image_size: int):
    return (dcgan.Generator(e.z_dim, channels, image_size, e.ngf),
            dcgan.Discriminator(channels, image_size, e.ndf))


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("dcgan", "Radford et al. baseline DCGAN (CIFAR-10/STL-10 recipe)", _build_dcgan, dcgan.SIZES),
    ]
}
