"""bench, whole process: `dcganlab train` against the classic DCGAN script at the same settings.

A setting is an image size, channels, ngf = ndf and batch over the same real digits: the
classic example's own (64x64 RGB, 64, 64: 2048 digits) and our default experiment's. Each
side runs as a fresh process, alternating, `repeats` times; we report the median wall
time, the peak resident memory of the process tree (the classic script's loader workers
included), the training loop's images/s as each process reports it, and the model FLOP
utilisation: FLOPs per trained image (counted by torch over one training step) x img/s
against the CPU's peak (`cpu_peak`, which says how it got it).

`dcganlab train` runs one epoch with no mid-epoch checkpoints and no model logging, on a
project whose MLflow store exists (as for every stage after a project's first training; its
one-off creation is timed apart: `new_store_s`); the classic script (classic_loop.main) writes its
sample images and per-epoch weights, as pytorch/examples' dcgan/main.py does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from dcganlab.core.config import DatasetParams, Params, as_dict
from dcganlab.core.errors import UserError


@dataclass(frozen=True)
class Setting:
    name: str
    image_size: int
    channels: int
    width: int  # ngf = ndf
    batch_size: int
    images: int  # real digits, all in the training split


CLASSIC = Setting("classic", 64, 3, 64, 64, 2048)  # pytorch/examples dcgan defaults


def default_setting(params: Params, experiment: str, images: int) -> Setting:
    """Our default experiment's size, channels, width and batch."""
    e = params.experiment(experiment)
    ds = params.dataset(e.dataset)
    return Setting("default", ds.image_size, ds.channels, e.ngf, e.batch_size, images)


# ---------------------------------------------------------------- the two sides' inputs
def make_project(params: Params, s: Setting, root: Path) -> Path:
    """root/params.yaml: one digits dataset and one 1-epoch DCGAN experiment at setting `s`,
    fetched and prepared; root/png/: the same images as PNG files in ImageFolder layout."""
    from dcganlab.bench.classic_loop import write_image_folder
    from dcganlab.core import paths
    from dcganlab.data.faces import CropSettings
    from dcganlab.data.prepare import prepare
    from dcganlab.data.processed import load_processed
    from dcganlab.data.sources import fetch

    ds = DatasetParams(
        source="mnist-subset", limit=s.images, image_size=s.image_size, channels=s.channels, test_fraction=0.0
    )
    e = {
        "variant": "dcgan",
        "dataset": "bench",
        "epochs": 1,
        "batch_size": s.batch_size,
        "ngf": s.width,
        "ndf": s.width,
        "z_dim": 100,
        "lr_g": 2e-4,
        "lr_d": 2e-4,
        "beta1": 0.5,
    }
    train = {**as_dict(params.train), "checkpoint_every_steps": 0, "log_model": False}
    raw = {"seed": params.seed, "datasets": {"bench": as_dict(ds)}, "experiments": {"bench": e}, "train": train}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    fetch(ds, paths.raw_dir(root, "bench"), paths.downloads_dir(params.root), params.root)
    prepare(
        paths.raw_dir(root, "bench"),
        paths.processed_dir(root, "bench"),
        CropSettings.from_dataset(ds),
        0.0,
        params.seed,
        1,
    )
    data = load_processed(paths.processed_dir(root, "bench"))
    write_image_folder(data["images"], data["labels"], root / "png")
    return root / "params.yaml"


def commands(s: Setting, params_file: Path) -> dict[str, list[str]]:
    root = params_file.parent
    return {
        "dcganlab": [sys.executable, "-m", "dcganlab", "train", "bench", "-p", str(params_file)],
        "classic": [
            sys.executable,
            "-m",
            "dcganlab.bench.classic_loop",
            str(root / "png"),
            "--outf",
            str(root / "classic-out"),
            "--imageSize",
            str(s.image_size),
            "--nc",
            str(s.channels),
            "--ngf",
            str(s.width),
            "--ndf",
            str(s.width),
            "--batchSize",
            str(s.batch_size),
            "--workers",
            "2",
        ],
    }


