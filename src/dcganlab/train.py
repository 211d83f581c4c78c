"""train: the one training loop for every variant.

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
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from dcganlab import paths
from dcganlab import cpu_share, distributed
from dcganlab.accel import PLAIN, Accel, cpu_path, resolve
from dcganlab.atomic import save_png, save_torch, write_csv, write_json
from dcganlab.config import ExperimentParams, Params, as_dict
from dcganlab.errors import UserError
from dcganlab.files import dvc_output, load_npy, load_torch, read_json
from dcganlab.locks import experiment_lock
from dcganlab.models import DOut
from dcganlab.progress import progress as progress_of
from dcganlab.tracking import connect, log_dataset, redact_uri, settle_saved, training_run
from dcganlab.resilience import (Diverged, GracefulStop, Interrupted, LoopState, Monitor, backfill,  # noqa: F401
                                 checkpoint_blob, epoch_metrics, finished_path, logged_already, resume)
from dcganlab.variants import VARIANTS


# ---------------------------------------------------------------- data and helpers
def load_processed(folder: Path) -> dict:
    if not (folder / "images.npy").is_file():
        raise UserError(f"no processed data at {folder} (run `dcganlab prepare` first)")
    remedy = dvc_output(folder, f"prepare@{folder.name}")
    data = {name: load_npy(folder / f"{name}.npy", "array", remedy) for name in ("images", "labels", "split")}
    data["stats"] = read_json(folder / "stats.json", "dataset stats", remedy)
    return data


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device is '{name}' but no CUDA device is available")
    return torch.device(name)


def sample_noise(n: int, z_dim: int, kind: str, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Latents: drawn on `device` from its default RNG (no host-to-device copy per training step),
    or on the CPU from `generator` (fixed grids and evaluation samples, identical on every device)."""
    where = {"generator": generator} if generator is not None else {"device": device}
    if kind == "uniform":
        return torch.rand(n, z_dim, **where).mul_(2).sub_(1).to(device)
    return torch.randn(n, z_dim, **where).to(device)


@torch.no_grad()
def generate(G, z: torch.Tensor, labels: torch.Tensor | None = None, batch: int = 256) -> torch.Tensor:
    """Images in [-1, 1] from G in eval mode (BatchNorm running statistics)."""
    was_training = G.training
    G.eval()
    out = torch.cat([G(z[i: i + batch], None if labels is None else labels[i: i + batch])
                     for i in range(0, len(z), batch)])
    G.train(was_training)
    return out


