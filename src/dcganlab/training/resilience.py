"""Stops, health checks and checkpoints of the training loop (training/loop.py).

- GracefulStop: SIGTERM / Ctrl-C only set a flag; the loop checkpoints and raises Interrupted.
- Monitor: non-finite losses and discriminator collapse, tracked on the device (no per-step sync).
- LoopState + checkpoint_blob/resume: the exact position (mid-epoch included) and every RNG
  state, so a resumed run ends bit-identical to an uninterrupted one on CPU.
- finished/backfill: a rerun never logs a model or an epoch (metrics, grid) to MLflow twice, nor misses one.
"""

from __future__ import annotations

import re
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dcganlab.core import paths
from dcganlab.core.errors import UserError
from dcganlab.core.files import CHECKPOINT, load_torch, read_json


class Interrupted(UserError):
    """SIGTERM or Ctrl-C: the loop finished its step, wrote a checkpoint and stopped."""

    interrupted = True  # cli.py prints it without "error:"; tracking ends the MLflow run as KILLED

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class Diverged(UserError):
    """A non-finite loss or weight: training stops; the last good checkpoint is kept."""


class GracefulStop:
    """While active, SIGTERM and SIGINT only set `signum`; the loop looks at it after every step.
    A second Ctrl-C interrupts at once (KeyboardInterrupt), as most training frameworks do."""

    def __init__(self):
        self.signum = 0
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __exit__(self, *exc) -> None:
        self.restore()


class Monitor:
    """Health checks kept on the device, so the loop never waits for the GPU per step: the first
    step with a non-finite loss, and streaks of steps where D wins outright (D(x) > collapse_real
    and D(G(z)) < collapse_fake: a collapsed discriminator gives G almost no gradient).
    `read` syncs once, at checkpoints and epoch ends only."""

    def __init__(self, device: torch.device, t):
        self.real_above, self.fake_below = t.collapse_real, t.collapse_fake
        self.first_bad = torch.full((3,), -1.0, device=device)  # global step, loss_d, loss_g
        self.streak = torch.zeros((), device=device)  # consecutive collapsed steps, across epochs
        self.longest = torch.zeros((), device=device)  # the running epoch's longest streak

    def update(self, out: torch.Tensor, global_step: int) -> None:
        new = ~torch.isfinite(out[:2]).all() & (self.first_bad[0] < 0)
        self.first_bad = torch.where(new, torch.cat([torch.full_like(out[:1], global_step), out[:2]]), self.first_bad)
        hit = (out[2] > self.real_above) & (out[3] < self.fake_below)
        self.streak = (self.streak + 1) * hit
        self.longest = torch.maximum(self.longest, self.streak)

    def read(self, nets) -> tuple[list[float], bool, float]:
        """(first bad [step, loss_d, loss_g], all weights finite, longest streak this epoch)."""
        finite = torch.stack([torch.isfinite(p).all() for net in nets for p in net.parameters()]).all()
        values = torch.cat([self.first_bad, finite.float()[None], self.longest[None]]).tolist()
        return values[:3], values[3] == 1.0, values[4]


@dataclass
class LoopState:
    """Where training stands: `epoch` epochs done and `step` steps of the next one (0 = at an
    epoch boundary). Mid-epoch, that epoch's image order, running loss sums and seconds so far
    travel with it, so a resumed epoch ends exactly as an uninterrupted one."""

    epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    perm: torch.Tensor | None = None
    sums: torch.Tensor | None = None  # loss_d, loss_g, D(x), D(G(z)) summed over the done steps
    epoch_s: float = 0.0
    resumed: bool = False

    def where(self, steps: int) -> str:
        if self.step:
            return f"epoch {self.epoch + 1}, step {self.step}/{steps}"
        return f"end of epoch {self.epoch}" if self.epoch else "the start"


def checkpoint_blob(
    position: LoopState, nets, order, monitor: Monitor, fingerprint: str, device, extra: dict | None = None
) -> dict:
    """Everything a resumed run needs, from `nets` (G, D, opt_g, opt_d: loop.Nets) and the RNGs."""
    ckpt = {
        "G": nets.G.state_dict(),
        "D": nets.D.state_dict(),
        "opt_g": nets.opt_g.state_dict(),
        "opt_d": nets.opt_d.state_dict(),
        "epoch": position.epoch,
        "step": position.step,
        "history": position.history,
        "fingerprint": fingerprint,
        "rng_cpu": torch.get_rng_state(),
        "rng_order": order.get_state(),
        "collapse_streak": monitor.streak.cpu(),
    }
    if position.step:
        ckpt.update(
            perm=position.perm.cpu(),
            sums=position.sums.cpu(),
            collapse_longest=monitor.longest.cpu(),
            epoch_s=position.epoch_s,
        )
    if device.type == "cuda":
        ckpt["rng_cuda"] = torch.cuda.get_rng_state(device)
    ckpt.update(extra or {})  # torchrun: every rank's RNG states (rng_ranks)
    return ckpt


