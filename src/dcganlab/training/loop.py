"""The one training loop for every variant.

Reads the pre-decoded uint8 array (no image decoding while training), keeps it on the
training device, and runs the GAN update of the experiment's variant. Every epoch: a
fixed-noise grid, losses and D(x)/D(G(z)), the epoch's generator, and a full checkpoint
(both networks, both optimizers, position, RNG states, history) written atomically; also
every `train.checkpoint_every_steps` steps and on SIGTERM / Ctrl-C (then it stops).
Rerunning after an interruption (even SIGKILL) resumes from the last checkpoint, mid-epoch
included, when its fingerprint (params + data) matches; otherwise training starts afresh.
A non-finite loss stops the run without overwriting the last good checkpoint.

Reading order: `_train` lists the loop's steps top to bottom (set-up, one epoch, the epoch's
end, finish); `Trainer` holds what they share, one method per step, in the same order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from dcganlab.core import cpu_share, paths
from dcganlab.core.atomic import save_png, save_torch, write_csv, write_json
from dcganlab.core.config import ExperimentParams, Params
from dcganlab.core.errors import UserError
from dcganlab.core.locks import experiment_lock
from dcganlab.core.progress import progress as progress_of
from dcganlab.data.processed import load_processed
from dcganlab.gan.modelfile import ModelSpec, model_blob
from dcganlab.gan.sampling import generate, sample_noise, to_grid
from dcganlab.gan.variants import VARIANTS
from dcganlab.training import distributed
from dcganlab.training.accel import Accel, cpu_path, resolve
from dcganlab.training.resilience import (
    Diverged,
    Expected,
    GracefulStop,
    Interrupted,
    LoopState,
    Monitor,
    checkpoint_blob,
    logged_already,
    resume,
)
from dcganlab.training.run_log import RunLog
from dcganlab.training.step import StepNets, build_networks, pick_device, train_step


# ---------------------------------------------------------------- identity
def fingerprint(params: Params, name: str, data_dir: Path, processes: int = 1) -> str:
    """Identity of a training run: params (except `epochs`, so raising it continues) + data
    (+ the number of torchrun processes, which sets the global batch)."""
    e = {k: v for k, v in asdict(params.experiment(name)).items() if k != "epochs"}
    ident = {"seed": params.seed, "experiment": e, **({"processes": processes} if processes > 1 else {})}
    h = hashlib.sha256(json.dumps(ident, sort_keys=True).encode())
    with open(data_dir / "images.npy", "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- the loop
def train(params: Params, name: str, progress: bool = True) -> dict:
    """Train experiment `name` (resuming from its checkpoint when there is one); returns the summary.
    While it runs, SIGTERM and Ctrl-C only set a flag: the loop checkpoints at its next step and
    raises Interrupted. One process trains an experiment at a time (`locks`: rank 0 holds the
    lock for the whole torchrun job), taken before any state or MLflow run is read."""
    world = distributed.from_env()  # torchrun sets RANK / WORLD_SIZE; else a world of one
    lock = experiment_lock(params.root, name, "train") if world.main else contextlib.nullcontext()
    with lock, GracefulStop() as stop:
        try:
            return _train(params, name, progress, stop, world)
        finally:
            distributed.close(world)


def _train(params: Params, name: str, progress: bool, stop: GracefulStop, world: distributed.World) -> dict:
    """The loop's table of contents; each step is a `Trainer` method below, in this order."""
    run = Trainer.set_up(params, name, stop, world)  # data, networks, optimizers, grid noise, resume
    if run.trained_already():
        return run.rewrite_outputs()
    run.claim_state_dir()
    with run.log.opened():  # one MLflow run, reopened by every rerun (rank 0 only)
        run.record_start()
        for epoch in range(run.position.epoch + 1, run.experiment.epochs + 1):
            run.train_epoch(epoch, progress)  # updates, mid-epoch checkpoints, stops on a signal
            run.end_epoch(epoch)  # health check, metrics, grid, checkpoint, MLflow
        return run.finish()  # model.pt, reports, the model in MLflow


