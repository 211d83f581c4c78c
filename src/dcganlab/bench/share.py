"""bench, sharing the CPU (cpu_share.py): what a training keeps when something else runs.

Two measurements, each with real `dcganlab train` processes on real digits (bench_classic's
project at our default setting, `epochs` epochs):
- **beside a neighbour**: the training's loop images/s alone, then with a CPU-bound process
  beside it (a torch matmul loop with torch's default threads, one per core: what another
  user's training or a test suite is). `kept` = with / alone; the goal is >= 0.4.
- **two at once**: two such trainings (two projects) started together, against the same two
  one after the other. `together_vs_serial` = serial wall / together wall; >= 1 means running
  them at once (`dvc queue start -j 2`) is no slower.

`threads` is written into the projects' `train.threads`: 0 (the share, the default) or a fixed
count (the number of cores was torch's default before cpu_share.py: the oversubscribed case).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import yaml

from dcganlab.bench.classic import Setting, child_env, fresh_training, make_project, new_store_seconds
from dcganlab.core.errors import UserError

NEIGHBOUR = "import torch\nx = torch.randn(512, 512)\nwhile True:\n    x = torch.tanh(x @ x)\n"


def _project(params, s: Setting, root: Path, epochs: int, threads: int) -> Path:
    params_file = make_project(params, s, root)
    raw = yaml.safe_load(params_file.read_text())
    raw["experiments"]["bench"]["epochs"] = epochs
    raw["train"]["threads"] = threads
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    new_store_seconds(params_file)  # the MLflow store exists before any timed run, as in bench_classic
    return params_file


def _start(params_file: Path) -> subprocess.Popen:
    root = params_file.parent
    fresh_training(root)
    return subprocess.Popen(
        [sys.executable, "-m", "dcganlab", "train", "bench", "-p", str(params_file)],
        cwd=root,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen, params_file: Path) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise UserError(f"bench: a sharing run failed (exit {proc.returncode}): {out.strip()[-300:]}")
    summary = json.loads((params_file.parent / "reports" / "bench" / "train.json").read_text())
    return {"images_per_s": round(summary["images_per_s"], 1), "threads_at_end": summary.get("cpu", {}).get("threads")}


def _train(params_file: Path) -> dict:
    t0 = time.perf_counter()
    result = _finish(_start(params_file), params_file)
    return {**result, "wall_s": round(time.perf_counter() - t0, 2)}


def beside_a_neighbour(params_file: Path) -> dict:
    alone = _train(params_file)
    neighbour = subprocess.Popen(
        [sys.executable, "-c", NEIGHBOUR], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(1.0)  # torch imported, its threads spinning
        beside = _train(params_file)
    finally:
        neighbour.kill()
        neighbour.wait()
    return {
        "alone": alone,
        "beside_neighbour": beside,
        "kept": round(beside["images_per_s"] / alone["images_per_s"], 3),
    }


def two_at_once(first: Path, second: Path) -> dict:
    serial = [_train(first), _train(second)]
    t0 = time.perf_counter()
    procs = [_start(first), _start(second)]
    together = [_finish(p, f) for p, f in zip(procs, (first, second))]
    together_s = round(time.perf_counter() - t0, 2)
    serial_s = round(sum(r["wall_s"] for r in serial), 2)
    return {
        "serial_wall_s": serial_s,
        "together_wall_s": together_s,
        "serial": serial,
        "together": together,
        "together_vs_serial": round(serial_s / together_s, 3),
    }


def sharing(params, s: Setting, work: Path, epochs: int = 8, threads: int = 0, log=print) -> dict:
    """Both measurements at setting `s` with `train.threads = threads` (0: the share)."""
    log(f"bench: sharing the CPU, train.threads={threads} ({epochs} epochs of {s.images} digits)")
    first = _project(params, replace(s, name="share-a"), work / "share-a", epochs, threads)
    second = _project(params, replace(s, name="share-b"), work / "share-b", epochs, threads)
    return {
        "setting": {
            "epochs": epochs,
            "images": s.images,
            "image_size": s.image_size,
            "batch_size": s.batch_size,
            "threads": threads or "share",
        },
        "neighbour": NEIGHBOUR.replace("\n", "; ").strip("; "),
        **beside_a_neighbour(first),
        "two_at_once": two_at_once(first, second),
    }
