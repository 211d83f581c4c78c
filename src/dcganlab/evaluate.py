"""evaluate: FID and KID of each experiment's generator, on `domain` extractor features.

Every number is stored with how it was computed: extractor (and its own test quality),
number of generated and real images, and the real reference split. FID/KID come from
torchmetrics with our extractor as the feature network. `fid_real_floor` is FID between two
disjoint real samples of the same sizes (train vs reference split): the best a generator can
hope for at this sample count, so small-sample bias is visible next to the number.
"""
from __future__ import annotations

import json

import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from dcganlab import paths
from dcganlab.atomic import write_json
from dcganlab.config import Params
from dcganlab.extractor import describe, load_extractor, to_float
from dcganlab.tracking import existing_run
from dcganlab.sample import balanced_labels
from dcganlab.train import generate, load_model, load_processed, sample_noise


@torch.no_grad()
def fid_kid(extractor, real: torch.Tensor, fake: torch.Tensor, kid_subset: int, batch: int = 250, seed: int = 0) -> dict:
    """FID and KID between two sets of images in [-1, 1] on `extractor` features."""
    fid = FrechetInceptionDistance(feature=extractor, normalize=True)
    subset = min(kid_subset, len(real), len(fake))
    kid = KernelInceptionDistance(feature=extractor, subset_size=subset, normalize=True)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), batch):
            chunk = images[i: i + batch]
            fid.update(chunk, real=is_real)
            kid.update(chunk, real=is_real)
    torch.manual_seed(seed)  # KID draws random subsets
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std), "kid_subset_size": subset}


def evaluate(params: Params, name: str) -> dict:
    root = params.root
    e = params.experiment(name)
    G, _, meta = load_model(paths.model_path(root, name))
    extractor, info = load_extractor(paths.extractor_path(root, e.dataset))
    data = load_processed(paths.processed_dir(root, e.dataset))
    images, split = data["images"], data["split"]
    ref_split = "test" if (split == 1).sum() >= 2 else "train"
    ref = images[split == (1 if ref_split == "test" else 0)]
    n_real = min(params.evaluate.num_samples, len(ref))
    gen = torch.Generator().manual_seed(params.seed + 200)
    real = to_float(ref[torch.randperm(len(ref), generator=gen)[:n_real].numpy()])
    n_fake = params.evaluate.num_samples
    z = sample_noise(n_fake, meta["experiment"].z_dim, meta["experiment"].noise, "cpu", gen)
    fake = generate(G, z, balanced_labels(n_fake, meta["num_classes"]))
    scores = fid_kid(extractor, real, fake, params.evaluate.kid_subset_size, params.evaluate.batch_size, params.seed)

    train_imgs = images[split == 0]
    floor = {}
    if ref_split == "test" and len(train_imgs) >= 2:
        other = to_float(train_imgs[torch.randperm(len(train_imgs), generator=gen)[: params.evaluate.num_samples].numpy()])
        floor = fid_kid(extractor, real, other, params.evaluate.kid_subset_size, params.evaluate.batch_size, params.seed)

    train_info = {}
    train_json = paths.report_dir(root, name) / "train.json"
    if train_json.is_file():
        train_info = json.loads(train_json.read_text())
    metrics = {
        **scores,
        "fid_real_floor": floor.get("fid"),
        "extractor": describe(info),
        "n_fake": len(fake),
        "n_real": n_real,
        "reference_split": f"{e.dataset}:{ref_split} (held-out real images)" if ref_split == "test" else f"{e.dataset}:train",
        "images_per_s": train_info.get("images_per_s"),
        "train_wall_s": train_info.get("train_wall_s"),
        "epochs": train_info.get("epochs"),
        "variant": e.variant,
        "dataset": e.dataset,
    }
    write_json(paths.eval_path(root, name), metrics)
    with existing_run(params, paths.state_dir(root, name)) as mlflow:
        if mlflow is not None:
            mlflow.log_metrics({k: metrics[k] for k in ("fid", "kid", "kid_std") if metrics[k] is not None})
            if metrics["fid_real_floor"] is not None:
                mlflow.log_metric("fid_real_floor", metrics["fid_real_floor"])
            mlflow.set_tags({"eval.extractor": metrics["extractor"], "eval.n_fake": metrics["n_fake"],
                             "eval.n_real": n_real, "eval.reference_split": metrics["reference_split"]})
    return metrics
