"""The GAN update, the same for every variant: the device, both networks of a variant with its
weight init, the losses (BCE with label smoothing, AC-GAN class terms, feature matching) and
`train_step`, one update of D then G. The training loop (loop.py) and the benchmark both run it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dcganlab.core.errors import UserError
from dcganlab.gan.models import DOut
from dcganlab.gan.sampling import sample_noise
from dcganlab.gan.variants import VARIANTS
from dcganlab.training.accel import PLAIN, Accel


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device is '{name}' but no CUDA device is available")
    return torch.device(name)


def build_networks(e, channels: int, size: int, num_classes: int = 0):
    """(G, D) of the experiment's variant with the variant's weight init."""
    variant = VARIANTS[e.variant]
    G, D = variant.build(e, channels, size, num_classes if variant.conditional else 0)
    G.apply(variant.init)
    D.apply(variant.init)
    return G, D


# ---------------------------------------------------------------- the GAN update
_NO_SCALER = torch.amp.GradScaler("cpu", enabled=False)  # pass-through: scale() is identity, step() steps


def bce(logit: torch.Tensor, target: float | torch.Tensor) -> torch.Tensor:
    target = target if isinstance(target, torch.Tensor) else torch.full_like(logit, target)
    return F.binary_cross_entropy_with_logits(logit, target)


def noisy_targets(logit: torch.Tensor, target: float, other: float, p: float) -> float | torch.Tensor:
    """D's target for each image: `target`, swapped for `other` with probability p (label flips).
    p = 0 draws no random numbers, so runs without flips stay bit for bit what they were."""
    if p == 0:
        return target
    flip = torch.rand(logit.shape, device=logit.device) < p
    return torch.where(flip, other, target).to(logit.dtype)


def d_loss(e, real_out: DOut, fake_out: DOut, real_labels, fake_labels) -> torch.Tensor:
    # maximize log(D(x)) + log(1 - D(G(z))), targets real_label / fake_label (label smoothing),
    # each swapped with probability label_flip
    real_target = noisy_targets(real_out.logit, e.real_label, e.fake_label, e.label_flip)
    fake_target = noisy_targets(fake_out.logit, e.fake_label, e.real_label, e.label_flip)
    loss = bce(real_out.logit, real_target) + bce(fake_out.logit, fake_target)
    if real_out.class_logits is not None:  # AC-GAN: classify real and generated images
        loss = (
            loss
            + F.cross_entropy(real_out.class_logits, real_labels)
            + F.cross_entropy(fake_out.class_logits, fake_labels)
        )
    return loss


def feature_matching(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Squared distance between the mean discriminator features of a real and a fake batch."""
    return (real_features.detach().mean(0) - fake_features.mean(0)).pow(2).mean()


def g_loss(e, gen_out: DOut, real_out: DOut, fake_labels) -> torch.Tensor:
    # non-saturating: maximize log(D(G(z)))
    loss = bce(gen_out.logit, 1.0)
    if gen_out.class_logits is not None:
        loss = loss + F.cross_entropy(gen_out.class_logits, fake_labels)
    if e.feature_matching > 0:
        loss = loss + e.feature_matching * feature_matching(real_out.features, gen_out.features)
    return loss


@contextlib.contextmanager
def frozen(D: torch.nn.Module):
    """D's weights as constants during G's update: their gradients, which the next D update would
    discard, are not computed (about a third of D's backward), and DDP does not wait for them.
    G's gradients are the same, bit for bit (tests/test_train.py)."""
    trainable = [p for p in D.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        with getattr(D, "no_sync", contextlib.nullcontext)():
            yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


@dataclass
class StepNets:
    """What one update changes: the networks it runs (DDP-wrapped or compiled ones in the loop),
    their optimizers and the fp16 loss scaler (None: off)."""

    G: torch.nn.Module
    D: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None = None


def train_step(
    nets: StepNets, e, real: torch.Tensor, labels: torch.Tensor | None, num_classes: int, accel: Accel = PLAIN
) -> torch.Tensor:
    """One GAN update on a batch in [-1, 1]; returns [loss_d, loss_g, D(x), D(G(z))] (no host sync).
    `accel`: autocast precision and memory format."""
    G, D, opt_g, opt_d = nets.G, nets.D, nets.opt_g, nets.opt_d
    scaler = nets.scaler if nets.scaler is not None and nets.scaler.is_enabled() else _NO_SCALER
    batch = real.shape[0]
    if e.flip_p > 0:
        flip = torch.rand(batch, device=real.device) < e.flip_p
        real = torch.where(flip[:, None, None, None], real.flip(-1), real)
    real = accel.batch(real)
    z = sample_noise(batch, e.z_dim, e.noise, real.device)
    fake_labels = torch.randint(num_classes, (batch,), device=real.device) if num_classes else None
    # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
    with accel.autocast():
        fake = G(z, fake_labels)
        real_out, fake_out = D(real), D(fake.detach())
        loss_d = d_loss(e, real_out, fake_out, labels, fake_labels)
    opt_d.zero_grad(set_to_none=True)
    scaler.scale(loss_d).backward()
    scaler.step(opt_d)
    # (2) Update G network: maximize log(D(G(z)))
    with frozen(D):
        with accel.autocast():
            gen_out = D(fake)
            loss_g = g_loss(e, gen_out, real_out, fake_labels)
        opt_g.zero_grad(set_to_none=True)
        scaler.scale(loss_g).backward()
    scaler.step(opt_g)
    scaler.update()
    return torch.stack(
        [
            loss_d.detach().float(),
            loss_g.detach().float(),
            torch.sigmoid(real_out.logit.detach().float()).mean(),
            torch.sigmoid(fake_out.logit.detach().float()).mean(),
        ]
    )