# ---------------------------------------------------------------- set-up
def _load_checked(data_dir: Path, e: ExperimentParams, ds) -> tuple[dict, int]:
    """The processed data and its number of classes (0 for unconditional variants), after every
    check that can fail before any work: image shape, variant sizes, labels."""
    variant = VARIANTS[e.variant]
    data = load_processed(data_dir)
    channels, size = data["images"].shape[1], data["images"].shape[2]
    if (channels, size) != (ds.channels, ds.image_size):
        raise UserError(
            f"{data_dir} holds {channels}x{size}x{size} images but params say "
            f"{ds.channels}x{ds.image_size}x{ds.image_size}: rerun `dcganlab prepare {e.dataset}`"
        )
    problem = variant.check(e, ds)
    if problem:
        raise UserError(problem)
    num_classes = len(data["stats"]["classes"]) if variant.conditional else 0
    if variant.conditional and (num_classes < 2 or (data["labels"] < 0).any()):
        raise UserError(
            f"variant '{e.variant}' needs labeled images; {data_dir} has classes {data['stats']['classes']}"
        )
    return data, num_classes


@dataclass
class Batches:
    """The training split on the device (uint8, no decoding while training) and how an epoch
    walks it: `steps` global batches of `global_batch` images, one share per process."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    global_batch: int
    steps: int

    @classmethod
    def of(cls, data: dict, num_classes: int, e, world: distributed.World, device) -> "Batches":
        """Copied to the device once; a split too small for one batch per process is a one-line error."""
        train_mask = data["split"] == 0
        images = torch.from_numpy(data["images"][train_mask]).to(device)  # uint8, stays on the device
        labels = torch.from_numpy(data["labels"][train_mask]).to(device)
        n = len(images)
        if n < 2:
            raise UserError(f"dataset '{e.dataset}' has {n} training images; need at least 2")
        batch = min(e.batch_size, n // world.size)  # per process; one step consumes batch x world.size images
        if batch < 2:
            raise UserError(f"dataset '{e.dataset}' has {n} training images: too few for {world.size} processes")
        global_batch = batch * world.size
        return cls(images, labels, num_classes, global_batch, n // global_batch)

    def take(self, perm: torch.Tensor, i: int, world: distributed.World):
        """(images in [-1, 1], labels or None): this process's share of batch `i` in the order `perm`."""
        idx = distributed.shard(perm[i * self.global_batch : (i + 1) * self.global_batch], world)
        real = self.images[idx].float().div_(127.5).sub_(1.0)
        return real, self.labels[idx] if self.num_classes else None


@dataclass
class Nets:
    """Both networks with their optimizers and fp16 loss scaler. The training step runs through
    step_G / step_D: DDP wrappers (gradients averaged across processes) and/or compiled graphs;
    G and D themselves are what gets saved and sampled."""

    G: torch.nn.Module
    D: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    step_G: torch.nn.Module
    step_D: torch.nn.Module

    @classmethod
    def build(cls, spec: ModelSpec, accel: Accel, world: distributed.World, device, seed: int) -> "Nets":
        """Seeded networks (the same on every rank), then each rank's own noise seed."""
        torch.manual_seed(seed)
        G, D = build_networks(spec.experiment, spec.channels, spec.size, spec.num_classes)
        G, D = accel.prepare(G.to(device)), accel.prepare(D.to(device))
        opt_g, opt_d = VARIANTS[spec.experiment.variant].optimizers(spec.experiment, G, D)
        scaler = accel.scaler()
        step_G, step_D = distributed.wrap(G, world, device), distributed.wrap(D, world, device)
        if accel.compile:
            step_G, step_D = torch.compile(step_G), torch.compile(step_D)
        if world.active:
            torch.manual_seed(seed + 1_000_003 * world.rank)  # same init (DDP broadcasts rank 0's), own noise per rank
        return cls(G, D, opt_g, opt_d, scaler, step_G, step_D)

    def step_nets(self) -> StepNets:
        """What one training step updates: the step's networks, both optimizers, the loss scaler."""
        return StepNets(self.step_G, self.step_D, self.opt_g, self.opt_d, self.scaler)


def batch_step(
    batches: Batches,
    nets: Nets,
    experiment: ExperimentParams,
    accel: Accel,
    perm: torch.Tensor,
    i: int,
    world: distributed.World,
) -> torch.Tensor:
    """Batch `i` of the epoch order `perm` through one GAN update: the loop's step (and what
    `dcganlab bench` times). Returns [loss_d, loss_g, D(x), D(G(z))] on the device."""
    real, labels = batches.take(perm, i, world)
    return train_step(nets.step_nets(), experiment, real, labels, batches.num_classes, accel)


