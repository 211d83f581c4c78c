"""The GPU-path settings (autocast, channels_last, torch.compile) and torchrun/DDP, on the CPU.

CI has no GPU: the same code paths run here with CPU autocast and the gloo backend, in a real
`torchrun --nproc_per_node 2` launch.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dcganlab.core.config import ExperimentParams
from dcganlab.gan.modelfile import load_model
from dcganlab.gan.variants import VARIANTS
from dcganlab.training.accel import resolve
from dcganlab.training.step import StepNets, build_networks, train_step

TORCHRUN = Path(sys.executable).parent / "torchrun"


def _step_results(amp: str, channels_last: str, compile_: bool, steps: int = 2) -> torch.Tensor:
    e = ExperimentParams(ngf=4, ndf=4, z_dim=8)
    torch.manual_seed(0)
    G, D = build_networks(e, 1, 16)
    accel = resolve(amp, channels_last, compile_, torch.device("cpu"))
    G, D = accel.prepare(G), accel.prepare(D)
    opt_g, opt_d = VARIANTS[e.variant].optimizers(e, G, D)
    sG, sD = (torch.compile(G), torch.compile(D)) if compile_ else (G, D)
    scaler = accel.scaler()
    real = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for _ in range(steps):
        out = train_step(StepNets(sG, sD, opt_g, opt_d, scaler), e, real, None, 0, accel)
    return out


def test_auto_is_bf16_and_channels_last_on_a_cpu_with_native_bf16():
    cpu = torch.device("cpu")
    a = resolve("auto", "auto", False, cpu, "dcgan", native_bf16=True)
    assert (a.amp, a.channels_last, a.compile) == ("bf16", True, False)
    assert not a.scaler().is_enabled()  # bf16 has fp32's range: no loss scaling


def test_auto_is_plain_fp32_on_a_cpu_without_native_bf16():
    a = resolve("auto", "auto", False, torch.device("cpu"), "dcgan", native_bf16=False)
    assert (a.amp, a.channels_last, a.compile) == ("off", False, False)
    assert resolve("fp16", "on", False, torch.device("cpu")).scaler().is_enabled()  # fp16 always scales


def test_auto_keeps_fp32_for_variants_bf16_hurts(monkeypatch):
    from dcganlab.training import accel

    monkeypatch.setattr(accel, "FP32_VARIANTS", frozenset({"cartoon-128"}))
    assert resolve("auto", "auto", False, torch.device("cpu"), "cartoon-128", native_bf16=True).amp == "off"
    assert resolve("auto", "auto", False, torch.device("cpu"), "dcgan", native_bf16=True).amp == "bf16"


def test_explicit_settings_win_over_auto():
    a = resolve("off", "off", False, torch.device("cpu"), "dcgan", native_bf16=True)
    assert (a.amp, a.channels_last) == ("off", False)
    assert resolve("bf16", "auto", False, torch.device("cpu"), native_bf16=False).channels_last


def test_native_bf16_check_asks_torch_not_the_cpu_name(monkeypatch):
    from dcganlab.training.accel import cpu_has_native_bf16

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not cpu_has_native_bf16()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert cpu_has_native_bf16()


@pytest.mark.parametrize("amp,channels_last", [("bf16", "on"), ("fp16", "off"), ("off", "on")])
def test_mixed_precision_and_channels_last_steps_stay_close_to_fp32(amp, channels_last):
    plain = _step_results("off", "off", False)
    fast = _step_results(amp, channels_last, False)
    assert torch.isfinite(fast).all()
    # low precision changes the numbers a little, not the update: losses within a few percent
    assert torch.allclose(fast, plain, rtol=0.05, atol=0.02), (fast, plain)


def test_compiled_step_matches_eager():
    eager = _step_results("off", "off", False)
    compiled = _step_results("off", "off", True)
    assert torch.allclose(compiled, eager, rtol=1e-3, atol=1e-4), (compiled, eager)


def test_training_with_autocast_and_channels_last_writes_a_loadable_model(prepared):
    from dcganlab.core import paths
    from dcganlab.training.loop import train

    prepared.train.amp, prepared.train.channels_last = "bf16", "on"
    summary = train(prepared, "tiny", progress=False)
    assert summary["epochs"] == 1
    G, D, _ = load_model(paths.model_path(prepared.root, "tiny"))
    assert all(torch.isfinite(p).all() for p in G.parameters())


def _torchrun(root: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [
            str(TORCHRUN),
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "dcganlab",
            "train",
            "tiny",
            "-p",
            str(root / "params.yaml"),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_torchrun_two_processes_one_run_rank0_outputs_and_resume(prepared):
    import mlflow

    from dcganlab.core import paths

    root = prepared.root
    first = _torchrun(root)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("train tiny: 1 epochs") == 1  # rank 0 reports, rank 1 stays quiet
    G, D, meta = load_model(paths.model_path(root, "tiny"))
    assert D is not None and meta["experiment"].epochs == 1
    ckpt = torch.load(paths.state_dir(root, "tiny") / "checkpoint.pt", weights_only=True)
    assert len(ckpt["rng_ranks"]) == 2  # each rank's noise stream is kept for resume

    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["experiments"]["tiny"]["epochs"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    second = _torchrun(root)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming at end of epoch 1" in second.stdout

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1  # only rank 0 logs, and the resumed run continues it
    run = runs[0]
    assert run.data.params["processes"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss_d")] == [1, 2]
    # each step used a global batch of 2 x batch_size: one epoch covers the data once, not twice
    n = int((np.load(paths.processed_dir(root, "digits") / "split.npy") == 0).sum())
    batch = prepared.experiments["tiny"].batch_size
    rows = pd.read_csv(paths.report_dir(root, "tiny") / "losses.csv")
    assert list(rows["images"]) == [n // (2 * batch) * 2 * batch] * 2