def new_store_seconds(params_file: Path) -> float:
    """Make the project's MLflow store (a new SQLite mlflow.db: MLflow creates and migrates its
    tables), timed. Made once, as a project's first training run makes it; the timed runs reuse it."""
    import mlflow  # noqa: F401  (imported before the clock starts: its import is not the store's cost)

    from dcganlab.core.config import load_params
    from dcganlab.core.tracking import connect

    params = load_params(params_file)
    t0 = time.perf_counter()
    connect(params)  # makes a new SQLite store's tables
    return round(time.perf_counter() - t0, 2)


# ---------------------------------------------------------------- one fresh process
class _TreeMemory(threading.Thread):
    """Peak of the summed resident memory of a process and all its descendants."""

    def __init__(self, pid: int, every: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.done = pid, every, 0, threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.done.wait(self.every):
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                break
            self.peak = max(self.peak, total)


_RATE = {"dcganlab": re.compile(r"train bench: .*?([\d.]+) img/s"), "classic": re.compile(r"loop ([\d.]+) img/s")}


def fresh_training(root: Path) -> None:
    """A fresh training next time (else it would find the finished one); the MLflow store stays."""
    for folder in ("models", "reports"):
        shutil.rmtree(root / folder, ignore_errors=True)


def child_env() -> dict:
    """A child process's environment: this process's imports, the project's own MLflow store."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run_once(side: str, cmd: list[str], root: Path) -> dict:
    """Wall seconds, peak tree RSS and the loop's img/s of one fresh process."""
    if side == "dcganlab":
        fresh_training(root)
    env = child_env()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watch = _TreeMemory(proc.pid)
    watch.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    watch.done.set()
    watch.join()
    rate = _RATE[side].search(out)
    if proc.returncode or not rate:
        raise UserError(f"bench: the {side} process failed (exit {proc.returncode}): {out.strip()[-300:]}")
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(watch.peak / 2**20, 1),
        "loop_images_per_s": float(rate[1]),
        "load_average": round(os.getloadavg()[0], 2),
    }


# ---------------------------------------------------------------- FLOPs and the CPU's peak
def flops_per_image(params_file: Path, accel_on: bool = True) -> dict:
    """FLOPs of one training step of the setting's experiment (G and D forward + backward, as
    the training loop runs it), counted by torch.utils.flop_counter, per image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dcganlab.core.config import load_params
    from dcganlab.gan.variants import VARIANTS
    from dcganlab.training.accel import PLAIN, resolve
    from dcganlab.training.step import StepNets, build_networks, train_step

    p = load_params(params_file)
    e, ds = p.experiment("bench"), p.dataset("bench")
    accel = resolve(p.train.amp, p.train.channels_last, False, torch.device("cpu"), e.variant) if accel_on else PLAIN
    G, D = build_networks(e, ds.channels, ds.image_size)
    G, D = accel.prepare(G), accel.prepare(D)
    opt_g, opt_d = VARIANTS[e.variant].optimizers(e, G, D)
    real = torch.rand(e.batch_size, ds.channels, ds.image_size, ds.image_size) * 2 - 1
    with FlopCounterMode(display=False) as counter:
        train_step(StepNets(G, D, opt_g, opt_d), e, real, None, 0, accel)
    return {
        "flops_per_image": counter.get_total_flops() / e.batch_size,
        "amp": accel.amp,
        "how": "torch.utils.flop_counter.FlopCounterMode over one train_step (convolutions and matmuls, "
        "forward + backward of G and D), divided by the batch",
    }


def cpu_peak() -> dict:
    """The CPU's peak FLOP/s in fp32 and bf16: usable cores x clock x FLOP per cycle per core,
    from /proc/cpuinfo's flags, assuming two FMA pipes per core (every x86 server core since
    Haswell): AVX-512 16 fp32 lanes, AVX2 8; AVX512-BF16 dot products double that; AMX
    1024 bf16 FLOP per cycle. A virtual CPU may be a hyperthread: then the real peak per
    vCPU is lower and the utilisation higher than shown."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    mhz = [float(ln.split(":", 1)[1]) for ln in text.splitlines() if ln.startswith("cpu MHz")]
    max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    ghz = int(max_freq.read_text()) / 1e6 if max_freq.is_file() else (max(mhz) / 1000 if mhz else 0.0)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags and "fma" in flags else 4
    fp32 = 2 * 2 * lanes  # 2 pipes x (multiply + add) x lanes
    bf16 = 1024 if "amx_bf16" in flags else 2 * fp32 if "avx512_bf16" in flags else fp32
    isa = (
        "AMX"
        if "amx_bf16" in flags
        else "AVX512-BF16"
        if "avx512_bf16" in flags
        else "AVX-512"
        if lanes == 16
        else "AVX2+FMA"
        if lanes == 8
        else "SSE"
    )
    return {
        "cores": cores,
        "ghz": round(ghz, 3),
        "isa": isa,
        "fp32_flop_per_cycle": fp32,
        "bf16_flop_per_cycle": bf16,
        "fp32_gflops": round(cores * ghz * fp32, 1),
        "bf16_gflops": round(cores * ghz * bf16, 1),
        "how": "usable cores x clock (cpufreq max, else /proc/cpuinfo 'cpu MHz') x FLOP/cycle/core from the ISA "
        "flags, assuming 2 FMA pipes per core",
    }


