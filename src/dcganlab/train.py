"""train: the one training loop for every variant.

Reads the pre-decoded uint8 array (no image decoding while training), keeps it on the
training device, and runs the GAN update of the experiment's variant. Every epoch: a
fixed-noise grid, losses and D(x)/D(G(z)), the epoch's generator, and a full checkpoint
(both networks, both optimizers, epoch, RNG states, history) written atomically.
Rerunning after an interruption resumes from the last complete epoch when the
checkpoint's fingerprint (params + data) matches; otherwise training starts afresh.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.utils import make_grid
from tqdm import tqdm

from dcganlab import paths
from dcganlab.atomic import save_png, save_torch, write_csv, write_json
from dcganlab.config import Params, as_dict
from dcganlab.errors import UserError
from dcganlab.models import DOut
from dcganlab.tracking import training_run
from dcganlab.variants import VARIANTS


# ---------------------------------------------------------------- data and helpers
def load_processed(folder: Path) -> dict:
    if not (folder / "images.npy").is_file():
        raise UserError(f"no processed data at {folder} (run `dcganlab prepare` first)")
    data = {name: np.load(folder / f"{name}.npy") for name in ("images", "labels", "split")}
    data["stats"] = json.loads((folder / "stats.json").read_text())
    return data


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device is '{name}' but no CUDA device is available")
    return torch.device(name)


def sample_noise(n: int, z_dim: int, kind: str, device, generator: torch.Generator | None = None) -> torch.Tensor:
    if kind == "uniform":
        return torch.rand(n, z_dim, generator=generator).mul_(2).sub_(1).to(device)
    return torch.randn(n, z_dim, generator=generator).to(device)


@torch.no_grad()
def generate(G, z: torch.Tensor, labels: torch.Tensor | None = None, batch: int = 256) -> torch.Tensor:
    """Images in [-1, 1] from G in eval mode (BatchNorm running statistics)."""
    was_training = G.training
    G.eval()
    out = torch.cat([G(z[i: i + batch], None if labels is None else labels[i: i + batch])
                     for i in range(0, len(z), batch)])
    G.train(was_training)
    return out


def to_grid(images: torch.Tensor, nrow: int = 8) -> Image.Image:
    grid = make_grid(images.float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1), padding=2)
    return Image.fromarray(grid.mul(255).add_(0.5).clamp_(0, 255).byte().permute(1, 2, 0).numpy())


def fingerprint(params: Params, name: str, data_dir: Path) -> str:
    """Identity of a training run: params (except `epochs`, so raising it continues) + data."""
    e = {k: v for k, v in asdict(params.experiment(name)).items() if k != "epochs"}
    h = hashlib.sha256(json.dumps({"seed": params.seed, "experiment": e}, sort_keys=True).encode())
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


def load_model(path: Path, device: torch.device | str = "cpu"):
    """(G, D or None, metadata) from models/<exp>/model.pt or a per-epoch generator file.
    Weights only: nothing is unpickled."""
    if not path.is_file():
        raise UserError(f"no trained model at {path} (run `dcganlab train` first)")
    blob = torch.load(path, map_location=device, weights_only=True)
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


def train_step(G, D, opt_g, opt_d, e, real: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """One GAN update on a batch in [-1, 1]; returns [loss_d, loss_g, D(x), D(G(z))] (no host sync)."""
    batch = real.shape[0]
    if e.flip_p > 0:
        flip = torch.rand(batch, device=real.device) < e.flip_p
        real = torch.where(flip[:, None, None, None], real.flip(-1), real)
    z = sample_noise(batch, e.z_dim, e.noise, real.device)
    fake_labels = torch.randint(num_classes, (batch,), device=real.device) if num_classes else None
    fake = G(z, fake_labels)
    # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
    real_out, fake_out = D(real), D(fake.detach())
    loss_d = d_loss(e, real_out, fake_out, labels, fake_labels)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    # (2) Update G network: maximize log(D(G(z)))
    gen_out = D(fake)
    loss_g = g_loss(e, gen_out, real_out, fake_labels)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return torch.stack([loss_d.detach(), loss_g.detach(), torch.sigmoid(real_out.logit.detach()).mean(),
                        torch.sigmoid(fake_out.logit.detach()).mean()])


# ---------------------------------------------------------------- the loop
def train(params: Params, name: str, progress: bool = True) -> dict:
    e = params.experiment(name)
    ds = params.dataset(e.dataset)
    variant = VARIANTS[e.variant]
    root = params.root
    data_dir = paths.processed_dir(root, e.dataset)
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

    device = pick_device(params.train.device)
    train_mask = data["split"] == 0
    images = torch.from_numpy(data["images"][train_mask]).to(device)  # uint8, stays on the device
    labels = torch.from_numpy(data["labels"][train_mask]).to(device)
    n = len(images)
    if n < 2:
        raise UserError(f"dataset '{e.dataset}' has {n} training images; need at least 2")
    batch = min(e.batch_size, n)
    steps = n // batch

    seed = params.seed + e.seed_offset
    torch.manual_seed(seed)
    G, D = build_networks(e, channels, size, num_classes)
    G, D = G.to(device), D.to(device)
    opt_g, opt_d = variant.optimizers(e, G, D)
    grid_gen = torch.Generator().manual_seed(seed + 1)
    fixed_z = sample_noise(params.train.grid_size, e.z_dim, e.noise, device, grid_gen)
    fixed_labels = (torch.arange(params.train.grid_size, device=device) % num_classes) if num_classes else None
    order = torch.Generator().manual_seed(seed)

    state = paths.state_dir(root, name)
    ckpt_path = state / "checkpoint.pt"
    fp = fingerprint(params, name, data_dir)
    start, history = 1, []
    if ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ckpt.get("fingerprint") == fp and ckpt["epoch"] <= e.epochs:
            G.load_state_dict(ckpt["G"]); D.load_state_dict(ckpt["D"])
            opt_g.load_state_dict(ckpt["opt_g"]); opt_d.load_state_dict(ckpt["opt_d"])
            torch.set_rng_state(ckpt["rng_cpu"]); order.set_state(ckpt["rng_order"])
            if device.type == "cuda" and "rng_cuda" in ckpt:
                torch.cuda.set_rng_state(ckpt["rng_cuda"], device)
            start, history = ckpt["epoch"] + 1, ckpt["history"]
            print(f"{name}: resuming after epoch {ckpt['epoch']} of {e.epochs}")
        else:
            print(f"{name}: params or data changed since the last checkpoint; starting afresh")
    if start == 1 and state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True, exist_ok=True)

    with training_run(params, name, e.dataset, e.variant, state) as mlflow:
        if start > 1:
            mlflow.set_tag("epochs_target", e.epochs)  # params are immutable; `epochs` may have been raised
        else:
            mlflow.log_params({**{f"experiment.{k}": v for k, v in as_dict(e).items()},
                               **{f"dataset.{k}": v for k, v in as_dict(ds).items() if k != "path"},
                               "seed": params.seed, "device": str(device), "train_images": n,
                               "image_size": size, "channels": channels})
        for epoch in range(start, e.epochs + 1):
            t0 = time.perf_counter()
            for opt, lr in ((opt_g, e.lr_g), (opt_d, e.lr_d)):  # exponential decay, stateless for resume
                for group in opt.param_groups:
                    group["lr"] = lr * e.lr_decay ** (epoch - 1)
            perm = torch.randperm(n, generator=order).to(device)
            sums = torch.zeros(4, device=device)  # loss_d, loss_g, D(x), D(G(z)): synced once per epoch
            for i in tqdm(range(steps), desc=f"{name} epoch {epoch}/{e.epochs}", leave=False, disable=None if progress else True):
                idx = perm[i * batch: (i + 1) * batch]
                real = images[idx].float().div_(127.5).sub_(1.0)
                sums += train_step(G, D, opt_g, opt_d, e, real, labels[idx] if num_classes else None, num_classes)
            train_s = time.perf_counter() - t0
            loss_d_m, loss_g_m, d_x, d_gz = (sums / steps).tolist()
            if not all(math.isfinite(v) for v in (loss_d_m, loss_g_m)):
                raise UserError(f"{name}: non-finite loss in epoch {epoch} (loss_d={loss_d_m}, loss_g={loss_g_m}); "
                                f"last good checkpoint kept at {ckpt_path}")
            grid = to_grid(generate(G, fixed_z, fixed_labels))
            save_png(state / "grids" / f"epoch_{epoch:04d}.png", grid)
            save_torch(state / "generators" / f"epoch_{epoch:04d}.pt", _model_blob(G, None, e, channels, size, num_classes, data, fp))
            wall = (history[-1]["wall_s"] if history else 0.0) + (time.perf_counter() - t0)
            row = {"epoch": epoch, "loss_d": loss_d_m, "loss_g": loss_g_m, "d_real": d_x, "d_fake": d_gz,
                   "images_per_s": steps * batch / train_s, "images": steps * batch, "train_s": train_s, "wall_s": wall}
            history.append(row)
            ckpt = {"G": G.state_dict(), "D": D.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                    "epoch": epoch, "history": history, "fingerprint": fp,
                    "rng_cpu": torch.get_rng_state(), "rng_order": order.get_state()}
            if device.type == "cuda":
                ckpt["rng_cuda"] = torch.cuda.get_rng_state(device)
            save_torch(ckpt_path, ckpt)
            mlflow.log_metrics({k: v for k, v in row.items() if k not in ("epoch", "images")}, step=epoch)
            mlflow.log_image(grid, key="samples", step=epoch)
            print(f"{name} epoch {epoch}/{e.epochs}: loss_d {loss_d_m:.3f} loss_g {loss_g_m:.3f} "
                  f"D(x) {d_x:.3f} D(G(z)) {d_gz:.3f} {row['images_per_s']:.0f} img/s")

        summary = _finish(params, name, G, D, e, channels, size, num_classes, data, fp, history, device, mlflow)
    return summary


def _model_blob(G, D, e, channels, size, num_classes, data, fp) -> dict:
    blob = {"state_dict": {k: v.detach().cpu() for k, v in G.state_dict().items()}, "experiment": asdict(e),
            "channels": channels, "image_size": size, "num_classes": num_classes,
            "classes": data["stats"]["classes"], "fingerprint": fp}
    if D is not None:
        blob["discriminator"] = {k: v.detach().cpu() for k, v in D.state_dict().items()}
    return blob


def _log_generator(mlflow, G, e, channels: int, size: int, num_classes: int) -> None:
    """The final generator as an MLflow model, in pt2 (torch.export) format: loading it
    unpickles nothing. Conditional generators take (z, labels)."""
    import mlflow.pytorch
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    z = sample_noise(2, e.z_dim, e.noise, "cpu", torch.Generator().manual_seed(0)).numpy()
    inputs = [TensorSpec(np.dtype(np.float32), (-1, e.z_dim), "z")]
    example = z
    if num_classes:
        inputs.append(TensorSpec(np.dtype(np.int64), (-1,), "labels"))
        example = (z, np.arange(2, dtype=np.int64))
    signature = ModelSignature(Schema(inputs), Schema([TensorSpec(np.dtype(np.float32), (-1, channels, size, size))]))
    mlflow.pytorch.log_model(G.cpu().eval(), name="generator", signature=signature, input_example=example,
                             pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])


def _finish(params, name, G, D, e, channels, size, num_classes, data, fp, history, device, mlflow) -> dict:
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
        "final_loss_d": history[-1]["loss_d"],
        "final_loss_g": history[-1]["loss_g"],
    }
    write_json(report / "train.json", summary)
    mlflow.log_metrics({"train_images_per_s": summary["images_per_s"], "train_wall_s": summary["train_wall_s"]})
    if params.train.log_model:
        _log_generator(mlflow, G, e, channels, size, num_classes)
    return summary
