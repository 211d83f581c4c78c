"""The `inception` extractor: the standard InceptionV3 FID weights (torch-fidelity's port of
the TensorFlow graph, as torchmetrics uses them), so FID/KID compare with published numbers.

Used when the weights file is at `evaluate.inception_weights` or can be downloaded from
`evaluate.inception_url` (a short timeout; "" = never download). Otherwise `load_inception`
says why in one line and evaluation carries on with the `domain` extractor alone.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import torch
from torch import nn

from dcganlab.core.atomic import atomic_path
from dcganlab.core.files import Unreadable, load_torch

WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's file name
FEATURES = 2048  # pool3 features, the standard FID layer
REMEDY = "delete it to download it again (evaluate.inception_url), or replace it"


class InceptionFeatures(nn.Module):
    """forward(x in [-1, 1], 1 or 3 channels, any size) -> (B, 2048) pool3 features.

    Gray images are repeated to 3 channels; torchmetrics' NoTrainInceptionV3 quantises to
    uint8 and resizes to 299x299 with TensorFlow-1-compatible bilinear interpolation
    (antialias off), as the original FID code does."""

    num_features = FEATURES

    def __init__(self, weights: Path, device: str | torch.device = "cpu"):
        super().__init__()
        self.device = torch.device(device)
        from torchmetrics.image.fid import NoTrainInceptionV3

        # torch-fidelity unpickles the file (weights_only=False): check first that it is a
        # plain tensor state dict, so a tampered file cannot run code.
        load_torch(weights, "InceptionV3 weights", REMEDY)
        self.net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(FEATURES)],
            feature_extractor_weights_path=str(weights),
            antialias=False,
        ).to(self.device)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        u8 = x.float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)
        return self.net(u8.to(self.device)).reshape(len(x), -1).float().cpu()


def _download(url: str, dest: Path, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(dest) as tmp:
        with open(tmp, "wb") as fh:
            while chunk := response.read(1 << 20):
                fh.write(chunk)


def load_inception(
    mode: str, weights: Path, url: str, timeout: float = 10.0, device: str | None = None, shown: str | None = None
) -> tuple[InceptionFeatures | None, str]:
    """(extractor or None, status): status is "used" or "unavailable: <one-line reason>".
    Runs on the GPU when there is one (InceptionV3 at 299x299 is slow on a CPU). `shown`: how
    the weights path appears in the status (project-relative, so results do not name the machine)."""
    shown = shown or str(weights)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if mode == "off":
        return None, "unavailable: evaluate.inception is off"
    try:
        import torch_fidelity  # noqa: F401  (torchmetrics' InceptionV3 needs it)
    except ImportError:
        return None, "unavailable: torch-fidelity is not installed"
    if not weights.is_file():
        if not url:
            return None, f"unavailable: no weights at {shown} and evaluate.inception_url is empty"
        try:
            _download(url, weights, timeout)
        except Exception as exc:  # offline, DNS, HTTP error, timeout: say so and carry on
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return None, f"unavailable: no weights at {shown} and download failed ({type(exc).__name__}: {reason})"
    try:
        return InceptionFeatures(weights, device).eval(), "used"
    except Unreadable as err:  # a damaged file: our reason, never torch's advice to unpickle it
        return None, f"unavailable: weights at {shown} did not load ({err.reason}); {err.remedy}"
    except Exception as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        return None, f"unavailable: weights at {shown} did not load ({type(exc).__name__}: {reason})"
