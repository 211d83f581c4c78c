"""bench: how fast each hot path runs, side by side, in one command -> reports/bench.json.

- training images/s of every experiment in params.yaml (its variant at its own settings),
  through the training loop's own Batches, Nets and batch_step: uint8 batch on the device -> train_step, one sync;
- the baseline DCGAN through our loop vs the classic loop (torchvision ImageFolder over
  PNG files, PIL decode + transforms per step, DataLoader with 2 workers, `.item()` per step)
  with the same model, batch and optimizer -> `train_speedup_vs_reference`;
- one training step split into forward / backward / optimizer / everything else
  -> `step_overhead_fraction`;
- the prepare stage (Haar face detection) on the LFW-subset photos with 1 and 2 worker
  processes -> `prepare_scaling_2_workers`, checking the output is identical and in order;
- evaluation seconds per 1000 generated samples (generate + FID/KID + the real floor, as
  the evaluate stage computes them).

Each measurement runs in its own spawned process, so its peak memory is its own (plus the
sampled memory of its worker processes) and one measurement's threads or caches cannot
slow the next.
"""

from __future__ import annotations

import hashlib
import os
import platform
import resource
import shutil
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from dcganlab.core import paths
from dcganlab.core.atomic import write_json
from dcganlab.core.config import DatasetParams, Params
from dcganlab.core.errors import UserError


@dataclass(frozen=True)
class BenchSettings:
    warmup: int = 5  # training steps before timing (allocator, caches, loader start-up)
    steps: int = 6  # timed training steps per repeat
    profile_steps: int = 10  # steps split into forward / backward / optimizer / other
    photos: int = 2000  # prepare: LFW-subset photos (the 200 repeated) per worker count
    eval_samples: int = 1000  # evaluate: generated (and real) samples
    repeats: int = 5  # timed training repeats; the median one is reported (robust to a busy machine)
    process_repeats: int = 3  # whole-process runs of each side per setting (alternating; median; 0 = skip)
    process_images: int = 2048  # real digits each whole-process run trains one epoch on
    share_epochs: int = 8  # sharing the CPU (bench/share.py): epochs of those digits per training (0 = skip)
    share_threads: int = 0  # train.threads of those trainings: 0 the share; the core count was torch's default


QUICK = BenchSettings()
LONG = BenchSettings(warmup=20, steps=60, profile_steps=50, photos=8000, eval_samples=5000, process_repeats=5)
GPU = BenchSettings(
    warmup=20, steps=50, repeats=3, process_repeats=0, share_epochs=0
)  # bench --gpu: a GPU step takes milliseconds


# ---------------------------------------------------------------- child-process plumbing
def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: a spawned child's
    ru_maxrss starts at its parent's size at fork time."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    scale = 1 if platform.system() == "Darwin" else 1024  # macOS: bytes, Linux: KiB
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)


class _ChildrenMemory(threading.Thread):
    """Samples the unique memory (USS) of all descendants (pool or DataLoader workers) and
    keeps the peak of their sum."""

    def __init__(self, every: float = 0.1):
        super().__init__(daemon=True)
        self.every, self.peak, self.done = every, 0, threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.done.wait(self.every):
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_full_info().uss
                except (psutil.Error, OSError):
                    pass
            self.peak = max(self.peak, total)