@dataclass
class Expected:
    """What a checkpoint must match to be resumed: this run's fingerprint (params + data), and
    no more than `epochs` epochs of `steps` steps."""

    name: str
    fingerprint: str
    epochs: int
    steps: int


def resume(path: Path, expected: Expected, nets, order, monitor: Monitor, world, device) -> LoopState:
    """The checkpoint's state when it belongs to this run (same params and data), else a fresh one.
    Restores `nets` (G, D, both optimizers, the fp16 loss scaler when enabled: loop.Nets), the image
    order, the collapse monitor and every RNG (under torchrun, `world.rank`'s own)."""
    if not path.is_file():
        return LoopState()
    name = expected.name
    ckpt = load_torch(path, "training checkpoint", CHECKPOINT, keys=("epoch", "history"))  # on the CPU: RNG states
    position = LoopState(ckpt["epoch"], ckpt.get("step", 0), ckpt["history"], resumed=True)
    if ckpt.get("fingerprint") != expected.fingerprint or position.epoch + (position.step > 0) > expected.epochs:
        print(f"{name}: params or data changed since the last checkpoint; starting afresh")
        return LoopState()
    nets.G.load_state_dict(ckpt["G"])
    nets.D.load_state_dict(ckpt["D"])
    nets.opt_g.load_state_dict(ckpt["opt_g"])
    nets.opt_d.load_state_dict(ckpt["opt_d"])
    torch.set_rng_state(ckpt["rng_cpu"])
    order.set_state(ckpt["rng_order"])
    if device.type == "cuda" and "rng_cuda" in ckpt:
        torch.cuda.set_rng_state(ckpt["rng_cuda"], device)
    if nets.scaler.is_enabled() and "scaler" in ckpt:  # fp16 loss scale
        nets.scaler.load_state_dict(ckpt["scaler"])
    if world.size > 1:  # torchrun: each rank continues its own noise stream
        ranks = ckpt.get("rng_ranks") or []
        if len(ranks) != world.size:
            raise UserError(
                f"{name}: the checkpoint was written by {len(ranks) or 1} process(es), this run has "
                f"{world.size}; resume with the same --nproc_per_node x --nnodes"
            )
        torch.set_rng_state(ranks[world.rank]["cpu"])
        if device.type == "cuda" and "cuda" in ranks[world.rank]:
            torch.cuda.set_rng_state(ranks[world.rank]["cuda"], device)
    monitor.streak = ckpt.get("collapse_streak", monitor.streak).to(device)
    if position.step:
        position.perm, position.sums = ckpt["perm"].to(device), ckpt["sums"].to(device)
        position.epoch_s = ckpt["epoch_s"]
        monitor.longest = ckpt["collapse_longest"].to(device)
    if position.epoch < expected.epochs:
        print(f"{name}: resuming at {position.where(expected.steps)} of {expected.epochs} epochs")
    return position


# finished.json only spares a rerun the logging: without it the next run logs the model again
FINISHED = "delete it (the next `dcganlab train` logs the finished run to MLflow again)"


def logged_already(state: Path, epochs: int) -> bool:
    """True when a run of exactly `epochs` epochs finished logging (not one that `epochs` was raised from)."""
    path = paths.finished_path(state)
    return path.is_file() and read_json(path, "training marker", FINISHED).get("epochs") == epochs


def epoch_metrics(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("epoch", "images")}


def backfill(mlflow, history: list, state: Path) -> None:
    """Epochs a killed process (or one whose tracking server went away) checkpointed but never
    sent to MLflow: their metrics and their grid images (the PNGs in the state dir), each once."""
    from PIL import Image

    run_id = mlflow.active_run().info.run_id
    client = mlflow.MlflowClient()
    logged = {m.step for m in client.get_metric_history(run_id, "loss_d")}
    shown = image_steps(client, run_id, "samples")
    for row in history:
        if row["epoch"] not in logged:
            mlflow.log_metrics(epoch_metrics(row), step=row["epoch"])
        png = paths.grid_path(state, row["epoch"])
        if row["epoch"] not in shown and png.is_file():
            with Image.open(png) as image:
                mlflow.log_image(image.copy(), key="samples", step=row["epoch"], synchronous=True)


# MLflow's file name for an image logged with a key and step (mlflow/tracking/client.py, log_image):
# images/<key>+step+<step>+timestamp+<ms>+<uuid>.png (older versions: '%' for '+'), plus a
# '+compressed.webp' thumbnail
_IMAGE_FILE = re.compile(r"^images/(?P<key>.+?)[+%]step[+%](?P<step>\d+)[+%]timestamp[+%]\d+[+%][^+%]+\.png$")


def image_steps(client, run_id: str, key: str) -> set[int]:
    """The steps at which the run holds a full-size image of `key`."""
    steps = set()
    for info in client.list_artifacts(run_id, "images"):
        m = _IMAGE_FILE.match(info.path)
        if m and m["key"] == key:
            steps.add(int(m["step"]))
    return steps
