"""bench --gpu: the GPU check's measurements -> reports/bench-gpu.json (scripts/gpu_check.sh).

On the training device (params' `train.device`; a GPU when there is one), for the baseline
experiment at its own settings and for the classic DCGAN example's setting (64x64 RGB, width
64, batch 64, real digits):
- images/s, peak device memory and model FLOP utilisation (MFU) of our loop in each precision
  setting of `PRECISIONS` (fp32, bf16, bf16 + channels_last = `auto` on a bf16 GPU, and that
  compiled); MFU = FLOPs per trained image (counted by torch) x img/s / the device's peak in
  the precision the matrix units run (`peak_tflops`, which names its source);
- ours (`auto`) against the classic loop (ImageFolder over PNGs, PIL decode per image,
  DataLoader with 2 workers, fp32, `.item()` per step) at the classic setting: the classic
  loop feeds the GPU from the CPU, ours keeps the uint8 data on the device. Goal: >= 2x.
Each measurement runs in its own spawned process (bench._isolated), as in `dcganlab bench`.
Runs on a CPU too (the peak is then bench_classic.cpu_peak's), so the path is tested without a GPU.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from dcganlab.core.atomic import write_json
from dcganlab.core.config import Params
from dcganlab.core.errors import UserError

# name -> (amp, channels_last, compile); "half" is bf16 where the device has it, else fp16
PRECISIONS: dict[str, tuple[str, str, bool]] = {
    "fp32": ("off", "off", False),
    "half": ("half", "off", False),
    "half+channels_last": ("half", "on", False),
    "half+channels_last+compile": ("half", "on", True),
}
AUTO = "half+channels_last"  # what `auto` resolves to on a CUDA device: the one compared with the classic loop

# Dense (no sparsity) peak TFLOP/s from the vendors' datasheets (SXM parts unless named):
# (fp32 on the CUDA cores, tf32 tensor cores, bf16/fp16 tensor cores). First match wins.
GPU_PEAKS: list[tuple[str, tuple[float, float, float]]] = [
    ("H100 PCIe", (51.2, 378.0, 756.0)),
    ("H100 NVL", (60.0, 417.5, 835.0)),
    ("H100", (66.9, 494.7, 989.4)),
    ("H200", (66.9, 494.7, 989.4)),
    ("GH200", (66.9, 494.7, 989.4)),
    ("A100", (19.5, 156.0, 312.0)),
    ("L40S", (91.6, 183.0, 362.0)),
    ("L4", (30.3, 60.0, 121.0)),
    ("A10", (31.2, 62.5, 125.0)),
    ("RTX 4090", (82.6, 82.6, 165.2)),
    ("V100", (15.7, 0.0, 125.0)),  # fp16 tensor cores, no bf16, no tf32
    ("T4", (8.1, 0.0, 65.0)),  # likewise
]


def peak_tflops(device: str) -> dict:
    """The device's peak TFLOP/s by precision, and where the figures come from."""
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        match = next(((key, p) for key, p in GPU_PEAKS if key.lower() in name.lower()), None)
        if match is None:
            return {
                "device": name,
                "fp32": None,
                "tf32": None,
                "half": None,
                "source": f"unknown GPU '{name}': add its datasheet peaks to bench_gpu.GPU_PEAKS",
            }
        fp32, tf32, half = match[1]
        return {
            "device": name,
            "fp32": fp32,
            "tf32": tf32 or None,
            "half": half,
            "source": f"vendor datasheet for '{match[0]}', dense (no sparsity)",
        }
    from dcganlab.bench.classic import cpu_peak

    cpu = cpu_peak()
    return {
        "device": "cpu",
        "fp32": cpu["fp32_gflops"] / 1000,
        "tf32": None,
        "half": cpu["bf16_gflops"] / 1000,
        "source": cpu["how"],
    }


def _precision_peak(peaks: dict, amp: str) -> tuple[float | None, str]:
    """The peak MFU is measured against, named. fp32 convolutions on an Ampere+ GPU run on TF32
    tensor cores (torch.backends.cudnn.allow_tf32 is on by default), so fp32 is judged by TF32's."""
    import torch

    if amp != "off":
        return peaks["half"], f"{amp} peak"
    if peaks["tf32"] and torch.backends.cudnn.allow_tf32:
        return peaks["tf32"], "tf32 tensor-core peak (cuDNN's default for fp32 convolutions)"
    return peaks["fp32"], "fp32 peak"