def _isolated(fn, *args, workers: bool = False) -> dict:
    """fn(*args) in a fresh spawned process; `workers`: it starts worker processes, whose
    memory is sampled (only then: the sampling thread would cost the others time)."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_measure, fn, workers, *args).result()


def _measure(fn, workers: bool, *args) -> dict:
    start = _peak_rss_mb()
    watch = _ChildrenMemory()
    if workers:
        watch.start()
    try:
        out = fn(*args)
    finally:
        if workers:
            watch.done.set()
            watch.join()
    return {
        **out,
        "peak_rss_mb": _peak_rss_mb(),
        "start_rss_mb": start,
        "peak_children_uss_mb": round(watch.peak / 2**20, 1),
    }


# ---------------------------------------------------------------- data
def _processed(params: Params, name: str, work: Path) -> tuple[Path, str]:
    """The dataset's processed folder: the project's if it matches params, else built in `work`."""
    from dcganlab.data.faces import CropSettings
    from dcganlab.data.prepare import prepare
    from dcganlab.data.sources import fetch

    ds = params.dataset(name)
    folder = paths.processed_dir(params.root, name)
    if (folder / "images.npy").is_file():
        shape = np.load(folder / "images.npy", mmap_mode="r").shape
        if shape[1:] == (ds.channels, ds.image_size, ds.image_size):
            return folder, str(folder.relative_to(params.root))
    raw, out = work / "raw" / name, work / "processed" / name
    fetch(ds, raw, work / "downloads", params.root)
    prepare(raw, out, CropSettings.from_dataset(ds), ds.test_fraction, params.seed, ds.workers)
    return out, "built from params in a temp dir (no matching data/processed)"


def _train_arrays(folder: Path):
    from dcganlab.data.processed import load_processed

    data = load_processed(folder)
    mask = data["split"] == 0
    return data["images"][mask], data["labels"][mask], data["stats"]["classes"]


# ---------------------------------------------------------------- training throughput
def _setup(params: Params, name: str, folder: Path, device: str):
    import torch

    from dcganlab.gan.variants import VARIANTS
    from dcganlab.training.step import build_networks

    e = params.experiment(name)
    variant = VARIANTS[e.variant]
    images, labels, classes = _train_arrays(folder)
    num_classes = len(classes) if variant.conditional else 0
    torch.manual_seed(params.seed + e.seed_offset)
    G, D = build_networks(e, images.shape[1], images.shape[2], num_classes)
    G, D = G.to(device), D.to(device)
    opt_g, opt_d = variant.optimizers(e, G, D)
    return e, images, labels, num_classes, G, D, opt_g, opt_d


def _rates(seconds: list[float], steps: int, batch: int) -> dict:
    """images/s of the median repeat (and the best: the machine's least disturbed)."""
    median = sorted(seconds)[len(seconds) // 2]
    return {
        "images_per_s": steps * batch / median,
        "images_per_s_best": steps * batch / min(seconds),
        "step_ms": 1000 * median / steps,
        "repeat_seconds": seconds,
    }


def _our_loop(
    params: Params,
    name: str,
    folder: str,
    device: str,
    s: BenchSettings,
    profile: bool,
    speed: tuple[str, str, bool] | None = None,
) -> dict:
    """The training loop's own pieces (training/loop.py): its Batches (uint8 on the device, index +
    scale per batch), its Nets (accel, compile) and its batch_step, one sync per repeat.
    `speed`: (amp, channels_last, compile) instead of params' train settings (bench_gpu's grid)."""
    import torch

    from dcganlab.data.processed import load_processed
    from dcganlab.gan.modelfile import ModelSpec
    from dcganlab.gan.variants import VARIANTS
    from dcganlab.training.accel import resolve
    from dcganlab.training.distributed import World
    from dcganlab.training.loop import Batches, Nets, batch_step

    e, settings, world = params.experiment(name), params.train, World()
    data = load_processed(Path(folder))
    k = len(data["stats"]["classes"]) if VARIANTS[e.variant].conditional else 0
    amp, channels_last, compile_ = speed or (settings.amp, settings.channels_last, False)
    accel = resolve(amp, channels_last, compile_, torch.device(device), e.variant)  # as the loop resolves it
    batches = Batches.of(data, k, e, world, device)
    spec = ModelSpec(e, int(batches.images.shape[1]), int(batches.images.shape[2]), k)
    nets = Nets.build(spec, accel, world, device, params.seed + e.seed_offset)
    order = torch.Generator().manual_seed(params.seed)
    perm = None

    def one(j: int) -> torch.Tensor:
        nonlocal perm
        i = j % batches.steps
        if i == 0:
            perm = torch.randperm(len(batches.images), generator=order).to(device)
        return batch_step(batches, nets, e, accel, perm, i, world)

    def run(steps: int) -> float:
        sums = torch.zeros(4, device=device)
        t0 = time.perf_counter()
        for j in range(steps):
            sums += one(j)
        sums.tolist()  # the loop's one host sync
        return time.perf_counter() - t0

    run(s.warmup)
    seconds = [run(s.steps) for _ in range(s.repeats)]
    batch = batches.global_batch
    out = {
        "experiment": name,
        "variant": e.variant,
        "dataset": e.dataset,
        "batch_size": batch,
        "image_size": spec.size,
        "channels": spec.channels,
        "steps": s.steps,
        "amp": accel.amp,
        "channels_last": accel.channels_last,
        "compile": accel.compile,
        **_rates(seconds, s.steps, batch),
    }
    if device.startswith("cuda"):
        out["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        out["cuda_peak_reserved_mb"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
    if profile:
        out["profile"] = _profile(nets, one, s.profile_steps, device)
    return out


def _profile(nets, one, steps: int, device: str) -> dict:
    """Wall time of `steps` loop steps split into forward (G, D), backward, optimizer (step +
    zero_grad) and other (batch indexing and scaling, noise, loss arithmetic, stats, Python).
    Timed with hooks: exact on the CPU, where every op is synchronous."""
    import torch

    G, D, opt_g, opt_d = nets.G, nets.D, nets.opt_g, nets.opt_d
    spent = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    starts: dict[int, float] = {}

    def pre(module, args):
        sync()
        starts[id(module)] = time.perf_counter()

    def post(module, args, result):
        sync()
        spent["forward"] += time.perf_counter() - starts.pop(id(module))

    def timed(fn, key):
        def wrapper(*a, **kw):
            sync()
            t0 = time.perf_counter()
            r = fn(*a, **kw)
            sync()
            spent[key] += time.perf_counter() - t0
            return r

        return wrapper

    hooks = [m.register_forward_pre_hook(pre) for m in (G, D)] + [m.register_forward_hook(post) for m in (G, D)]
    for opt in (opt_g, opt_d):
        opt.step, opt.zero_grad = timed(opt.step, "optimizer"), timed(opt.zero_grad, "optimizer")
    original_backward = torch.Tensor.backward
    torch.Tensor.backward = timed(original_backward, "backward")
    try:
        sync()
        t0 = time.perf_counter()
        for j in range(steps):
            one(j)
        sync()
        total = time.perf_counter() - t0
    finally:
        torch.Tensor.backward = original_backward
        for h in hooks:
            h.remove()
        for opt in (opt_g, opt_d):
            del opt.step, opt.zero_grad
    other = max(total - sum(spent.values()), 0.0)
    ms = {f"{k}_ms": 1000 * v / steps for k, v in spent.items()}
    return {
        "steps": steps,
        "step_ms": 1000 * total / steps,
        **ms,
        "other_ms": 1000 * other / steps,
        "step_overhead_fraction": other / total,
    }


def _reference_loop(params: Params, name: str, folder: str, device: str, s: BenchSettings, workers: int) -> dict:
    """classic_loop.py on the same networks, batch and optimizers as our loop."""
    from dcganlab.bench.classic_loop import Timing, classic_seconds

    e, images, labels, k, G, D, opt_g, opt_d = _setup(params, name, Path(folder), device)
    if k:
        raise UserError(f"the reference loop is the unconditional DCGAN; '{name}' is conditional")
    batch = min(e.batch_size, len(images))
    need = min(len(images), (s.warmup + s.steps * s.repeats) * batch)  # PNG files: enough for one pass
    timing = Timing(batch, s.warmup, s.steps, s.repeats, workers)
    seconds = classic_seconds((G, D, opt_g, opt_d), e, images[:need], labels[:need], device, timing)
    return {
        "experiment": name,
        "batch_size": batch,
        "steps": s.steps,
        "loader_workers": workers,
        **_rates(seconds, s.steps, batch),
        "png_files": int(need),
    }


# ---------------------------------------------------------------- prepare
def _prepare_rate(files: list[str], settings: dict, workers: int, single_thread: bool) -> dict:
    import cv2

    from dcganlab.data.faces import CropSettings
    from dcganlab.data.prepare import process_all

    if single_thread:
        cv2.setNumThreads(1)  # what a pool worker does (prepare._init_worker)
    threads = cv2.getNumThreads()
    t0 = time.perf_counter()
    results = process_all([Path(f) for f in files], CropSettings(**settings), workers, desc=f"bench {workers}w")
    seconds = time.perf_counter() - t0
    h = hashlib.sha256()
    for arr, status, _ in results:  # order and content of the output
        h.update(status.encode())
        if arr is not None:
            h.update(arr.tobytes())
    return {
        "workers": workers,
        "opencv_threads": threads,
        "photos": len(files),
        "seconds": seconds,
        "images_per_s": len(files) / seconds,
        "kept": sum(a is not None for a, _, _ in results),
        "output_sha256": h.hexdigest(),
    }


def _face_settings(params: Params) -> DatasetParams:
    for ds in params.datasets.values():
        if ds.source == "lfw-subset" and ds.detect_faces:
            return ds
    return DatasetParams(source="lfw-subset", detect_faces=True, channels=3)


# ---------------------------------------------------------------- evaluate
def _evaluate_rate(params: Params, name: str, folder: str, n: int) -> dict:
    """generate n samples + FID/KID vs n real + the real-vs-real floor, as the evaluate stage does."""
    import torch

    from dcganlab.data.processed import load_processed
    from dcganlab.evaluation.extractor import DomainNet, load_extractor, to_float
    from dcganlab.evaluation.reference import fid_kid
    from dcganlab.gan.sampling import generate, sample_noise
    from dcganlab.training.step import build_networks

    e = params.experiment(name)
    data = load_processed(Path(folder))
    images, split = data["images"], data["split"]
    ext_path = paths.extractor_path(params.root, e.dataset)
    if ext_path.is_file():
        extractor, _ = load_extractor(ext_path)
        ext_source = str(ext_path.relative_to(params.root))
    else:  # same architecture, untrained: the cost does not depend on the weights
        extractor = DomainNet(
            images.shape[1], images.shape[2], params.extractor.features, len(data["stats"]["classes"])
        ).eval()
        ext_source = "untrained DomainNet (no extractor in models/extractors)"
    G, _ = build_networks(e, images.shape[1], images.shape[2])
    gen = torch.Generator().manual_seed(params.seed)
    pick = lambda arr: to_float(arr[torch.randint(len(arr), (n,), generator=gen).numpy()])  # noqa: E731
    ref = images[split == 1] if (split == 1).sum() >= 2 else images
    real, other = pick(ref), pick(images[split == 0])
    t0 = time.perf_counter()
    fake = generate(G, sample_noise(n, e.z_dim, e.noise, "cpu", gen))
    t1 = time.perf_counter()
    fid_kid(extractor, real, fake, params.evaluate.kid_subset_size, params.evaluate.batch_size, params.seed)
    t2 = time.perf_counter()
    fid_kid(extractor, real, other, params.evaluate.kid_subset_size, params.evaluate.batch_size, params.seed)
    t3 = time.perf_counter()
    return {
        "experiment": name,
        "samples": n,
        "extractor": ext_source,
        "generate_s": t1 - t0,
        "fid_kid_s": t2 - t1,
        "floor_s": t3 - t2,
        "seconds_per_1000_samples": (t3 - t0) * 1000 / n,
    }


# ---------------------------------------------------------------- the command
def machine() -> dict:
    import torch

    from dcganlab.training.accel import cpu_path

    cpu = platform.processor()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    facts = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_path": cpu_path(),
    }  # the ISA torch and oneDNN run, native bf16 or not, threads
    if hasattr(os, "sched_getaffinity"):
        facts["usable_cores"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        facts["load_average_start"] = [round(x, 2) for x in os.getloadavg()]
    return facts


def bench(
    params: Params, s: BenchSettings = QUICK, experiments: list[str] | None = None, out: Path | None = None, log=print
) -> dict:
    from dcganlab.training.step import pick_device

    t_start = time.perf_counter()
    names = experiments or list(params.experiments)
    for name in names:
        params.experiment(name)
    baseline = next((n for n in names if params.experiments[n].variant == "dcgan"), None)
    if baseline is None:
        raise UserError("the bench needs an experiment with variant 'dcgan' (the baseline)")
    device = str(pick_device(params.train.device))
    result: dict = {
        "settings": asdict(s),
        "machine": machine(),
        "device": device,
        "baseline": baseline,
        "isolation": "each measurement in its own spawned process: peak_rss_mb is that process's "
        "peak resident memory (libraries included; start_rss_mb before the work), "
        "peak_children_uss_mb the sampled peak of its workers' unique memory",
    }
    work = Path(tempfile.mkdtemp(prefix="dcganlab-bench-"))
    try:
        folders, result["data"] = {}, {}
        for ds in dict.fromkeys(params.experiments[n].dataset for n in names):
            folder, how = _processed(params, ds, work)
            folders[ds], result["data"][ds] = str(folder), how

        result["train"] = {}
        for name in names:
            log(f"bench: training {name}")
            r = _isolated(
                _our_loop, params, name, folders[params.experiments[name].dataset], device, s, name == baseline
            )
            if "profile" in r:
                result["step_profile"] = {"experiment": name, **r.pop("profile")}
            result["train"][name] = r
        log(f"bench: reference loop ({baseline})")
        ref = _isolated(
            _reference_loop, params, baseline, folders[params.experiments[baseline].dataset], device, s, 2, workers=True
        )
        result["reference"] = {
            **ref,
            "how": "torchvision ImageFolder over PNGs + PIL decode + Resize/CenterCrop/"
            "ToTensor/Normalize, DataLoader(num_workers=2, shuffle), .item() per step",
        }
        result["train_speedup_vs_reference"] = result["train"][baseline]["images_per_s"] / ref["images_per_s"]
        result["step_overhead_fraction"] = result["step_profile"]["step_overhead_fraction"]

        from dcganlab.bench.classic import CLASSIC, compare, cpu_peak, default_setting

        result["cpu_peak"] = cpu_peak()
        if s.process_repeats:
            result["whole_process"] = {
                setting.name: compare(params, setting, work / "whole", s.process_repeats, log)
                for setting in (
                    replace(CLASSIC, images=s.process_images),
                    default_setting(params, baseline, s.process_images),
                )
            }
        if s.process_repeats and s.share_epochs:  # --process-repeats 0 skips every whole-process run
            from dcganlab.bench.share import sharing

            result["sharing"] = sharing(
                params,
                default_setting(params, baseline, s.process_images),
                work / "share",
                s.share_epochs,
                s.share_threads,
                log=log,
            )

        log("bench: prepare (Haar face detection)")
        from dcganlab.data.faces import CropSettings
        from dcganlab.data.sources import fetch

        face_ds = _face_settings(params)
        fetch(DatasetParams(source="lfw-subset"), work / "raw" / "_lfw", work / "downloads")
        photos = sorted(str(p) for p in (work / "raw" / "_lfw").rglob("*.png"))
        files = [photos[i % len(photos)] for i in range(s.photos)]
        crop = asdict(CropSettings.from_dataset(face_ds))
        runs = {
            "1_worker": _isolated(_prepare_rate, files, crop, 1, True),
            "2_workers": _isolated(_prepare_rate, files, crop, 2, True, workers=True),
            "in_process_default": _isolated(_prepare_rate, files, crop, 1, False),
        }
        identical = len({r.pop("output_sha256") for r in runs.values()}) == 1
        result["prepare"] = {
            **runs,
            "identical_output": identical,
            "how": f"{s.photos} LFW-subset photos (200x200 canvases, the 200 repeated); 1_worker: "
            "one process with OpenCV pinned to 1 thread, as each pool worker; "
            "in_process_default: workers=1 as `prepare` runs it (OpenCV's own threads)",
        }
        if not identical:
            raise UserError("prepare output differs between worker counts (order or content)")
        result["prepare_scaling_2_workers"] = runs["2_workers"]["images_per_s"] / runs["1_worker"]["images_per_s"]
        # vs `workers: 1` as prepare runs it, where OpenCV's own threads already share the cores
        result["prepare_2_workers_vs_in_process"] = (
            runs["2_workers"]["images_per_s"] / runs["in_process_default"]["images_per_s"]
        )

        log("bench: evaluate (FID/KID)")
        result["evaluate"] = _isolated(
            _evaluate_rate, params, baseline, folders[params.experiments[baseline].dataset], s.eval_samples
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_s"] = time.perf_counter() - t_start
    write_json(out or params.root / "reports" / "bench.json", result)
    return result


def _mb(m: dict) -> str:
    return f"{m['peak_rss_mb'] + m['peak_children_uss_mb']:.0f} MB"


def table(r: dict) -> str:
    """The headline numbers, one per line (memory: the process's peak + its workers')."""
    rows = [
        (f"train {n} ({t['variant']}, batch {t['batch_size']})", f"{t['images_per_s']:.0f} img/s", _mb(t))
        for n, t in r["train"].items()
    ]
    ref, prep, ev = r["reference"], r["prepare"], r["evaluate"]
    rows += [
        (
            f"reference loop ({r['baseline']}, ImageFolder + 2 loader workers)",
            f"{ref['images_per_s']:.0f} img/s",
            _mb(ref),
        ),
        ("train_speedup_vs_reference", f"{r['train_speedup_vs_reference']:.2f}x", ""),
        ("step_overhead_fraction", f"{100 * r['step_overhead_fraction']:.1f}%", ""),
        *[(f"prepare {k}", f"{v['images_per_s']:.0f} img/s", _mb(v)) for k, v in prep.items() if isinstance(v, dict)],
        ("prepare_scaling_2_workers", f"{r['prepare_scaling_2_workers']:.2f}x", ""),
        ("prepare 2 workers vs in-process default", f"{r['prepare_2_workers_vs_in_process']:.2f}x", ""),
        ("evaluate per 1000 samples", f"{ev['seconds_per_1000_samples']:.2f} s", _mb(ev)),
    ]
    for name, w in r.get("whole_process", {}).items():
        ours, classic = w["dcganlab"], w["classic"]
        rows += [
            (
                f"whole process, {name} setting: classic script",
                f"{classic['wall_s']:.1f} s",
                f"{classic['peak_rss_mb']:.0f} MB",
            ),
            (
                f"whole process, {name} setting: dcganlab train",
                f"{ours['wall_s']:.1f} s",
                f"{ours['peak_rss_mb']:.0f} MB",
            ),
            (
                f"  {name}: dcganlab speed-up (whole process / loop)",
                f"{w['wall_speedup']:.2f}x / {w['loop_speedup']:.2f}x",
                "",
            ),
            (
                f"  {name}: loop img/s classic / dcganlab ({ours['precision']})",
                f"{classic['loop_images_per_s']:.0f} / {ours['loop_images_per_s']:.0f}",
                "",
            ),
            (
                f"  {name}: MFU classic / dcganlab ({w['flops']['flops_per_image'] / 1e9:.2f} GFLOP per image)",
                f"{100 * classic['mfu']:.1f}% / {100 * ours['mfu']:.1f}%",
                "",
            ),
        ]
    share = r.get("sharing")
    if share:
        two = share["two_at_once"]
        rows += [
            (
                "sharing: training alone / beside a CPU-bound process",
                f"{share['alone']['images_per_s']:.0f} / {share['beside_neighbour']['images_per_s']:.0f} img/s",
                "",
            ),
            ("  kept beside the neighbour (goal >= 0.4)", f"{share['kept']:.2f}", ""),
            (
                "sharing: two trainings one after the other / at once",
                f"{two['serial_wall_s']:.1f} / {two['together_wall_s']:.1f} s",
                "",
            ),
            ("  serial / at once (goal >= 1)", f"{two['together_vs_serial']:.2f}x", ""),
        ]
    path = r["machine"]["cpu_path"]
    rows.insert(
        0,
        (
            "CPU path: ISA / oneDNN cap / native bf16 / threads",
            f"{path['isa']} / {path['onednn_max_isa']} / {'yes' if path['native_bf16'] else 'no'} / {path['threads']}",
            "",
        ),
    )
    width = max(len(a) for a, _, _ in rows)
    return "\n".join(f"{a:<{width}}  {b:>12}  {c:>8}" for a, b, c in rows)