def to_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2) -> Image.Image:
    """Images in [-1, 1] tiled `nrow` to a row with a black `pad`, as torchvision's make_grid
    draws them (pixel for pixel), without importing torchvision (over a second per process)."""
    x = images.float().cpu().clamp(-1, 1).add(1).div(2)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if len(x) == 1:  # make_grid returns a lone image unpadded
        grid = x[0]
    else:
        n, c, h, w = x.shape
        cols, rows = min(nrow, n), -(-n // min(nrow, n))
        grid = torch.zeros(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
        for k in range(n):
            r, q = divmod(k, cols)
            grid[:, r * (h + pad) + pad: (r + 1) * (h + pad), q * (w + pad) + pad: (q + 1) * (w + pad)] = x[k]
    return Image.fromarray(grid.mul(255).add_(0.5).clamp_(0, 255).byte().permute(1, 2, 0).numpy())


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


def build_networks(e, channels: int, size: int, num_classes: int = 0):
    """(G, D) of the experiment's variant with the variant's weight init."""
    variant = VARIANTS[e.variant]
    G, D = variant.build(e, channels, size, num_classes if variant.conditional else 0)
    G.apply(variant.init)
    D.apply(variant.init)
    return G, D


MODEL_KEYS = ("experiment", "state_dict", "channels", "image_size")  # what every model file holds


def load_model(path: Path, device: torch.device | str = "cpu", remedy: str | None = None):
    """(G, D or None, metadata) from models/<exp>/model.pt or a per-epoch generator file (give
    its `remedy`). Weights only: nothing is unpickled."""
    if not path.is_file():
        raise UserError(f"no trained model at {path} (run `dcganlab train` first)")
    remedy = remedy or dvc_output(path, f"train@{path.parent.name}")
    blob = load_torch(path, "model", remedy, keys=MODEL_KEYS, map_location=device)
    from dcganlab.config import ExperimentParams

    e = ExperimentParams(**blob["experiment"])
    G, D = VARIANTS[e.variant].build(e, blob["channels"], blob["image_size"], blob.get("num_classes", 0))
    G.load_state_dict(blob["state_dict"])
    if "discriminator" in blob:
        D.load_state_dict(blob["discriminator"])
        D = D.to(device).eval()
    else:
        D = None
    return G.to(device).eval(), D, {**blob, "experiment": e}


# ---------------------------------------------------------------- the GAN update
_NO_SCALER = torch.amp.GradScaler("cpu", enabled=False)  # pass-through: scale() is identity, step() steps


def bce(logit: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logit, torch.full_like(logit, target))


def d_loss(e, real_out: DOut, fake_out: DOut, real_labels, fake_labels) -> torch.Tensor:
    # maximize log(D(x)) + log(1 - D(G(z))), targets real_label / fake_label (label smoothing)
    loss = bce(real_out.logit, e.real_label) + bce(fake_out.logit, e.fake_label)
    if real_out.class_logits is not None:  # AC-GAN: classify real and generated images
        loss = loss + F.cross_entropy(real_out.class_logits, real_labels) + F.cross_entropy(fake_out.class_logits, fake_labels)
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


def train_step(G, D, opt_g, opt_d, e, real: torch.Tensor, labels: torch.Tensor | None, num_classes: int,
               accel: Accel = PLAIN, scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """One GAN update on a batch in [-1, 1]; returns [loss_d, loss_g, D(x), D(G(z))] (no host sync).
    `accel`: autocast precision and memory format; `scaler`: fp16 loss scaling (None = off)."""
    batch = real.shape[0]
    scaler = scaler or _NO_SCALER
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
    return torch.stack([loss_d.detach().float(), loss_g.detach().float(),
                        torch.sigmoid(real_out.logit.detach().float()).mean(),
                        torch.sigmoid(fake_out.logit.detach().float()).mean()])


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
    with run.tracking():  # one MLflow run, reopened by every rerun (rank 0 only)
        run.record_start()
        for epoch in range(run.st.epoch + 1, run.e.epochs + 1):
            run.train_epoch(epoch, progress)  # updates, mid-epoch checkpoints, stops on a signal
            run.end_epoch(epoch)              # health check, metrics, grid, checkpoint, MLflow
        return run.finish()                   # model.pt, reports, the model in MLflow


# ---------------------------------------------------------------- set-up
def _load_checked(data_dir: Path, e, ds, variant) -> tuple[dict, int]:
    """The processed data and its number of classes (0 for unconditional variants), after every
    check that can fail before any work: image shape, variant sizes, labels."""
    data = load_processed(data_dir)
    channels, size = data["images"].shape[1], data["images"].shape[2]
    if (channels, size) != (ds.channels, ds.image_size):
        raise UserError(f"{data_dir} holds {channels}x{size}x{size} images but params say "
                        f"{ds.channels}x{ds.image_size}x{ds.image_size}: rerun `dcganlab prepare {e.dataset}`")
    problem = variant.check(e, ds)
    if problem:
        raise UserError(problem)
    num_classes = len(data["stats"]["classes"]) if variant.conditional else 0
    if variant.conditional and (num_classes < 2 or (data["labels"] < 0).any()):
        raise UserError(f"variant '{e.variant}' needs labeled images; {data_dir} has classes {data['stats']['classes']}")
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
        idx = distributed.shard(perm[i * self.global_batch: (i + 1) * self.global_batch], world)
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
    def build(cls, e, variant, accel: Accel, world: distributed.World, device, channels: int, size: int,
              num_classes: int, seed: int) -> "Nets":
        """Seeded networks (the same on every rank), then each rank's own noise seed."""
        torch.manual_seed(seed)
        G, D = build_networks(e, channels, size, num_classes)
        G, D = accel.prepare(G.to(device)), accel.prepare(D.to(device))
        opt_g, opt_d = variant.optimizers(e, G, D)
        scaler = accel.scaler()
        step_G, step_D = distributed.wrap(G, world, device), distributed.wrap(D, world, device)
        if accel.compile:
            step_G, step_D = torch.compile(step_G), torch.compile(step_D)
        if world.active:
            torch.manual_seed(seed + 1_000_003 * world.rank)  # same init (DDP broadcasts rank 0's), own noise per rank
        return cls(G, D, opt_g, opt_d, scaler, step_G, step_D)


# ---------------------------------------------------------------- the run's state and steps
@dataclass
class Trainer:
    """What every step of one training run shares. Only rank 0 (`main`) writes files, prints
    progress and talks to MLflow; the other ranks run the same steps for their collectives."""

    params: Params
    name: str
    e: ExperimentParams
    world: distributed.World
    stop: GracefulStop
    device: torch.device
    accel: Accel
    data: dict          # the processed arrays and stats (class names go into every model file)
    batches: Batches
    nets: Nets
    fixed_z: torch.Tensor               # the grid's noise, the same every epoch
    fixed_labels: torch.Tensor | None
    order: torch.Generator              # the epochs' image order
    monitor: Monitor
    fp: str                             # fingerprint(): a checkpoint of other params or data is not resumed
    st: LoopState = field(default_factory=LoopState)
    saved: tuple[int, int] = (0, 0)     # the position of the last good checkpoint
    mlflow: Any = None                  # the mlflow module inside tracking() on rank 0

    @classmethod
    def set_up(cls, params: Params, name: str, stop: GracefulStop, world: distributed.World) -> "Trainer":
        """Data, device, networks, optimizers and grid noise; then the checkpoint's state when it is
        this run's (same fingerprint), which restores weights, optimizers and every RNG."""
        e, t = params.experiment(name), params.train
        variant = VARIANTS[e.variant]
        data_dir = paths.processed_dir(params.root, e.dataset)
        data, num_classes = _load_checked(data_dir, e, params.dataset(e.dataset), variant)
        device = distributed.init(world, pick_device(t.device))
        cpu_share.for_training(t.threads)
        accel = resolve(t.amp, t.channels_last, t.compile, device, e.variant)
        batches = Batches.of(data, num_classes, e, world, device)
        seed = params.seed + e.seed_offset
        channels, size = data["images"].shape[1], data["images"].shape[2]
        nets = Nets.build(e, variant, accel, world, device, channels, size, num_classes, seed)
        fixed_z = sample_noise(t.grid_size, e.z_dim, e.noise, device, torch.Generator().manual_seed(seed + 1))
        fixed_labels = (torch.arange(t.grid_size, device=device) % num_classes) if num_classes else None
        run = cls(params, name, e, world, stop, device, accel, data, batches, nets, fixed_z, fixed_labels,
                  order=torch.Generator().manual_seed(seed), monitor=Monitor(device, t),
                  fp=fingerprint(params, name, data_dir, world.size))
        n = run.nets
        run.st = resume(run.ckpt_path, run.fp, e, name, batches.steps, device, n.G, n.D, n.opt_g, n.opt_d,
                        run.order, run.monitor, world.rank, world.size, n.scaler if n.scaler.is_enabled() else None)
        run.saved = (run.st.epoch, run.st.step)
        return run

    @property
    def main(self) -> bool:
        return self.world.main

    @property
    def state(self) -> Path:
        return paths.state_dir(self.params.root, self.name)

    @property
    def ckpt_path(self) -> Path:
        return self.state / "checkpoint.pt"

    @property
    def steps(self) -> int:
        return self.batches.steps

    @property
    def channels(self) -> int:
        return self.data["images"].shape[1]

    @property
    def size(self) -> int:
        return self.data["images"].shape[2]

    def trained_already(self) -> bool:
        """A complete training whose model and metrics are in MLflow already (not one whose `epochs`
        was raised since)."""
        return self.st.epoch == self.e.epochs and logged_already(self.state, self.e.epochs)

    def rewrite_outputs(self) -> dict:
        """A rerun after a complete training (DVC saw a code change...): the outputs only; nothing
        is logged twice."""
        if not self.main:
            return {}
        print(f"{self.name}: already trained for {self.e.epochs} epochs; outputs rewritten, nothing logged to MLflow")
        settle_saved(self.params, self.state)  # e.g. a run left RUNNING by an evaluate killed with SIGKILL
        return self.write_outputs()

    def claim_state_dir(self) -> None:
        """Check the tracking server, then clear what a fresh run must not inherit (an old run's
        state, temp files of a killed process)."""
        distributed.barrier(self.world)  # every rank has read the checkpoint before rank 0 may clear the state
        if not self.main:
            return
        connect(self.params)  # an unreachable tracking server stops us here, before any state is touched
        if not self.st.resumed and self.state.exists():
            shutil.rmtree(self.state)
        for stale in self.state.rglob(".*.tmp*"):  # temp files of a killed process (its atomic writes never finished)
            stale.unlink(missing_ok=True)
        self.state.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def tracking(self):
        """The experiment's MLflow run on rank 0, ended FINISHED, KILLED (a signal) or FAILED."""
        if not self.main:
            yield
            return
        with training_run(self.params, self.name, self.e.dataset, self.e.variant, self.state) as mlflow:
            self.mlflow = mlflow
            yield

    def record_start(self) -> None:
        """The MLflow run's params (a new run) or missing history (a resumed one), and a fresh run's
        checkpoint "at the start": from then on every rerun reopens this MLflow run."""
        if self.main and self.st.resumed:
            self.mlflow.set_tag("epochs_target", self.e.epochs)  # params are immutable; `epochs` may have been raised
            # epochs (metrics and grids) a killed or failed process never logged; for a new run continuing
            # another's checkpoint: the whole history
            backfill(self.mlflow, self.st.history, self.state / "grids")
        if self.main and not self.mlflow.active_run().data.params:  # a new run (not a reopened one)
            self.log_params()
            log_dataset(self.mlflow, self.params, self.e.dataset)  # once per run, like its params
        if not self.st.resumed:
            self.save()

    def log_params(self) -> None:
        """What a new MLflow run is compared by: the experiment, the dataset, the hardware settings."""
        e, ds, a = self.e, self.params.dataset(self.e.dataset), self.accel
        logged = {**{f"experiment.{k}": v for k, v in as_dict(e).items()},
                  **{f"dataset.{k}": v for k, v in as_dict(ds).items() if k != "path"},
                  "seed": self.params.seed, "device": str(self.device), "train_images": len(self.batches.images),
                  "image_size": self.size, "channels": self.channels,
                  "processes": self.world.size, "amp": a.amp, "channels_last": a.channels_last, "compile": a.compile}
        self.mlflow.log_params({k: redact_uri(v) if isinstance(v, str) else v for k, v in logged.items()})

    # ------------------------------------------------------------ one epoch
    def start_epoch(self, epoch: int) -> None:
        """The epoch's learning rates (exponential decay, stateless for resume) and, unless resuming
        inside it, a new image order and fresh running sums."""
        e, st = self.e, self.st
        for opt, lr in ((self.nets.opt_g, e.lr_g), (self.nets.opt_d, e.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * e.lr_decay ** (epoch - 1)
        if st.step == 0:  # a new epoch (else: resuming inside it)
            st.perm = torch.randperm(len(self.batches.images), generator=self.order).to(self.device)
            st.sums = torch.zeros(4, device=self.device)  # synced at checkpoints and epoch ends only
            st.epoch_s, self.monitor.longest = 0.0, torch.zeros((), device=self.device)

    def train_epoch(self, epoch: int, progress: bool) -> None:
        """The epoch's updates (the rest of them when resuming mid-epoch), checkpointing every
        `train.checkpoint_every_steps` steps and stopping at the next step after a signal."""
        st, steps, every = self.st, self.steps, self.params.train.checkpoint_every_steps
        self.start_epoch(epoch)
        t0 = time.perf_counter()
        for i in progress_of(range(st.step, steps), f"train {self.name} epoch {epoch}/{self.e.epochs}", steps,
                             initial=st.step, unit="img", per_item=self.batches.global_batch,
                             after=(self.e.epochs - epoch) * steps, enabled=progress and self.main):
            if self.stop_requested(i):
                st.epoch_s += time.perf_counter() - t0
                self.halt()
            cpu_share.adjust()  # this process's share of the cores, re-read every few seconds
            global_step = self.update(epoch, i)
            if every and global_step % every == 0 and st.step < steps:  # (epoch ends checkpoint in end_epoch)
                st.epoch_s += time.perf_counter() - t0
                t0 = time.perf_counter()
                self.check()
                self.save()
        st.epoch_s += time.perf_counter() - t0

    def update(self, epoch: int, i: int) -> int:
        """One GAN update on batch `i`; its losses stay on the device (summed, watched). Returns the global step."""
        real, labels = self.batches.take(self.st.perm, i, self.world)
        n = self.nets
        out = train_step(n.step_G, n.step_D, n.opt_g, n.opt_d, self.e, real, labels, self.batches.num_classes,
                         self.accel, n.scaler)
        self.st.sums += out
        global_step = (epoch - 1) * self.steps + i + 1
        self.monitor.update(out, global_step)
        self.st.step = i + 1
        return global_step

    def end_epoch(self, epoch: int) -> None:
        """Health check, the epoch's mean losses (over every rank), its grid, generator file,
        history row and checkpoint; then MLflow and the log line."""
        t, st, t1 = self.params.train, self.st, time.perf_counter()
        longest = self.check()
        collapsed = bool(t.collapse_steps) and longest >= t.collapse_steps
        loss_d, loss_g, d_x, d_gz = distributed.all_reduce_mean(st.sums / self.steps, self.world).tolist()
        grid = self.save_grid(epoch) if self.main else None
        images = self.steps * self.batches.global_batch
        wall = (st.history[-1]["wall_s"] if st.history else 0.0) + st.epoch_s + (time.perf_counter() - t1)
        row = {"epoch": epoch, "loss_d": loss_d, "loss_g": loss_g, "d_real": d_x, "d_fake": d_gz,
               "images_per_s": images / st.epoch_s, "images": images,
               "train_s": st.epoch_s, "wall_s": wall, "d_collapse": float(collapsed),
               "threads": torch.get_num_threads()}  # at the epoch's end (cpu_share.py: it follows the machine's load)
        st.history.append(row)
        st.epoch, st.step, st.perm, st.sums = epoch, 0, None, None
        self.save()
        if self.main:
            self.report_epoch(row, grid, longest)

    def save_grid(self, epoch: int) -> Image.Image:
        """The fixed-noise grid and the epoch's generator, kept for figures and per-epoch evaluation."""
        n = self.nets
        grid = to_grid(generate(n.G, self.fixed_z, self.fixed_labels))
        save_png(self.state / "grids" / f"epoch_{epoch:04d}.png", grid)
        blob = _model_blob(n.G, None, self.e, self.channels, self.size, self.batches.num_classes, self.data, self.fp)
        save_torch(self.state / "generators" / f"epoch_{epoch:04d}.pt", blob)
        return grid

    def report_epoch(self, row: dict, grid: Image.Image, longest: float) -> None:
        """The epoch in MLflow (metrics, grid) and in the log; a collapsed discriminator is flagged in both."""
        epoch, t = row["epoch"], self.params.train
        self.mlflow.log_metrics(epoch_metrics(row), step=epoch)
        # synchronous: MLflow's async image queue polls once a second, so ending the run waited ~1 s
        # for it; a grid per epoch is one small PNG, and it is in the store when the epoch is reported
        self.mlflow.log_image(grid, key="samples", step=epoch, synchronous=True)
        print(f"{self.name} epoch {epoch}/{self.e.epochs}: loss_d {row['loss_d']:.3f} loss_g {row['loss_g']:.3f} "
              f"D(x) {row['d_real']:.3f} D(G(z)) {row['d_fake']:.3f} {row['images_per_s']:.0f} img/s")
        if row["d_collapse"]:
            self.mlflow.set_tag("d_collapse", "true")
            print(f"{self.name}: warning: discriminator collapse in epoch {epoch}: D(x) > {t.collapse_real} and "
                  f"D(G(z)) < {t.collapse_fake} for {longest:.0f} consecutive steps "
                  f"(G gets almost no gradient; try label smoothing or a lower lr_d)", file=sys.stderr)

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
            ep, i = divmod(int(bad_step) - 1, steps)
            what = (f"non-finite loss at epoch {ep + 1}, step {i + 1}/{steps} (global step {int(bad_step)}: "
                    f"loss_d={loss_d}, loss_g={loss_g})")
        else:
            what = f"non-finite weights by {self.st.where(steps)}"
        raise Diverged(f"{self.name}: {what}; training stopped, last good checkpoint "
                       f"({LoopState(*self.saved).where(steps)}) kept in {self.ckpt_path}")

    def save(self) -> None:
        """A full checkpoint of where we are (collective under torchrun: every rank's noise RNG, so a
        resumed run continues each stream); rank 0 writes it."""
        n, st = self.nets, self.st
        extra = {"scaler": n.scaler.state_dict()} if n.scaler.is_enabled() else {}
        if self.world.active:
            extra["rng_ranks"] = distributed.gather_objects(distributed.rng_state(self.device), self.world)
        if self.main:
            save_torch(self.ckpt_path, checkpoint_blob(st, n.G, n.D, n.opt_g, n.opt_d, self.order, self.monitor,
                                                       self.fp, self.device, extra))
        self.saved = (st.epoch, st.step)

    def stop_requested(self, i: int) -> bool:
        """A signal arrived (on any rank: under torchrun they agree every 10 steps, one host sync)."""
        world, stop = self.world, self.stop
        if world.active and i % 10 == 0:
            stop.signum = distributed.agree_max(stop.signum, world, self.device)
        return bool(stop.signum) and (not world.active or i % 10 == 0)

    def halt(self) -> None:
        """SIGTERM / Ctrl-C: checkpoint where we are (if not there already), then stop."""
        if self.saved != (self.st.epoch, self.st.step):
            self.check()
            self.save()
        raise Interrupted(f"{self.name}: stopped by {signal.Signals(self.stop.signum).name}; checkpoint "
                          f"({LoopState(*self.saved).where(self.steps)}) in {self.ckpt_path}; rerun to resume",
                          self.stop.signum)

    # ------------------------------------------------------------ finish
    def finish(self) -> dict:
        """After the last epoch: model.pt and reports, the run's summary metrics and (optionally) the
        registered model in MLflow, then finished.json, which marks all of it as done."""
        if self.stop_requested(0):  # came during the last epoch's end: its checkpoint is written
            self.halt()
        self.stop.restore()
        distributed.barrier(self.world)
        if not self.main:
            return {}  # finishing (outputs, model logging): signals act as usual again
        summary = self.write_outputs()
        self.mlflow.log_metrics({"train_images_per_s": summary["images_per_s"],
                                 "train_wall_s": summary["train_wall_s"]})
        if self.params.train.log_model:
            _log_generator(self.mlflow, self.nets.G, self.e, self.channels, self.size, self.batches.num_classes,
                           self.name, self.params.train.serve_max_latents)
        write_json(finished_path(self.state), {"run_id": self.mlflow.active_run().info.run_id, "epochs": self.e.epochs})
        return summary

    def write_outputs(self) -> dict:
        """model.pt, losses.csv and train.json (the DVC stage's outputs); the summary."""
        return _write_outputs(self.params, self.name, self.nets.G, self.nets.D, self.e, self.channels, self.size,
                              self.batches.num_classes, self.data, self.fp, self.device, self.st.history)


def _model_blob(G, D, e, channels, size, num_classes, data, fp) -> dict:
    blob = {"state_dict": {k: v.detach().cpu() for k, v in G.state_dict().items()}, "experiment": asdict(e),
            "channels": channels, "image_size": size, "num_classes": num_classes,
            "classes": data["stats"]["classes"], "fingerprint": fp}
    if D is not None:
        blob["discriminator"] = {k: v.detach().cpu() for k, v in D.state_dict().items()}
    return blob


def _log_generator(mlflow, G, e, channels: int, size: int, num_classes: int, registered_name: str,
                   max_latents: int) -> None:
    """The final generator, logged (log_pyfunc_generator) and registered as a new version of
    `registered_name`."""
    from dcganlab.tracking import final_versions

    if final_versions(mlflow, mlflow.active_run().info.run_id):
        return  # logged and registered by a process killed before it wrote finished.json
    log_pyfunc_generator(mlflow, G, e, channels, size, num_classes, max_latents, registered_name=registered_name)


def log_pyfunc_generator(mlflow, G, e, channels: int, size: int, num_classes: int, max_latents: int,
                         name: str = "generator", registered_name: str | None = None):
    """A generator as an MLflow pyfunc model `name` of the active run (serving.py, "models from
    code": its weights are a tensor file, nothing is unpickled at load), registered as a new
    version of `registered_name` if given; its ModelInfo. Input: z (N, z_dim) float32, plus
    labels (N,) int64 for conditional variants; at most `max_latents` latents per call (the model
    config, which travels with the model)."""
    import tempfile

    from dcganlab import serving

    example = {"z": sample_noise(2, e.z_dim, e.noise, "cpu", torch.Generator().manual_seed(0)).numpy()}
    if num_classes:
        example["labels"] = np.arange(2, dtype=np.int64)
    signature = serving.signature(e.z_dim, channels, size, bool(num_classes))
    with tempfile.TemporaryDirectory() as tmp:
        weights, package = Path(tmp) / "generator.pt", Path(tmp) / "dcganlab"  # the package's sources, no caches
        torch.save(serving.generator_blob(G, e, channels, size, num_classes), weights)
        shutil.copytree(Path(serving.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
        return mlflow.pyfunc.log_model(name=name, python_model=serving.__file__,
                                       artifacts={serving.WEIGHTS: str(weights)}, code_paths=[str(package)],
                                       signature=signature, input_example=example,
                                       model_config={serving.MAX_LATENTS: max_latents},
                                       pip_requirements=serving.requirements(), registered_model_name=registered_name)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _write_outputs(params, name, G, D, e, channels, size, num_classes, data, fp, device, history) -> dict:
    """model.pt (both networks), losses.csv and train.json, from the networks and the epoch history."""
    root = params.root
    save_torch(paths.model_path(root, name), _model_blob(G, D, e, channels, size, num_classes, data, fp))
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
