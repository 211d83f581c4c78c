"""Speed settings of the training step: mixed precision, memory format, torch.compile.

`train.amp`, `train.channels_last` and `train.compile` in params.yaml. "auto" means what
is fastest and safe on the device: on CUDA bf16 autocast (fp16 + GradScaler where bf16 is
not supported) and channels_last; on the CPU plain fp32 (CPU autocast helps little for
these small convolutions), but every path also runs on the CPU, so tests cover it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Accel:
    amp: str = "off"             # off | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    device_type: str = "cpu"

    def autocast(self):
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)

    def scaler(self) -> torch.amp.GradScaler:
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none
        return torch.amp.GradScaler(self.device_type, enabled=self.amp == "fp16")

    def prepare(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


PLAIN = Accel()  # fp32, default memory format, eager


def resolve(amp: str, channels_last: str, compile_: bool, device: torch.device) -> Accel:
    cuda = device.type == "cuda"
    if amp == "auto":
        amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "off"
    cl = cuda if channels_last == "auto" else channels_last == "on"
    return Accel(amp=amp, channels_last=cl, compile=compile_, device_type=device.type)