def mfu(flops_per_image: float, images_per_s: float, peak_gflops: float) -> float:
    return flops_per_image * images_per_s / (peak_gflops * 1e9) if peak_gflops else 0.0


# ---------------------------------------------------------------- one setting, both sides
def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def compare(params: Params, s: Setting, work: Path, repeats: int = 3, log=print) -> dict:
    """Both sides at setting `s`, `repeats` fresh processes each, alternating (classic first)."""
    params_file = make_project(params, s, work / s.name)
    cmds = commands(s, params_file)
    log(
        f"bench: whole process at the {s.name} setting ({s.image_size}x{s.image_size}x{s.channels}, "
        f"width {s.width}, batch {s.batch_size})"
    )
    store_s = new_store_seconds(params_file)
    runs: dict[str, list[dict]] = {"classic": [], "dcganlab": []}
    for i in range(repeats):
        for side in ("classic", "dcganlab"):
            log(f"bench: {s.name} {side} run {i + 1}/{repeats}")
            runs[side].append(run_once(side, cmds[side], params_file.parent))
    flops = flops_per_image(params_file)
    peak = cpu_peak()
    out: dict = {"setting": asdict(s), "new_store_s": store_s, "flops": flops, "commands": cmds}
    for side, rs in runs.items():
        rate = _median([r["loop_images_per_s"] for r in rs])
        precision = flops["amp"] if side == "dcganlab" else "off"  # the classic loop is plain fp32
        out[side] = {
            "wall_s": _median([r["wall_s"] for r in rs]),
            "peak_rss_mb": _median([r["peak_rss_mb"] for r in rs]),
            "loop_images_per_s": rate,
            "precision": "bf16" if precision == "bf16" else "fp32",
            "mfu": mfu(flops["flops_per_image"], rate, peak["bf16_gflops" if precision == "bf16" else "fp32_gflops"]),
            "runs": rs,
        }
    out["wall_speedup"] = out["classic"]["wall_s"] / out["dcganlab"]["wall_s"]
    out["loop_speedup"] = out["dcganlab"]["loop_images_per_s"] / out["classic"]["loop_images_per_s"]
    out["rss_ratio"] = out["dcganlab"]["peak_rss_mb"] / out["classic"]["peak_rss_mb"]
    return out