# ---------------------------------------------------------------- the run's state and steps
@dataclass
class Trainer:
    """What every step of one training run shares. Only rank 0 (`main`) writes files and prints
    progress; `log` (run_log.py) is the MLflow half, which also logs on rank 0 only. The other
    ranks run the same steps for their collectives."""

    params: Params
    name: str
    experiment: ExperimentParams
    world: distributed.World
    stop: GracefulStop
    device: torch.device
    accel: Accel
    data: dict  # the processed arrays and stats (class names go into every model file)
    batches: Batches
    nets: Nets
    fixed_z: torch.Tensor  # the grid's noise, the same every epoch
    fixed_labels: torch.Tensor | None
    order: torch.Generator  # the epochs' image order
    monitor: Monitor
    fingerprint: str  # fingerprint(): a checkpoint of other params or data is not resumed
    log: RunLog
    position: LoopState = field(default_factory=LoopState)
    saved: tuple[int, int] = (0, 0)  # the position of the last good checkpoint

    @classmethod
    def set_up(cls, params: Params, name: str, stop: GracefulStop, world: distributed.World) -> "Trainer":
        """Data, device, networks, optimizers and grid noise; then the checkpoint's state when it is
        this run's (same fingerprint), which restores weights, optimizers and every RNG."""
        experiment, settings = params.experiment(name), params.train
        data_dir = paths.processed_dir(params.root, experiment.dataset)
        data, num_classes = _load_checked(data_dir, experiment, params.dataset(experiment.dataset))
        device = distributed.init(world, pick_device(settings.device))
        cpu_share.for_training(settings.threads)
        accel = resolve(settings.amp, settings.channels_last, settings.compile, device, experiment.variant)
        batches = Batches.of(data, num_classes, experiment, world, device)
        seed = params.seed + experiment.seed_offset
        spec = ModelSpec(experiment, data["images"].shape[1], data["images"].shape[2], num_classes)
        nets = Nets.build(spec, accel, world, device, seed)
        fixed_z = sample_noise(
            settings.grid_size, experiment.z_dim, experiment.noise, device, torch.Generator().manual_seed(seed + 1)
        )
        fixed_labels = (torch.arange(settings.grid_size, device=device) % num_classes) if num_classes else None
        run = cls(
            params,
            name,
            experiment,
            world,
            stop,
            device,
            accel,
            data,
            batches,
            nets,
            fixed_z,
            fixed_labels,
            order=torch.Generator().manual_seed(seed),
            monitor=Monitor(device, settings),
            fingerprint=fingerprint(params, name, data_dir, world.size),
            log=RunLog(params, name, world.main),
        )
        expected = Expected(name, run.fingerprint, experiment.epochs, batches.steps)
        run.position = resume(run.ckpt_path, expected, nets, run.order, run.monitor, world, device)
        run.saved = (run.position.epoch, run.position.step)
        return run

    @property
    def main(self) -> bool:
        return self.world.main

    @property
    def state(self) -> Path:
        return paths.state_dir(self.params.root, self.name)

    @property
    def ckpt_path(self) -> Path:
        return paths.checkpoint_path(self.state)

    @property
    def steps(self) -> int:
        return self.batches.steps

    @property
    def spec(self) -> ModelSpec:
        """What a model file needs to rebuild the networks."""
        images = self.data["images"]
        return ModelSpec(self.experiment, images.shape[1], images.shape[2], self.batches.num_classes)

    @property
    def origin(self) -> dict:
        """Where a model file comes from: the dataset's class names and this run's fingerprint."""
        return {"classes": self.data["stats"]["classes"], "fingerprint": self.fingerprint}

    def trained_already(self) -> bool:
        """A complete training whose model and metrics are in MLflow already (not one whose `epochs`
        was raised since)."""
        return self.position.epoch == self.experiment.epochs and logged_already(self.state, self.experiment.epochs)

    def rewrite_outputs(self) -> dict:
        """A rerun after a complete training (DVC saw a code change...): the outputs only; nothing
        is logged twice."""
        if not self.main:
            return {}
        print(
            f"{self.name}: already trained for {self.experiment.epochs} epochs; outputs rewritten, "
            "nothing logged to MLflow"
        )
        self.log.settle()
        return self.write_outputs()

    def claim_state_dir(self) -> None:
        """Check the tracking server, then clear what a fresh run must not inherit (an old run's
        state, temp files of a killed process)."""
        distributed.barrier(self.world)  # every rank has read the checkpoint before rank 0 may clear the state
        if not self.main:
            return
        self.log.check_server()
        if not self.position.resumed and self.state.exists():
            shutil.rmtree(self.state)
        for stale in self.state.rglob(".*.tmp*"):  # temp files of a killed process (its atomic writes never finished)
            stale.unlink(missing_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)

    def record_start(self) -> None:
        """The MLflow run's params (a new run) or missing history (a resumed one), and a fresh run's
        checkpoint "at the start": from then on every rerun reopens this MLflow run."""
        a = self.accel
        self.log.start(
            self.position,
            {
                "device": str(self.device),
                "train_images": len(self.batches.images),
                "image_size": self.spec.size,
                "channels": self.spec.channels,
                "processes": self.world.size,
                "amp": a.amp,
                "channels_last": a.channels_last,
                "compile": a.compile,
            },
        )
        if not self.position.resumed:
            self.save()

    # ------------------------------------------------------------ one epoch
    def start_epoch(self, epoch: int) -> None:
        """The epoch's learning rates (exponential decay, stateless for resume) and, unless resuming
        inside it, a new image order and fresh running sums."""
        experiment, position = self.experiment, self.position
        for opt, lr in ((self.nets.opt_g, experiment.lr_g), (self.nets.opt_d, experiment.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * experiment.lr_decay ** (epoch - 1)
        if position.step == 0:  # a new epoch (else: resuming inside it)
            position.perm = torch.randperm(len(self.batches.images), generator=self.order).to(self.device)
            position.sums = torch.zeros(4, device=self.device)  # synced at checkpoints and epoch ends only
            position.epoch_s, self.monitor.longest = 0.0, torch.zeros((), device=self.device)

    def train_epoch(self, epoch: int, progress: bool) -> None:
        """The epoch's updates (the rest of them when resuming mid-epoch), checkpointing every
        `train.checkpoint_every_steps` steps and stopping at the next step after a signal."""
        position, steps, every = self.position, self.steps, self.params.train.checkpoint_every_steps
        self.start_epoch(epoch)
        started = time.perf_counter()
        for i in progress_of(
            range(position.step, steps),
            f"train {self.name} epoch {epoch}/{self.experiment.epochs}",
            steps,
            initial=position.step,
            unit="img",
            per_item=self.batches.global_batch,
            after=(self.experiment.epochs - epoch) * steps,
            enabled=progress and self.main,
        ):
            if self.stop_requested(i):
                position.epoch_s += time.perf_counter() - started
                self.halt()
            cpu_share.adjust()  # this process's share of the cores, re-read every few seconds
            global_step = self.update(epoch, i)
            if every and global_step % every == 0 and position.step < steps:  # (epoch ends checkpoint in end_epoch)
                position.epoch_s += time.perf_counter() - started
                started = time.perf_counter()
                self.check()
                self.save()
        position.epoch_s += time.perf_counter() - started

    def update(self, epoch: int, i: int) -> int:
        """One GAN update on batch `i`; its losses stay on the device (summed, watched). Returns the global step."""
        out = batch_step(self.batches, self.nets, self.experiment, self.accel, self.position.perm, i, self.world)
        self.position.sums += out
        global_step = (epoch - 1) * self.steps + i + 1
        self.monitor.update(out, global_step)
        self.position.step = i + 1
        return global_step

    def end_epoch(self, epoch: int) -> None:
        """Health check, the epoch's mean losses (over every rank), its grid, generator file,
        history row and checkpoint; then MLflow and the log line."""
        settings, position, ending = self.params.train, self.position, time.perf_counter()
        longest = self.check()
        collapsed = bool(settings.collapse_steps) and longest >= settings.collapse_steps
        loss_d, loss_g, d_x, d_gz = distributed.all_reduce_mean(position.sums / self.steps, self.world).tolist()
        grid = self.save_grid(epoch) if self.main else None
        images = self.steps * self.batches.global_batch
        wall = (
            (position.history[-1]["wall_s"] if position.history else 0.0)
            + position.epoch_s
            + (time.perf_counter() - ending)
        )
        row = {
            "epoch": epoch,
            "loss_d": loss_d,
            "loss_g": loss_g,
            "d_real": d_x,
            "d_fake": d_gz,
            "images_per_s": images / position.epoch_s,
            "images": images,
            "train_s": position.epoch_s,
            "wall_s": wall,
            "d_collapse": float(collapsed),
            "threads": torch.get_num_threads(),
        }  # at the epoch's end (cpu_share.py: it follows the machine's load)
        position.history.append(row)
        position.epoch, position.step, position.perm, position.sums = epoch, 0, None, None
        self.save()
        self.log.epoch(row, grid, longest)

    def save_grid(self, epoch: int) -> Image.Image:
        """The fixed-noise grid and the epoch's generator, kept for figures and per-epoch evaluation."""
        grid = to_grid(generate(self.nets.G, self.fixed_z, self.fixed_labels))
        save_png(paths.grid_path(self.state, epoch), grid)
        save_torch(paths.generator_path(self.state, epoch), model_blob(self.spec, self.nets.G, origin=self.origin))
        return grid

    # ------------------------------------------------------------ checks, checkpoints, stops
    def check(self) -> float:
        """Stop on a non-finite loss or weight (nothing is written); else the epoch's longest collapse streak."""
        (bad_step, loss_d, loss_g), weights_ok, longest = self.monitor.read((self.nets.G, self.nets.D))
        healthy = bad_step < 0 and weights_ok
        if distributed.agree_max(int(not healthy), self.world, self.device) == 0:  # every rank stops if any must
            return longest
        steps = self.steps
        if healthy:
            what = "non-finite loss or weights in another process"
        elif bad_step >= 0:
            epoch, i = divmod(int(bad_step) - 1, steps)
            what = (
                f"non-finite loss at epoch {epoch + 1}, step {i + 1}/{steps} (global step {int(bad_step)}: "
                f"loss_d={loss_d}, loss_g={loss_g})"
            )
        else:
            what = f"non-finite weights by {self.position.where(steps)}"
        raise Diverged(
            f"{self.name}: {what}; training stopped, last good checkpoint "
            f"({LoopState(*self.saved).where(steps)}) kept in {self.ckpt_path}"
        )

    def save(self) -> None:
        """A full checkpoint of where we are (collective under torchrun: every rank's noise RNG, so a
        resumed run continues each stream); rank 0 writes it."""
        nets = self.nets
        extra = {"scaler": nets.scaler.state_dict()} if nets.scaler.is_enabled() else {}
        if self.world.active:
            extra["rng_ranks"] = distributed.gather_objects(distributed.rng_state(self.device), self.world)
        if self.main:
            blob = checkpoint_blob(self.position, nets, self.order, self.monitor, self.fingerprint, self.device, extra)
            save_torch(self.ckpt_path, blob)
        self.saved = (self.position.epoch, self.position.step)

    def stop_requested(self, i: int) -> bool:
        """A signal arrived (on any rank: under torchrun they agree every 10 steps, one host sync)."""
        world, stop = self.world, self.stop
        if world.active and i % 10 == 0:
            stop.signum = distributed.agree_max(stop.signum, world, self.device)
        return bool(stop.signum) and (not world.active or i % 10 == 0)

    def halt(self) -> None:
        """SIGTERM / Ctrl-C: checkpoint where we are (if not there already), then stop."""
        if self.saved != (self.position.epoch, self.position.step):
            self.check()
            self.save()
        raise Interrupted(
            f"{self.name}: stopped by {signal.Signals(self.stop.signum).name}; checkpoint "
            f"({LoopState(*self.saved).where(self.steps)}) in {self.ckpt_path}; rerun to resume",
            self.stop.signum,
        )

    # ------------------------------------------------------------ finish
    def finish(self) -> dict:
        """After the last epoch: model.pt and reports, then the run's summary metrics and model in
        MLflow (run_log.py)."""
        if self.stop_requested(0):  # came during the last epoch's end: its checkpoint is written
            self.halt()
        self.stop.restore()
        distributed.barrier(self.world)
        if not self.main:
            return {}  # finishing (outputs, model logging): signals act as usual again
        summary = self.write_outputs()
        self.log.finish(summary, self.nets.G, self.spec)
        return summary

    def write_outputs(self) -> dict:
        """model.pt (both networks), losses.csv and train.json (the DVC stage's outputs); the summary."""
        blob = model_blob(self.spec, self.nets.G, self.nets.D, origin=self.origin)
        return write_outputs(self.params.root, self.name, blob, self.position.history, self.device)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def write_outputs(root: Path, name: str, blob: dict, history: list, device: torch.device) -> dict:
    """model.pt (`blob`), losses.csv and train.json from the epoch history; the summary."""
    save_torch(paths.model_path(root, name), blob)
    report = paths.report_dir(root, name)
    write_csv(report / "losses.csv", pd.DataFrame(history))
    summary = {
        "epochs": len(history),
        # over the whole run: images seen / seconds in the update loop (grids, checkpoints excluded)
        "images_per_s": sum(r["images"] for r in history) / sum(r["train_s"] for r in history),
        "train_wall_s": history[-1]["wall_s"] if history else 0.0,
        "device": str(device),
        **({"cpu": cpu_path()} if device.type == "cpu" else {}),  # ISA, native bf16, threads at the end
        "final_loss_d": history[-1]["loss_d"],
        "final_loss_g": history[-1]["loss_g"],
        "peak_rss_mb": peak_rss_mb(),
    }
    write_json(report / "train.json", summary)
    return summary