def flops_per_image(params: Params, name: str, channels: int, size: int, num_classes: int) -> float:
    """FLOPs of one train_step (G and D, forward + backward), counted by torch over a small
    batch on the CPU, per image (convolutions and matmuls: independent of precision)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dcganlab.gan.variants import VARIANTS
    from dcganlab.training.step import StepNets, build_networks, train_step

    e = params.experiment(name)
    G, D = build_networks(e, channels, size, num_classes)
    opt_g, opt_d = VARIANTS[e.variant].optimizers(e, G, D)
    batch = 4
    real = torch.rand(batch, channels, size, size) * 2 - 1
    labels = torch.randint(num_classes, (batch,)) if num_classes else None
    with FlopCounterMode(display=False) as counter:
        train_step(StepNets(G, D, opt_g, opt_d), e, real, labels, num_classes)
    return counter.get_total_flops() / batch


def _half(device: str) -> str:
    import torch

    return "fp16" if device.startswith("cuda") and not torch.cuda.is_bf16_supported() else "bf16"


def precision_grid(
    params: Params,
    name: str,
    folder: str,
    device: str,
    s,
    peaks: dict,
    precisions: dict[str, tuple[str, str, bool]],
    log=print,
) -> dict:
    """Our loop on experiment `name` in every precision setting: img/s, memory, MFU."""
    from dcganlab.bench.bench import _isolated, _our_loop

    half = _half(device)
    first = None
    out: dict = {}
    for label, (amp, channels_last, compile_) in precisions.items():
        log(f"bench --gpu: {name} {label}")
        amp = half if amp == "half" else amp
        r = _isolated(_our_loop, params, name, folder, device, s, False, (amp, channels_last, compile_))
        if first is None:
            first = flops_per_image(params, name, r["channels"], r["image_size"], 0)
        peak, against = _precision_peak(peaks, r["amp"])
        r["flops_per_image"] = first
        r["mfu"] = first * r["images_per_s"] / (peak * 1e12) if peak else None
        r["mfu_against"] = f"{against}: {peak} TFLOP/s" if peak else "unknown peak"
        out[label.replace("half", half)] = r
    return out


def bench_gpu(
    params: Params, s, out: Path | None = None, precisions: dict | None = None, classic=None, log=print
) -> dict:
    """The measurements above -> `out` (default reports/bench-gpu.json); returns them.
    `precisions` and `classic` (a bench_classic.Setting) default to the full grid and the classic setting."""
    from dcganlab.bench.bench import _isolated, _processed, _reference_loop, machine
    from dcganlab.bench.classic import CLASSIC, make_project
    from dcganlab.core.config import load_params
    from dcganlab.training.step import pick_device

    t_start = time.perf_counter()
    precisions = precisions or PRECISIONS
    classic = replace(classic or CLASSIC, images=s.process_images)
    baseline = next((n for n, e in params.experiments.items() if e.variant == "dcgan"), None)
    if baseline is None:
        raise UserError("the bench needs an experiment with variant 'dcgan' (the baseline)")
    device = str(pick_device(params.train.device))
    peaks = peak_tflops(device)
    half = _half(device)
    auto = AUTO.replace("half", half)
    result: dict = {
        "settings": asdict(s),
        "machine": machine(),
        "device": device,
        "peak_tflops": peaks,
        "baseline": baseline,
        "precisions": {
            k.replace("half", half): dict(zip(("amp", "channels_last", "compile"), v)) for k, v in precisions.items()
        },
    }
    work = Path(tempfile.mkdtemp(prefix="dcganlab-bench-gpu-"))
    try:
        folder, result["data"] = _processed(params, params.experiments[baseline].dataset, work)
        result["train"] = {baseline: precision_grid(params, baseline, str(folder), device, s, peaks, precisions, log)}

        classic_params = load_params(make_project(params, classic, work / "classic"))
        classic_folder = str(work / "classic" / "data" / "processed" / "bench")
        result["train"]["classic-setting"] = precision_grid(
            classic_params, "bench", classic_folder, device, s, peaks, precisions, log
        )
        log("bench --gpu: the classic loop (ImageFolder + DataLoader, fp32) at its own setting")
        ref = _isolated(_reference_loop, classic_params, "bench", classic_folder, device, s, 2, workers=True)
        peak, against = _precision_peak(peaks, "off")  # the classic loop trains in fp32
        flops = flops_per_image(classic_params, "bench", classic.channels, classic.image_size, 0)
        ref.update(
            flops_per_image=flops,
            mfu=flops * ref["images_per_s"] / (peak * 1e12) if peak else None,
            mfu_against=f"{against}: {peak} TFLOP/s" if peak else "unknown peak",
        )
        ours = result["train"]["classic-setting"].get(auto) or next(iter(result["train"]["classic-setting"].values()))
        result["reference"] = {
            **ref,
            "setting": asdict(classic),
            "ours": f"{ours['amp']}, channels_last {ours['channels_last']}",
            "how": "torchvision ImageFolder over PNGs + PIL decode + "
            "transforms, DataLoader(num_workers=2, shuffle), fp32, .item() per step",
        }
        result["speedup_vs_classic"] = ours["images_per_s"] / ref["images_per_s"]
        result["speedup_goal"] = 2.0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["wall_s"] = time.perf_counter() - t_start
    write_json(out or params.root / "reports" / "bench-gpu.json", result)
    return result


def table(r: dict) -> str:
    """One line per measurement: img/s, MFU, peak device memory."""
    rows = []
    for setting, grid in r["train"].items():
        for label, m in grid.items():
            mfu = f"{100 * m['mfu']:.1f}% MFU" if m.get("mfu") is not None else "MFU n/a"
            mem = f"{m['cuda_peak_allocated_mb']:.0f} MB" if "cuda_peak_allocated_mb" in m else ""
            rows.append((f"{setting} (batch {m['batch_size']}) {label}", f"{m['images_per_s']:.0f} img/s", mfu, mem))
    ref = r["reference"]
    ref_mfu = f"{100 * ref['mfu']:.1f}% MFU" if ref.get("mfu") is not None else "MFU n/a"
    rows += [
        ("classic loop at its setting (fp32, PNG + 2 loader workers)", f"{ref['images_per_s']:.0f} img/s", ref_mfu, ""),
        (
            f"ours ({ref['ours']}) vs classic (goal >= {r['speedup_goal']:.0f}x)",
            f"{r['speedup_vs_classic']:.2f}x",
            "",
            "",
        ),
    ]
    width = max(len(a) for a, *_ in rows)
    head = f"device {r['device']} ({r['peak_tflops']['device']}); peaks: {r['peak_tflops']['source']}"
    return "\n".join([head] + [f"{a:<{width}}  {b:>12}  {c:>10}  {d:>8}" for a, b, c, d in rows])
