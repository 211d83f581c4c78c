"""Speed settings of the training step: mixed precision, memory format, torch.compile.

`train.amp`, `train.channels_last` and `train.compile` in params.yaml. "auto" means the
fastest setting that is safe on this hardware:
- CUDA: bf16 autocast (fp16 + GradScaler where bf16 is not supported) and channels_last;
- a CPU with native bf16 (AVX512-BF16 or AMX, as torch itself detects them): bf16 autocast
  and channels_last (oneDNN's bf16 convolutions run fastest on NHWC): about 1.8x the fp32
  images/s of the classic 64x64 DCGAN on a 2-core EPYC (docs/performance.md);
- any other CPU: plain fp32. Without native bf16 the CPU emulates it, slower than fp32.
Quality holds with bf16 for every variant we measured (docs/performance.md: FID/KID of
digits-dcgan and faces-face-dcgan in fp32 and auto, within noise); `FP32_VARIANTS` lists
variants that auto keeps in fp32, should one lose quality.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn

FP32_VARIANTS: frozenset[str] = frozenset()  # variants whose quality bf16 hurts: auto keeps fp32


@dataclass(frozen=True)
class Accel:
    amp: str = "off"  # off | bf16 | fp16
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


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX, by torch's own CPU capability checks (not the CPU's name), and not
    switched off for this process. oneDNN's `_is_mkldnn_bf16_supported` is not enough: it is also
    true where bf16 is only emulated."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks) and not isa_capped()


def isa_capped() -> bool:
    """True when this process runs below the CPU's AVX-512 (`ATEN_CPU_CAPABILITY=avx2` for torch's
    kernels, `ONEDNN_MAX_CPU_ISA=AVX2` or any level without bf16 for oneDNN's convolutions): how an
    AVX2-only CPU is reproduced on a newer one. The CPU's flags still say bf16 then, but the
    convolutions would emulate it, many times slower than fp32 (43x on the classic DCGAN)."""
    if torch.backends.cpu.get_cpu_capability() != "AVX512":  # torch's levels: ..., AVX2, AVX512
        return True
    isa = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    return isa not in ("ALL", "DEFAULT") and not any(level in isa for level in _ONEDNN_BF16_LEVELS)


_ONEDNN_BF16_LEVELS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AMX", "AVX10")  # oneDNN ISAs with bf16 dot products


def cpu_path() -> dict:
    """Which CPU path this process runs: the ISA torch's kernels use, oneDNN's cap, native bf16, threads."""
    return {
        "isa": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL",
        "native_bf16": cpu_has_native_bf16(),
        "threads": torch.get_num_threads(),
    }


def resolve(
    amp: str,
    channels_last: str,
    compile_: bool,
    device: torch.device,
    variant: str = "",
    native_bf16: bool | None = None,
) -> Accel:
    """The Accel for params' `amp` / `channels_last` (auto | off | on, auto | off | bf16 | fp16).
    `native_bf16`: the CPU check's answer (None: ask the CPU; tests pass both answers)."""
    cuda = device.type == "cuda"
    if amp == "auto":
        if cuda:
            amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
            amp = "bf16" if native and variant not in FP32_VARIANTS else "off"
    cl = (cuda or amp == "bf16") if channels_last == "auto" else channels_last == "on"
    return Accel(amp=amp, channels_last=cl, compile=compile_, device_type=device.type)
