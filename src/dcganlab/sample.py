"""sample: a grid of non-cherry-picked samples and a latent interpolation strip.

Writes reports/<experiment>/samples.png (the first `sample.num` samples of a seeded draw)
and reports/<experiment>/interpolation.png (one row per random pair of latent vectors,
`interpolation_steps` images from one end to the other; spherical interpolation for
Gaussian noise, linear for uniform noise), and logs both to the experiment's MLflow run.
"""
from __future__ import annotations

import math

import torch

from dcganlab import paths
from dcganlab.atomic import save_png
from dcganlab.config import Params
from dcganlab.tracking import existing_run
from dcganlab.train import generate, load_generator, sample_noise, to_grid


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of a and b at fractions t: (P, Z), (P, Z), (S,) -> (P, S, Z)."""
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((an * bn).sum(1).clamp(-1 + 1e-7, 1 - 1e-7))[:, None, None]
    t = t[None, :, None]
    return (torch.sin((1 - t) * omega) * a[:, None] + torch.sin(t * omega) * b[:, None]) / torch.sin(omega)


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int, spherical: bool) -> torch.Tensor:
    t = torch.linspace(0, 1, steps)
    if spherical:
        return slerp(a, b, t).reshape(-1, a.shape[1])
    return (a[:, None] * (1 - t[None, :, None]) + b[:, None] * t[None, :, None]).reshape(-1, a.shape[1])


def sample(params: Params, name: str) -> dict:
    root = params.root
    G, meta = load_generator(paths.generator_path(root, name))
    e = meta["experiment"]
    gen = torch.Generator().manual_seed(params.seed + 100)
    s = params.sample
    z = sample_noise(s.num, e.z_dim, e.noise, "cpu", gen)
    grid = to_grid(generate(G, z), nrow=math.ceil(math.sqrt(s.num)))
    a = sample_noise(s.interpolation_pairs, e.z_dim, e.noise, "cpu", gen)
    b = sample_noise(s.interpolation_pairs, e.z_dim, e.noise, "cpu", gen)
    strip = to_grid(generate(G, interpolate(a, b, s.interpolation_steps, e.noise == "normal")), nrow=s.interpolation_steps)
    out = paths.report_dir(root, name)
    save_png(out / "samples.png", grid)
    save_png(out / "interpolation.png", strip)
    with existing_run(params, paths.state_dir(root, name)) as mlflow:
        if mlflow is not None:
            mlflow.log_artifact(str(out / "samples.png"), "samples")
            mlflow.log_artifact(str(out / "interpolation.png"), "samples")
    return {"samples": str(out / "samples.png"), "interpolation": str(out / "interpolation.png")}
