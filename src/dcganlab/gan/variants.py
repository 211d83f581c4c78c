"""Every architecture variant, declared in one place.

A variant is a recipe: its networks, the sizes they can produce, its weight init, its
optimizer, and what it needs from the data. The hyperparameters (learning rates, label
smoothing, noise, feature matching, decay, flips) are the experiment's params.yaml entries,
and the paper settings of each variant are named presets (presets.py). The one training
loop (training/loop.py) runs every variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from dcganlab.gan.models import dcgan, dcgan_init
from dcganlab.gan.models.cartoon import SmoothGenerator
from dcganlab.gan.models.cgan import ConditionalGenerator
from dcganlab.gan.models.resnet import ResnetGenerator
from dcganlab.gan.models.upsample import UpsampleDiscriminator, UpsampleGenerator

# sources whose images come with class labels (the conditional model needs them)
LABELED_SOURCES = {"mnist-subset", "mnist", "fashion-mnist", "cifar10", "stl10"}


def glorot_init(module: nn.Module) -> None:
    """Keras defaults (glorot-uniform weights, zero biases), for the Keras-born variant."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    build: Callable[..., tuple[nn.Module, nn.Module]]  # (experiment, channels, size, num_classes) -> (G, D)
    sizes: Callable[[int], bool]
    size_text: str
    init: Callable[[nn.Module], None] = dcgan_init
    optimizer: str = "adam"  # adam (lr, beta1, beta2) | sgd (lr, momentum, Nesterov)
    conditional: bool = False  # G takes labels; D has a class head

    def check(self, e, ds) -> str | None:
        """Why this experiment cannot run on this dataset, or None. Runs before any work."""
        if not self.sizes(ds.image_size):
            return (
                f"variant '{self.name}' cannot produce {ds.image_size}x{ds.image_size} images "
                f"(sizes: {self.size_text}); change datasets.{e.dataset}.image_size"
            )
        if self.conditional and (ds.source not in LABELED_SOURCES or ds.split == "unlabeled"):
            return (
                f"variant '{self.name}' needs class labels, but dataset '{e.dataset}' "
                f"({ds.source}, split {ds.split}) has none"
            )
        return None

    def optimizers(self, e, G: nn.Module, D: nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        if self.optimizer == "sgd":
            return (
                torch.optim.SGD(G.parameters(), lr=e.lr_g, momentum=e.momentum, nesterov=True),
                torch.optim.SGD(D.parameters(), lr=e.lr_d, momentum=e.momentum, nesterov=True),
            )
        return (
            torch.optim.Adam(G.parameters(), lr=e.lr_g, betas=(e.beta1, e.beta2)),
            torch.optim.Adam(D.parameters(), lr=e.lr_d, betas=(e.beta1, e.beta2)),
        )


def _dcgan(e, c, size, k):
    return dcgan.Generator(e.z_dim, c, size, e.ngf), dcgan.Discriminator(c, size, e.ndf)


def _cartoon(e, c, size, k):
    return SmoothGenerator(e.z_dim, c, size, e.ngf, e.smooth_sigma), dcgan.Discriminator(c, size, e.ndf)


def _cgan(e, c, size, k):
    return ConditionalGenerator(e.z_dim, k, c, size, e.ngf), dcgan.Discriminator(c, size, e.ndf, num_classes=k)


def _resnet(e, c, size, k):
    return ResnetGenerator(e.z_dim, c, size, e.ngf), dcgan.Discriminator(
        c, size, e.ndf, extra_block=True, pool_head=True
    )


def _upsample(e, c, size, k):
    return UpsampleGenerator(e.z_dim, c, size), UpsampleDiscriminator(c, size)


_dcgan_sizes = ("16, 24, 32, 48, 64, 96, 128", dcgan.valid_size)

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant(
            "dcgan", "Radford et al. baseline DCGAN (CIFAR-10/STL-10 recipe)", _dcgan, dcgan.valid_size, _dcgan_sizes[0]
        ),
        Variant(
            "face-dcgan",
            "DCGAN on Haar-cropped faces, uniform noise (face-generation recipe)",
            _dcgan,
            dcgan.valid_size,
            _dcgan_sizes[0],
        ),
        Variant(
            "cartoon-128",
            "DCGAN + Gaussian smoothing output + feature matching (cartoon recipe)",
            _cartoon,
            dcgan.valid_size,
            _dcgan_sizes[0],
        ),
        Variant(
            "cgan",
            "auxiliary-classifier conditional DCGAN (handwritten-digit recipe)",
            _cgan,
            lambda s: s in (16, 32, 64),
            "16, 32, 64",
            conditional=True,
        ),
        # 5 stride-2 downsamplings: the paper's 3x3 bottleneck at 96x96; below 96 it is 1x1 and the
        # residual blocks' 3x3 convolutions see only padding (runs at 32x32 collapsed)
        Variant(
            "resnet-dcgan",
            "improved DCGAN: 5 down / 9 residual / 5 up generator (anime recipe)",
            _resnet,
            lambda s: s % 32 == 0 and 96 <= s <= 256,
            "96, 128, ... 256: multiples of 32 whose bottleneck (size / 32) is at least the paper's 3x3",
        ),
        # D: pool, 'valid' 5x5 conv, pool: 12x12 is the least that leaves a 1x1 map
        Variant(
            "upsample-gan",
            "Keras-style upsampling GAN, SGD + Nesterov (MNIST recipe)",
            _upsample,
            lambda s: s % 4 == 0 and 12 <= s <= 128,
            "multiples of 4 from 12 to 128",
            init=glorot_init,
            optimizer="sgd",
        ),
    ]
}
